//! Stopping (SPEC §5): `stop()` may be called again, and jobs that were cancelled before it
//! keep their own outcome — cancelled, not shut down.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Solo, Work, clock, elapsed_ms, pricing, sleeper};
use llmrl::{Cause, JobRequest, JobTypeConfig, Limiter, ModelConfig, Usage};

const LONG: Duration = Duration::from_secs(3_600);

/// One job at a time; jobs wait up to an hour.
fn limiter() -> Limiter<Solo, Work> {
    Limiter::<Solo, Work>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).max_concurrent_requests(1)
    })
    .job_types(|Work::Job| JobTypeConfig::new().max_wait(Solo::Only, LONG))
    .clock(clock())
    .build()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn stopping_twice_is_harmless_and_the_second_returns_at_once() {
    let limiter = limiter();
    let running = limiter.queue_job(JobRequest::new(
        "running",
        Work::Job,
        sleeper::<Solo>(Duration::from_secs(10), Usage::new()),
    ));
    common::settle_tasks().await;
    limiter.stop(Duration::from_secs(60)).await;
    assert_eq!(
        elapsed_ms(limiter.clock()),
        10_000,
        "the running job finished"
    );
    assert!(running.await.is_ok());
    let clone = limiter.clone();
    clone.stop(Duration::from_secs(60)).await;
    assert_eq!(
        elapsed_ms(limiter.clock()),
        10_000,
        "nothing left to wait for"
    );
}

type Errors = Arc<Mutex<Vec<(String, Cause<String>)>>>;

fn record(errors: &Errors) -> impl FnOnce(&llmrl::JobError<Solo, String>) + Send + 'static {
    let errors = errors.clone();
    move |e| {
        errors
            .lock()
            .unwrap()
            .push((e.job_id.to_string(), e.cause.clone()));
    }
}

/// A running job and two waiters; the first waiter is cancelled, then (after `pause`, if any)
/// the limiter stops. Returns each job's cause as its handle and its callback report it.
async fn cancel_then_stop(pause: bool) -> (Vec<Cause<String>>, Vec<(String, Cause<String>)>) {
    let limiter = limiter();
    let errors = Errors::default();
    let job = |id: &'static str| {
        limiter.queue_job(
            JobRequest::new(id, Work::Job, sleeper::<Solo>(LONG, Usage::new()))
                .on_error(record(&errors)),
        )
    };
    let running = job("running");
    let waiting = job("waiting");
    let queued = job("queued");
    common::settle_tasks().await;
    assert_eq!(limiter.availability().job_types[0].models[0].waiting, 2);
    waiting.cancel();
    if pause {
        common::settle_tasks().await;
    }
    limiter.stop(Duration::ZERO).await;
    let mut causes = Vec::new();
    for handle in [running, waiting, queued] {
        causes.push(handle.await.unwrap_err().cause);
    }
    let mut reported = errors.lock().unwrap().clone();
    reported.sort_by(|a, b| a.0.cmp(&b.0));
    (causes, reported)
}

#[tokio::test(start_paused = true)]
async fn a_waiting_job_cancelled_before_stop_stays_cancelled() {
    let (causes, reported) = cancel_then_stop(true).await;
    assert_eq!(causes, [Cause::ShutDown, Cause::Cancelled, Cause::ShutDown]);
    assert_eq!(
        reported,
        [
            ("queued".to_owned(), Cause::ShutDown),
            ("running".to_owned(), Cause::ShutDown),
            ("waiting".to_owned(), Cause::Cancelled),
        ],
        "one callback each, with its own cause"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_just_before_stop_is_reported_cancelled() {
    let (causes, reported) = cancel_then_stop(false).await;
    assert_eq!(causes[1], Cause::Cancelled);
    assert!(reported.contains(&("waiting".to_owned(), Cause::Cancelled)));
}

#[tokio::test(start_paused = true)]
async fn a_running_job_cancelled_before_stop_keeps_its_outcome_for_its_handle() {
    let limiter = limiter();
    let cancelled = limiter.queue_job(JobRequest::new(
        "cancelled",
        Work::Job,
        sleeper::<Solo>(LONG, Usage::new()),
    ));
    common::settle_tasks().await;
    cancelled.cancel();
    common::settle_tasks().await;
    // The handle has not been read yet when the limiter stops.
    limiter.stop(Duration::ZERO).await;
    let failed = cancelled.await.unwrap_err();
    assert_eq!(failed.cause, Cause::Cancelled);
    assert_eq!(failed.job_id, "cancelled");
}
