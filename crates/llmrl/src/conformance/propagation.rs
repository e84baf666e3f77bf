//! Propagation (SPEC §7.1, §7.3; seeds 002 §31–32): what one instance does reaches the others
//! (the fleet's remaining capacity, and their available parts when it changes them), while
//! ratios and memory never leave the instance.

use std::time::Duration;

use super::{
    Handle, Harness, STALE, assert_parts_within_remaining, free, instance, job, one_model, slots,
};
use crate::{Config, JobTypeConfig, ModelConfig, NamedLimiter, RatioAdjustmentConfig, Usage};

/// TPM 100 000 and 10 000-token jobs of type `j`.
fn tpm_config() -> Config {
    one_model(ModelConfig::new(free()).tokens_per_minute(100_000), 10_000)
}

/// A job of `job_type` that runs for `secs` seconds and reports `tokens` tokens.
fn one(limiter: &NamedLimiter, id: &str, job_type: &str, secs: u64, tokens: u64) -> Handle {
    let usage = Usage::new().input_tokens(tokens).requests(1);
    job(limiter, id, job_type, Duration::from_secs(secs), usage)
}

/// Checks one state of a fleet on its model's TPM: the SPEC §7.1 invariant; that every instance
/// sees the fleet's `used` and `remaining` (`R`); each instance's available part (`A`) and slots.
fn check(instances: &[&NamedLimiter], used: u64, available: &[u64], counts: &[u64]) {
    assert_parts_within_remaining(instances);
    for (i, limiter) in instances.iter().enumerate() {
        let tpm = limiter.availability().models[0].tokens_per_minute.unwrap();
        assert_eq!(
            (tpm.used, tpm.remaining),
            (used, tpm.limit - used),
            "instance #{i} sees the fleet's used and remaining"
        );
    }
    let parts: Vec<u64> = instances
        .iter()
        .map(|l| {
            l.availability().models[0]
                .tokens_per_minute
                .unwrap()
                .available
        })
        .collect();
    assert_eq!(parts, available, "the instances' available parts");
    let got: Vec<Option<u64>> = instances.iter().map(|l| slots(l)).collect();
    let want: Vec<Option<u64>> = counts.iter().copied().map(Some).collect();
    assert_eq!(got, want, "the instances' slots");
}

/// Every job completes (time moving meanwhile, for jobs that run on the clock).
async fn all_ok<H: Harness>(h: &H, handles: Vec<Handle>) {
    for handle in handles {
        assert!(h.run_until(handle).await.is_ok(), "the job completes");
    }
}

pub async fn an_admission_anywhere_lowers_remaining_everywhere<H: Harness>(h: &H) {
    // TPM 100 000, two instances (shares 50 000), 10 000-token jobs.
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, tpm_config(), "a").await;
    let b = instance(h, &fleet, tpm_config(), "b").await;
    h.propagate().await;
    check(&[&a, &b], 0, &[50_000, 50_000], &[5, 5]);

    // A admits two jobs: every instance sees R fall to 80 000. Both instances are within their
    // shares, and shares are partitions: A's part falls (3 slots), B's does not (still 5).
    let a_jobs = vec![
        one(&a, "a-0", "j", 10, 30_000),
        one(&a, "a-1", "j", 10, 30_000),
    ];
    h.propagate().await;
    check(&[&a, &b], 20_000, &[30_000, 50_000], &[3, 5]);

    // The same the other way: B admits one, R falls to 70 000 everywhere, A's slots stay.
    let b_job = one(&b, "b-0", "j", 20, 10_000);
    h.propagate().await;
    check(&[&a, &b], 30_000, &[30_000, 40_000], &[3, 4]);

    // A's jobs end having used 30 000 each: 40 000 over the estimates, A's own usage 60 000
    // (over its 50 000 share), used 70 000, R = 30 000 < B's unused share 40 000. B did nothing,
    // yet its part shrinks to 30 000 and its slots to 3; A's part is 0.
    all_ok(h, a_jobs).await;
    h.propagate().await;
    check(&[&a, &b], 70_000, &[0, 30_000], &[0, 3]);

    // B's job ends as estimated: nothing moves.
    all_ok(h, vec![b_job]).await;
    h.propagate().await;
    check(&[&a, &b], 70_000, &[0, 30_000], &[0, 3]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

/// TPM 100 000; two flexible job types `x` and `y` of 5 000 tokens at ratio 0.5, adjusted
/// every 5 s (no settlement-triggered adjustment).
fn two_types() -> Config {
    let job_type = || {
        JobTypeConfig::new()
            .estimated_tokens(5_000)
            .ratio(0.5)
            .max_wait("m", Duration::ZERO)
    };
    Config::new()
        .model("m", ModelConfig::new(free()).tokens_per_minute(100_000))
        .job_type("x", job_type())
        .job_type("y", job_type())
        .ratio_adjustment(
            RatioAdjustmentConfig::new()
                .interval(Duration::from_secs(5))
                .releases_per_adjustment(0),
        )
}

/// Per job type: (ratio, slots).
fn types(limiter: &NamedLimiter) -> Vec<(f64, Option<u64>)> {
    limiter
        .availability()
        .job_types
        .iter()
        .map(|t| (t.ratio, t.slots))
        .collect()
}

fn assert_types(limiter: &NamedLimiter, want: &[(f64, u64)], who: &str) {
    let got = types(limiter);
    assert_eq!(got.len(), want.len());
    for ((ratio, slots), &(want_ratio, want_slots)) in got.iter().zip(want) {
        assert!(
            (ratio - want_ratio).abs() < 1e-9,
            "{who}: ratio {ratio} instead of {want_ratio} ({got:?})"
        );
        assert_eq!(*slots, Some(want_slots), "{who}: slots ({got:?})");
    }
}

pub async fn ratios_and_memory_stay_local<H: Harness>(h: &H) {
    // Both instances built at t = 0: their ratio ticks come at 5 s, 10 s, …
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, two_types(), "a").await;
    let b = instance(h, &fleet, two_types(), "b").await;
    h.propagate().await;
    // Shares 50 000; each type 0.5 of it: 25 000, 5 jobs.
    assert_types(&a, &[(0.5, 5), (0.5, 5)], "a");
    assert_types(&b, &[(0.5, 5), (0.5, 5)], "b");

    // A loads x: all five of its x slots run (30 s).
    let _x: Vec<_> = (0..5)
        .map(|i| one(&a, &format!("x-{i}"), "x", 30, 5_000))
        .collect();
    h.propagate().await;
    assert_types(&a, &[(0.5, 0), (0.5, 5)], "a before the tick");
    check(&[&a, &b], 25_000, &[25_000, 50_000], &[5, 10]);

    // A's tick at 5 s: x's load is 5 / 5 = 1 (> 0.7), y's 0 (< 0.3): y gives
    // min(0.5 − 0.01, 0.2) × (1 − 0) = 0.2 to x. A: x 0.7 of 50 000 = 35 000 less 25 000 used:
    // 2 slots; y 0.3: 15 000, 3 slots. B's types are both idle (donors, no receiver): nothing
    // moves there. The fleet's division is untouched: A's part is still its unused share
    // (25 000), B's its whole share (50 000).
    h.advance(Duration::from_secs(5)).await;
    h.propagate().await;
    assert_types(&a, &[(0.7, 2), (0.3, 3)], "a after the tick");
    assert_types(&b, &[(0.5, 5), (0.5, 5)], "b after a's tick");
    check(&[&a, &b], 25_000, &[25_000, 50_000], &[5, 10]);
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );

    // Memory: the budget is one per process (SPEC §6.3), so scenarios running in parallel
    // would share it and could not assert exact figures; memory is therefore not exercised
    // here. It never reaches the backend: with no job type estimating memory, neither instance
    // reports a memory budget at all.
    assert!(a.availability().memory.is_none());
    assert!(b.availability().memory.is_none());
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}
