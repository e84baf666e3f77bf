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

use std::time::Duration;

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::flexible::{ADJUSTMENTS, TYPES, ratios, same, saturate};
use support::{Server, preset, slots_of};

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

/// A check for [`saturate`]: at every look at the loaded instance, `other` is untouched.
fn bystander<'a>(
    other: &'a Server,
    ratios: [f64; 3],
    slots: [u64; 3],
    job_type: &'a str,
) -> impl AsyncFnMut(&Value, [f64; 3]) + 'a {
    async move |_, now| {
        let when = format!("while {job_type} is saturated elsewhere ({now:?})");
        assert_untouched(&other.availability().await, ratios, slots, &when);
    }
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
        bystander(second, initial, [20, 15, 15], "busy"),
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
        bystander(first, first_state, first_slots, "quiet"),
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
