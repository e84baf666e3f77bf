//! `on_available_slots_change` (SPEC §6.5): why slots changed, by how much a settlement moved the
//! counters, and ordered delivery outside the limiter's locks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Why the available slots changed, in priority order: when several resources changed at once,
/// the first of them is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SlotsChangeReason {
    /// A settlement's actual usage differed from its reservation; see the adjustment.
    Adjustment,
    /// Tokens per minute.
    TokensMinute,
    /// Tokens per day.
    TokensDay,
    /// Requests per minute.
    RequestsMinute,
    /// Requests per day.
    RequestsDay,
    /// Concurrent requests.
    ConcurrentRequests,
    /// Memory.
    Memory,
    /// The fleet: membership or other instances' usage changed this instance's share.
    Distributed,
}

impl SlotsChangeReason {
    /// In the order of the engine's resources: the four window limits, concurrency, memory, the
    /// fleet.
    pub(crate) const BY_RESOURCE: [Self; 7] = [
        Self::TokensMinute,
        Self::TokensDay,
        Self::RequestsMinute,
        Self::RequestsDay,
        Self::ConcurrentRequests,
        Self::Memory,
        Self::Distributed,
    ];

    /// The `snake_case` name used in logs and the CLI.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Adjustment => "adjustment",
            Self::TokensMinute => "tokens_minute",
            Self::TokensDay => "tokens_day",
            Self::RequestsMinute => "requests_minute",
            Self::RequestsDay => "requests_day",
            Self::ConcurrentRequests => "concurrent_requests",
            Self::Memory => "memory",
            Self::Distributed => "distributed",
        }
    }
}

/// How a settlement moved each counter: actual − reserved within the reservation's window (the
/// overage alone when that window had ended). Negative means capacity came back. Concurrency
/// and memory are always 0: they are released whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RelativeAdjustment {
    /// Tokens per minute.
    pub tokens_per_minute: i64,
    /// Tokens per day.
    pub tokens_per_day: i64,
    /// Requests per minute.
    pub requests_per_minute: i64,
    /// Requests per day.
    pub requests_per_day: i64,
    /// Always 0.
    pub concurrent_requests: i64,
    /// Always 0.
    pub memory_kb: i64,
}

impl RelativeAdjustment {
    pub(crate) fn set(&mut self, limit: crate::window::WindowLimit, charged: i64) {
        use crate::window::WindowLimit as L;
        let field = match limit {
            L::TokensPerMinute => &mut self.tokens_per_minute,
            L::TokensPerDay => &mut self.tokens_per_day,
            L::RequestsPerMinute => &mut self.requests_per_minute,
            L::RequestsPerDay => &mut self.requests_per_day,
        };
        *field = charged;
    }
}

type Delivery = Box<dyn FnOnce() + Send>;

/// Delivers notifications in the order they were queued, one at a time, outside the engine lock.
/// A callback that triggers another notification (say, by reading availability at a window
/// boundary) queues it; the delivering thread runs it next instead of deadlocking.
#[derive(Default)]
pub(crate) struct Deliveries {
    queue: Mutex<VecDeque<Delivery>>,
    delivering: AtomicBool,
}

impl Deliveries {
    pub(crate) fn push(&self, delivery: Delivery) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(delivery);
    }

    /// Runs queued deliveries unless another thread (or an outer frame of this one) already is.
    pub(crate) fn run(&self) {
        loop {
            if self.delivering.swap(true, Ordering::AcqRel) {
                return;
            }
            loop {
                let next = self
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some(delivery) = next else { break };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(delivery)).is_err() {
                    tracing::error!("on_available_slots_change panicked");
                }
            }
            self.delivering.store(false, Ordering::Release);
            // Something may have been queued after the last pop and before the flag dropped.
            if self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                return;
            }
        }
    }
}
