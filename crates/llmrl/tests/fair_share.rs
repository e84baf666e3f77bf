//! Fair-share arithmetic (SPEC §7.1, §10) as a backend written outside the crate uses it:
//! shares sum to the limit with the remainder to the oldest, and available parts never promise
//! more than the fleet has left.

use llmrl::backend::fair_share::{available, share, unused};

#[test]
fn shares_split_the_limit_with_the_remainder_to_the_oldest() {
    let shares: Vec<u64> = (0..3).map(|rank| share(2, 3, rank)).collect();
    assert_eq!(shares, [1, 1, 0], "CONC 2 among 3 instances");
    let tpm: Vec<u64> = (0..3).map(|rank| share(100_000, 3, rank)).collect();
    assert_eq!(tpm, [33_334, 33_333, 33_333]);
    assert_eq!(tpm.iter().sum::<u64>(), 100_000);
    assert_eq!(share(100_000, 1, 0), 100_000, "alone: the whole limit");
    assert_eq!(
        share(100_000, 0, 0),
        100_000,
        "before any instance has registered, the limit is undivided"
    );
}

#[test]
fn the_spec_examples_of_available_parts() {
    // TPM 100 000, 2 instances; A used 75 000, B nothing: A 0, B 25 000.
    let (a, b) = (unused(50_000, 75_000), unused(50_000, 0));
    assert_eq!((a, b), (0, 50_000));
    assert_eq!(available(a, a + b, 25_000), 0);
    assert_eq!(available(b, a + b, 25_000), 25_000);
    // Three instances on 120 000 having used 60 000 / 10 000 / 30 000: 0 / 15 000 / 5 000.
    let e = [
        unused(40_000, 60_000),
        unused(40_000, 10_000),
        unused(40_000, 30_000),
    ];
    let all: u64 = e.iter().sum();
    let parts: Vec<u64> = e.iter().map(|&e| available(e, all, 20_000)).collect();
    assert_eq!(parts, [0, 15_000, 5_000]);
    // Past the limit (an overage), nothing is available to anyone.
    assert_eq!(available(50_000, 50_000, -1), 0);
}
