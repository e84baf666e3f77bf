//! An instance process killed with SIGKILL mid-load (SPEC §7.2): within the stale threshold the
//! fleet evicts it, its in-flight units return and the survivors' shares grow; the survivors
//! never go above their shares on the way.
//!
//! Three workers (this binary run again, see `common`) and the test's own observer instance
//! form a fleet of four on a scaled clock (a minute passes in 3 s).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::{Limits, Plan, T0, Worker, num, prefix, snapshot, wall_ms};
use llmrl_redis::test_support::RedisServer;

/// Run as a worker process (does nothing in a normal test run).
#[test]
fn worker() {
    common::worker_main();
}

const STALE_MS: u64 = 60_000;
/// The default heartbeat.
const HEARTBEAT_MS: u64 = 5_000;
const VICTIM: &str = "kill-1";

/// Polls `f` every 20 ms of real time until it returns `Some`, for at most `within`.
async fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_evicted_and_its_units_return_within_the_stale_threshold() {
    if std::env::var(common::WORKER_ENV).is_ok() {
        return;
    }
    let server = RedisServer::start().expect("redis-server must be installed");
    // Divisible by 3 and 4: shares are exact before and after the kill.
    let limits = Limits {
        tpm: 1_200_000,
        rpm: 12_000,
        conc: 24,
    };
    let base = Plan {
        url: server.url().to_owned(),
        prefix: prefix("kill"),
        instance: String::new(),
        anchor: wall_ms(),
        start: T0,
        factor: 20,
        fleet: 4,
        jobs: 150,
        seed: 0,
        // Everything queued at once: concurrency is the bottleneck, every instance keeps its
        // share of it in flight.
        arrival_ms: 0,
        run_ms: (5_000, 15_000),
        stale_ms: STALE_MS,
        max_wait_ms: 1_800_000,
        limits,
    };
    let observer = base.limiter("observer");
    observer.ready().await;
    let clock = observer.clock().clone();
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| {
            Worker::spawn(&Plan {
                instance: format!("kill-{i}"),
                seed: 0x0c0ffee + i,
                ..base.clone()
            })
        })
        .collect();
    tokio::task::block_in_place(|| {
        for worker in &mut workers {
            worker.wait_ready(Duration::from_secs(60));
        }
        for worker in &mut workers {
            worker.go();
        }
    });
    let mut redis = server.connection();
    let mut read = || snapshot(&mut redis, &base.prefix).unwrap();

    // The victim holds concurrency units.
    poll(Duration::from_secs(30), "the victim's jobs", || {
        (read().members.get(VICTIM).copied().unwrap_or(0) > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut victim = workers.remove(1);
    victim.kill();
    let killed_at = clock.now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = read();
    let units = before.members[VICTIM];
    eprintln!("killed {VICTIM} holding {units} units: {before:?}");
    assert!(units > 0);
    assert_eq!(before.members.len(), 4);
    assert!(
        before.consistent(),
        "in flight = Σ own in flight: {before:?}"
    );

    // Evicted by a survivor's heartbeat once silent for the stale threshold.
    let after = poll(Duration::from_secs(30), "the eviction", || {
        let s = read();
        (!s.members.contains_key(VICTIM)).then_some(s)
    })
    .await;
    let evicted_after = clock.now().as_millis() - killed_at.as_millis();
    eprintln!("evicted after {evicted_after} ms (scaled): {after:?}");
    assert!(
        evicted_after >= STALE_MS - HEARTBEAT_MS,
        "evicted after {evicted_after} ms: before the stale threshold"
    );
    assert!(
        evicted_after <= STALE_MS + 4 * HEARTBEAT_MS,
        "evicted after {evicted_after} ms: stale threshold {STALE_MS} ms"
    );
    assert_eq!(after.members.len(), 3, "{after:?}");
    assert!(
        after.consistent(),
        "the victim's {units} units left the fleet's in-flight count: {after:?}"
    );

    // The survivors (the observer among them) learn it at once, by push: 3 instances, thirds.
    let seen = poll(Duration::from_secs(2), "the observer's new shares", || {
        let a = observer.availability();
        let m = &a.models[0];
        (a.instances == 3).then(|| {
            (
                m.tokens_per_minute.unwrap().share,
                m.concurrent_requests.unwrap().share,
            )
        })
    })
    .await;
    assert_eq!(seen, (limits.tpm / 3, limits.conc / 3));

    let summaries: Vec<_> = tokio::task::block_in_place(|| {
        workers
            .iter_mut()
            .map(|w| w.finish(Duration::from_secs(120)))
            .collect()
    });
    for (status, summary) in &summaries {
        eprintln!("{summary}");
        assert!(status.success(), "survivor failed: {summary}");
        assert_eq!(num(summary, "violations"), 0, "{summary}");
        assert_eq!(num(summary, "completed"), base.jobs, "{summary}");
        // Quarters while the victim lived, thirds (or more, once the other survivor was done
        // and left) after.
        assert_eq!(num(summary, "conc_share_min"), limits.conc / 4, "{summary}");
        assert!(
            num(summary, "conc_share_max") >= limits.conc / 3,
            "{summary}"
        );
    }
    observer.stop(Duration::from_secs(1)).await;
    let end = read();
    assert!(end.members.is_empty(), "{end:?}");
    assert_eq!(
        end.inflight, 0,
        "nothing of the victim stays in flight: {end:?}"
    );
    drop(victim);
}
