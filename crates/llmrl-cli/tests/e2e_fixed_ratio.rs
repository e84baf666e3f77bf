//! A fixed-ratio job type is unaffected when a flexible one is saturated (SPEC §6.1, §6.2), end
//! to end: one `llmrl serve` on a throwaway Redis with the `fixed_and_flexible` preset — a model
//! of 50 concurrent requests shared by `steady` (fixed 0.4), `bursty` (flexible 0.4) and `spare`
//! (flexible 0.2), ratios adjusted every 5 s of the shared clock (1/6 s of wall time at 30×).
//!
//! Flooding `bursty` with leases saturates it (load 1) while `spare` idles (load 0), so
//! `spare` gives `min(0.2 − 0.01, 0.2) × (1 − 0) = 0.19` to `bursty`: 0.59 of 50 = 29.5 ⇒ 29
//! slots, `spare` 0.01 of 50 = 0.5 ⇒ 0. Throughout, `steady` keeps ratio 0.4 and 20 slots, and
//! then takes its 20 jobs at once.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::{Server, preset, ratio_of, slots_of};

/// Long enough for several ratio adjustments (one every 1/6 s of wall time at 30×).
const ADJUSTMENTS: Duration = Duration::from_secs(2);

#[track_caller]
fn assert_steady(availability: &Value, when: &str) {
    assert_eq!(
        slots_of(availability, "steady"),
        20,
        "steady's slots {when}: {availability}"
    );
    assert!(
        (ratio_of(availability, "steady") - 0.4).abs() < 1e-9,
        "steady's ratio {when}: {availability}"
    );
}

/// Acquires `job_type` leases until one is refused (429, at once: max_wait 0), checking
/// `steady` after each. Returns the lease ids.
async fn flood(server: &Server, job_type: &str, ids: &mut Vec<String>) {
    loop {
        let answer = server
            .acquire(job_type, Some(&format!("{job_type}-{}", ids.len())))
            .await;
        if answer.status == 429 {
            return;
        }
        assert_eq!(answer.status, 200, "{}", answer.text());
        ids.push(answer.json()["lease_id"].as_str().unwrap().to_owned());
        assert_steady(
            &server.availability().await,
            &format!("with {} {job_type} held", ids.len()),
        );
    }
}

#[tokio::test]
async fn fixed_type_keeps_its_slots_while_a_flexible_one_is_saturated() {
    let fleet = Fleet::start(&preset("fixed_and_flexible"), 1, 30);
    let server = fleet.server(0);
    let rest = fleet.settle_at(1, Duration::from_secs(5)).await;
    assert_steady(&rest[0], "at rest");
    // 0.4 × 50 = 20, 0.2 × 50 = 10.
    assert_eq!(slots_of(&rest[0], "bursty"), 20);
    assert_eq!(slots_of(&rest[0], "spare"), 10);

    // Flood bursty until it is refused, let the adjustments run, flood again, until its ratio
    // stops growing.
    let mut bursty = Vec::new();
    let mut ratio = ratio_of(&rest[0], "bursty");
    loop {
        flood(server, "bursty", &mut bursty).await;
        let deadline = Instant::now() + ADJUSTMENTS;
        let mut grew = false;
        while Instant::now() < deadline {
            let availability = server.availability().await;
            assert_steady(&availability, "while bursty is saturated");
            let now = ratio_of(&availability, "bursty");
            assert!(
                now >= ratio,
                "bursty's ratio fell from {ratio}: {availability}"
            );
            if now > ratio {
                ratio = now;
                grew = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !grew {
            break;
        }
    }
    let saturated = server.availability().await;
    assert_steady(&saturated, "once bursty took all it could");
    // bursty: 0.4 + 0.19 = 0.59 ⇒ floor(29.5) = 29 jobs held; spare: 0.01 (min_ratio).
    assert_eq!(bursty.len(), 29, "{saturated}");
    assert!(
        (ratio_of(&saturated, "bursty") - 0.59).abs() < 1e-9,
        "{saturated}"
    );
    assert!(
        (ratio_of(&saturated, "spare") - 0.01).abs() < 1e-9,
        "{saturated}"
    );
    assert_eq!(slots_of(&saturated, "bursty"), 0);
    assert_eq!(slots_of(&saturated, "spare"), 0);

    // steady takes its 20 jobs at once, one by one, and not one more.
    let mut steady = Vec::new();
    for n in 1..=20_u64 {
        let started = Instant::now();
        let lease = server.lease("steady", Some(&format!("steady-{n}"))).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "steady waited {took:?}");
        steady.push(lease["lease_id"].as_str().unwrap().to_owned());
        let availability = server.availability().await;
        assert_eq!(slots_of(&availability, "steady"), 20 - n, "{availability}");
        assert!((ratio_of(&availability, "steady") - 0.4).abs() < 1e-9);
    }
    let refused = server.acquire("steady", Some("steady-21")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());

    // Everything back: the ratios stay where the load put them (nothing is loaded now, so no
    // receiver: nothing moves), steady has its 20 slots again.
    for id in steady.iter().chain(&bursty) {
        let released = server
            .release(
                id,
                &json!({"usage": {"input_tokens": 1_000, "requests": 1}}),
            )
            .await;
        assert_eq!(released.status, 200, "{}", released.text());
    }
    let idle = server
        .availability_at_used("m", "concurrent_requests", 0, Duration::from_secs(5))
        .await;
    assert_steady(&idle, "after everything was released");
    assert_eq!(slots_of(&idle, "bursty"), 29, "{idle}");
}
