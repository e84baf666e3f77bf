//! Jobs take capacity in the order they were queued (SPEC §5): a job's place is taken when it
//! is queued, not when its task first runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Five, Solo, Work, clock, pricing};
use llmrl::{JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Usage};
use tokio::sync::Notify;

#[tokio::test(start_paused = true)]
async fn a_job_queued_before_a_lease_is_asked_for_is_served_first() {
    // One concurrency unit per model, no waiting: whoever arrives first gets model A.
    let limiter =
        Limiter::<Five, Work>::builder(|_| ModelConfig::new(pricing()).max_concurrent_requests(1))
            .job_types(|Work::Job| {
                JobTypeConfig::new()
                    .estimated_tokens(100)
                    .max_wait(Five::A, Duration::ZERO)
                    .max_wait(Five::B, Duration::ZERO)
            })
            .escalation_order([Five::A, Five::B])
            .clock(clock())
            .build()
            .unwrap();
    let gate = Arc::new(Notify::new());
    let job = limiter.queue_job(JobRequest::with_args(
        "queued-first",
        Work::Job,
        gate.clone(),
        |ctx| async move {
            ctx.args.notified().await;
            JobResult::<(), ()>::done((), Usage::new().requests(1))
        },
    ));
    // The job's task has not run yet; its place on model A is taken all the same.
    let lease = limiter.acquire("asked-second", Work::Job).await.unwrap();
    assert_eq!(*lease.model(), Five::B);
    gate.notify_one();
    assert_eq!(job.await.unwrap().model, Five::A);
    lease.release(Usage::new().requests(1)).await;
    limiter.stop(Duration::ZERO).await;
}

/// On a runtime with several worker threads, tasks may first run in any order; the jobs still
/// start in the order they were queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_start_in_the_order_they_were_queued_on_a_multi_threaded_runtime() {
    const JOBS: usize = 500;
    let limiter = Limiter::<Solo, Work>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).max_concurrent_requests(1)
    })
    .job_types(|Work::Job| {
        JobTypeConfig::new()
            .estimated_tokens(100)
            .max_wait(Solo::Only, Duration::from_secs(86_400))
    })
    .build()
    .unwrap();
    let started = Arc::new(Mutex::new(Vec::with_capacity(JOBS)));
    let gate = Arc::new(Notify::new());
    // The first job holds the only unit until every other job is queued.
    let holder = limiter.queue_job(JobRequest::with_args(
        "holder",
        Work::Job,
        gate.clone(),
        |ctx| async move {
            ctx.args.notified().await;
            JobResult::<(), ()>::done((), Usage::new())
        },
    ));
    let handles: Vec<_> = (0..JOBS)
        .map(|i| {
            let started = started.clone();
            limiter.queue_job(JobRequest::with_args(
                format!("job-{i}"),
                Work::Job,
                (i, started),
                |ctx| async move {
                    let (i, started) = ctx.args;
                    started.lock().unwrap().push(i);
                    JobResult::<(), ()>::done((), Usage::new())
                },
            ))
        })
        .collect();
    gate.notify_one();
    holder.await.unwrap();
    for handle in handles {
        handle.await.unwrap();
    }
    let started = started.lock().unwrap().clone();
    assert_eq!(started, (0..JOBS).collect::<Vec<_>>());
    limiter.stop(Duration::ZERO).await;
}
