//! Flexible ratios are local to each instance (SPEC §6.2, §7.1: "ratios and memory stay
//! local"), end to end: two `llmrl serve` instances on one throwaway Redis with the
//! `flexible_ratios` preset — busy 0.4, quiet 0.3, calm 0.3 (all flexible) on a model of 100
//! concurrent requests, so 50 per instance; ratios adjusted every 5 s of the shared clock (1/6 s
//! of wall time at 30×).
//!
//! Saturating busy on instance 0 moves instance 0's ratios (0.4/0.3/0.3 → 0.8/0.1/0.1 →
//! 0.98/0.01/0.01, ending with 0.98 × 50 = 49 jobs) and never instance 1's. Then saturating
//! quiet on instance 1 moves instance 1's (0.4/0.3/0.3 → 0.2/0.7/0.1 → 0.01/0.98/0.01, 49
//! jobs) and never instance 0's. Neither instance is over its share, so neither's slots move
//! with the other's load either.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::{Server, preset, ratio_of, slots_of};

/// Long enough for many ratio adjustments (one every 1/6 s of wall time at 30×).
const ADJUSTMENTS: Duration = Duration::from_secs(2);
const TYPES: [&str; 3] = ["busy", "quiet", "calm"];

fn ratios(availability: &Value) -> [f64; 3] {
    TYPES.map(|t| ratio_of(availability, t))
}

fn same(a: [f64; 3], b: [f64; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

/// Asserts that `bystander` still has exactly `ratios` and `slots` (by `TYPES`).
#[track_caller]
fn assert_untouched(availability: &Value, ratios_now: [f64; 3], slots: [u64; 3], when: &str) {
    assert!(
        same(ratios(availability), ratios_now),
        "the other instance's ratios moved {when}: {availability}"
    );
    assert_eq!(
        TYPES.map(|t| slots_of(availability, t)),
        slots,
        "the other instance's slots moved {when}: {availability}"
    );
}

/// Floods `job_type` on `loaded` until refused, waits for an adjustment, floods again, until
/// its ratios stop moving; every state seen on `loaded` must be in `states`, and every look at
/// `bystander` must show it untouched. Returns the leases held.
async fn saturate(
    loaded: &Server,
    job_type: &str,
    states: &[[f64; 3]],
    bystander: (&Server, [f64; 3], [u64; 3]),
) -> Vec<String> {
    let (other, other_ratios, other_slots) = bystander;
    let mut ids = Vec::new();
    let mut seen = ratios(&loaded.availability().await);
    assert!(same(seen, states[0]), "start state {seen:?}");
    loop {
        loaded.acquire_until_refused(job_type, &mut ids).await;
        let deadline = Instant::now() + ADJUSTMENTS;
        let mut moved = false;
        while Instant::now() < deadline {
            let availability = loaded.availability().await;
            let now = ratios(&availability);
            assert!(
                states.iter().any(|s| same(*s, now)),
                "unexpected ratios {now:?} saturating {job_type}: {availability}"
            );
            let when = format!("while {job_type} is saturated elsewhere ({now:?})");
            assert_untouched(
                &other.availability().await,
                other_ratios,
                other_slots,
                &when,
            );
            if !same(now, seen) {
                seen = now;
                moved = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !moved {
            break;
        }
    }
    assert!(
        same(seen, states[states.len() - 1]),
        "{job_type} saturated: ended at {seen:?}"
    );
    ids
}

#[tokio::test]
async fn only_the_loaded_instance_adjusts_its_ratios() {
    let fleet = Fleet::start(&preset("flexible_ratios"), 2, 30);
    let initial = [0.4, 0.3, 0.3];
    // Share 50: 0.4 × 50 = 20, 0.3 × 50 = 15.
    for availability in fleet.settle_at(2, Duration::from_secs(10)).await {
        assert!(same(ratios(&availability), initial), "{availability}");
        assert_eq!(TYPES.map(|t| slots_of(&availability, t)), [20, 15, 15]);
    }
    let (first, second) = (fleet.server(0), fleet.server(1));

    // busy on instance 0: 20 → 40 → 49 jobs; instance 1 keeps 0.4/0.3/0.3 and 20/15/15 (the
    // fleet has 100 − 49 left, its whole unused share of 50).
    let busy = saturate(
        first,
        "busy",
        &[initial, [0.8, 0.1, 0.1], [0.98, 0.01, 0.01]],
        (second, initial, [20, 15, 15]),
    )
    .await;
    assert_eq!(busy.len(), 49);
    // Instance 0 now: busy 0 slots left, quiet and calm 0.01 × 50 = 0.5 ⇒ 0.
    let first_state = [0.98, 0.01, 0.01];
    let first_slots = [0, 0, 0];
    assert_untouched(
        &first.availability().await,
        first_state,
        first_slots,
        "after saturating busy",
    );

    // quiet on instance 1: 15 → 35 → 49 jobs; instance 0 keeps what its own load made of its
    // ratios, and its slots.
    let quiet = saturate(
        second,
        "quiet",
        &[initial, [0.2, 0.7, 0.1], [0.01, 0.98, 0.01]],
        (first, first_state, first_slots),
    )
    .await;
    assert_eq!(quiet.len(), 49);

    // Many more adjustment intervals with both loads held: each instance keeps its own ratios.
    tokio::time::sleep(ADJUSTMENTS).await;
    assert_untouched(
        &first.availability().await,
        first_state,
        first_slots,
        "at the end",
    );
    assert_untouched(
        &second.availability().await,
        [0.01, 0.98, 0.01],
        [0, 0, 0],
        "at the end",
    );

    for (server, ids) in [(first, &busy), (second, &quiet)] {
        for id in ids {
            let released = server
                .release(
                    id,
                    &json!({"usage": {"input_tokens": 1_000, "requests": 1}}),
                )
                .await;
            assert_eq!(released.status, 200, "{}", released.text());
        }
    }
}
