//! Join and leave (SPEC §7.1–7.2; seeds 002 §23): shares follow the number of live instances.

use std::time::Duration;

use super::{
    Harness, STALE, assert_parts_within_remaining, free, instance, jobs, one_model, slots,
};
use crate::{ModelConfig, NamedLimiter};

/// TPM 100 000 and 10 000-token jobs: 10 slots for one instance.
fn config() -> crate::Config {
    one_model(ModelConfig::new(free()).tokens_per_minute(100_000), 10_000)
}

fn counts(instances: &[&NamedLimiter]) -> Vec<Option<u64>> {
    instances.iter().map(|l| slots(l)).collect()
}

pub async fn one_instance_has_all_slots<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    assert_eq!(slots(&a), Some(10));
    assert_eq!(a.availability().instances, 1);
    a.stop(Duration::ZERO).await;
}

pub async fn a_second_instance_halves_the_first<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    let b = instance(h, &fleet, config(), "b").await;
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn a_leaving_instance_gives_its_share_back_at_once<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    let b = instance(h, &fleet, config(), "b").await;
    h.propagate().await;
    b.stop(Duration::ZERO).await;
    h.propagate().await;
    assert_eq!(slots(&a), Some(10));
    assert_eq!(a.availability().instances, 1);
    a.stop(Duration::ZERO).await;
}

/// A leaving instance's usage stays counted in the window (the provider was called), while the
/// others' shares grow at once: TPM 120 000, three instances (shares 40 000) that used 20 000,
/// 10 000 and 30 000. When c leaves, a and b have shares of 60 000, unused 40 000 and 50 000
/// (Σ 90 000), but only R = 60 000 is left: their parts are scaled to ⌊40 000 × 60 / 90⌋ =
/// 26 666 and ⌊50 000 × 60 / 90⌋ = 33 333 (SPEC §7.1), two and three slots.
pub async fn a_leaving_instance_s_usage_stays_counted<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let config = || one_model(ModelConfig::new(free()).tokens_per_minute(120_000), 10_000);
    let a = instance(h, &fleet, config(), "a").await;
    let b = instance(h, &fleet, config(), "b").await;
    let c = instance(h, &fleet, config(), "c").await;
    h.propagate().await;
    let mut running = jobs(&a, "a", 2, Duration::from_secs(1), 10_000);
    running.extend(jobs(&b, "b", 1, Duration::from_secs(1), 10_000));
    running.extend(jobs(&c, "c", 3, Duration::from_secs(1), 10_000));
    for handle in running {
        assert!(h.run_until(handle).await.is_ok(), "the job completes");
    }
    h.propagate().await;
    let tpm = |l: &NamedLimiter| l.availability().models[0].tokens_per_minute.unwrap();
    // Unused shares 20 000 / 30 000 / 10 000 = R: nothing is scaled.
    assert_eq!(
        [&a, &b, &c].map(|l| (tpm(l).used, tpm(l).available)),
        [(60_000, 20_000), (60_000, 30_000), (60_000, 10_000)]
    );
    c.stop(Duration::ZERO).await;
    h.propagate().await;
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    assert_parts_within_remaining(&[&a, &b]);
    assert_eq!(
        [&a, &b].map(|l| (tpm(l).used, tpm(l).available)),
        [(60_000, 26_666), (60_000, 33_333)]
    );
    assert_eq!(counts(&[&a, &b]), vec![Some(2), Some(3)]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn a_dead_instance_is_evicted_after_the_stale_threshold<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    let b = instance(h, &fleet, config(), "b").await;
    h.propagate().await;
    // b dies: no stop, no unregistration, no heartbeat any more.
    drop(b);
    h.advance(Duration::from_secs(10)).await;
    assert_eq!(slots(&a), Some(5), "not stale yet");
    // Stale after 15 s, swept at the next heartbeat: within threshold + heartbeat (20 s).
    h.advance(Duration::from_secs(11)).await;
    h.propagate().await;
    assert_eq!(slots(&a), Some(10));
    assert_eq!(a.availability().instances, 1);
    a.stop(Duration::ZERO).await;
}

pub async fn one_two_three_two_one<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    assert_eq!(slots(&a), Some(10));
    let b = instance(h, &fleet, config(), "b").await;
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);
    let c = instance(h, &fleet, config(), "c").await;
    h.propagate().await;
    // 100 000 / 3: 33 334, 33 333, 33 333 tokens: three jobs each.
    assert_eq!(counts(&[&a, &b, &c]), vec![Some(3), Some(3), Some(3)]);
    c.stop(Duration::ZERO).await;
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);
    b.stop(Duration::ZERO).await;
    h.propagate().await;
    assert_eq!(slots(&a), Some(10));
    a.stop(Duration::ZERO).await;
}

pub async fn an_evicted_instance_registers_again<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    // b is alive but silent for longer than the stale threshold (a paused process).
    let b = NamedLimiter::builder(config().instance_id("b"))
        .clock(h.clock())
        .backend(h.backend(&fleet))
        .heartbeat_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    b.ready().await;
    h.advance(Duration::from_secs(25)).await;
    h.propagate().await;
    // a evicted b; b learnt of it and registered again by itself.
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    assert_eq!(counts(&[&a, &b]), vec![Some(5), Some(5)]);
    let running = jobs(&b, "b", 1, Duration::from_secs(1), 10_000);
    for handle in running {
        assert!(
            h.run_until(handle).await.is_ok(),
            "b admits jobs after re-registering"
        );
    }
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

pub async fn a_reset_backend_recovers_the_fleet_figures<H: Harness>(h: &H) {
    let fleet = h.fleet(STALE);
    let a = instance(h, &fleet, config(), "a").await;
    let b = instance(h, &fleet, config(), "b").await;
    h.propagate().await;
    // a holds three 10 000-token jobs when the backend forgets everything.
    let _held = jobs(&a, "a", 3, Duration::from_secs(50), 10_000);
    h.propagate().await;
    assert_eq!(counts(&[&a, &b]), vec![Some(2), Some(5)]);
    h.reset(&fleet).await;
    // Both notice (a push, or their next heartbeat), register again and re-report their usage.
    h.advance(Duration::from_secs(6)).await;
    h.propagate().await;
    assert_eq!(
        (a.availability().instances, b.availability().instances),
        (2, 2)
    );
    let tpm = b.availability().models[0].tokens_per_minute.unwrap();
    assert_eq!(
        tpm.used, 30_000,
        "the fleet's usage was recovered from the instances' reports"
    );
    assert_eq!(counts(&[&a, &b]), vec![Some(2), Some(5)]);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}
