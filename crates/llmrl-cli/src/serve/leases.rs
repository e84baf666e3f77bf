//! The table of outstanding leases, and their expiry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llmrl::{Clock, Lease, Timestamp};

use super::api::State;

/// A lease held for a client, until it releases it or it expires.
pub(crate) struct Held {
    pub(crate) lease: Lease<Arc<str>>,
    pub(crate) expires_at: Timestamp,
}

#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<String, Held>>,
    next: AtomicU64,
}

impl Leases {
    /// Keeps `lease`; returns its id.
    pub(crate) fn insert(
        &self,
        instance: &str,
        lease: Lease<Arc<str>>,
        expires_at: Timestamp,
    ) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let salt = Clock::system().now().as_millis();
        let id = format!("{instance}-{salt:x}-{n:x}");
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Held { lease, expires_at });
        id
    }

    pub(crate) fn take(&self, id: &str) -> Option<Held> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drops every lease that expired by `now` (their jobs' usage is unknown); returns how many.
    pub(crate) fn expire(&self, now: Timestamp) -> usize {
        let expired: Vec<Held> = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let ids: Vec<String> = held
                .iter()
                .filter(|(_, h)| h.expires_at <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| held.remove(id)).collect()
        };
        expired.len()
    }

    /// Drops every lease (on shutdown).
    pub(crate) fn clear(&self) {
        let all: Vec<Held> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, h)| h)
            .collect();
        drop(all);
    }
}

/// Every second, drops the leases nobody released in time.
pub(crate) async fn expire_periodically(state: Arc<State>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let expired = state.leases.expire(state.clock.now());
        if expired > 0 {
            tracing::warn!(expired, "leases expired without being released");
            state
                .stats
                .expired
                .fetch_add(expired as u64, Ordering::Relaxed);
        }
    }
}
