//! The typed face: models and job types are enums, so misuse is a compile error.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::availability::Availability;
use crate::clock::Clock;
use crate::config::{
    Config, JobTypeConfig, MemoryConfig, ModelConfig, RatioAdjustmentConfig, Spec,
};
use crate::core::Core;
use crate::engine::Engine;
use crate::error::BuildError;
use crate::handle::JobHandle;
use crate::id::{JobType, ModelId, SingleModel};
use crate::job::{JobContext, JobId, JobRequest, JobResult, OnComplete, OnError};
use crate::lease::{AcquireError, Lease};
use crate::notify::{RelativeAdjustment, SlotsChangeReason};
use crate::options::{Options, setters};
use crate::run;

/// A rate limiter for LLM jobs, typed by its model enum `M` and job type enum `J`.
///
/// Cheap to clone: clones share one limiter.
///
/// ```
/// use llmrl::{JobRequest, JobResult, JobType, Limiter, ModelConfig, ModelId, Pricing, Usage};
///
/// #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
/// enum Model {
///     #[llmrl(name = "openai/gpt-5.2")]
///     Gpt,
///     #[llmrl(name = "anthropic/claude")]
///     Claude,
/// }
///
/// #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
/// enum Task {
///     Summary,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::<Model, Task>::builder(|model| match model {
///     Model::Gpt => ModelConfig::new(Pricing::new(1.75, 0.175, 14.0)).tokens_per_minute(100_000),
///     Model::Claude => ModelConfig::new(Pricing::new(3.0, 0.3, 15.0)).requests_per_minute(50),
/// })
/// .job_types(|task| match task {
///     Task::Summary => llmrl::JobTypeConfig::new().estimated_tokens(10_000),
/// })
/// .escalation_order([Model::Gpt, Model::Claude])
/// .build()?;
///
/// let done = limiter
///     .queue_job(JobRequest::new("job-1", Task::Summary, |ctx| async move {
///         // Call ctx.model here.
///         JobResult::<_, String>::done(format!("{:?}", ctx.model), Usage::new().input_tokens(9_000))
///     }))
///     .await?;
/// assert_eq!(done.model, Model::Gpt);
/// limiter.stop(std::time::Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
pub struct Limiter<M, J> {
    core: Arc<Core>,
    _ids: PhantomData<fn() -> (M, J)>,
}

impl<M, J> Clone for Limiter<M, J> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            _ids: PhantomData,
        }
    }
}

impl<M, J> std::fmt::Debug for Limiter<M, J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("instance_id", &self.core.instance_id)
            .finish_non_exhaustive()
    }
}

impl<M: ModelId, J: JobType> Limiter<M, J> {
    /// Starts a builder. `models` gives each model's settings; write it as a `match` so that a
    /// model added to the enum but not configured fails to compile.
    pub fn builder(mut models: impl FnMut(M) -> ModelConfig) -> LimiterBuilder<M, J> {
        let mut config = Config::new();
        for &model in M::ALL {
            config = config.model(model.name(), models(model));
        }
        for &job_type in J::ALL {
            config = config.job_type(job_type.name(), JobTypeConfig::new());
        }
        LimiterBuilder {
            config,
            order: NoOrder,
            options: Options::default(),
            _ids: PhantomData,
        }
    }

    /// Queues a job. It starts on the first model of the escalation order that admits it
    /// (waiting up to each model's `max_wait`), and the handle resolves when it ends.
    pub fn queue_job<F, A, C, X, Fut, T, E>(
        &self,
        request: JobRequest<M, J, F, A, C, X>,
    ) -> JobHandle<M, T, E>
    where
        F: Fn(JobContext<M, A>) -> Fut + Send + 'static,
        Fut: Future<Output = JobResult<T, E>> + Send + 'static,
        A: Clone + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
        C: OnComplete<M, T>,
        X: OnError<M, E>,
    {
        let job_type = request.job_type.index();
        run::queue(&self.core, job_type, request, |_, model| M::ALL[model])
    }

    /// Acquires capacity for one job of `job_type` that the caller runs itself, on the first
    /// model of the escalation order that admits it within its wait bound.
    ///
    /// # Errors
    /// [`AcquireError::Exhausted`] if no model had capacity in time, [`AcquireError::ShutDown`]
    /// if the limiter is stopping.
    pub async fn acquire(
        &self,
        job_id: impl Into<JobId>,
        job_type: J,
    ) -> Result<Lease<M>, AcquireError> {
        Lease::acquire(
            self.core.clone(),
            job_type.index(),
            job_id.into(),
            |_, model| M::ALL[model],
            0,
            1,
        )
        .await
    }

    /// Stops the limiter: admits nothing more, fails waiting jobs with
    /// [`Cause::ShutDown`](crate::Cause::ShutDown), lets running jobs finish for up to `grace`
    /// (then drops them, keeping their estimates counted), and ends the limiter's tasks. When it
    /// returns nothing of the limiter is left running.
    pub async fn stop(&self, grace: Duration) {
        self.core.stop(grace).await;
    }

    /// Waits until this instance has joined its fleet (or found the backend unreachable, its
    /// failure mode then applying). Returns at once for a limiter without a backend.
    pub async fn ready(&self) {
        self.core.ready().await;
    }

    /// What this instance can start now, per job type and model, and what is left of each
    /// model's limits.
    #[must_use]
    pub fn availability(&self) -> Availability<M, J> {
        self.core.availability(|m| M::ALL[m], |t| J::ALL[t])
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

    /// Warnings from validation: settings under which some job type can never start somewhere.
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        &self.core.spec.warnings
    }
}

/// Builder state: no escalation order given yet.
#[derive(Debug, Clone, Copy)]
pub struct NoOrder;

/// Builder state: an escalation order was given.
#[derive(Debug, Clone)]
pub struct Ordered<M>(Vec<M>);

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::NoOrder {}
    impl<M> Sealed for super::Ordered<M> {}
}

/// Whether a builder may be built: with an order, or without one for a single model.
#[diagnostic::on_unimplemented(
    message = "the limiter has several models but no escalation order",
    label = "`.build()` needs an escalation order here",
    note = "call `.escalation_order([...])` before `.build()`"
)]
pub trait EscalationOrder<M>: sealed::Sealed {
    /// The order, or `None` for the single model.
    fn into_order(self) -> Option<Vec<M>>;
}

impl<M: ModelId> EscalationOrder<M> for Ordered<M> {
    fn into_order(self) -> Option<Vec<M>> {
        Some(self.0)
    }
}

impl<M: SingleModel> EscalationOrder<M> for NoOrder {
    fn into_order(self) -> Option<Vec<M>> {
        None
    }
}

/// Builds a [`Limiter`]. `O` records whether an escalation order was given.
#[must_use = "a builder does nothing until `.build()`"]
pub struct LimiterBuilder<M, J, O = NoOrder> {
    config: Config,
    order: O,
    options: Options,
    _ids: PhantomData<fn() -> (M, J)>,
}

impl<M: ModelId, J: JobType, O> LimiterBuilder<M, J, O> {
    /// Each job type's settings; write it as a `match`. Without it every type gets the
    /// defaults (0 tokens, 1 request, an even ratio, the default waits).
    pub fn job_types(mut self, mut job_types: impl FnMut(J) -> JobTypeConfig<M>) -> Self {
        for &job_type in J::ALL {
            let config = job_types(job_type).into_named();
            self.config = self.config.job_type(job_type.name(), config);
        }
        self
    }

    /// The models a job may use, in order of preference (required with several models).
    pub fn escalation_order(
        self,
        order: impl IntoIterator<Item = M>,
    ) -> LimiterBuilder<M, J, Ordered<M>> {
        LimiterBuilder {
            config: self.config,
            order: Ordered(order.into_iter().collect()),
            options: self.options,
            _ids: PhantomData,
        }
    }

    setters!();

    /// The process memory budget settings.
    pub fn memory(mut self, memory: MemoryConfig) -> Self {
        self.config = self.config.memory(memory);
        self
    }

    /// The flexible ratio settings.
    pub fn ratio_adjustment(mut self, settings: RatioAdjustmentConfig) -> Self {
        self.config = self.config.ratio_adjustment(settings);
        self
    }

    /// This instance's id (default: generated, unique).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.config = self.config.instance_id(id);
        self
    }

    /// Called every time any slot count of this instance changes (per job type, per model or in
    /// total), with the new availability, why it changed and, for a settlement that moved the
    /// counters, by how much. Called outside the limiter's locks, in order, one call at a time.
    /// Without it, slots are never computed on the hot path.
    pub fn on_available_slots_change(
        mut self,
        callback: impl Fn(&Availability<M, J>, SlotsChangeReason, Option<&RelativeAdjustment>)
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.options.slots_callback(callback, |_: &Spec| {
            |engine: &Engine| engine.availability_at_check(|m| M::ALL[m], |t| J::ALL[t])
        });
        self
    }

    /// Validates everything and starts the limiter.
    ///
    /// # Errors
    /// [`BuildError::Config`] listing every invalid setting (zero limits, ratios that do not
    /// sum to 1, estimates that can never fit, duplicate models in the order, ...), or
    /// [`BuildError::NoRuntime`] outside a tokio runtime.
    pub fn build(self) -> Result<Limiter<M, J>, BuildError>
    where
        O: EscalationOrder<M>,
    {
        let mut config = self.config;
        if let Some(order) = self.order.into_order() {
            config = config.escalation_order(order.into_iter().map(M::name));
        }
        Ok(Limiter {
            core: self.options.start(&config)?,
            _ids: PhantomData,
        })
    }
}
