//! Instance identity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A process-unique, fleet-unique-in-practice instance id: host, process, start time, sequence.
pub(crate) fn generate_id() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{nanos:x}-{n}", std::process::id())
}
