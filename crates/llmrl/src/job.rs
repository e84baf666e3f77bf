//! A job: what the user asks the limiter to run, and what each attempt returns.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use crate::outcome::{Completion, JobError};
use crate::usage::Usage;

/// A job's id, for tracing and reports. Cheap to clone; duplicates are allowed (and logged).
/// Ids compare, hash and order by their text, however they were built.
#[derive(Clone)]
pub struct JobId(Repr);

impl PartialEq for JobId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for JobId {}

impl std::hash::Hash for JobId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for JobId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for JobId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl JobId {
    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl Deref for JobId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for JobId {
    fn from(s: &'static str) -> Self {
        Self(Repr::Static(s))
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        Self(Repr::Shared(s.into()))
    }
}

impl From<Arc<str>> for JobId {
    fn from(s: Arc<str>) -> Self {
        Self(Repr::Shared(s))
    }
}

impl PartialEq<str> for JobId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for JobId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What one attempt of a job returns: it either succeeded or was rejected, and says what it used
/// either way.
#[derive(Debug)]
pub enum JobResult<T, E> {
    /// The job succeeded on this model.
    Done {
        /// The job's value.
        value: T,
        /// What the attempt used.
        usage: Usage,
    },
    /// The attempt failed.
    Rejected {
        /// Why.
        error: E,
        /// What the attempt used before failing.
        usage: Usage,
        /// Retry on the next model of the escalation order (`true`, the default) or end the
        /// job with this error.
        delegate: bool,
    },
}

impl<T, E> JobResult<T, E> {
    /// Success with `value`, having used `usage`.
    pub const fn done(value: T, usage: Usage) -> Self {
        Self::Done { value, usage }
    }

    /// Failure that asks to be retried on the next model (delegation).
    pub const fn rejected(error: E, usage: Usage) -> Self {
        Self::Rejected {
            error,
            usage,
            delegate: true,
        }
    }

    /// Failure that ends the job: no other model is tried.
    pub const fn rejected_final(error: E, usage: Usage) -> Self {
        Self::Rejected {
            error,
            usage,
            delegate: false,
        }
    }
}

/// What a job's closure receives for each attempt.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobContext<M, A = ()> {
    /// The model this attempt must call.
    pub model: M,
    /// Attempt number: counts the runs of this job, from 1.
    pub attempt: u32,
    /// The job's arguments (the same for every attempt).
    pub args: A,
    /// The job's id.
    pub job_id: JobId,
}

/// Marker for "no callback given".
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCallback;

/// Called once when a job succeeds. Implemented by `FnOnce(&Completion<M, T>)` closures.
pub trait OnComplete<M, T>: Send + 'static {
    /// Delivers the completion.
    fn call(self, completion: &Completion<M, T>);
}

impl<M, T> OnComplete<M, T> for NoCallback {
    fn call(self, _: &Completion<M, T>) {}
}

impl<M, T, F: FnOnce(&Completion<M, T>) + Send + 'static> OnComplete<M, T> for F {
    fn call(self, completion: &Completion<M, T>) {
        self(completion);
    }
}

/// Called once when a job fails. Implemented by `FnOnce(&JobError<M, E>)` closures.
pub trait OnError<M, E>: Send + 'static {
    /// Delivers the failure.
    fn call(self, error: &JobError<M, E>);
}

impl<M, E> OnError<M, E> for NoCallback {
    fn call(self, _: &JobError<M, E>) {}
}

impl<M, E, F: FnOnce(&JobError<M, E>) + Send + 'static> OnError<M, E> for F {
    fn call(self, error: &JobError<M, E>) {
        self(error);
    }
}

/// A job to queue: id, job type, the closure called once per attempt, its arguments and
/// optional callbacks.
///
/// `M` is the model type the closure receives; it is inferred from the limiter the request is
/// queued on.
#[must_use = "a request does nothing until it is queued"]
pub struct JobRequest<M, J, F, A = (), C = NoCallback, X = NoCallback> {
    pub(crate) job_id: JobId,
    pub(crate) job_type: J,
    pub(crate) job: F,
    pub(crate) args: A,
    pub(crate) on_complete: C,
    pub(crate) on_error: X,
    _model: std::marker::PhantomData<fn() -> M>,
}

impl<M, J, F, Fut, T, E> JobRequest<M, J, F>
where
    F: Fn(JobContext<M>) -> Fut,
    Fut: Future<Output = JobResult<T, E>>,
{
    /// A job without arguments.
    pub fn new(job_id: impl Into<JobId>, job_type: J, job: F) -> Self {
        Self::with_args(job_id, job_type, (), job)
    }
}

impl<M, J, F, A, Fut, T, E> JobRequest<M, J, F, A>
where
    F: Fn(JobContext<M, A>) -> Fut,
    Fut: Future<Output = JobResult<T, E>>,
{
    /// A job whose closure receives `args` (cloned for each attempt).
    pub fn with_args(job_id: impl Into<JobId>, job_type: J, args: A, job: F) -> Self {
        Self {
            job_id: job_id.into(),
            job_type,
            job,
            args,
            on_complete: NoCallback,
            on_error: NoCallback,
            _model: std::marker::PhantomData,
        }
    }
}

impl<M, J, F, A, C, X, Fut, T, E> JobRequest<M, J, F, A, C, X>
where
    F: Fn(JobContext<M, A>) -> Fut,
    Fut: Future<Output = JobResult<T, E>>,
{
    /// Called once, with the completion, when the job succeeds.
    pub fn on_complete<C2>(self, on_complete: C2) -> JobRequest<M, J, F, A, C2, X>
    where
        C2: FnOnce(&Completion<M, T>) + Send + 'static,
    {
        JobRequest {
            job_id: self.job_id,
            job_type: self.job_type,
            job: self.job,
            args: self.args,
            on_complete,
            on_error: self.on_error,
            _model: std::marker::PhantomData,
        }
    }

    /// Called once, with the error, when the job fails for any reason.
    pub fn on_error<X2>(self, on_error: X2) -> JobRequest<M, J, F, A, C, X2>
    where
        X2: FnOnce(&JobError<M, E>) + Send + 'static,
    {
        JobRequest {
            job_id: self.job_id,
            job_type: self.job_type,
            job: self.job,
            args: self.args,
            on_complete: self.on_complete,
            on_error,
            _model: std::marker::PhantomData,
        }
    }

    /// The job's id.
    pub const fn job_id(&self) -> &JobId {
        &self.job_id
    }
}
