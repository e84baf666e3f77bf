//! How a job ended: [`Completion`] or [`JobError`], each with its usage and cost.

use std::fmt;

use crate::job::JobId;
use crate::usage::UsageEntry;

/// A job that succeeded.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Completion<M, T> {
    /// The job's id.
    pub job_id: JobId,
    /// What the job returned.
    pub value: T,
    /// The model it succeeded on.
    pub model: M,
    /// One entry per attempt that ran, in order (models skipped for lack of capacity have none).
    pub usage: Vec<UsageEntry<M>>,
    /// Sum of the entries' costs, in USD.
    pub total_cost: f64,
}

/// A job that failed, with what it used on the way.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobError<M, E> {
    /// The job's id.
    pub job_id: JobId,
    /// Why it failed.
    pub cause: Cause<E>,
    /// One entry per attempt that ran and reported its usage.
    pub usage: Vec<UsageEntry<M>>,
    /// Sum of the entries' costs, in USD.
    pub total_cost: f64,
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause<E> {
    /// No model had capacity within its wait bound. Carries the last rejection if the job was
    /// delegated on the way.
    Exhausted {
        /// The error of the last attempt that ran and delegated, if any.
        last_rejection: Option<E>,
    },
    /// The job rejected without delegation.
    Rejected(E),
    /// The job rejected, asking for delegation, on the last model of the order.
    RejectedOnLastModel(E),
    /// The job panicked; its usage is unknown, so its estimate stays counted.
    Panicked(String),
    /// The job was cancelled through its handle.
    Cancelled,
    /// The limiter stopped before the job could finish.
    ShutDown,
}

impl<E: fmt::Display> fmt::Display for Cause<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exhausted {
                last_rejection: None,
            } => f.write_str("all models exhausted: no capacity within the wait bounds"),
            Self::Exhausted {
                last_rejection: Some(e),
            } => write!(
                f,
                "all models exhausted: no capacity within the wait bounds (last rejection: {e})"
            ),
            Self::Rejected(e) => write!(f, "rejected without delegation: {e}"),
            Self::RejectedOnLastModel(e) => write!(f, "rejected on the last model: {e}"),
            Self::Panicked(message) => write!(f, "the job panicked: {message}"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::ShutDown => f.write_str("the limiter shut down"),
        }
    }
}

impl<M, E: fmt::Display> fmt::Display for JobError<M, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} failed: {}", self.job_id, self.cause)
    }
}

impl<M: fmt::Debug, E: fmt::Display + fmt::Debug> std::error::Error for JobError<M, E> {}

pub(crate) fn total_cost<M>(usage: &[UsageEntry<M>]) -> f64 {
    // Not `sum()`: an empty f64 sum is -0.0, which would print as "-0" for a job that used nothing.
    usage.iter().fold(0.0, |total, u| total + u.cost)
}
