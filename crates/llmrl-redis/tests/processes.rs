//! A fleet of limiter instances as separate OS processes on one Redis (SPEC §7.1): under a
//! load of thousands of jobs that overflows every minute, no instance goes above its fair share
//! and the fleet never goes above a global limit.
//!
//! The workers are this test binary run again (see `common`): each is one instance with its own
//! connections, on a scaled clock shared by all (a minute passes in 2 s), windows numbered by
//! that clock (`WindowClock::Client`).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::time::Duration;

use common::{Limits, Plan, T0, Watcher, Worker, num, prefix, wall_ms};
use llmrl_redis::test_support::RedisServer;

/// Run as a worker process (does nothing in a normal test run).
#[test]
fn worker() {
    common::worker_main();
}

const INSTANCES: usize = 4;
const JOBS_EACH: u64 = 1_000;

#[test]
fn separate_processes_stay_within_their_shares_and_the_global_limits() {
    if std::env::var(common::WORKER_ENV).is_ok() {
        return;
    }
    let server = RedisServer::start().expect("redis-server must be installed");
    // Every limit divisible by the instance count, so fair shares are exact.
    let limits = Limits {
        tpm: 1_200_000,
        rpm: 4_000,
        conc: 80,
    };
    let base = Plan {
        url: server.url().to_owned(),
        prefix: prefix("processes"),
        instance: String::new(),
        anchor: wall_ms(),
        start: T0,
        factor: 30,
        fleet: INSTANCES,
        jobs: JOBS_EACH,
        seed: 0,
        // Arrivals over three minutes ask for about twice what a minute holds.
        arrival_ms: 180_000,
        run_ms: (1_000, 4_000),
        // Generous (4 s of real time): nobody is evicted on a busy machine.
        stale_ms: 120_000,
        max_wait_ms: 1_800_000,
        limits,
    };
    let mut workers: Vec<Worker> = (0..INSTANCES)
        .map(|i| {
            Worker::spawn(&Plan {
                instance: format!("proc-{i}"),
                seed: 0x5eed + i as u64,
                ..base.clone()
            })
        })
        .collect();
    for worker in &mut workers {
        worker.wait_ready(Duration::from_secs(60));
    }
    let watcher = Watcher::start(&base.url, &base.prefix, limits);
    for worker in &mut workers {
        worker.go();
    }
    let summaries: Vec<_> = workers
        .iter_mut()
        .map(|w| w.finish(Duration::from_secs(240)))
        .collect();
    let watched = watcher.finish();
    eprintln!("redis watcher: {watched:?}");

    let mut waited = 0;
    for (status, summary) in &summaries {
        eprintln!("{summary}");
        assert!(status.success(), "worker failed: {summary}");
        assert_eq!(summary["ok"], true, "{summary}");
        assert_eq!(num(summary, "completed"), JOBS_EACH, "{summary}");
        assert_eq!(num(summary, "violations"), 0, "{summary}");
        // Shares were exact quarters while the whole fleet ran; they only grew at the end, as
        // workers that were done left.
        assert_eq!(num(summary, "instances_max"), INSTANCES as u64, "{summary}");
        assert_eq!(num(summary, "tpm_share_min"), limits.tpm / 4, "{summary}");
        assert_eq!(num(summary, "conc_share_min"), limits.conc / 4, "{summary}");
        waited += num(summary, "waited_next_minute");
    }
    assert!(
        waited > 100,
        "the load overflowed its minutes: {waited} jobs waited into a later minute"
    );
    // Seen from Redis itself, independently of the instances' reports.
    assert!(watched.samples > 100, "{watched:?}");
    assert!(watched.over_limit.is_empty(), "{watched:?}");
    assert_eq!(
        watched.inconsistent, 0,
        "fleet in flight = Σ own: {watched:?}"
    );
    assert!(
        watched.tpm_max > limits.tpm / 2,
        "the load reached the limit: {watched:?}"
    );
    // Everyone left: nothing stays in flight or registered.
    let after = common::snapshot(&mut server.connection(), &base.prefix).unwrap();
    assert!(after.members.is_empty(), "{after:?}");
    assert_eq!(after.inflight, 0, "{after:?}");
}
