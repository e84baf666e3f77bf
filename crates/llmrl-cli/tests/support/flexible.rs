//! The `flexible_ratios` preset's job types and how its suites drive them: flood a type until
//! refused and watch its ratios move, adjustment by adjustment.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Server, ratio_of};

/// Long enough for many ratio adjustments (one every 1/6 s of wall time at 30×).
pub const ADJUSTMENTS: Duration = Duration::from_secs(2);
/// The preset's job types, in the order ratios and slots are given in.
pub const TYPES: [&str; 3] = ["busy", "quiet", "calm"];

/// The three ratios of a snapshot, in `TYPES` order.
pub fn ratios(availability: &Value) -> [f64; 3] {
    TYPES.map(|t| ratio_of(availability, t))
}

pub fn same(a: [f64; 3], b: [f64; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

/// Floods `job_type` on `server` until refused, waits for an adjustment, floods again, until
/// its ratios stop moving. Every state seen must be in `states` (the expected sequence, the
/// last one the end state); `check` looks at each snapshot too. Returns the leases held.
pub async fn saturate(
    server: &Server,
    job_type: &str,
    states: &[[f64; 3]],
    mut check: impl AsyncFnMut(&Value, [f64; 3]),
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut seen = ratios(&server.availability().await);
    assert!(same(seen, states[0]), "start state {seen:?}");
    loop {
        server.acquire_until_refused(job_type, &mut ids).await;
        let deadline = Instant::now() + ADJUSTMENTS;
        let mut moved = false;
        while Instant::now() < deadline {
            let availability = server.availability().await;
            let now = ratios(&availability);
            assert!(
                states.iter().any(|s| same(*s, now)),
                "unexpected ratios {now:?} saturating {job_type}: {availability}"
            );
            check(&availability, now).await;
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
        "{job_type} saturated: ended at {seen:?}, not {:?}",
        states[states.len() - 1]
    );
    ids
}
