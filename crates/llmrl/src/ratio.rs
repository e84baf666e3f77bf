//! Flexible ratios (SPEC §6.2, §10): a pure policy that moves ratio from idle job types to
//! loaded ones, on this instance only.
//!
//! Ratios are parts per billion and always sum to exactly [`RATIO_ONE`]: every part a donor
//! gives is received, to the unit.

use crate::config::{RATIO_ONE, RatioAdjustmentSpec};

/// One job type as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TypeLoad {
    /// Current ratio, parts per billion.
    pub(crate) ratio: u64,
    pub(crate) flexible: bool,
    /// `(in_flight + waiting) / (in_flight + slots)`; may exceed 1 (SPEC §10).
    pub(crate) load: f64,
}

/// The load of a job type (SPEC §10): jobs it has running or waiting over what it could run.
/// With nothing running and no slot, it is 1 if jobs wait, else 0; unbounded slots mean no load.
pub(crate) fn load(in_flight: u64, waiting: u64, slots: Option<u64>) -> f64 {
    let Some(slots) = slots else { return 0.0 };
    let demand = in_flight.saturating_add(waiting);
    let capacity = in_flight.saturating_add(slots);
    if capacity == 0 {
        return if waiting > 0 { 1.0 } else { 0.0 };
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    let load = demand as f64 / capacity as f64;
    load
}

/// New ratios after one adjustment, or `None` when nothing moves (no donor or no receiver).
///
/// Flexible types loaded below `low_load` whose ratio is above `min_ratio` donate
/// `min(ratio − min_ratio, max_adjustment) × (1 − load)`; flexible types loaded above
/// `high_load` receive the total in proportion to their load. Fixed types never change.
pub(crate) fn adjust(types: &[TypeLoad], settings: &RatioAdjustmentSpec) -> Option<Vec<u64>> {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in [0, 10^9]
    let ppb = |r: f64| (r * RATIO_ONE as f64).clamp(0.0, RATIO_ONE as f64) as u64;
    let min_ratio = ppb(settings.min_ratio);
    let max_adjustment = ppb(settings.max_adjustment);
    let mut ratios: Vec<u64> = types.iter().map(|t| t.ratio).collect();
    let mut donated = 0u64;
    for (t, ratio) in types.iter().zip(ratios.iter_mut()) {
        if t.flexible && t.load < settings.low_load && t.ratio > min_ratio {
            #[allow(clippy::cast_precision_loss)]
            let room = (t.ratio - min_ratio).min(max_adjustment) as f64;
            let gift = ppb(room * (1.0 - t.load) / RATIO_ONE as f64).min(t.ratio - min_ratio);
            *ratio -= gift;
            donated += gift;
        }
    }
    let receivers: Vec<usize> = (0..types.len())
        .filter(|&t| types[t].flexible && types[t].load > settings.high_load)
        .collect();
    if donated == 0 || receivers.is_empty() {
        return None;
    }
    let total_load: f64 = receivers.iter().map(|&t| types[t].load).sum();
    let mut given = 0u64;
    for &t in &receivers {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let share = (donated as f64 * types[t].load / total_load).floor() as u64;
        let share = share.min(donated - given);
        ratios[t] += share;
        given += share;
    }
    // What flooring kept goes to the most loaded receiver, so the sum stays exact.
    if let Some(&most) = receivers
        .iter()
        .max_by(|&&a, &&b| types[a].load.total_cmp(&types[b].load).then(b.cmp(&a)))
    {
        ratios[most] += donated - given;
    }
    debug_assert_eq!(
        ratios.iter().sum::<u64>(),
        types.iter().map(|t| t.ratio).sum::<u64>()
    );
    Some(ratios)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> RatioAdjustmentSpec {
        RatioAdjustmentSpec {
            interval: Duration::from_secs(5),
            releases_per_adjustment: 10,
            high_load: 0.7,
            low_load: 0.3,
            max_adjustment: 0.2,
            min_ratio: 0.01,
        }
    }

    fn t(ratio: f64, flexible: bool, load: f64) -> TypeLoad {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ratio = (ratio * 1e9).round() as u64;
        TypeLoad {
            ratio,
            flexible,
            load,
        }
    }

    #[test]
    fn load_follows_spec_section_10() {
        assert!((load(5, 0, Some(25)) - 5.0 / 30.0).abs() < 1e-12);
        assert!((load(38, 10, Some(2)) - 1.2).abs() < 1e-12, "may exceed 1");
        assert!((load(0, 3, Some(0)) - 1.0).abs() < 1e-12);
        assert!(load(0, 0, Some(0)).abs() < 1e-12);
        assert!(load(4, 0, None).abs() < 1e-12);
    }

    #[test]
    fn the_seed_example_moves_ratio_from_the_idle_type_to_the_busy_one() {
        // JobA 0.3 at 16.7 % load, JobB 0.4 at 95 %, JobC fixed 0.3.
        let before = [
            t(0.3, true, 5.0 / 30.0),
            t(0.4, true, 0.95),
            t(0.3, false, 1.0 / 3.0),
        ];
        let after = adjust(&before, &settings()).unwrap_or_default();
        // A gives min(0.29, 0.2) × (1 − 1/6) = 0.1666…
        assert_eq!(after[0], 300_000_000 - 166_666_666);
        assert_eq!(after[1], 400_000_000 + 166_666_666);
        assert_eq!(after[2], 300_000_000, "fixed types never change");
        assert_eq!(after.iter().sum::<u64>(), RATIO_ONE);
    }

    #[test]
    fn nothing_moves_without_both_donors_and_receivers() {
        let all_busy = [t(0.5, true, 0.9), t(0.5, true, 1.0)];
        assert_eq!(adjust(&all_busy, &settings()), None);
        let all_idle = [t(0.5, true, 0.0), t(0.5, true, 0.1)];
        assert_eq!(adjust(&all_idle, &settings()), None);
        let only_fixed_idle = [t(0.5, false, 0.0), t(0.5, true, 1.0)];
        assert_eq!(adjust(&only_fixed_idle, &settings()), None);
    }

    #[test]
    fn donors_keep_min_ratio_and_give_at_most_max_adjustment() {
        let before = [t(0.015, true, 0.0), t(0.885, true, 0.0), t(0.1, true, 1.0)];
        let after = adjust(&before, &settings()).unwrap_or_default();
        assert_eq!(after[0], 10_000_000, "down to min_ratio, not below");
        assert_eq!(after[1], 685_000_000, "at most max_adjustment");
        assert_eq!(after[2], 100_000_000 + 5_000_000 + 200_000_000);
    }

    #[test]
    fn receivers_share_in_proportion_to_load_and_the_sum_stays_exact() {
        let mut ratios = [t(0.4, true, 0.0), t(0.3, true, 0.8), t(0.3, true, 1.6)];
        for _ in 0..20 {
            let Some(next) = adjust(&ratios, &settings()) else {
                break;
            };
            assert_eq!(next.iter().sum::<u64>(), RATIO_ONE);
            for (t, r) in ratios.iter_mut().zip(next) {
                t.ratio = r;
            }
        }
        assert_eq!(
            ratios[0].ratio, 10_000_000,
            "drained to min_ratio over the cycles"
        );
        let gained = [ratios[1].ratio - 300_000_000, ratios[2].ratio - 300_000_000];
        assert!(
            gained[1] > gained[0],
            "the more loaded type receives more: {gained:?}"
        );
    }
}
