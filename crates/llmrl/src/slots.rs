//! Slot arithmetic (SPEC §6.1): how many whole jobs of each type can start against one resource.
//!
//! Pure functions of (entitlements, usage, what the instance may still take). Quantities are
//! exact integers: ratios are parts per billion, so a type's part is kept in *nano-units*
//! (`ratio_ppb × share`, i.e. units × 10^9) and slot counts never suffer from float rounding
//! (0.1 of 50 000 tokens with 1 000-token jobs is 5 slots, never 4).

use crate::config::RATIO_ONE;

/// Slot count that no resource bounds (a zero estimate, or no limit at all).
pub(crate) const UNBOUNDED: u64 = u64::MAX;

const ONE: u128 = RATIO_ONE as u128;

/// A type's entitlement to one resource in nano-units: `ratio × share`, clamped by the model's
/// `min_capacity`/`max_capacity` expressed in whole jobs (SPEC §10), before usage is subtracted.
pub(crate) fn entitlement(
    ratio_ppb: u64,
    share: u64,
    estimate: u64,
    min_capacity: Option<u64>,
    max_capacity: Option<u64>,
) -> u128 {
    let mut part = u128::from(ratio_ppb) * u128::from(share);
    let job = u128::from(estimate) * ONE;
    if let Some(min) = min_capacity {
        part = part.max(u128::from(min).saturating_mul(job));
    }
    if let Some(max) = max_capacity {
        part = part.min(u128::from(max).saturating_mul(job));
    }
    part
}

/// What is left of an entitlement after `used` units: `max(0, entitlement − used)`, nano-units.
pub(crate) fn part(entitlement: u128, used: u64) -> u128 {
    entitlement.saturating_sub(u128::from(used) * ONE)
}

/// `⌊a·b / c⌋` without overflow in practice: exact in `u128`, approximated in `f64` only when the
/// product does not fit (limits far beyond any provider's).
fn mul_div(a: u128, b: u128, c: u128) -> u128 {
    match a.checked_mul(b) {
        Some(product) => product / c,
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        None => ((a as f64) * (b as f64) / (c as f64)) as u128,
    }
}

fn clamp_u64(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(UNBOUNDED)
}

/// Whole jobs each type can start against one resource, written to `out`.
///
/// - `available`: what this instance may still take (`L − U` alone, its fair-share part in a
///   fleet); negative after an overage pushed the counter past the limit.
/// - `parts[t]`: type t's unused part in nano-units ([`part`]).
/// - `estimates[t]`: what one job of type t takes (0: this resource does not bound the type,
///   but it still cannot start while the counter is over the limit).
///
/// When the parts promise more than is available they are scaled down proportionally and the
/// capacity the flooring leaves is handed out by largest remainder, one job per type at most and
/// never beyond the type's own unscaled part.
pub(crate) fn slots(available: i128, parts: &[u128], estimates: &[u64], out: &mut [u64]) {
    debug_assert!(parts.len() == estimates.len() && out.len() == parts.len());
    // `used + 0 ≤ limit` still has to hold for a zero estimate (SPEC §10).
    let over = available < 0;
    let available = u128::try_from(available.max(0)).unwrap_or(0);
    let total: u128 = parts.iter().sum();
    let scaled = total > available * ONE;
    for ((slot, &part), &estimate) in out.iter_mut().zip(parts).zip(estimates) {
        *slot = if estimate == 0 {
            if over { 0 } else { UNBOUNDED }
        } else if scaled {
            clamp_u64(mul_div(part, available, total * u128::from(estimate)))
        } else {
            clamp_u64(part / (u128::from(estimate) * ONE))
        };
    }
    if !scaled || total == 0 {
        return;
    }
    // Hand out what flooring left, largest remainder first.
    let taken: u128 = out
        .iter()
        .zip(estimates)
        .filter(|&(_, &e)| e > 0)
        .map(|(&s, &e)| u128::from(s) * u128::from(e))
        .sum();
    let mut leftover = available.saturating_sub(taken);
    let mut candidates: Vec<(usize, f64)> = (0..parts.len())
        .filter(|&t| estimates[t] > 0 && parts[t] > 0)
        .map(|t| {
            #[allow(clippy::cast_precision_loss)] // ordering only
            let exact = parts[t] as f64 * available as f64 / (total as f64 * estimates[t] as f64);
            (t, exact.fract())
        })
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (t, _) in candidates {
        let estimate = u128::from(estimates[t]);
        let own = parts[t] / (estimate * ONE);
        if estimate <= leftover && u128::from(out[t]) < own {
            out[t] += 1;
            leftover -= estimate;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(available: i128, parts: &[u128], estimates: &[u64]) -> Vec<u64> {
        let mut out = vec![0; parts.len()];
        slots(available, parts, estimates, &mut out);
        out
    }

    fn ratio(r: f64) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ppb = (r * 1e9).round() as u64;
        ppb
    }

    #[test]
    fn spec_example_six_and_eight_then_four_and_eight() {
        let share = 100_000;
        let ents = [
            entitlement(ratio(0.6), share, 10_000, None, None),
            entitlement(ratio(0.4), share, 5_000, None, None),
        ];
        let parts = [part(ents[0], 0), part(ents[1], 0)];
        assert_eq!(run(100_000, &parts, &[10_000, 5_000]), vec![6, 8]);
        let parts = [part(ents[0], 20_000), part(ents[1], 0)];
        assert_eq!(run(80_000, &parts, &[10_000, 5_000]), vec![4, 8]);
    }

    #[test]
    fn exact_at_integer_boundaries() {
        let e = entitlement(ratio(0.1), 50_000, 1_000, None, None);
        assert_eq!(run(50_000, &[part(e, 0)], &[1_000]), vec![5]);
        let thirds: Vec<u128> = [0.33, 0.33, 0.34]
            .iter()
            .map(|&r| entitlement(ratio(r), 100_000, 10_000, None, None))
            .collect();
        assert_eq!(run(100_000, &thirds, &[10_000; 3]), vec![3, 3, 3]);
    }

    #[test]
    fn scaled_parts_never_promise_more_than_available() {
        // Two halves of 100 000 but only 25 000 left: 12 500 each, one job each, 5 000 stranded
        // by the whole-job rule.
        let half = entitlement(ratio(0.5), 100_000, 10_000, None, None);
        assert_eq!(run(25_000, &[half, half], &[10_000, 10_000]), vec![1, 1]);
        // 35 000 left: 17 500 each → 1 each, leftover 15 000 → one more to the first by remainder.
        let out = run(35_000, &[half, half], &[10_000, 10_000]);
        assert_eq!(out.iter().sum::<u64>(), 3);
    }

    #[test]
    fn leftover_never_exceeds_own_part() {
        // Type 0 has used all of its part: it gets nothing from the leftover.
        let a = part(entitlement(ratio(0.5), 100_000, 10_000, None, None), 50_000);
        let b = entitlement(ratio(0.5), 100_000, 10_000, None, None);
        assert_eq!(run(30_000, &[a, b], &[10_000, 10_000]), vec![0, 3]);
    }

    #[test]
    fn zero_estimates_are_unbounded_until_the_counter_is_over() {
        let e = entitlement(RATIO_ONE, 1_000, 0, None, None);
        assert_eq!(run(10, &[e], &[0]), vec![UNBOUNDED]);
        assert_eq!(
            run(0, &[e], &[0]),
            vec![UNBOUNDED],
            "used + 0 ≤ limit still holds"
        );
        assert_eq!(run(-5, &[e], &[0]), vec![0]);
    }

    #[test]
    fn capacity_bounds_clamp_the_entitlement() {
        let lifted = entitlement(ratio(0.01), 100_000, 10_000, Some(2), None);
        assert_eq!(lifted, 20_000 * ONE);
        let capped = entitlement(RATIO_ONE, 100_000, 10_000, None, Some(3));
        assert_eq!(capped, 30_000 * ONE);
    }
}
