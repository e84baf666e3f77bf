//! Redis restarted or flushed mid-load (SPEC §7.2, §7.4): the instances register again by
//! themselves, no limit is exceeded, no job hangs, and while Redis is down the failure mode
//! (the default, `last_known_share`) keeps admitting within the last known share.
//!
//! Three instances in this process, each with its own backend and connections, on a scaled
//! clock (a minute passes in 3 s); every job start is checked against the instance's share, and
//! the jobs running in the whole fleet are counted exactly against the concurrency limit.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Limits, LocalFleet, Plan, T0, Watcher, prefix, snapshot, wall_ms};
use llmrl_redis::test_support::RedisServer;

const INSTANCES: usize = 3;
const LIMITS: Limits = Limits {
    tpm: 360_000,
    rpm: 3_000,
    conc: 12,
};

fn plan(server: &RedisServer, name: &str) -> Plan {
    Plan {
        url: server.url().to_owned(),
        prefix: prefix(name),
        instance: name.to_owned(),
        anchor: wall_ms(),
        start: T0,
        factor: 20,
        fleet: INSTANCES,
        // A job a second (scaled) per instance for 4 minutes: more than the limits hold.
        jobs: 240,
        seed: 7,
        arrival_ms: 240_000,
        run_ms: (2_000, 6_000),
        stale_ms: 60_000,
        max_wait_ms: 1_800_000,
        limits: LIMITS,
    }
}

/// Waits until Redis lists all the instances again and each of them sees the whole fleet.
async fn wait_for_registration(server: &RedisServer, fleet: &LocalFleet) -> Duration {
    let since = Instant::now();
    loop {
        let members: Option<usize> = redis::Client::open(server.url())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| {
                redis::cmd("ZCARD")
                    .arg(format!("{{{}}}:members", fleet.plan.prefix))
                    .query(&mut c)
            })
            .ok();
        if members == Some(INSTANCES) {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the instances never registered again (members: {members:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fleet
        .wait_for_instances(INSTANCES, Duration::from_secs(5))
        .await;
    since.elapsed()
}

/// What every scenario checks once the load is over.
async fn check_outcome(
    server: &RedisServer,
    fleet: &LocalFleet,
    watcher: Watcher,
    outcome: (u64, u64, Vec<String>),
) {
    let (completed, exhausted, other) = outcome;
    let watched = watcher.finish();
    eprintln!(
        "completed {completed}, exhausted {exhausted}, other {other:?}; fleet running max {}; redis: {watched:?}",
        fleet.fleet_running_max.load(Ordering::SeqCst)
    );
    assert!(other.is_empty(), "no job hangs or fails: {other:?}");
    assert_eq!(exhausted, 0);
    assert_eq!(completed, fleet.plan.jobs * INSTANCES as u64);
    assert_eq!(fleet.violations(), Vec::<String>::new());
    assert!(
        fleet.fleet_running_max.load(Ordering::SeqCst) <= LIMITS.conc,
        "the fleet's running jobs stayed within the concurrency limit"
    );
    assert!(watched.over_limit.is_empty(), "{watched:?}");
    fleet.stop().await;
    let end = snapshot(&mut server.connection(), &fleet.plan.prefix).unwrap();
    assert!(end.members.is_empty(), "{end:?}");
    assert_eq!(end.inflight, 0, "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_instances_register_again_and_limits_hold() {
    let mut server = RedisServer::start().expect("redis-server must be installed");
    let fleet = LocalFleet::start(plan(&server, "restart"), INSTANCES).await;
    let watcher = Watcher::start(server.url(), &fleet.plan.prefix, LIMITS);
    let load = fleet.run_load(Duration::from_secs(120));
    let disruptions = async {
        // Down for 1.5 s (30 s on the instances' clock), mid-load.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        server.stop();
        fleet.outage.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        fleet.outage.store(false, Ordering::SeqCst);
        server.start_again().unwrap();
        let first = wait_for_registration(&server, &fleet).await;
        // And a restart with no time down.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        server.restart().unwrap();
        let second = wait_for_registration(&server, &fleet).await;
        eprintln!("registered again after {first:?} and {second:?}");
    };
    let (outcome, ()) = tokio::join!(load, disruptions);
    let during = fleet.outage_record.lock().unwrap().clone();
    eprintln!("while down: {during:?}");
    // The failure mode applied: admissions continued, each within the last known share
    // (floor(L / 3) − own, checked at every start).
    assert!(during.started > 0, "jobs started while Redis was down");
    assert_eq!(during.violations, 0, "{during:?}");
    assert_eq!(
        (during.tpm_share_min, during.tpm_share_max),
        (LIMITS.tpm / 3, LIMITS.tpm / 3)
    );
    assert_eq!(
        (during.conc_share_min, during.conc_share_max),
        (LIMITS.conc / 3, LIMITS.conc / 3)
    );
    check_outcome(&server, &fleet, watcher, outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_flush_instances_register_again_and_limits_hold() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let fleet = LocalFleet::start(plan(&server, "flush"), INSTANCES).await;
    let watcher = Watcher::start(server.url(), &fleet.plan.prefix, LIMITS);
    let load = fleet.run_load(Duration::from_secs(120));
    let disruptions = async {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            server.flush();
            let again = wait_for_registration(&server, &fleet).await;
            eprintln!("registered again after {again:?}");
        }
    };
    let (outcome, ()) = tokio::join!(load, disruptions);
    check_outcome(&server, &fleet, watcher, outcome).await;
}
