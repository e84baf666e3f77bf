//! The handle returned by `queue_job`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::task::JoinHandle;

use crate::core::Core;
use crate::job::JobId;
use crate::outcome::{Cause, Completion, JobError};
use crate::registry::TaskKey;

/// The outcome of a job.
pub type JobOutcome<M, T, E> = Result<Completion<M, T>, JobError<M, E>>;

/// A queued job. Await it for the outcome; the job runs whether or not it is awaited.
///
/// Dropping the handle does not cancel the job; [`JobHandle::cancel`] does.
///
/// # Cancel safety
/// Awaiting is cancel safe: dropping the `await` (e.g. in a `select!`) leaves the job running.
#[must_use = "the job runs anyway; keep the handle to await or cancel it"]
pub struct JobHandle<M, T, E> {
    state: State<M, T, E>,
    job_id: JobId,
}

enum State<M, T, E> {
    /// The job's task: its output is the outcome, unless the task was dropped before the job
    /// ended, in which case the outcome waits in the registry under `key`.
    Spawned {
        task: JoinHandle<JobOutcome<M, T, E>>,
        core: Arc<Core>,
        key: TaskKey,
    },
    /// Decided before any task ran (the limiter was stopping).
    Ready(Box<JobOutcome<M, T, E>>),
    Read,
}

impl<M, T, E> std::fmt::Debug for JobHandle<M, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

impl<M, T, E> JobHandle<M, T, E> {
    pub(crate) const fn spawned(
        task: JoinHandle<JobOutcome<M, T, E>>,
        core: Arc<Core>,
        key: TaskKey,
        job_id: JobId,
    ) -> Self {
        Self {
            state: State::Spawned { task, core, key },
            job_id,
        }
    }

    pub(crate) fn ready(outcome: JobOutcome<M, T, E>, job_id: JobId) -> Self {
        Self {
            state: State::Ready(Box::new(outcome)),
            job_id,
        }
    }

    /// Cancels the job. A waiting job leaves its queue; a running one is dropped at its next
    /// await point and keeps its estimate counted (its usage is unknown). The outcome is a
    /// [`JobError`] with [`Cause::Cancelled`] and `on_error` is called, unless the job already
    /// ended.
    pub fn cancel(&self) {
        if let State::Spawned { core, key, .. } = &self.state {
            core.tasks.cancel(*key);
        }
    }

    /// The job's id.
    #[must_use]
    pub const fn job_id(&self) -> &JobId {
        &self.job_id
    }
}

impl<M: 'static, T: 'static, E: 'static> Future for JobHandle<M, T, E> {
    type Output = JobOutcome<M, T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let outcome = match &mut this.state {
            State::Spawned { task, core, key } => match ready!(Pin::new(task).poll(cx)) {
                Ok(outcome) => outcome,
                Err(_) => core
                    .tasks
                    .take_outcome(*key)
                    .and_then(|outcome| outcome.downcast::<JobOutcome<M, T, E>>().ok())
                    .map_or_else(|| shut_down(&this.job_id), |outcome| *outcome),
            },
            State::Ready(outcome) => {
                let outcome = std::mem::replace(&mut **outcome, shut_down(&this.job_id));
                this.state = State::Read;
                return Poll::Ready(outcome);
            }
            State::Read => shut_down(&this.job_id),
        };
        this.state = State::Read;
        Poll::Ready(outcome)
    }
}

/// What a handle reports if the runtime itself went away with the task.
fn shut_down<M, T, E>(job_id: &JobId) -> JobOutcome<M, T, E> {
    Err(JobError {
        job_id: job_id.clone(),
        cause: Cause::ShutDown,
        usage: Vec::new(),
        total_cost: 0.0,
    })
}

impl<M, T, E> Drop for JobHandle<M, T, E> {
    fn drop(&mut self) {
        if let State::Spawned { core, key, task } = &self.state {
            if task.is_finished() {
                // Either the outcome is in the task (nothing registered) or a dropped task left
                // it in the registry, where nobody will read it now.
                drop(core.tasks.take_outcome(*key));
            } else {
                core.tasks.handle_dropped(*key);
            }
        }
    }
}
