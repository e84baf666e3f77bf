//! The handle returned by `queue_job`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::job::JobId;
use crate::outcome::{Cause, Completion, JobError};

/// The outcome of a job.
pub type JobOutcome<M, T, E> = Result<Completion<M, T>, JobError<M, E>>;

/// A queued job. Await it for the outcome; the job runs whether or not it is awaited.
///
/// Dropping the handle does not cancel the job; [`JobHandle::cancel`] does.
///
/// # Cancel safety
/// Awaiting is cancel safe: dropping the `await` (e.g. in a `select!`) leaves the job running.
#[must_use = "the job runs anyway; keep the handle to await or cancel it"]
#[derive(Debug)]
pub struct JobHandle<M, T, E> {
    outcome: oneshot::Receiver<JobOutcome<M, T, E>>,
    abort: Option<AbortHandle>,
    job_id: JobId,
}

impl<M, T, E> JobHandle<M, T, E> {
    pub(crate) const fn new(
        outcome: oneshot::Receiver<JobOutcome<M, T, E>>,
        abort: Option<AbortHandle>,
        job_id: JobId,
    ) -> Self {
        Self {
            outcome,
            abort,
            job_id,
        }
    }

    /// Cancels the job. A waiting job leaves its queue; a running one is dropped at its next
    /// await point and keeps its estimate counted (its usage is unknown). The outcome is a
    /// [`JobError`] with [`Cause::Cancelled`] and `on_error` is called, unless the job already
    /// ended.
    pub fn cancel(&self) {
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }

    /// The job's id.
    #[must_use]
    pub const fn job_id(&self) -> &JobId {
        &self.job_id
    }
}

impl<M, T, E> Future for JobHandle<M, T, E> {
    type Output = JobOutcome<M, T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.outcome).poll(cx).map(|received| {
            // The job's guard always reports; nothing does only when the runtime itself went
            // away with the task.
            received.unwrap_or_else(|_| {
                Err(JobError {
                    job_id: self.job_id.clone(),
                    cause: Cause::ShutDown,
                    usage: Vec::new(),
                    total_cost: 0.0,
                })
            })
        })
    }
}
