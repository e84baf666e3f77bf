//! An instance leaving a fleet gives its share back to the others (SPEC §7.1, §7.2), end to
//! end: real `llmrl serve` processes on a throwaway Redis.
//!
//! - Stopped (SIGTERM), it unregisters: the survivors grow at once, long before any stale
//!   threshold could have evicted it.
//! - Killed (SIGKILL), it says nothing: the survivors keep their shares until the fleet evicts
//!   it, once it has been silent for the stale threshold (15 s of the shared clock) — checked
//!   on every heartbeat (5 s) — and then grow; the units it had in flight are returned.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::fleet::Fleet;
use support::{Server, instances_of, limit_figure, preset, slots_of, slots_on};

/// Stale threshold and heartbeat of the shared clock (the defaults).
const STALE_MS: u64 = 15_000;
const HEARTBEAT_MS: u64 = 5_000;
/// The earliest a silent instance can be evicted after its death: it heartbeat at most one
/// heartbeat before, and is evicted once silent for longer than the threshold. Less 2 s of the
/// shared clock for scheduling delays of the processes.
const NO_EVICTION_BEFORE_MS: u64 = STALE_MS - HEARTBEAT_MS - 2_000;
/// Generous bound for anything that must happen (wall time).
const PATIENCE: Duration = Duration::from_secs(15);

/// Polls until `done`; the snapshot and the shared clock's reading when it was asked for.
async fn seen_at(fleet: &Fleet, server: &Server, done: impl Fn(&Value) -> bool) -> (Value, u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let asked = fleet.logical_ms();
        let availability = server.availability().await;
        if done(&availability) {
            return (availability, asked);
        }
        assert!(
            Instant::now() < deadline,
            "never got there within {PATIENCE:?}: {availability}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed's example, A (5 000 tokens) and B (10 000), 0.5 each on X (1M TPM) and Y (4M TPM):
/// 375 slots each with two instances; stop the second and the first has 750 again.
#[tokio::test]
async fn sigterm_doubles_the_survivors_slots_at_once() {
    // 3×: the stale threshold is 5 s of wall time, so "at once" is told apart from an eviction.
    let mut fleet = Fleet::start(&preset("seed_two_models"), 2, 3);
    for availability in fleet.settle_at(2, PATIENCE).await {
        // 0.5 × 500 000 / 5 000 = 50, 0.5 × 2 000 000 / 5 000 = 200, 25, 100.
        assert_eq!(availability["slots"], 375, "{availability}");
    }

    let stopped_at = fleet.logical_ms();
    let started = Instant::now();
    fleet.stop(1);
    let (alone, asked) = seen_at(&fleet, fleet.server(0), |a| instances_of(a) == 1).await;
    eprintln!(
        "the survivor saw the stop after {:?} of wall time ({} ms of the shared clock)",
        started.elapsed(),
        asked - stopped_at
    );
    assert!(
        asked < stopped_at + NO_EVICTION_BEFORE_MS,
        "the survivor grew only {} ms (shared clock) after the stop: by eviction, not at once",
        asked - stopped_at
    );
    // 0.5 × 1 000 000 / 5 000 = 100, 0.5 × 4 000 000 / 5 000 = 400, 50, 200.
    assert_eq!(alone["slots"], 750, "{alone}");
    assert_eq!(
        [
            slots_on(&alone, "A", "X"),
            slots_on(&alone, "A", "Y"),
            slots_on(&alone, "B", "X"),
            slots_on(&alone, "B", "Y"),
        ],
        [100, 400, 50, 200]
    );
    assert_eq!(
        limit_figure(&alone, "X", "tokens_per_minute", "share"),
        1_000_000
    );
}

async fn hold_chat(server: &Server, n: usize) {
    for k in 0..n {
        let answer = server.acquire("chat", Some(&format!("held-{k}"))).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
}

#[track_caller]
fn assert_slots(availability: &Value, who: &str, chat: u64, batch: u64) {
    assert_eq!(
        (
            slots_of(availability, "chat"),
            slots_of(availability, "batch")
        ),
        (chat, batch),
        "{who}: (chat, batch) in {availability}"
    );
}

/// The `conc_limited` preset (CONC 30; chat 0.6, batch 0.4 fixed), three instances: 6 / 4 each.
/// The third is stopped with jobs running: the two others get 9 / 6 at once and its units
/// back. The second is killed with jobs running: the first keeps 9 / 6 until the fleet evicts
/// it, then has 18 / 12, the whole model, with the units it held returned.
#[tokio::test]
async fn sigterm_at_once_and_sigkill_after_the_stale_threshold() {
    // 10×: the stale threshold is 1.5 s of wall time, a heartbeat half a second.
    let mut fleet = Fleet::start(&preset("conc_limited"), 3, 10);
    for availability in fleet.settle_at(3, PATIENCE).await {
        // 0.6 × 10 = 6, 0.4 × 10 = 4.
        assert_slots(&availability, "one of three", 6, 4);
    }
    hold_chat(fleet.server(1), 4).await;
    hold_chat(fleet.server(2), 3).await;
    let (first, _) = seen_at(&fleet, fleet.server(0), |a| {
        limit_figure(a, "m", "concurrent_requests", "used") == 7
    })
    .await;
    // Everyone is below its share: the first is untouched by the others' jobs.
    assert_slots(&first, "first, 7 running elsewhere", 6, 4);

    // SIGTERM the third: it leaves at once, and its 3 units with it. Shares 15: the first has
    // 9 / 6; the second, 4 running, chat 9 − 4 = 5 and batch 6 (its unused 11 is all there).
    let stopped_at = fleet.logical_ms();
    fleet.stop(2);
    let (first, asked) = seen_at(&fleet, fleet.server(0), |a| {
        instances_of(a) == 2 && limit_figure(a, "m", "concurrent_requests", "used") == 4
    })
    .await;
    assert!(
        asked < stopped_at + NO_EVICTION_BEFORE_MS,
        "the survivors grew only {} ms (shared clock) after the stop",
        asked - stopped_at
    );
    assert_slots(&first, "first of two", 9, 6);
    let (second, _) = seen_at(&fleet, fleet.server(1), |a| {
        instances_of(a) == 2 && limit_figure(a, "m", "concurrent_requests", "used") == 4
    })
    .await;
    assert_slots(&second, "second of two, 4 running", 5, 6);

    // SIGKILL the second: nothing changes until the fleet evicts it.
    let killed_at = fleet.logical_ms();
    fleet.kill(1);
    let mut looks = 0;
    let (alone, evicted_at) = loop {
        let asked = fleet.logical_ms();
        let availability = fleet.server(0).availability().await;
        let answered = fleet.logical_ms();
        if instances_of(&availability) == 1 {
            break (availability, asked);
        }
        if answered < killed_at + NO_EVICTION_BEFORE_MS {
            // Before the dead one can have been evicted: everything as it was.
            assert_slots(&availability, "first, the second just killed", 9, 6);
            assert_eq!(
                limit_figure(&availability, "m", "concurrent_requests", "used"),
                4,
                "{availability}"
            );
            looks += 1;
        }
        assert!(
            answered < killed_at + 10 * (STALE_MS + HEARTBEAT_MS),
            "the dead instance was never evicted: {availability}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "the dead instance was evicted {} ms (shared clock) after SIGKILL; {looks} looks before",
        evicted_at - killed_at
    );
    assert!(looks > 0, "no look before the eviction could happen");
    assert!(
        evicted_at >= killed_at + NO_EVICTION_BEFORE_MS,
        "evicted after {} ms: before the stale threshold",
        evicted_at - killed_at
    );
    // Alone: the whole model, and the dead one's 4 units are free again.
    let (alone, _) = if limit_figure(&alone, "m", "concurrent_requests", "used") == 0 {
        (alone, evicted_at)
    } else {
        seen_at(&fleet, fleet.server(0), |a| {
            limit_figure(a, "m", "concurrent_requests", "used") == 0
        })
        .await
    };
    assert_eq!(
        limit_figure(&alone, "m", "concurrent_requests", "share"),
        30
    );
    assert_slots(&alone, "first, alone again", 18, 12);
}
