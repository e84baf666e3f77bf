//! A job's journey through the escalation order: acquire capacity, run the attempt, settle,
//! then succeed, delegate to the next model, or fail.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::Spec;
use crate::core::{Arrived, Core};
use crate::engine::Reservation;
use crate::escalation::{Escalation, delegated, first_admitting, started};
use crate::handle::{JobHandle, JobOutcome};
use crate::job::{JobContext, JobId, JobRequest, JobResult, OnComplete, OnError};
use crate::live_ids::IdHash;
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
        let mut run = Run::new(core.clone(), job_id.clone(), model_of, callbacks);
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
    // Arriving here, not in the task, keeps jobs in the order they were queued.
    let arrived = core.arrive_first(job_type);
    let admitted = arrived.admitted();
    let job = Job {
        run: Run::new(core.clone(), id, model_of, callbacks),
        job_type,
        job,
        args,
        arrived: Some(arrived),
    };
    let span = (!span.is_disabled()).then_some(span);
    // A job that waits keeps its attempt boxed: while queued, its task holds only what the
    // wait needs, whatever the size of the user's future. One admitted at once runs it inline.
    let (key, task) = if admitted {
        spawn::<Inline, _, _, _, _, _, _, _, _>(core, &job_id, job, span)
    } else {
        spawn::<Boxed, _, _, _, _, _, _, _, _>(core, &job_id, job, span)
    };
    JobHandle::spawned(task, core.clone(), key, job_id)
}

fn spawn<P, M, T, E, C, X, F, A, Fut>(
    core: &Core,
    id: &JobId,
    mut job: Job<M, T, E, C, X, F, A>,
    span: Option<tracing::Span>,
) -> (TaskKey, JoinHandle<JobOutcome<M, T, E>>)
where
    P: Placement,
    M: Clone + Send + Sync + 'static,
    F: Fn(JobContext<M, A>) -> Fut + Send + 'static,
    Fut: Future<Output = JobResult<T, E>> + Send + 'static,
    A: Clone + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
{
    let hash = core.tasks.ids.hash(id);
    match span {
        None => core.spawn_job(id, hash, |task| {
            job.run.task = Some((task, hash));
            run_job::<P, _, _, _, _, _, _, _, _>(job)
        }),
        Some(span) => core.spawn_job(id, hash, |task| {
            job.run.task = Some((task, hash));
            run_job::<P, _, _, _, _, _, _, _, _>(job).instrument(span)
        }),
    }
}

/// Where an attempt's state lives while it runs: inline in the job's task, or boxed.
trait Placement: 'static {
    type Placed<F: Future + Send>: Future<Output = F::Output> + Send;
    fn place<F: Future + Send>(attempt: F) -> Self::Placed<F>;
}

/// In the task: no allocation, for jobs admitted at once.
struct Inline;

impl Placement for Inline {
    type Placed<F: Future + Send> = F;
    fn place<F: Future + Send>(attempt: F) -> F {
        attempt
    }
}

/// In its own allocation, for jobs that wait.
struct Boxed;

impl Placement for Boxed {
    type Placed<F: Future + Send> = Pin<Box<F>>;
    fn place<F: Future + Send>(attempt: F) -> Pin<Box<F>> {
        Box::pin(attempt)
    }
}

/// A queued job: its record, and what each attempt needs.
struct Job<M, T, E, C, X, F, A>
where
    M: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
{
    run: Run<M, T, E, C, X>,
    job_type: usize,
    job: F,
    args: A,
    /// The first arrival, until the task takes it.
    arrived: Option<Arrived>,
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
    /// Its task, once spawned, and its id as the registry keeps it.
    task: Option<(TaskKey, IdHash)>,
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
        job_id: JobId,
        model_of: ModelOf<M>,
        callbacks: Callbacks<C, X>,
    ) -> Self {
        Self {
            core,
            task: None,
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
        let Some((task, id)) = self.task else { return };
        if self.callbacks.is_none() {
            self.core.tasks.ended(task, id);
            return;
        }
        let cause = if self.core.is_stopping() && !self.core.tasks.was_cancelled(task) {
            Cause::ShutDown
        } else {
            Cause::Cancelled
        };
        let outcome = self.fail(cause);
        self.core.tasks.dropped(task, id, Box::new(outcome));
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

/// How an attempt ended.
enum Ended<T, E> {
    Finished(JobResult<T, E>),
    Panicked(String),
}

/// One attempt: runs the job's future on its reservation, then settles what it used. A panic
/// or a drop settles the reservation as unknown usage.
async fn attempt<Fut, T, E>(
    core: &Core,
    job_id: &JobId,
    job: Fut,
    reservation: Reservation,
) -> Ended<T, E>
where
    Fut: Future<Output = JobResult<T, E>>,
{
    let permit = Permit {
        core,
        job_id,
        reservation: Some(reservation),
    };
    match AssertUnwindSafe(job).catch_unwind().await {
        Err(panic) => {
            drop(permit);
            Ended::Panicked(panic_message(&*panic))
        }
        Ok(result) => {
            let (JobResult::Done { usage, .. } | JobResult::Rejected { usage, .. }) = &result;
            permit.settle(usage).await;
            Ended::Finished(result)
        }
    }
}

/// The job's task. Written as a function returning an `async` block that uses `job` in place:
/// an `async fn` would keep two copies of it.
#[allow(clippy::manual_async_fn)]
fn run_job<P, M, T, E, C, X, F, A, Fut>(
    mut job: Job<M, T, E, C, X, F, A>,
) -> impl Future<Output = JobOutcome<M, T, E>>
where
    P: Placement,
    M: Clone + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    C: OnComplete<M, T>,
    X: OnError<M, E>,
    F: Fn(JobContext<M, A>) -> Fut,
    Fut: Future<Output = JobResult<T, E>> + Send,
    A: Clone,
{
    async move {
        let core = job.run.core.clone();
        let mut attempt_number = 0;
        let mut last_rejection = None;
        let mut from = 0;
        loop {
            let escalation =
                first_admitting(&core, job.job_type, from, &job.run.job_id, &mut job.arrived).await;
            let (position, reservation) = match escalation {
                Escalation::Admitted {
                    position,
                    reservation,
                } => (position, reservation),
                Escalation::Exhausted => return job.run.fail(Cause::Exhausted { last_rejection }),
                Escalation::Closed => return job.run.fail(Cause::ShutDown),
            };
            let model = core.spec.order[position];
            attempt_number += 1;
            let context = JobContext {
                model: (job.run.model_of)(&core.spec, model),
                attempt: attempt_number,
                args: job.args.clone(),
                job_id: job.run.job_id.clone(),
            };
            started(&core, &job.run.job_id, job.job_type, model, attempt_number);
            let running = attempt(&core, &job.run.job_id, (job.job)(context), reservation);
            match P::place(running).await {
                Ended::Panicked(message) => return job.run.fail(Cause::Panicked(message)),
                Ended::Finished(JobResult::Done { value, usage }) => {
                    job.run.record(model, &usage);
                    return job.run.succeed(value, model);
                }
                Ended::Finished(JobResult::Rejected {
                    error,
                    usage,
                    delegate,
                }) => {
                    job.run.record(model, &usage);
                    if !delegate {
                        return job.run.fail(Cause::Rejected(error));
                    }
                    if position + 1 == core.spec.order.len() {
                        return job.run.fail(Cause::RejectedOnLastModel(error));
                    }
                    delegated(&core, &job.run.job_id, job.job_type, model);
                    last_rejection = Some(error);
                    from = position + 1;
                }
            }
        }
    }
}
