//! Fleet usage (SPEC §7.1, §10; seeds 002 §29–30): fair shares, and how usage, overages and
//! refunds reported by one instance move every instance's available part.
//!
//! Every figure below follows SPEC §7.1: with `n` live instances, instance i's fair share is
//! `F = ⌊L / n⌋` (the `L mod n` remainder units going to the oldest instances, §10), its unused
//! share `e_i = max(0, F − own_i)`, the fleet's remaining `R = L − U`, and its available part
//! `A_i = e_i × min(1, R / Σ_j e_j)` (floored). Where the seeds give other figures (they used an
//! older "remaining split evenly" formula), the SPEC wins and the scenario says so.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Harness, STALE, assert_parts_within_remaining, free, instance, job, jobs, one_model, slots,
};
use crate::{Cause, Config, ModelAvailability, ModelConfig, NamedLimiter, Remaining, Usage};

/// Which limit of the (single) model a check reads.
type Pick = fn(&ModelAvailability<Arc<str>>) -> Option<Remaining>;

const TPM: Pick = |m| m.tokens_per_minute;
const CONC: Pick = |m| m.concurrent_requests;

fn figures(limiter: &NamedLimiter, pick: Pick) -> Remaining {
    pick(&limiter.availability().models[0]).unwrap()
}

/// Checks one state of the fleet: the SPEC §7.1 invariant; that every instance sees the fleet's
/// `used` (and so `remaining = limit − used`); each instance's available part `A`; and each
/// instance's slots.
fn check(instances: &[&NamedLimiter], pick: Pick, used: u64, available: &[u64], counts: &[u64]) {
    assert_parts_within_remaining(instances);
    for (i, limiter) in instances.iter().enumerate() {
        let r = figures(limiter, pick);
        assert_eq!(
            (r.used, r.remaining),
            (used, r.limit.saturating_sub(used)),
            "instance #{i}: the fleet's used and remaining"
        );
    }
    let parts: Vec<u64> = instances
        .iter()
        .map(|l| figures(l, pick).available)
        .collect();
    assert_eq!(parts, available, "the instances' available parts");
    let got: Vec<Option<u64>> = instances.iter().map(|l| slots(l)).collect();
    let want: Vec<Option<u64>> = counts.iter().copied().map(Some).collect();
    assert_eq!(got, want, "the instances' slots");
}

/// Queues one job of type `j` that ends at once using nothing; true if it failed for lack of
/// capacity (`one_model` sets `max_wait = 0`, so it cannot wait).
async fn refused(limiter: &NamedLimiter, id: &str) -> bool {
    let probe = job(limiter, id, "j", Duration::ZERO, Usage::new().requests(1));
    matches!(probe.await, Err(e) if matches!(e.cause, Cause::Exhausted { .. }))
}

/// A job of type `j` that runs for `secs` seconds and reports `tokens` tokens.
fn one(limiter: &NamedLimiter, id: &str, secs: u64, tokens: u64) -> super::Handle {
    let usage = Usage::new().input_tokens(tokens).requests(1);
    job(limiter, id, "j", Duration::from_secs(secs), usage)
}

/// Every job completes (time moving meanwhile, for jobs that run on the clock).
async fn all_ok<H: Harness>(h: &H, handles: Vec<super::Handle>) {
    for handle in handles {
        assert!(h.run_until(handle).await.is_ok(), "the job completes");
    }
}

/// TPM `tpm` and 10 000-token jobs.
fn tpm_config(tpm: u64) -> Config {
    one_model(ModelConfig::new(free()).tokens_per_minute(tpm), 10_000)
}

/// CONC `conc` and jobs without tokens: only concurrency bounds them.
fn conc_config(conc: u64) -> Config {
    one_model(ModelConfig::new(free()).max_concurrent_requests(conc), 0)
}

pub async fn fair_share_remainder_goes_to_the_oldest<H: Harness>(h: &H) {
    // CONC 2 among three instances: ⌊2 / 3⌋ = 0 each, and the 2 mod 3 = 2 remainder units go to
    // the two oldest: 1, 1, 0 (not 0, 0, 0, which would strand the model).
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, conc_config(2), "a").await;
    let b = instance(h, &fleet, conc_config(2), "b").await;
    let c = instance(h, &fleet, conc_config(2), "c").await;
    h.propagate().await;
    assert_eq!([&a, &b, &c].map(|l| l.availability().instances), [3, 3, 3]);
    check(&[&a, &b, &c], CONC, 0, &[1, 1, 0], &[1, 1, 0]);
    assert!(refused(&c, "c-probe").await, "the youngest has no unit");
    // The oldest leaves: b and c share CONC 2 as 1 and 1.
    a.stop(Duration::ZERO).await;
    h.propagate().await;
    check(&[&b, &c], CONC, 0, &[1, 1], &[1, 1]);
    b.stop(Duration::ZERO).await;
    c.stop(Duration::ZERO).await;

    // TPM 100 000 among three: 33 334, 33 333, 33 333, summing to exactly 100 000; three
    // 10 000-token jobs each.
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, tpm_config(100_000), "a").await;
    let b = instance(h, &fleet, tpm_config(100_000), "b").await;
    let c = instance(h, &fleet, tpm_config(100_000), "c").await;
    h.propagate().await;
    check(&[&a, &b, &c], TPM, 0, &[33_334, 33_333, 33_333], &[3, 3, 3]);
    let sum: u64 = [&a, &b, &c].iter().map(|l| figures(l, TPM).available).sum();
    assert_eq!(sum, 100_000, "the shares sum to the limit");
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
    c.stop(Duration::ZERO).await;
}

pub async fn overage_on_one_instance_shrinks_the_others<H: Harness>(h: &H) {
    // SPEC §7.1's example: TPM 100 000, two instances, 10 000-token jobs.
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, tpm_config(100_000), "a").await;
    let b = instance(h, &fleet, tpm_config(100_000), "b").await;
    h.propagate().await;
    check(&[&a, &b], TPM, 0, &[50_000, 50_000], &[5, 5]);

    // A starts its five jobs: 50 000 reserved, all of A's share.
    let running = jobs(&a, "a", 5, Duration::from_secs(1), 15_000);
    h.propagate().await;
    check(&[&a, &b], TPM, 50_000, &[0, 50_000], &[0, 5]);

    // They used 15 000 each: 75 000 used, R = 25 000. A's unused share is 0, B's 50 000, so
    // B's part is 50 000 × 25 000 / 50 000 = 25 000: 2 slots; A's 0.
    // (Seeds 002 §30.1 expects 12 500 and 1 slot for B, from the older formula that splits what
    // is left evenly; SPEC §7.1 settles it as 25 000 and 2 slots, and the SPEC wins.)
    all_ok(h, running).await;
    h.propagate().await;
    check(&[&a, &b], TPM, 75_000, &[0, 25_000], &[0, 2]);

    // B really can start two jobs, and no third: after two, R = 5 000 and B's unused share
    // 30 000, so its part is 5 000.
    let _held = jobs(&b, "b", 2, Duration::from_secs(30), 10_000);
    h.propagate().await;
    check(&[&a, &b], TPM, 95_000, &[0, 5_000], &[0, 0]);
    assert!(refused(&b, "b-probe").await, "no third job on B");
    assert!(refused(&a, "a-probe").await, "nothing on A");
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn refunds_raise_what_is_left<H: Harness>(h: &H) {
    // 1. A refund on an instance within its share: TPM 100 000, two instances, A's five jobs
    //    use 5 000 of their 10 000 each.
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, tpm_config(100_000), "a").await;
    let b = instance(h, &fleet, tpm_config(100_000), "b").await;
    h.propagate().await;
    let running = jobs(&a, "a", 5, Duration::from_secs(1), 5_000);
    h.propagate().await;
    check(&[&a, &b], TPM, 50_000, &[0, 50_000], &[0, 5]);
    // Refunded 25 000: used 25 000, R = 75 000 = Σe (A 25 000 + B 50 000), so nothing is
    // scaled: A's part rises by the whole refund (0 → 25 000, 2 slots), B keeps its whole
    // unused share (50 000: never more than its fair share).
    // (Seeds 002 §30.2 expects 37 500 each and §30.6 "half of the refund each", from the older
    // even split of what is left; SPEC §7.1 gives the refund back to the share it came from.)
    all_ok(h, running).await;
    h.propagate().await;
    check(&[&a, &b], TPM, 25_000, &[25_000, 50_000], &[2, 5]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;

    // 2. A refund on an instance over its share raises the others' parts: A's five jobs are
    //    two that use 15 000 (after 1 s) and three that use 5 000 (after 2 s).
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, tpm_config(100_000), "a").await;
    let b = instance(h, &fleet, tpm_config(100_000), "b").await;
    h.propagate().await;
    let over = vec![
        one(&a, "a-over-0", 1, 15_000),
        one(&a, "a-over-1", 1, 15_000),
    ];
    let under: Vec<_> = (0..3)
        .map(|i| one(&a, &format!("a-under-{i}"), 2, 5_000))
        .collect();
    h.propagate().await;
    check(&[&a, &b], TPM, 50_000, &[0, 50_000], &[0, 5]);
    // Overage of 10 000: A's own 60 000 (over its 50 000), used 60 000, R = 40 000 < Σe = 50 000
    // (B's alone): B's part is 40 000, 4 slots.
    all_ok(h, over).await;
    h.propagate().await;
    check(&[&a, &b], TPM, 60_000, &[0, 40_000], &[0, 4]);
    // Refund of 15 000: A's own 45 000, used 45 000, R = 55 000 = Σe (A 5 000 + B 50 000):
    // B's part rises by 10 000 back to its whole unused share (5 slots), A's by the 5 000 now
    // under its share (not a whole job: 0 slots).
    all_ok(h, under).await;
    h.propagate().await;
    check(&[&a, &b], TPM, 45_000, &[5_000, 50_000], &[0, 5]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn three_instances_mixed_usage<H: Harness>(h: &H) {
    // SPEC §7.1's example: TPM 120 000, three instances (shares 40 000), 10 000-token jobs.
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, tpm_config(120_000), "a").await;
    let b = instance(h, &fleet, tpm_config(120_000), "b").await;
    let c = instance(h, &fleet, tpm_config(120_000), "c").await;
    h.propagate().await;
    let all = [&a, &b, &c];
    check(&all, TPM, 0, &[40_000, 40_000, 40_000], &[4, 4, 4]);

    // A: 4 jobs using 15 000 each, B: 2 using 5 000, C: 3 using 10 000.
    let mut running = jobs(&a, "a", 4, Duration::from_secs(1), 15_000);
    running.extend(jobs(&b, "b", 2, Duration::from_secs(1), 5_000));
    running.extend(jobs(&c, "c", 3, Duration::from_secs(1), 10_000));
    h.propagate().await;
    // Reserved 40 000 / 20 000 / 30 000: R = 30 000 = Σe (0 + 20 000 + 10 000).
    check(&all, TPM, 90_000, &[0, 20_000, 10_000], &[0, 2, 1]);

    // Used 60 000 / 10 000 / 30 000: unused shares 0 / 30 000 / 10 000, R = 20 000, so the
    // parts are scaled by 20 000 / 40 000: 0 / 15 000 / 5 000, and B has one slot.
    // (Seeds 002 §30.5 expects 6 666 each and no slot anywhere, from the older even split of
    // what is left; SPEC §7.1 settles it as 0 / 15 000 / 5 000, and the SPEC wins.)
    all_ok(h, running).await;
    h.propagate().await;
    check(&all, TPM, 100_000, &[0, 15_000, 5_000], &[0, 1, 0]);

    // B takes its slot: R = 10 000, unused shares 0 / 20 000 / 10 000, so the parts are
    // ⌊20 000 × 10 000 / 30 000⌋ = 6 666 and ⌊10 000 × 10 000 / 30 000⌋ = 3 333.
    let _held = jobs(&b, "b-more", 1, Duration::from_secs(30), 10_000);
    h.propagate().await;
    check(&all, TPM, 110_000, &[0, 6_666, 3_333], &[0, 0, 0]);
    for limiter in all {
        assert!(
            refused(limiter, "probe").await,
            "no instance has a whole job left"
        );
    }
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
    c.stop(Duration::ZERO).await;
}

pub async fn gradual_rebalancing_when_an_instance_joins<H: Harness>(h: &H) {
    // CONC 60, jobs without tokens. A, alone, holds 50 jobs; job i ends after i + 1 seconds.
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, conc_config(60), "a").await;
    let held_by_a: Vec<_> = (0..50)
        .map(|i| one(&a, &format!("a-{i}"), i + 1, 0))
        .collect();
    h.propagate().await;
    check(&[&a], CONC, 50, &[10], &[10]);

    // B joins: shares 30 / 30. A is 20 over its share: its part is 0 and it starts nothing;
    // its running jobs continue. B's unused share is 30 but the fleet has only 10 left: B's
    // part is 10, and B can start 10 jobs at once.
    let b = instance(h, &fleet, conc_config(60), "b").await;
    h.propagate().await;
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    check(&[&a, &b], CONC, 50, &[0, 10], &[0, 10]);
    assert!(refused(&a, "a-probe-1").await, "A is over its share");
    let mut held_by_b: Vec<_> = (0..10)
        .map(|i| one(&b, &format!("b-{i}"), 300, 0))
        .collect();
    h.propagate().await;
    // 60 in flight: the global limit, never more.
    check(&[&a, &b], CONC, 60, &[0, 0], &[0, 0]);
    assert!(refused(&b, "b-probe-1").await, "the fleet is full");

    // 10 s: A's jobs 0–9 ended (A holds 40, still over its 30). What they freed goes to B,
    // whose unused share (20) covers it: R = 10, B's part 10, A's 0.
    h.advance(Duration::from_secs(10)).await;
    h.propagate().await;
    check(&[&a, &b], CONC, 50, &[0, 10], &[0, 10]);
    assert!(refused(&a, "a-probe-2").await, "A is still over its share");
    held_by_b.extend((10..20).map(|i| one(&b, &format!("b-{i}"), 300, 0)));
    h.propagate().await;
    check(&[&a, &b], CONC, 60, &[0, 0], &[0, 0]);

    // 25 s: A holds 25, B 20: 45 in flight, R = 15 = Σe (A 30 − 25 = 5, B 30 − 20 = 10).
    h.advance(Duration::from_secs(15)).await;
    h.propagate().await;
    check(&[&a, &b], CONC, 45, &[5, 10], &[5, 10]);

    // 50 s: A's jobs all ended: A is back to its whole share (30), B keeps 10 more.
    h.advance(Duration::from_secs(25)).await;
    h.propagate().await;
    check(&[&a, &b], CONC, 20, &[30, 10], &[30, 10]);
    all_ok(h, held_by_a).await;
    assert!(
        one(&a, "a-again", 0, 0).await.is_ok(),
        "A starts jobs again"
    );
    drop(held_by_b);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}
