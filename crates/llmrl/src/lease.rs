//! Leases: capacity held for a job that runs somewhere else (another process, or a service that
//! talks to the `llmrl serve` sidecar).

use std::sync::Arc;

use crate::core::Core;
use crate::engine::Reservation;
use crate::escalation::{Escalation, delegated, first_admitting, started};
use crate::job::JobId;
use crate::run::ModelOf;
use crate::usage::{Usage, UsageEntry};

/// Acquiring a lease failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// No model of the escalation order (from where the search started) had capacity within
    /// its wait bound.
    #[error("all models exhausted: no capacity within the wait bounds")]
    Exhausted,
    /// The limiter is stopping.
    #[error("the limiter shut down")]
    ShutDown,
}

/// Capacity reserved for one job on one model, for a job that the caller runs itself.
///
/// Obtained from [`Limiter::acquire`](crate::Limiter::acquire) (or the named limiter's), it
/// walks the escalation order like a queued job. Call the model it names, then
/// [`release`](Lease::release) it with what the call used, or [`delegate`](Lease::delegate) to
/// try the next model. A lease dropped without either (a crashed client, an expired lease)
/// counts as an attempt of unknown usage: its estimate stays counted and its concurrency unit is
/// freed.
#[must_use = "a lease holds capacity until it is released or dropped"]
pub struct Lease<M> {
    core: Arc<Core>,
    reservation: Option<Reservation>,
    model: M,
    position: usize,
    job_type: usize,
    attempt: u32,
    job_id: JobId,
    model_of: ModelOf<M>,
}

impl<M> std::fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("job_id", &self.job_id)
            .field(
                "model",
                &self.core.spec.models[self.core.spec.order[self.position]].name,
            )
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<M: Clone> Lease<M> {
    /// Acquires on the first model of the order, from `from`, that admits a job of `job_type`.
    pub(crate) async fn acquire(
        core: Arc<Core>,
        job_type: usize,
        job_id: JobId,
        model_of: ModelOf<M>,
        from: usize,
        attempt: u32,
    ) -> Result<Self, AcquireError> {
        match first_admitting(&core, job_type, from, &job_id, &mut None).await {
            Escalation::Admitted {
                position,
                reservation,
            } => {
                let index = core.spec.order[position];
                started(&core, &job_id, job_type, index, attempt);
                Ok(Self {
                    model: model_of(&core.spec, index),
                    core,
                    reservation: Some(reservation),
                    position,
                    job_type,
                    attempt,
                    job_id,
                    model_of,
                })
            }
            Escalation::Exhausted => Err(AcquireError::Exhausted),
            Escalation::Closed => Err(AcquireError::ShutDown),
        }
    }

    /// The model to call.
    #[must_use]
    pub const fn model(&self) -> &M {
        &self.model
    }

    /// Which attempt of the job this is, from 1.
    #[must_use]
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The job's id.
    #[must_use]
    pub const fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// Settles the attempt with `usage`; returns its usage entry (with its cost).
    async fn settle(&mut self, usage: &Usage) -> UsageEntry<M> {
        let index = self.core.spec.order[self.position];
        if let Some(reservation) = self.reservation.take() {
            if let Some(settlement) = self.core.settle(reservation, Some(usage), &self.job_id) {
                Box::pin(self.core.report(settlement)).await;
            }
        }
        let pricing = &self.core.spec.models[index].pricing;
        UsageEntry::new(self.model.clone(), usage, pricing)
    }

    /// The job ended on this model (done, or failed for good) having used `usage`.
    pub async fn release(mut self, usage: Usage) -> UsageEntry<M> {
        self.settle(&usage).await
    }

    /// The job failed on this model, having used `usage`, and asks for the next one: settles
    /// this attempt, then acquires on the models after this one (each tried at most once).
    pub async fn delegate(mut self, usage: Usage) -> (UsageEntry<M>, Result<Self, AcquireError>) {
        let entry = self.settle(&usage).await;
        let index = self.core.spec.order[self.position];
        delegated(&self.core, &self.job_id, self.job_type, index);
        let next = Self::acquire(
            self.core.clone(),
            self.job_type,
            self.job_id.clone(),
            self.model_of,
            self.position + 1,
            self.attempt + 1,
        )
        .await;
        (entry, next)
    }
}

impl<M> Drop for Lease<M> {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            self.core.settle_unknown(reservation, &self.job_id);
        }
    }
}
