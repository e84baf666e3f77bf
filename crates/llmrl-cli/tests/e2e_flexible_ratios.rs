//! Flexible ratios follow load (SPEC §6.2, §10), end to end: one `llmrl serve` on a throwaway
//! Redis with the `flexible_ratios` preset — three flexible job types (busy 0.4, quiet 0.3,
//! calm 0.3) on a model of 100 concurrent requests, ratios adjusted every 5 s of the shared
//! clock (1/6 s of wall time at 30×; `[ratio_adjustment] interval = "5s"`).
//!
//! A type flooded with leases until refused has load 1 (> high 0.7) and receives what the idle
//! types (load 0 < low 0.3) give, `min(ratio − 0.01, 0.2) × (1 − 0)` each per adjustment:
//!
//! ```text
//! busy saturated:  (busy, quiet, calm) 0.4/0.3/0.3 → 0.8/0.1/0.1 → 0.98/0.01/0.01
//! then quiet:      0.98/0.01/0.01 → 0.78/0.21/0.01 → 0.58/0.41/0.01 → 0.38/0.61/0.01
//!                  → 0.18/0.81/0.01 → 0.01/0.98/0.01   (busy's last gift is 0.17)
//! ```
//!
//! When the adjustments run relative to the flooding is up to the clock, so a state may be
//! skipped; but every state observed must be one of these, and the end states are exact.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::flexible::{ADJUSTMENTS, TYPES, ratios, same, saturate};
use support::{Server, job_type_entry, limit_figure, preset, ratio_of, slots_of};

/// What any snapshot must satisfy: ratios summing to 1, none below min_ratio, and each type's
/// slots `floor(ratio × share) − in flight` (the parts sum to what is available, so nothing is
/// scaled).
#[track_caller]
fn assert_consistent(availability: &Value) {
    let sum: f64 = ratios(availability).iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-9,
        "ratios sum to {sum}: {availability}"
    );
    let share = limit_figure(availability, "m", "concurrent_requests", "share");
    for job_type in TYPES {
        let ratio = ratio_of(availability, job_type);
        assert!(
            ratio >= 0.01 - 1e-9,
            "{job_type} below min_ratio: {availability}"
        );
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ppb = (ratio * 1e9).round() as u64;
        let in_flight = job_type_entry(availability, job_type)["in_flight"]
            .as_u64()
            .unwrap();
        assert_eq!(
            slots_of(availability, job_type),
            (ppb * share / 1_000_000_000).saturating_sub(in_flight),
            "{job_type}'s slots do not follow its ratio: {availability}"
        );
    }
}

async fn release_all(server: &Server, ids: &[String]) {
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

#[tokio::test]
async fn ratios_move_toward_the_loaded_type_and_back() {
    let fleet = Fleet::start(&preset("flexible_ratios"), 1, 30);
    let server = fleet.server(0);
    let rest = fleet.settle_at(1, Duration::from_secs(5)).await;
    assert_consistent(&rest[0]);
    // 0.4 × 100 = 40, 0.3 × 100 = 30 each.
    assert_eq!(TYPES.map(|t| slots_of(&rest[0], t)), [40, 30, 30]);

    // Idle for many adjustment intervals: no receiver, nothing moves.
    tokio::time::sleep(ADJUSTMENTS / 2).await;
    assert!(same(ratios(&server.availability().await), [0.4, 0.3, 0.3]));

    // busy saturated ⇒ it ends with 0.98 of 100 = 98 jobs; quiet and calm at min_ratio
    // (0.01 of 100 = 1 slot each).
    let busy = saturate(
        server,
        "busy",
        &[[0.4, 0.3, 0.3], [0.8, 0.1, 0.1], [0.98, 0.01, 0.01]],
        async |availability, _| assert_consistent(availability),
    )
    .await;
    assert_eq!(busy.len(), 98);
    let saturated = server.availability().await;
    assert_eq!(TYPES.map(|t| slots_of(&saturated, t)), [0, 1, 1]);

    // busy's load falls to 0 as its jobs end: no receiver (quiet and calm are idle, and at
    // min_ratio they have nothing to give), so nothing moves ...
    release_all(server, &busy).await;
    tokio::time::sleep(ADJUSTMENTS / 2).await;
    let idle = server
        .availability_at_used("m", "concurrent_requests", 0, ADJUSTMENTS)
        .await;
    assert_consistent(&idle);
    assert!(same(ratios(&idle), [0.98, 0.01, 0.01]), "{idle}");
    assert_eq!(TYPES.map(|t| slots_of(&idle, t)), [98, 1, 1]);

    // ... until quiet is the loaded one: busy gives it 0.2 a cycle, calm has nothing to give.
    let quiet = saturate(
        server,
        "quiet",
        &[
            [0.98, 0.01, 0.01],
            [0.78, 0.21, 0.01],
            [0.58, 0.41, 0.01],
            [0.38, 0.61, 0.01],
            [0.18, 0.81, 0.01],
            [0.01, 0.98, 0.01],
        ],
        async |availability, _| assert_consistent(availability),
    )
    .await;
    assert_eq!(quiet.len(), 98);
    release_all(server, &quiet).await;
    let end = server
        .availability_at_used("m", "concurrent_requests", 0, ADJUSTMENTS)
        .await;
    assert_consistent(&end);
    assert_eq!(TYPES.map(|t| slots_of(&end, t)), [1, 98, 1]);
}
