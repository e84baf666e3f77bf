//! An instance joining a fleet halves the first one's slots (SPEC §7.1, §7.3), end to end:
//! real `llmrl serve` processes on a throwaway Redis, the second started while the first runs
//! (`Fleet::add`). Membership changes are pushed (the target is 100 ms), so the first instance
//! must see the new share within a few hundred milliseconds of wall time; the tests poll, with
//! a generous timeout, and print what they measured.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::{Server, instances_of, limit_figure, preset, slots_of, slots_on};

/// The most a join may take to reach the first instance (generous: the target is 100 ms).
const PROPAGATION: Duration = Duration::from_secs(3);

/// The seed preset's slots per (A on X, A on Y, B on X, B on Y).
fn seed_slots(availability: &Value) -> [u64; 4] {
    [
        slots_on(availability, "A", "X"),
        slots_on(availability, "A", "Y"),
        slots_on(availability, "B", "X"),
        slots_on(availability, "B", "Y"),
    ]
}

/// Polls `server` until it reports `instances` and `slots` (instance total); how long that
/// took. Then checks it stays so for a few more looks.
async fn until_reshared(server: &Server, instances: u64, slots: u64) -> (Duration, Value) {
    let started = Instant::now();
    let seen = server
        .availability_until(PROPAGATION, |a| {
            instances_of(a) == instances && a["slots"].as_u64() == Some(slots)
        })
        .await;
    let took = started.elapsed();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let again = server.availability().await;
        assert_eq!(again["slots"].as_u64(), Some(slots), "not stable: {again}");
    }
    (took, seen)
}

/// The seed's example: A (5 000 tokens) and B (10 000), 0.5 each, on X (1M TPM) and Y (4M TPM).
#[tokio::test]
async fn a_second_instance_halves_the_first_ones_slots() {
    let mut fleet = Fleet::start(&preset("seed_two_models"), 1, 30);
    // Alone: A on X 0.5 × 1 000 000 / 5 000 = 100, on Y 400; B on X 50, on Y 200: S = 750.
    let alone = fleet.settle_at(1, PROPAGATION).await;
    assert_eq!(seed_slots(&alone[0]), [100, 400, 50, 200]);
    assert_eq!(alone[0]["slots"], 750);

    // The second joins: shares 500 000 and 2 000 000 ⇒ 50 / 200 / 25 / 100, S / 2 = 375.
    let started = Instant::now();
    fleet.add();
    let spawned = started.elapsed();
    let (took, first) = until_reshared(fleet.server(0), 2, 375).await;
    eprintln!(
        "the second instance started in {spawned:?}; the first saw it {took:?} later (wall time)"
    );
    assert_eq!(seed_slots(&first), [50, 200, 25, 100]);
    assert_eq!((slots_of(&first, "A"), slots_of(&first, "B")), (250, 125));
    // The newcomer knows the fleet from its registration on.
    let second = fleet.server(1).availability().await;
    assert_eq!(instances_of(&second), 2, "{second}");
    assert_eq!(seed_slots(&second), [50, 200, 25, 100]);

    // A third: shares 333 334 (the oldest takes the remainder unit) or 333 333 on X, 1 333 334
    // or 1 333 333 on Y ⇒ A on X floor(166 667 / 5 000) = 33, A on Y floor(666 667 / 5 000) =
    // 133, B on X 16, B on Y 66: 248 each.
    fleet.add();
    for index in 0..3 {
        let (took, seen) = until_reshared(fleet.server(index), 3, 248).await;
        eprintln!("instance {index} saw the third join after {took:?} (wall time)");
        assert_eq!(seed_slots(&seen), [33, 133, 16, 66]);
    }
}

async fn chat_leases(server: &Server, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for k in 0..n {
        let lease = server.lease("chat", Some(&format!("chat-{k}"))).await;
        ids.push(lease["lease_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// `server`'s availability once it sees `used` jobs in flight in the fleet (so the snapshot
/// reflects every admission and release so far).
async fn conc_used(server: &Server, used: u64) -> Value {
    server
        .availability_at_used("m", "concurrent_requests", used, PROPAGATION)
        .await
}

async fn release(server: &Server, ids: &[String]) {
    for id in ids {
        let released = server.release(id, &json!({"usage": {}})).await;
        assert_eq!(released.status, 200, "{}", released.text());
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

/// Jobs running when the share shrinks continue; the instance starts fewer until they end.
/// The `conc_limited` preset: CONC 30, chat 0.6 and batch 0.4 (fixed).
#[tokio::test]
async fn running_jobs_continue_and_the_first_starts_fewer() {
    let mut fleet = Fleet::start(&preset("conc_limited"), 1, 30);
    fleet.settle_at(1, PROPAGATION).await;
    // Alone with 12 chat jobs running: chat 0.6 × 30 − 12 = 6, batch 0.4 × 30 = 12.
    let held = chat_leases(fleet.server(0), 12).await;
    assert_slots(&conc_used(fleet.server(0), 12).await, "alone", 6, 12);

    // The second joins: shares 15. The first's chat part is 0.6 × 15 − 12 < 0 ⇒ 0; it may
    // still take its unused share, 15 − 12 = 3 (the fleet has 30 − 12 = 18 left, exactly the
    // unused shares 3 + 15), so batch's part of 0.4 × 15 = 6 is scaled to 3. The second has its
    // whole share: 9 and 6.
    let started = Instant::now();
    fleet.add();
    let first = fleet
        .server(0)
        .availability_until(PROPAGATION, |a| instances_of(a) == 2)
        .await;
    eprintln!(
        "the first instance saw the second join {:?} after it was started",
        started.elapsed()
    );
    assert_slots(&first, "first, 12 chat running", 0, 3);
    assert_eq!(
        limit_figure(&first, "m", "concurrent_requests", "available"),
        3
    );
    assert_eq!(limit_figure(&first, "m", "concurrent_requests", "own"), 12);
    assert_slots(&conc_used(fleet.server(1), 12).await, "second", 9, 6);

    // Those slots are real: no chat, exactly 3 batch, then nothing.
    let refused = fleet.server(0).acquire("chat", None).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let mut batch = Vec::new();
    for k in 0..3 {
        let lease = fleet
            .server(0)
            .lease("batch", Some(&format!("b-{k}")))
            .await;
        batch.push(lease["lease_id"].as_str().unwrap().to_owned());
    }
    let refused = fleet.server(0).acquire("batch", None).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    release(fleet.server(0), &batch).await;

    // The running jobs were not cut off: they end normally. With 6 left: chat 9 − 6 = 3, batch
    // 6 (unused share 9, the fleet has 24 left = 9 + 15); with none, 9 and 6.
    release(fleet.server(0), &held[..6]).await;
    assert_slots(
        &conc_used(fleet.server(0), 6).await,
        "first, 6 running",
        3,
        6,
    );
    release(fleet.server(0), &held[6..]).await;
    assert_slots(&conc_used(fleet.server(0), 0).await, "first, idle", 9, 6);
    assert_slots(&conc_used(fleet.server(1), 0).await, "second", 9, 6);
}
