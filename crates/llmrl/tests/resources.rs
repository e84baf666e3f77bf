//! Resources are freed only when a job resolves or rejects, and only on the model it ran on.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Five, Work, clock, pricing, sleeper};
use llmrl::{JobContext, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Usage};

fn limiter() -> Limiter<Five, Work> {
    Limiter::<Five, Work>::builder(|_| {
        ModelConfig::new(pricing())
            .max_concurrent_requests(1)
            .tokens_per_minute(10_000)
    })
    .job_types(|Work::Job| {
        JobTypeConfig::new()
            .estimated_tokens(1_000)
            .max_wait(Five::A, Duration::ZERO)
            .max_wait(Five::B, Duration::ZERO)
    })
    .escalation_order([Five::A, Five::B])
    .clock(clock())
    .build()
    .unwrap()
}

fn in_flight(limiter: &Limiter<Five, Work>, model: usize) -> u64 {
    limiter.availability().models[model]
        .concurrent_requests
        .unwrap()
        .used
}

fn tpm_used(limiter: &Limiter<Five, Work>, model: usize) -> u64 {
    limiter.availability().models[model]
        .tokens_per_minute
        .unwrap()
        .used
}

#[tokio::test(start_paused = true)]
async fn capacity_is_held_while_the_job_runs_and_freed_when_it_resolves() {
    let limiter = limiter();
    let job = limiter.queue_job(JobRequest::new(
        "job",
        Work::Job,
        sleeper(Duration::from_secs(30), Usage::new().input_tokens(400)),
    ));
    common::advance(Duration::from_secs(29)).await;
    assert_eq!(in_flight(&limiter, 0), 1, "held while running");
    assert_eq!(tpm_used(&limiter, 0), 1_000, "the estimate is reserved");
    job.await.unwrap();
    assert_eq!(in_flight(&limiter, 0), 0);
    assert_eq!(tpm_used(&limiter, 0), 400, "replaced by actual usage");
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn capacity_is_freed_when_the_job_rejects() {
    let limiter = limiter();
    let failed = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            |_: JobContext<Five>| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                JobResult::<(), _>::rejected_final("nope", Usage::new().input_tokens(10))
            },
        ))
        .await;
    assert!(failed.is_err());
    assert_eq!(in_flight(&limiter, 0), 0);
    assert_eq!(
        tpm_used(&limiter, 0),
        10,
        "a rejection without delegation is settled too"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn only_the_model_that_ran_the_job_gets_its_capacity_back() {
    let limiter = limiter();
    // A is held for a minute; the second job falls back to B and finishes after 10 s.
    let _hold = limiter.queue_job(JobRequest::new(
        "hold",
        Work::Job,
        sleeper(Duration::from_secs(60), Usage::new().input_tokens(1_000)),
    ));
    common::settle_tasks().await;
    let on_b = limiter.queue_job(JobRequest::new(
        "on-b",
        Work::Job,
        sleeper(Duration::from_secs(10), Usage::new().input_tokens(300)),
    ));
    common::settle_tasks().await;
    assert_eq!((in_flight(&limiter, 0), in_flight(&limiter, 1)), (1, 1));
    assert_eq!(on_b.await.unwrap().model, Five::B);
    assert_eq!(
        (in_flight(&limiter, 0), in_flight(&limiter, 1)),
        (1, 0),
        "A untouched"
    );
    assert_eq!((tpm_used(&limiter, 0), tpm_used(&limiter, 1)), (1_000, 300));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_delegated_attempt_frees_its_model_before_the_next_one_runs() {
    let limiter = limiter();
    let observed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = observed.clone();
    let probe = limiter.clone();
    let done = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            move |ctx: JobContext<Five>| {
                let seen = seen.clone();
                let probe = probe.clone();
                async move {
                    let a = probe.availability().models[0]
                        .concurrent_requests
                        .unwrap()
                        .used;
                    seen.lock().unwrap().push((ctx.model, a));
                    match ctx.model {
                        Five::A => JobResult::rejected((), Usage::new().input_tokens(100)),
                        _ => JobResult::done((), Usage::new().input_tokens(100)),
                    }
                }
            },
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::B);
    assert_eq!(*observed.lock().unwrap(), vec![(Five::A, 1), (Five::B, 0)]);
    limiter.stop(Duration::ZERO).await;
}
