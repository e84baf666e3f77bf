//! An unreachable backend (SPEC §7.4, §10 "Liveness defaults"): `closed` admits nothing,
//! `open` admits on the model's full limits locally, and the default `last_known_share` keeps
//! each instance within `floor(L / n_last) − own`; on recovery the instances register again and
//! report what they used meanwhile. No job ever hangs on the dead backend.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Handle, Harness, STALE, assert_parts_within_remaining, free, instance, instance_with, jobs,
    one_model, slots, static_ratios,
};
use crate::{
    Cause, Config, FailureMode, JobOutcome, JobTypeConfig, ModelConfig, NamedLimiter, Timestamp,
};

/// TPM 100 000 and 10 000-token jobs that never wait: 10 slots alone, 5 each for two.
fn config() -> Config {
    one_model(limits(), 10_000)
}

fn limits() -> ModelConfig {
    ModelConfig::new(free()).tokens_per_minute(100_000)
}

/// As [`config`], but jobs wait up to `max_wait` for capacity.
fn waiting_config(max_wait: Duration) -> Config {
    Config::new()
        .model("m", limits())
        .job_type(
            "j",
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .max_wait("m", max_wait),
        )
        .ratio_adjustment(static_ratios())
}

/// Heartbeat (5 s, SPEC §7.2) plus the backend timeout (1 s, SPEC §10): by then every instance
/// has tried the backend at least once since it last changed.
const NOTICE: Duration = Duration::from_secs(6);

/// Generous slack on top of a job's own bound before it counts as hung.
const SLACK: Duration = Duration::from_secs(2);

/// Awaits a handle while the harness moves time; panics if the harness clock passes `within`
/// (from now) before it resolves: a hung job. Returns its outcome.
async fn resolve<H: Harness>(
    h: &H,
    handle: Handle,
    within: Duration,
) -> JobOutcome<Arc<str>, Arc<str>, String> {
    let id = handle.job_id().clone();
    let clock = h.clock();
    let deadline = clock.now().saturating_add(within);
    let bounded = async {
        tokio::select! {
            biased;
            outcome = handle => Some(outcome),
            () = clock.sleep_until(deadline) => None,
        }
    };
    h.run_until(bounded)
        .await
        .unwrap_or_else(|| panic!("job {id} did not resolve within {within:?}: it hangs"))
}

/// Awaits every handle (each within `within` on the harness clock); returns how many succeeded
/// and asserts that every failure is "all models exhausted".
async fn settle_all<H: Harness>(h: &H, handles: Vec<Handle>, within: Duration) -> usize {
    let mut done = 0;
    for handle in handles {
        match resolve(h, handle, within).await {
            Ok(_) => done += 1,
            Err(error) => assert!(
                matches!(error.cause, Cause::Exhausted { .. }),
                "job {} failed with {:?}, expected exhausted",
                error.job_id,
                error.cause
            ),
        }
    }
    done
}

/// Time on the harness clock since `since`.
fn since<H: Harness>(h: &H, since: Timestamp) -> Duration {
    h.clock().now().saturating_duration_since(since)
}

fn counts(instances: &[&NamedLimiter]) -> Vec<Option<u64>> {
    instances.iter().map(|l| slots(l)).collect()
}

fn tpm_used(limiter: &NamedLimiter) -> u64 {
    limiter.availability().models[0]
        .tokens_per_minute
        .unwrap()
        .used
}

fn tpm_available(limiter: &NamedLimiter) -> u64 {
    limiter.availability().models[0]
        .tokens_per_minute
        .unwrap()
        .available
}

pub async fn closed_admits_nothing_while_down<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let wait = Duration::from_secs(10);
    // a's jobs never wait; b's wait up to 10 s.
    let a = instance_with(h, &fleet, config(), "a", FailureMode::Closed).await;
    let b = instance_with(h, &fleet, waiting_config(wait), "b", FailureMode::Closed).await;
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);

    h.set_reachable(&fleet, false).await;
    // A job that never waits fails at once (on the clock: a backend call may take its
    // timeout): exhausted, not admitted, not hung.
    let started = h.clock().now();
    let outcome = resolve(
        h,
        jobs(&a, "a-down", 1, Duration::from_secs(1), 10_000).remove(0),
        SLACK,
    )
    .await;
    let error = outcome.expect_err("closed: nothing is admitted while the backend is down");
    assert!(
        matches!(error.cause, Cause::Exhausted { .. }),
        "cause {:?}",
        error.cause
    );
    assert!(error.usage.is_empty(), "the job never ran");
    assert!(
        since(h, started) < Duration::from_secs(1),
        "it failed at once: after {:?}",
        since(h, started)
    );
    assert_eq!(slots(&a), Some(0), "closed: no slots while down");

    // Jobs with a wait bound wait it out, then fail: bounded, never hung.
    let started = h.clock().now();
    let waiting = jobs(&b, "b-down", 2, Duration::from_secs(1), 10_000);
    assert_eq!(
        settle_all(h, waiting, wait + SLACK).await,
        0,
        "none admitted"
    );
    let waited = since(h, started);
    assert!(
        waited >= wait && waited < wait + SLACK,
        "they waited their bound ({wait:?}), then failed: waited {waited:?}"
    );
    h.advance(NOTICE).await;
    assert_eq!(counts(&[&a, &b]), vec![Some(0), Some(0)], "still down");

    // A waiter queued while down is admitted when the backend comes back within its bound.
    let started = h.clock().now();
    let waiter = jobs(&b, "b-recovers", 1, Duration::from_secs(1), 10_000);
    h.advance(Duration::from_secs(2)).await;
    h.set_reachable(&fleet, true).await;
    let done = settle_all(h, waiter, wait + SLACK).await;
    assert_eq!(
        done, 1,
        "the waiter is admitted once the backend answers again"
    );
    assert!(since(h, started) < wait + SLACK);

    // Within a heartbeat plus the timeout, both instances admit again.
    h.advance(NOTICE).await;
    h.propagate().await;
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    assert_eq!(slots(&a), Some(5));
    let after = jobs(&a, "a-up", 2, Duration::from_secs(1), 10_000);
    assert_eq!(
        settle_all(h, after, Duration::from_secs(1) + SLACK).await,
        2
    );
    assert_parts_within_remaining(&[&a, &b]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn open_admits_on_local_limits<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance_with(h, &fleet, config(), "a", FailureMode::Open).await;
    let b = instance_with(h, &fleet, config(), "b", FailureMode::Open).await;
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);

    h.set_reachable(&fleet, false).await;
    // Both notice at their next heartbeat.
    h.advance(NOTICE).await;
    // open: the model's full limit locally, on each instance (the documented unsafety).
    assert_eq!(counts(&[&a, &b]), vec![Some(10), Some(10)]);
    let run = Duration::from_secs(1);
    let on_a = jobs(&a, "a", 11, run, 10_000);
    let on_b = jobs(&b, "b", 11, run, 10_000);
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(0), Some(0)]);
    assert_eq!(settle_all(h, on_a, run + SLACK).await, 10, "a started 10");
    assert_eq!(settle_all(h, on_b, run + SLACK).await, 10, "b started 10");

    h.set_reachable(&fleet, true).await;
    h.advance(NOTICE).await;
    h.propagate().await;
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    // Both reported their outage usage: the fleet is past its limit, nothing more starts.
    assert_eq!(tpm_used(&a), 200_000);
    assert_eq!(counts(&[&a, &b]), vec![Some(0), Some(0)]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn last_known_share_keeps_the_fleet_within_limits<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    let b = instance(h, &fleet, config(), "b").await;
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);

    h.set_reachable(&fleet, false).await;
    // The first admission on each finds the backend down; each keeps floor(100 000 / 2) − own.
    let run = Duration::from_secs(1);
    let on_a = jobs(&a, "a1", 6, run, 10_000);
    let on_b = jobs(&b, "b1", 6, run, 10_000);
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(0), Some(0)]);
    assert_eq!((tpm_available(&a), tpm_available(&b)), (0, 0));
    assert_eq!(
        settle_all(h, on_a, run + SLACK).await,
        5,
        "a: its last known share"
    );
    assert_eq!(
        settle_all(h, on_b, run + SLACK).await,
        5,
        "b: its last known share"
    );
    // 100 000 tokens fleet-wide: within the limit.

    // A window that starts during the outage: each again gets floor(L / n_last).
    h.advance(Duration::from_secs(60)).await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);
    assert_eq!((tpm_available(&a), tpm_available(&b)), (50_000, 50_000));
    let on_a = jobs(&a, "a2", 6, run, 10_000);
    let on_b = jobs(&b, "b2", 6, run, 10_000);
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(0), Some(0)]);
    assert_eq!(
        settle_all(h, on_a, run + SLACK).await,
        5,
        "a: a fresh share"
    );
    assert_eq!(
        settle_all(h, on_b, run + SLACK).await,
        5,
        "b: a fresh share"
    );

    h.set_reachable(&fleet, true).await;
    h.advance(NOTICE).await;
    h.propagate().await;
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    // The fleet stayed within its limit in the new window.
    assert_eq!(tpm_used(&a), 100_000);
    assert_eq!(counts(&[&a, &b]), vec![Some(0), Some(0)]);
    assert_parts_within_remaining(&[&a, &b]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn recovery_reports_outage_usage<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    let b = instance(h, &fleet, config(), "b").await;
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);

    h.set_reachable(&fleet, false).await;
    // During the outage a overruns its estimates (3 × 12 000) and b underruns (8 000).
    let run = Duration::from_secs(1);
    let on_a = jobs(&a, "a", 3, run, 12_000);
    let on_b = jobs(&b, "b", 1, run, 8_000);
    assert_eq!(settle_all(h, on_a, run + SLACK).await, 3);
    assert_eq!(settle_all(h, on_b, run + SLACK).await, 1);
    // Down for longer than the stale threshold: both must register again.
    h.advance(Duration::from_secs(20)).await;
    assert_eq!(
        tpm_used(&a),
        36_000,
        "a counts its own outage usage locally"
    );

    h.set_reachable(&fleet, true).await;
    h.advance(NOTICE).await;
    h.propagate().await;
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2),
        "both registered again"
    );
    // The fleet's figures, as each instance sees them, hold what was used during the outage.
    assert_eq!(tpm_used(&b), 44_000, "b sees a's outage usage");
    assert_eq!(tpm_used(&a), 44_000, "a sees b's outage usage");
    // a: 50 000 − 36 000 = 14 000 unused ⇒ 1 slot; b: 42 000 ⇒ 4; 56 000 left covers both.
    assert_eq!(counts(&[&a, &b]), vec![Some(1), Some(4)]);
    assert_parts_within_remaining(&[&a, &b]);
    let on_a = jobs(&a, "a-after", 2, run, 10_000);
    assert_eq!(
        settle_all(h, on_a, run + SLACK).await,
        1,
        "a: one more job fits"
    );
    h.propagate().await;
    assert_eq!(tpm_used(&b), 54_000);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}
