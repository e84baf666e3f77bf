//! Delegation: a job that rejects may ask to be retried on the next model.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Five, Recorder, Work, clock, pricing};
use llmrl::{
    Cause, Id, JobContext, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Usage,
};

fn limiter(recorder: &Recorder) -> Limiter<Five, Work> {
    let clock = clock();
    Limiter::<Five, Work>::builder(|_| ModelConfig::new(pricing()).max_concurrent_requests(10))
        .job_types(|Work::Job| JobTypeConfig::new().estimated_tokens(100))
        .escalation_order(Five::ALL.iter().copied())
        .on_event(recorder.listener(clock.clone()))
        .clock(clock)
        .build()
        .unwrap()
}

fn used(tokens: u64) -> Usage {
    Usage::new().input_tokens(tokens).requests(1)
}

#[tokio::test(start_paused = true)]
async fn a_delegating_rejection_runs_on_the_next_model() {
    let recorder = Recorder::default();
    let limiter = limiter(&recorder);
    let done = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            |ctx: JobContext<Five>| async move {
                match ctx.model {
                    Five::A => JobResult::rejected("A is overloaded".to_string(), used(30)),
                    model => JobResult::done((model, ctx.attempt), used(70)),
                }
            },
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::B);
    assert_eq!(done.value, (Five::B, 2), "second attempt");
    let models: Vec<Five> = done.usage.iter().map(|u| u.model).collect();
    assert_eq!(
        models,
        vec![Five::A, Five::B],
        "the rejected attempt used tokens too"
    );
    assert_eq!(
        recorder.starts("job"),
        vec![("A".into(), 0), ("B".into(), 0)]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_rejection_without_delegation_fails_at_once() {
    let recorder = Recorder::default();
    let limiter = limiter(&recorder);
    let failed = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            |_: JobContext<Five>| async {
                JobResult::<(), _>::rejected_final("bad input".to_string(), used(40))
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.cause, Cause::Rejected("bad input".to_string()));
    assert_eq!(failed.usage.len(), 1);
    assert_eq!(failed.usage[0].model, Five::A);
    assert_eq!(failed.usage[0].input_tokens, 40);
    assert_eq!(recorder.starts("job").len(), 1, "no other model is tried");
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_that_always_delegates_ends_after_the_last_model() {
    let recorder = Recorder::default();
    let limiter = limiter(&recorder);
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let failed = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            move |ctx: JobContext<Five>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    JobResult::<(), _>::rejected(format!("no luck on {:?}", ctx.model), used(10))
                }
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::RejectedOnLastModel("no luck on E".to_string())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5, "each model once, no loop");
    let models: Vec<Five> = failed.usage.iter().map(|u| u.model).collect();
    assert_eq!(models, Five::ALL.to_vec());
    let attempts: Vec<u32> = recorder
        .all()
        .into_iter()
        .filter_map(|s| match s {
            common::Seen::Started { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3, 4, 5]);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn delegation_to_a_full_model_ends_exhausted_with_the_last_rejection() {
    let clock = clock();
    let limiter = Limiter::<Five, Work>::builder(|m| {
        let conc = if m == Five::B { 1 } else { 10 };
        ModelConfig::new(pricing()).max_concurrent_requests(conc)
    })
    .job_types(|Work::Job| JobTypeConfig::new().max_wait(Five::B, Duration::ZERO))
    .escalation_order([Five::A, Five::B])
    .clock(clock)
    .build()
    .unwrap();
    let _hold_b = limiter.queue_job(JobRequest::new(
        "hold",
        Work::Job,
        |ctx: JobContext<Five>| async move {
            if ctx.model == Five::A {
                return JobResult::rejected("to B".to_string(), used(0));
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
            JobResult::done((), used(0))
        },
    ));
    common::settle_tasks().await;
    let failed = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            |_: JobContext<Five>| async {
                JobResult::<(), _>::rejected("A failed".to_string(), used(5))
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::Exhausted {
            last_rejection: Some("A failed".to_string())
        }
    );
    assert_eq!(
        failed.usage.len(),
        1,
        "B never ran, so only A's attempt is reported"
    );
    limiter.stop(Duration::ZERO).await;
}
