//! The string-keyed face: the same limiter from a config file or from code with string ids.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::availability::Availability;
use crate::clock::Clock;
use crate::config::{Config, Spec};
use crate::core::Core;
use crate::engine::Engine;
use crate::error::{BuildError, QueueError};
use crate::handle::JobHandle;
use crate::job::{JobContext, JobId, JobRequest, JobResult, OnComplete, OnError};
use crate::lease::{AcquireError, Lease};
use crate::notify::{RelativeAdjustment, SlotsChangeReason};
use crate::options::{Options, setters};
use crate::run;

/// A limiter whose models and job types are named by strings, built from a [`Config`].
///
/// Models reach jobs and usage entries as `Arc<str>` ids. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use llmrl::{Config, JobContext, JobRequest, JobResult, NamedLimiter, Usage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::from_toml_str(r#"
///     [models.local]
///     max_concurrent_requests = 4
///     pricing = { input = 0, cached = 0, output = 0 }
///     [job_types.chat]
///     estimated_tokens = 500
/// "#)?;
/// let limiter = NamedLimiter::builder(config).build()?;
/// let handle = limiter.queue_job(JobRequest::new("job-1", "chat", |ctx: JobContext<Arc<str>>| async move {
///     JobResult::<_, String>::done(ctx.model.to_string(), Usage::new().output_tokens(120))
/// }))?;
/// assert_eq!(handle.await?.value, "local");
/// limiter.stop(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NamedLimiter {
    core: Arc<Core>,
    job_types: Arc<HashMap<Arc<str>, usize>>,
}

impl std::fmt::Debug for NamedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedLimiter")
            .field("instance_id", &self.core.instance_id)
            .finish_non_exhaustive()
    }
}

impl NamedLimiter {
    /// Starts a builder from a configuration (validated at `build()`).
    pub fn builder(config: Config) -> NamedLimiterBuilder {
        NamedLimiterBuilder {
            config,
            options: Options::default(),
        }
    }

    /// Queues a job of the named type.
    ///
    /// # Errors
    /// [`QueueError::UnknownJobType`] if no such job type is configured.
    pub fn queue_job<S, F, A, C, X, Fut, T, E>(
        &self,
        request: JobRequest<Arc<str>, S, F, A, C, X>,
    ) -> Result<JobHandle<Arc<str>, T, E>, QueueError>
    where
        S: AsRef<str>,
        F: Fn(JobContext<Arc<str>, A>) -> Fut + Send + 'static,
        Fut: Future<Output = JobResult<T, E>> + Send + 'static,
        A: Clone + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
        C: OnComplete<Arc<str>, T>,
        X: OnError<Arc<str>, E>,
    {
        let job_type = self.job_type_index(request.job_type.as_ref())?;
        Ok(run::queue(&self.core, job_type, request, |spec, model| {
            spec.models[model].name.clone()
        }))
    }

    /// Acquires capacity for one job of the named type that the caller runs itself; see
    /// [`Limiter::acquire`](crate::Limiter::acquire).
    ///
    /// # Errors
    /// [`QueueError::UnknownJobType`] for an unknown job type; otherwise the inner
    /// [`AcquireError`].
    pub async fn acquire(
        &self,
        job_id: impl Into<JobId>,
        job_type: &str,
    ) -> Result<Result<Lease<Arc<str>>, AcquireError>, QueueError> {
        let job_type = self.job_type_index(job_type)?;
        Ok(Lease::acquire(
            self.core.clone(),
            job_type,
            job_id.into(),
            |spec, model| spec.models[model].name.clone(),
            0,
            1,
        )
        .await)
    }

    fn job_type_index(&self, name: &str) -> Result<usize, QueueError> {
        self.job_types
            .get(name)
            .copied()
            .ok_or_else(|| QueueError::UnknownJobType {
                name: name.to_owned(),
                known: self.job_type_names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Configured model ids, in configuration order.
    pub fn model_ids(&self) -> impl Iterator<Item = &str> {
        self.core.spec.models.iter().map(|m| &*m.name)
    }

    /// Configured job type names, in configuration order.
    pub fn job_type_names(&self) -> impl Iterator<Item = &str> {
        self.core.spec.job_types.iter().map(|t| &*t.name)
    }

    /// Stops the limiter; see [`Limiter::stop`](crate::Limiter::stop).
    pub async fn stop(&self, grace: Duration) {
        self.core.stop(grace).await;
    }

    /// Waits until this instance has joined its fleet; see
    /// [`Limiter::ready`](crate::Limiter::ready).
    pub async fn ready(&self) {
        self.core.ready().await;
    }

    /// What this instance can start now; see [`Limiter::availability`](crate::Limiter::availability).
    #[must_use]
    pub fn availability(&self) -> Availability<Arc<str>, Arc<str>> {
        let spec = &self.core.spec;
        self.core.availability(
            |m| spec.models[m].name.clone(),
            |t| spec.job_types[t].name.clone(),
        )
    }

    /// The clock this limiter reads.
    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.core.clock
    }

    /// This instance's id.
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.core.instance_id
    }

    /// Warnings from validation.
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        &self.core.spec.warnings
    }
}

/// Builds a [`NamedLimiter`].
#[must_use = "a builder does nothing until `.build()`"]
pub struct NamedLimiterBuilder {
    config: Config,
    options: Options,
}

impl NamedLimiterBuilder {
    setters!();

    /// Called whenever a slot count changes; see
    /// [`LimiterBuilder::on_available_slots_change`](crate::LimiterBuilder::on_available_slots_change).
    pub fn on_available_slots_change(
        mut self,
        callback: impl Fn(
            &Availability<Arc<str>, Arc<str>>,
            SlotsChangeReason,
            Option<&RelativeAdjustment>,
        ) + Send
        + Sync
        + 'static,
    ) -> Self {
        self.options.slots_callback(callback, |spec: &Spec| {
            let models: Vec<Arc<str>> = spec.models.iter().map(|m| m.name.clone()).collect();
            let types: Vec<Arc<str>> = spec.job_types.iter().map(|t| t.name.clone()).collect();
            move |engine: &Engine| {
                engine.availability_at_check(|m| models[m].clone(), |t| types[t].clone())
            }
        });
        self
    }

    /// Validates the configuration and starts the limiter.
    ///
    /// # Errors
    /// As [`LimiterBuilder::build`](crate::LimiterBuilder::build).
    pub fn build(self) -> Result<NamedLimiter, BuildError> {
        let core = self.options.start(&self.config)?;
        let job_types = core
            .spec
            .job_types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(NamedLimiter {
            core,
            job_types: Arc::new(job_types),
        })
    }
}
