//! Errors of building and using a limiter.

use crate::config::ConfigError;

/// Building a limiter failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid; every problem is listed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `build()` was called outside a tokio runtime; the limiter needs one for its tasks.
    #[error("a limiter must be built inside a tokio runtime (its jobs and timers run there)")]
    NoRuntime,
    /// Another limiter in this process already uses the process memory budget with other
    /// settings; every limiter of a process shares one budget, so they must agree.
    #[error(
        "memory settings conflict: this process's limiters share one memory budget ({existing}), \
         but this limiter asks for {requested}"
    )]
    MemoryConflict {
        /// The budget's current settings.
        existing: String,
        /// This limiter's settings.
        requested: String,
    },
}

/// Queueing a job on a [`NamedLimiter`](crate::NamedLimiter) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The job type is not configured.
    #[error("unknown job type {name:?} (configured: {known})")]
    UnknownJobType {
        /// The name given.
        name: String,
        /// The configured names, comma-separated.
        known: String,
    },
}
