//! Events a limiter reports to an optional listener.

use std::sync::Arc;

use crate::job::JobId;
use crate::window::WindowLimit;

/// A listener for [`Event`]s. Called synchronously, outside the limiter's locks; keep it quick.
pub type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Something that happened in a limiter.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// An attempt of a job started on a model.
    Started {
        /// The job.
        job_id: JobId,
        /// Its job type.
        job_type: Arc<str>,
        /// The model it runs on.
        model: Arc<str>,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A job found no capacity on a model within its wait bound and moves to the next model
    /// (or, after the last one, fails as exhausted).
    Escalated {
        /// The job.
        job_id: JobId,
        /// Its job type.
        job_type: Arc<str>,
        /// The model it gave up on.
        from: Arc<str>,
    },
    /// A job rejected on a model and asked to be retried on the next one.
    Delegated {
        /// The job.
        job_id: JobId,
        /// Its job type.
        job_type: Arc<str>,
        /// The model that rejected it.
        from: Arc<str>,
    },
    /// The fleet refused a reservation this instance had made from its own view of the fleet
    /// (the view was behind: other instances used the room meanwhile). The instance takes the
    /// fleet's figures in and the job goes back to the front of its queue on that model.
    AdmissionRefused {
        /// The job type.
        job_type: Arc<str>,
        /// The model the fleet refused.
        model: Arc<str>,
    },
    /// A settlement moved a window counter: actual usage differed from the estimate (SPEC §4.4).
    UsageAdjusted(UsageAdjustment),
    /// A flexible job type's ratio moved (on this instance only).
    RatioChanged {
        /// The job type.
        job_type: Arc<str>,
        /// Its ratio before.
        from: f64,
        /// Its ratio now.
        to: f64,
    },
}

/// A job's actual usage differed from its estimate on one window limit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UsageAdjustment {
    /// The job.
    pub job_id: JobId,
    /// The model it ran on.
    pub model: Arc<str>,
    /// Its job type.
    pub job_type: Arc<str>,
    /// The window limit settled.
    pub limit: WindowLimit,
    /// What was reserved.
    pub estimated: u64,
    /// What the job reported.
    pub actual: u64,
    /// What the counter moved by: `actual − estimated` within the reservation's window (negative
    /// is a refund), or the overage alone, charged to the current window, when that window is
    /// over (`cross_window`).
    pub charged: i64,
    /// The reservation's window had ended when the job settled.
    pub cross_window: bool,
}

impl UsageAdjustment {
    /// Whether more was used than estimated.
    #[must_use]
    pub const fn is_overage(&self) -> bool {
        self.charged > 0
    }
}
