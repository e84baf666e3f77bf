//! # llmrl: a rate limiter for LLM API calls
//!
//! llmrl runs your LLM calls as *jobs*. Before a job starts it reserves the job type's estimate
//! on the first model of your escalation order that has room (waiting up to a bound, then
//! falling back to the next model); when the job ends it settles what was really used and what
//! it cost. Limits are per model: requests and tokens per minute and per UTC day, and concurrent
//! requests.
//!
//! Two faces over one engine:
//! - [`Limiter<M, J>`]: models and job types are enums (`#[derive(ModelId)]`,
//!   `#[derive(JobType)]`), so an unknown model or job type, or a missing escalation order, is
//!   a compile error.
//! - [`NamedLimiter`]: the same limiter from a TOML/JSON [`Config`], with string ids.
//!
//! Time goes through a [`Clock`]: tests run minutes and days of traffic instantly on tokio's
//! paused clock.

mod availability;
pub mod backend;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod core;
mod deadlines;
mod driver;
mod engine;
mod error;
mod escalation;
mod event;
mod fleet;
mod handle;
mod id;
mod instance;
mod job;
mod lease;
mod limiter;
mod live_ids;
mod memory;
mod named;
mod notify;
mod options;
mod outcome;
mod ratio;
mod registry;
mod run;
mod slots;

mod clock;
mod usage;
mod window;

pub use crate::availability::{
    Availability, JobTypeAvailability, JobTypeOnModel, MemoryAvailability, ModelAvailability,
    Remaining,
};
pub use crate::backend::FailureMode;
pub use crate::clock::{Clock, Sleep, Timestamp};
pub use crate::config::{
    BackendConfig, Config, ConfigError, Estimate, JobTypeConfig, MemoryConfig, ModelConfig,
    RatioAdjustmentConfig, Validated,
};
pub use crate::error::{BuildError, QueueError};
pub use crate::event::{Event, Listener, UsageAdjustment};
pub use crate::handle::{JobHandle, JobOutcome};
pub use crate::id::{Id, JobType, ModelId, SingleModel};
pub use crate::job::{JobContext, JobId, JobRequest, JobResult, NoCallback, OnComplete, OnError};
pub use crate::lease::{AcquireError, Lease};
pub use crate::limiter::{EscalationOrder, Limiter, LimiterBuilder, NoOrder, Ordered};
pub use crate::named::{NamedLimiter, NamedLimiterBuilder};
pub use crate::notify::{RelativeAdjustment, SlotsChangeReason};
pub use crate::outcome::{Cause, Completion, JobError};
pub use crate::usage::{Pricing, Usage, UsageEntry};
pub use crate::window::{Window, WindowLimit};
pub use llmrl_derive::{JobType, ModelId};
