//! Job handles (SPEC §3.1): they name their job, resolve to its outcome, and `cancel()` only
//! affects a job that has not ended.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Solo, Work, clock, pricing, sleeper};
use llmrl::{Cause, JobRequest, JobTypeConfig, Limiter, ModelConfig, Usage};

fn limiter() -> Limiter<Solo, Work> {
    Limiter::<Solo, Work>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).max_concurrent_requests(1)
    })
    .job_types(|Work::Job| JobTypeConfig::new().estimated_tokens(100))
    .clock(clock())
    .build()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_handle_shows_its_job_id() {
    let limiter = limiter();
    let handle = limiter.queue_job(JobRequest::new(
        "job-1",
        Work::Job,
        sleeper::<Solo>(Duration::from_secs(1), Usage::new()),
    ));
    assert_eq!(handle.job_id(), "job-1");
    let debug = format!("{handle:?}");
    assert!(debug.starts_with("JobHandle"), "{debug}");
    assert!(debug.contains("job_id: \"job-1\""), "{debug}");
    handle.await.unwrap();
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_job_that_already_ended_changes_nothing() {
    let limiter = limiter();
    let errors = Arc::new(Mutex::new(0));
    let seen = errors.clone();
    let handle = limiter.queue_job(
        JobRequest::new(
            "done",
            Work::Job,
            sleeper::<Solo>(Duration::from_secs(1), Usage::new().input_tokens(80)),
        )
        .on_error(move |_| *seen.lock().unwrap() += 1),
    );
    common::advance(Duration::from_secs(2)).await;
    handle.cancel();
    handle.cancel();
    let done = handle
        .await
        .expect("the job had succeeded before the cancel");
    assert_eq!(done.model, Solo::Only);
    assert_eq!(done.usage[0].input_tokens, 80);
    assert_eq!(
        *errors.lock().unwrap(),
        0,
        "no error callback for a finished job"
    );
    let a = limiter.availability();
    assert_eq!(a.models[0].concurrent_requests.unwrap().used, 0);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_queued_on_a_stopped_limiter_fails_at_once_and_cannot_be_cancelled_into_anything_else()
 {
    let limiter = limiter();
    limiter.stop(Duration::ZERO).await;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let handle = limiter.queue_job(
        JobRequest::new(
            "late",
            Work::Job,
            sleeper::<Solo>(Duration::from_secs(1), Usage::new()),
        )
        .on_error(move |e| seen.lock().unwrap().push(e.cause.clone())),
    );
    assert_eq!(handle.job_id(), "late");
    handle.cancel();
    let failed = handle.await.unwrap_err();
    assert_eq!(failed.cause, Cause::ShutDown);
    assert!(failed.usage.is_empty());
    assert_eq!(*errors.lock().unwrap(), vec![Cause::ShutDown]);
}

#[tokio::test(start_paused = true)]
async fn a_handle_dropped_after_its_job_ended_leaves_nothing_behind() {
    let limiter = limiter();
    let done = Arc::new(Mutex::new(false));
    let seen = done.clone();
    let handle = limiter.queue_job(
        JobRequest::new(
            "fire-and-forget",
            Work::Job,
            sleeper::<Solo>(Duration::from_secs(1), Usage::new()),
        )
        .on_complete(move |_| *seen.lock().unwrap() = true),
    );
    common::advance(Duration::from_secs(2)).await;
    drop(handle);
    assert!(*done.lock().unwrap());
    // The next job takes the only concurrency unit: nothing of the first is held.
    let next = limiter.queue_job(JobRequest::new(
        "next",
        Work::Job,
        sleeper::<Solo>(Duration::from_secs(1), Usage::new()),
    ));
    assert_eq!(next.await.unwrap().model, Solo::Only);
    limiter.stop(Duration::ZERO).await;
}
