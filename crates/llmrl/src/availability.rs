//! What an instance can start now: the snapshot returned by `availability()` (SPEC §6.5).

use crate::window::WindowLimit;

/// A snapshot of one instance's capacity.
///
/// `M` and `J` are the model and job type values of the limiter's face (enums for
/// [`Limiter`](crate::Limiter), `Arc<str>` names for [`NamedLimiter`](crate::NamedLimiter)).
/// Unbounded quantities are `None`, never a huge number.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Availability<M, J> {
    /// Jobs of any type this instance can start now (`None`: unbounded).
    pub slots: Option<u64>,
    /// Per job type, in declaration order.
    pub job_types: Vec<JobTypeAvailability<M, J>>,
    /// Per model, in declaration order.
    pub models: Vec<ModelAvailability<M>>,
    /// The process memory budget, when some job type estimates memory.
    pub memory: Option<MemoryAvailability>,
    /// Live instances sharing the models' limits (1 when alone).
    pub instances: usize,
}

/// The process memory budget (shared by every limiter in the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MemoryAvailability {
    /// The budget in KB (fixed, or measured × `free_memory_ratio`).
    pub total_kb: u64,
    /// What no job of any limiter in the process holds.
    pub free_kb: u64,
    /// What this limiter's running jobs hold.
    pub held_kb: u64,
}

/// One job type's share of the instance.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct JobTypeAvailability<M, J> {
    /// The job type.
    pub job_type: J,
    /// Jobs of this type that can start now, over all models (`None`: unbounded).
    pub slots: Option<u64>,
    /// Its current ratio.
    pub ratio: f64,
    /// Whether the ratio adapts to load.
    pub flexible: bool,
    /// Jobs of this type running now.
    pub in_flight: u64,
    /// Memory its running jobs hold, in KB.
    pub memory_kb: u64,
    /// The same per model, in declaration order.
    pub models: Vec<JobTypeOnModel<M>>,
}

/// One job type on one model.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct JobTypeOnModel<M> {
    /// The model.
    pub model: M,
    /// Jobs of this type that can start on this model now (`None`: unbounded).
    pub slots: Option<u64>,
    /// Jobs of this type running on this model.
    pub in_flight: u64,
    /// Jobs of this type waiting for this model.
    pub waiting: u64,
    /// This instance's fair share of some limit of the model is smaller than one job of this
    /// type: the type cannot start here at the current fleet size (a warning is logged too).
    pub stranded: bool,
}

/// One model's limits as this instance sees them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ModelAvailability<M> {
    /// The model.
    pub model: M,
    /// Tokens per minute (`None`: no such limit).
    pub tokens_per_minute: Option<Remaining>,
    /// Tokens per UTC day.
    pub tokens_per_day: Option<Remaining>,
    /// Requests per minute.
    pub requests_per_minute: Option<Remaining>,
    /// Requests per UTC day.
    pub requests_per_day: Option<Remaining>,
    /// Concurrent requests (`used` is the number in flight).
    pub concurrent_requests: Option<Remaining>,
}

impl<M> ModelAvailability<M> {
    /// The figures of one window limit.
    #[must_use]
    pub const fn window(&self, limit: WindowLimit) -> Option<&Remaining> {
        match limit {
            WindowLimit::TokensPerMinute => self.tokens_per_minute.as_ref(),
            WindowLimit::TokensPerDay => self.tokens_per_day.as_ref(),
            WindowLimit::RequestsPerMinute => self.requests_per_minute.as_ref(),
            WindowLimit::RequestsPerDay => self.requests_per_day.as_ref(),
        }
    }
}

/// The figures of one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Remaining {
    /// The provider's limit.
    pub limit: u64,
    /// Used in the current window (or in flight), fleet-wide.
    pub used: u64,
    /// What the fleet has left: `limit − used`, 0 after an overage (`R` in SPEC §7.1).
    pub remaining: u64,
    /// What this instance may still take (`A`: all of `remaining` when alone, its part of the
    /// fair share in a fleet).
    pub available: u64,
    /// This instance's fair share of the limit (the whole limit when alone).
    pub share: u64,
    /// What this instance used of it in the current window (in flight, for concurrency).
    pub own: u64,
}
