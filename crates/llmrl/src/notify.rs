//! `on_available_slots_change` (SPEC §6.5): why slots changed, by how much a settlement moved the
//! counters, and ordered delivery outside the limiter's locks.
//!
//! The callback is on the hot path (every admission and settlement changes a slot count), so a
//! change costs a slot check and an update of figures in a snapshot reused from the previous
//! delivery: no allocation and no boxed closure unless a delivery is still running elsewhere.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::availability::Availability;
use crate::engine::Engine;

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

/// The limiter's side of `on_available_slots_change`: records each change under the engine lock
/// and delivers it after the lock is released.
pub(crate) trait SlotsHook: Send + Sync {
    /// Records a change of the slots [`Engine::slots_changed`] just found, with the state it
    /// found. Called under the engine lock.
    fn record(
        &self,
        engine: &Engine,
        reason: SlotsChangeReason,
        adjustment: Option<RelativeAdjustment>,
    );

    /// Delivers the changes recorded, in order, unless another thread (or an outer frame of
    /// this one) already is. Called after the engine lock is released.
    fn deliver(&self);
}

/// A recorded change waiting for its delivery.
struct Change<M, J> {
    availability: Availability<M, J>,
    reason: SlotsChangeReason,
    adjustment: Option<RelativeAdjustment>,
}

/// What is recorded and not yet delivered.
struct Deliveries<M, J> {
    /// Oldest first.
    queue: VecDeque<Change<M, J>>,
    /// A delivered snapshot, filled in again for the next change: its names and vectors are
    /// reused, so that a change only updates figures. Absent while a delivery holds it; the next
    /// change then gets a snapshot of its own.
    spare: Option<Availability<M, J>>,
    /// Someone is delivering (a callback that triggers another change finds this set and leaves
    /// the change to the delivery loop it runs in, instead of deadlocking or reordering).
    delivering: bool,
}

/// The user's callback with its deliveries.
pub(crate) struct SlotsCallback<M, J, F, S> {
    callback: F,
    /// Builds a snapshot from the engine, naming models and job types the face's way.
    snapshot: S,
    deliveries: Mutex<Deliveries<M, J>>,
}

impl<M, J, F, S> SlotsCallback<M, J, F, S>
where
    F: Fn(&Availability<M, J>, SlotsChangeReason, Option<&RelativeAdjustment>),
    S: Fn(&Engine) -> Availability<M, J>,
{
    pub(crate) fn new(callback: F, snapshot: S) -> Self {
        Self {
            callback,
            snapshot,
            deliveries: Mutex::new(Deliveries {
                queue: VecDeque::new(),
                spare: None,
                delivering: false,
            }),
        }
    }

    fn deliveries(&self) -> MutexGuard<'_, Deliveries<M, J>> {
        // Nothing panics while holding this lock, and the callback runs outside it.
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<M, J, F, S> SlotsHook for SlotsCallback<M, J, F, S>
where
    M: Send + 'static,
    J: Send + 'static,
    F: Fn(&Availability<M, J>, SlotsChangeReason, Option<&RelativeAdjustment>)
        + Send
        + Sync
        + 'static,
    S: Fn(&Engine) -> Availability<M, J> + Send + Sync + 'static,
{
    fn record(
        &self,
        engine: &Engine,
        reason: SlotsChangeReason,
        adjustment: Option<RelativeAdjustment>,
    ) {
        let mut deliveries = self.deliveries();
        let availability = match deliveries.spare.take() {
            Some(mut availability) => {
                engine.update_availability(&mut availability);
                availability
            }
            None => (self.snapshot)(engine),
        };
        deliveries.queue.push_back(Change {
            availability,
            reason,
            adjustment,
        });
    }

    fn deliver(&self) {
        let mut deliveries = self.deliveries();
        if deliveries.delivering {
            return;
        }
        deliveries.delivering = true;
        while let Some(change) = deliveries.queue.pop_front() {
            drop(deliveries);
            let call = || {
                (self.callback)(
                    &change.availability,
                    change.reason,
                    change.adjustment.as_ref(),
                );
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
                tracing::error!("on_available_slots_change panicked");
            }
            deliveries = self.deliveries();
            if deliveries.spare.is_none() {
                deliveries.spare = Some(change.availability);
            }
        }
        deliveries.delivering = false;
    }
}
