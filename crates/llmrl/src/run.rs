//! A job's journey through the escalation order: acquire capacity, run the attempt, settle,
//! then succeed, delegate to the next model, or fail.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tracing::Instrument;

use crate::config::Spec;
use crate::core::Core;
use crate::engine::Reservation;
use crate::escalation::{Escalation, delegated, first_admitting, started};
use crate::handle::{JobHandle, JobOutcome};
use crate::job::{JobContext, JobId, JobRequest, JobResult, OnComplete, OnError};
use crate::outcome::{Cause, Completion, JobError, total_cost};
use crate::registry::TaskKey;
use crate::usage::{Usage, UsageEntry};

/// Maps a model index to the model value the caller's face uses (an enum or a name).
pub(crate) type ModelOf<M> = fn(&Spec, usize) -> M;

/// Queues a request: spawns its task, or fails it at once if the limiter is stopping.
pub(crate) fn queue<M, J, F, A, C, X, Fut, T, E>(
    core: &Arc<Core>,
    job_type: usize,
    request: JobRequest<M, J, F, A, C, X>,
    model_of: ModelOf<M>,
) -> JobHandle<M, T, E>
where
    M: Clone + Send + Sync + 'static,
    F: Fn(JobContext<M, A>) -> Fut + Send + 'static,
    Fut: Future<Output = JobResult<T, E>> + Send + 'static,
    A: Clone + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
{
    let JobRequest {
        job_id,
        job,
        args,
        on_complete,
        on_error,
        ..
    } = request;
    let callbacks = Callbacks {
        on_complete,
        on_error,
    };
    if core.is_stopping() {
        let mut run = Run::new(core.clone(), None, job_id.clone(), model_of, callbacks);
        let outcome = run.fail(Cause::ShutDown);
        return JobHandle::ready(outcome, job_id);
    }
    let id = job_id.clone();
    let span = tracing::debug_span!(
        "llmrl.job",
        job_id = %job_id,
        job_type = %core.spec.job_types[job_type].name,
        instance = %core.instance_id,
    );
    let (key, task) = if span.is_disabled() {
        core.spawn_job(|task| {
            let run = Run::new(core.clone(), Some(task), id, model_of, callbacks);
            run_job(run, job_type, job, args)
        })
    } else {
        core.spawn_job(|task| {
            let run = Run::new(core.clone(), Some(task), id, model_of, callbacks);
            run_job(run, job_type, job, args).instrument(span)
        })
    };
    JobHandle::spawned(task, core.clone(), key, job_id)
}

struct Callbacks<C, X> {
    on_complete: C,
    on_error: X,
}

/// The job's record and its promise to report exactly once: if the task is dropped before the
/// job ends (cancelled, or the limiter stopped), dropping the record reports that, and leaves
/// the outcome in the registry for the job's handle.
struct Run<M, T, E, C, X>
where
    M: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
{
    core: Arc<Core>,
    task: Option<TaskKey>,
    job_id: JobId,
    model_of: ModelOf<M>,
    usage: Vec<UsageEntry<M>>,
    callbacks: Option<Callbacks<C, X>>,
    _outcome: PhantomData<fn() -> (T, E)>,
}

impl<M, T, E, C, X> Run<M, T, E, C, X>
where
    M: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
{
    const fn new(
        core: Arc<Core>,
        task: Option<TaskKey>,
        job_id: JobId,
        model_of: ModelOf<M>,
        callbacks: Callbacks<C, X>,
    ) -> Self {
        Self {
            core,
            task,
            job_id,
            model_of,
            usage: Vec::new(),
            callbacks: Some(callbacks),
            _outcome: PhantomData,
        }
    }

    fn record(&mut self, model: usize, usage: &Usage) {
        let pricing = &self.core.spec.models[model].pricing;
        let entry = UsageEntry::new((self.model_of)(&self.core.spec, model), usage, pricing);
        self.usage.push(entry);
    }

    fn succeed(&mut self, value: T, model: usize) -> JobOutcome<M, T, E> {
        let usage = std::mem::take(&mut self.usage);
        let completion = Completion {
            job_id: self.job_id.clone(),
            value,
            model: (self.model_of)(&self.core.spec, model),
            total_cost: total_cost(&usage),
            usage,
        };
        tracing::debug!(model = %self.core.spec.models[model].name, "job completed");
        if let Some(callbacks) = self.callbacks.take() {
            let on_complete = callbacks.on_complete;
            guard_callback(
                &self.job_id,
                AssertUnwindSafe(|| on_complete.call(&completion)),
            );
        }
        Ok(completion)
    }

    fn fail(&mut self, cause: Cause<E>) -> JobOutcome<M, T, E> {
        let usage = std::mem::take(&mut self.usage);
        let error = JobError {
            job_id: self.job_id.clone(),
            cause,
            total_cost: total_cost(&usage),
            usage,
        };
        tracing::debug!(cause = cause_name(&error.cause), "job failed");
        if let Some(callbacks) = self.callbacks.take() {
            let on_error = callbacks.on_error;
            guard_callback(&self.job_id, AssertUnwindSafe(|| on_error.call(&error)));
        }
        Err(error)
    }
}

impl<M, T, E, C, X> Drop for Run<M, T, E, C, X>
where
    M: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
{
    fn drop(&mut self) {
        let Some(task) = self.task else { return };
        if self.callbacks.is_none() {
            self.core.tasks.ended(task);
            return;
        }
        let cause = if self.core.is_stopping() {
            Cause::ShutDown
        } else {
            Cause::Cancelled
        };
        let outcome = self.fail(cause);
        self.core.tasks.dropped(task, Box::new(outcome));
    }
}

const fn cause_name<E>(cause: &Cause<E>) -> &'static str {
    match cause {
        Cause::Exhausted { .. } => "exhausted",
        Cause::Rejected(_) => "rejected",
        Cause::RejectedOnLastModel(_) => "rejected on last model",
        Cause::Panicked(_) => "panicked",
        Cause::Cancelled => "cancelled",
        Cause::ShutDown => "shut down",
    }
}

/// Runs a user callback; a panic in it is logged, never allowed to disturb the limiter.
fn guard_callback(job_id: &JobId, callback: AssertUnwindSafe<impl FnOnce()>) {
    if let Err(panic) = std::panic::catch_unwind(callback) {
        tracing::error!(job_id = %job_id, panic = panic_message(&*panic), "a job callback panicked");
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// A reservation held by a running attempt. Settled with the attempt's usage, or, if dropped
/// (panic, cancellation, shutdown), settled as unknown usage: the estimate stays counted and the
/// concurrency unit is freed.
struct Permit<'a> {
    core: &'a Core,
    job_id: &'a JobId,
    reservation: Option<Reservation>,
}

impl Permit<'_> {
    async fn settle(mut self, usage: &Usage) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        if let Some(settlement) = self.core.settle(reservation, Some(usage), self.job_id) {
            // Boxed: only fleet members report, and every job would otherwise carry the state.
            Box::pin(self.core.report(settlement)).await;
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        if let Some(settlement) = self.core.settle(reservation, None, self.job_id) {
            self.core.report_later(settlement);
        }
    }
}

async fn run_job<M, T, E, C, X, F, A, Fut>(
    mut run: Run<M, T, E, C, X>,
    job_type: usize,
    job: F,
    args: A,
) -> JobOutcome<M, T, E>
where
    M: Clone + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
    F: Fn(JobContext<M, A>) -> Fut,
    Fut: Future<Output = JobResult<T, E>>,
    A: Clone,
{
    let core = run.core.clone();
    let job_id = run.job_id.clone();
    let mut attempt = 0;
    let mut last_rejection = None;
    let mut from = 0;
    loop {
        let (position, reservation) = match first_admitting(&core, job_type, from, &job_id).await {
            Escalation::Admitted {
                position,
                reservation,
            } => (position, reservation),
            Escalation::Exhausted => return run.fail(Cause::Exhausted { last_rejection }),
            Escalation::Closed => return run.fail(Cause::ShutDown),
        };
        let model = core.spec.order[position];
        attempt += 1;
        let permit = Permit {
            core: &core,
            job_id: &job_id,
            reservation: Some(reservation),
        };
        let context = JobContext {
            model: (run.model_of)(&core.spec, model),
            attempt,
            args: args.clone(),
            job_id: job_id.clone(),
        };
        started(&core, &job_id, job_type, model, attempt);
        match AssertUnwindSafe(job(context)).catch_unwind().await {
            Err(panic) => {
                drop(permit);
                return run.fail(Cause::Panicked(panic_message(&*panic)));
            }
            Ok(JobResult::Done { value, usage }) => {
                permit.settle(&usage).await;
                run.record(model, &usage);
                return run.succeed(value, model);
            }
            Ok(JobResult::Rejected {
                error,
                usage,
                delegate,
            }) => {
                permit.settle(&usage).await;
                run.record(model, &usage);
                if !delegate {
                    return run.fail(Cause::Rejected(error));
                }
                if position + 1 == core.spec.order.len() {
                    return run.fail(Cause::RejectedOnLastModel(error));
                }
                delegated(&core, &job_id, job_type, model);
                last_rejection = Some(error);
                from = position + 1;
            }
        }
    }
}
