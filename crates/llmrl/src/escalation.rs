//! Escalation (SPEC §5): from a position of the escalation order, the first model that admits a
//! job within its wait bound.

use crate::core::{Acquire, Arrived, Core};
use crate::engine::Reservation;
use crate::event::Event;
use crate::job::JobId;

pub(crate) enum Escalation {
    /// Admitted on the model at `position` of the order.
    Admitted {
        position: usize,
        reservation: Reservation,
    },
    /// No model from the starting position admitted it in time.
    Exhausted,
    /// The limiter is stopping.
    Closed,
}

/// Tries the models of the order from `position` on, each within the job type's wait bound.
/// `arrived` is the job's arrival on the first of them, if it was taken already (held by
/// reference: an `async fn` keeps two copies of what it is given by value).
pub(crate) async fn first_admitting(
    core: &Core,
    job_type: usize,
    mut position: usize,
    job_id: &JobId,
    arrived: &mut Option<Arrived>,
) -> Escalation {
    while let Some(&model) = core.spec.order.get(position) {
        let step = match arrived.take() {
            Some(arrived) => arrived.take(),
            None => core.arrive(model, job_type),
        };
        let acquired = match step {
            Ok(Acquire::Admitted(reservation)) if !reservation.unconfirmed => {
                Acquire::Admitted(reservation)
            }
            Ok(done @ (Acquire::TimedOut | Acquire::Closed)) => done,
            // Only jobs that wait, or that the fleet must confirm, pay for that state, boxed.
            step => Box::pin(core.acquire_slowly(model, job_type, step)).await,
        };
        match acquired {
            Acquire::Admitted(reservation) => {
                return Escalation::Admitted {
                    position,
                    reservation,
                };
            }
            Acquire::Closed => return Escalation::Closed,
            Acquire::TimedOut => {
                tracing::debug!(
                    model = %core.spec.models[model].name,
                    "wait bound reached without capacity; escalating to the next model"
                );
                core.emit(|spec| Event::Escalated {
                    job_id: job_id.clone(),
                    job_type: spec.job_types[job_type].name.clone(),
                    from: spec.models[model].name.clone(),
                });
                position += 1;
            }
        }
    }
    Escalation::Exhausted
}

/// Reports the start of an attempt.
pub(crate) fn started(core: &Core, job_id: &JobId, job_type: usize, model: usize, attempt: u32) {
    tracing::debug!(model = %core.spec.models[model].name, attempt, "job started");
    core.emit(|spec| Event::Started {
        job_id: job_id.clone(),
        job_type: spec.job_types[job_type].name.clone(),
        model: spec.models[model].name.clone(),
        attempt,
    });
}

/// Reports a delegation to the next model.
pub(crate) fn delegated(core: &Core, job_id: &JobId, job_type: usize, model: usize) {
    tracing::debug!(model = %core.spec.models[model].name, "job delegated to the next model");
    core.emit(|spec| Event::Delegated {
        job_id: job_id.clone(),
        job_type: spec.job_types[job_type].name.clone(),
        from: spec.models[model].name.clone(),
    });
}
