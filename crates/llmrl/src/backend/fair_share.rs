//! Fair share (SPEC §7.1, §10): how a fleet divides each limit among its live instances.
//!
//! Pure integer arithmetic, shared by the in-process backend and the engine, and mirrored by the
//! Redis backend's scripts: one definition of "fair" everywhere.

/// Instance `rank`'s fair share of `limit` among `instances`: `⌊limit / n⌋`, plus one unit for
/// each of the `limit mod n` longest-registered instances (rank 0 is the oldest), so the shares
/// sum to exactly `limit`.
#[must_use]
pub fn share(limit: u64, instances: u64, rank: u64) -> u64 {
    if instances == 0 {
        return limit;
    }
    limit / instances + u64::from(rank < limit % instances)
}

/// What an instance has not used of its share: `max(0, share − own)`.
#[must_use]
pub const fn unused(share: u64, own: u64) -> u64 {
    share.saturating_sub(own)
}

/// The instance's available part `A = e × min(1, R / Σe)`: its unused share, scaled down when
/// the fleet has less left (`remaining`, `R = L − U`) than the sum of every instance's unused
/// share (`all_unused`, including this one's `own_unused`). Negative `remaining` (an overage
/// pushed the fleet past the limit) leaves nothing.
#[must_use]
pub fn available(own_unused: u64, all_unused: u64, remaining: i128) -> u64 {
    let Ok(remaining) = u128::try_from(remaining) else {
        return 0;
    };
    let own = u128::from(own_unused);
    let all = u128::from(all_unused).max(own);
    if remaining >= all || all == 0 {
        return own_unused;
    }
    // ⌊own × R / Σe⌋ with R < Σe: fits in u64.
    u64::try_from(own * remaining / all).unwrap_or(own_unused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_limit_with_the_remainder_to_the_oldest() {
        assert_eq!([share(2, 3, 0), share(2, 3, 1), share(2, 3, 2)], [1, 1, 0]);
        let tpm: u64 = (0..3).map(|rank| share(100_000, 3, rank)).sum();
        assert_eq!(tpm, 100_000);
        assert_eq!(share(100_000, 3, 0), 33_334);
        assert_eq!(share(100_000, 3, 2), 33_333);
        assert_eq!(share(10, 1, 0), 10);
    }

    #[test]
    fn spec_examples_of_available_parts() {
        // TPM 100 000, 2 instances, A used 75 000: A 0, B 25 000.
        let (a, b) = (unused(50_000, 75_000), unused(50_000, 0));
        assert_eq!(available(a, a + b, 25_000), 0);
        assert_eq!(available(b, a + b, 25_000), 25_000);
        // 120 000 TPM, three instances used 60 000 / 10 000 / 30 000 ⇒ 0 / 15 000 / 5 000.
        let unused_all = [
            unused(40_000, 60_000),
            unused(40_000, 10_000),
            unused(40_000, 30_000),
        ];
        let sum: u64 = unused_all.iter().sum();
        let parts: Vec<u64> = unused_all
            .iter()
            .map(|&e| available(e, sum, 20_000))
            .collect();
        assert_eq!(parts, vec![0, 15_000, 5_000]);
    }

    #[test]
    fn parts_never_exceed_what_is_left() {
        for remaining in [-10i128, 0, 1, 7, 99, 1_000] {
            let unused_all = [33u64, 33, 34];
            let sum: u64 = unused_all.iter().sum();
            let total: u64 = unused_all
                .iter()
                .map(|&e| available(e, sum, remaining))
                .sum();
            assert!(u128::from(total) <= u128::try_from(remaining.max(0)).unwrap_or(0));
        }
    }
}
