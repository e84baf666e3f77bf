//! Failure outcomes (SPEC §3.2): every cause a job can fail with, as the job's `JobError`
//! reports and prints it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Five, Work, clock, pricing, sleeper};
use llmrl::{
    AcquireError, Cause, JobContext, JobError, JobRequest, JobResult, JobTypeConfig, Limiter,
    ModelConfig, Usage,
};

const LONG: Duration = Duration::from_secs(3_600);

/// A and B take one job at a time; jobs never wait.
fn limiter() -> Limiter<Five, Work> {
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
        .unwrap()
}

#[test]
fn every_cause_prints_what_happened() {
    let cases: [(Cause<&str>, &str); 7] = [
        (
            Cause::Exhausted {
                last_rejection: None,
            },
            "all models exhausted: no capacity within the wait bounds",
        ),
        (
            Cause::Exhausted {
                last_rejection: Some("busy"),
            },
            "all models exhausted: no capacity within the wait bounds (last rejection: busy)",
        ),
        (
            Cause::Rejected("bad input"),
            "rejected without delegation: bad input",
        ),
        (
            Cause::RejectedOnLastModel("overloaded"),
            "rejected on the last model: overloaded",
        ),
        (Cause::Panicked("boom".into()), "the job panicked: boom"),
        (Cause::Cancelled, "cancelled"),
        (Cause::ShutDown, "the limiter shut down"),
    ];
    for (cause, text) in cases {
        assert_eq!(cause.to_string(), text);
    }
}

#[test]
fn acquire_errors_print_what_happened() {
    assert_eq!(
        AcquireError::Exhausted.to_string(),
        "all models exhausted: no capacity within the wait bounds"
    );
    assert_eq!(AcquireError::ShutDown.to_string(), "the limiter shut down");
}

fn rejecting(
    delegate: bool,
) -> impl Fn(JobContext<Five>) -> std::future::Ready<JobResult<(), String>> + Send + 'static {
    move |ctx| {
        let usage = Usage::new().input_tokens(10);
        let error = format!("no on {:?}", ctx.model);
        std::future::ready(if delegate {
            JobResult::rejected(error, usage)
        } else {
            JobResult::rejected_final(error, usage)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_error_names_the_job_and_its_cause() {
    let limiter = limiter();

    let failed = limiter
        .queue_job(JobRequest::new("final", Work::Job, rejecting(false)))
        .await
        .unwrap_err();
    assert_eq!(failed.cause, Cause::Rejected("no on A".to_owned()));
    assert_eq!(failed.usage.len(), 1);
    assert_eq!(
        failed.to_string(),
        "job final failed: rejected without delegation: no on A"
    );

    let failed = limiter
        .queue_job(JobRequest::new("last", Work::Job, rejecting(true)))
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::RejectedOnLastModel("no on B".to_owned())
    );
    assert_eq!(failed.usage.len(), 2, "it ran on A, then on B");
    assert_eq!(
        failed.to_string(),
        "job last failed: rejected on the last model: no on B"
    );

    let failed = limiter
        .queue_job(JobRequest::new(
            "panics",
            Work::Job,
            |_: JobContext<Five>| async move {
                if true {
                    panic!("out of cheese");
                }
                JobResult::<(), String>::done((), Usage::new())
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.cause, Cause::Panicked("out of cheese".to_owned()));
    assert!(
        failed.usage.is_empty(),
        "a panicked attempt has unknown usage"
    );
    assert_eq!(
        failed.to_string(),
        "job panics failed: the job panicked: out of cheese"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn exhaustion_after_a_delegation_carries_the_last_rejection() {
    let limiter = limiter();
    // B is full: a job delegated from A finds no room there and is exhausted.
    let _b = limiter.queue_job(JobRequest::new(
        "filler",
        Work::Job,
        |ctx: JobContext<Five>| async move {
            if ctx.model == Five::A {
                return JobResult::<(), String>::rejected("go to B".into(), Usage::new());
            }
            tokio::time::sleep(LONG).await;
            JobResult::done((), Usage::new())
        },
    ));
    common::settle_tasks().await;
    let failed = limiter
        .queue_job(JobRequest::new("probe", Work::Job, rejecting(true)))
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::Exhausted {
            last_rejection: Some("no on A".to_owned())
        }
    );
    assert_eq!(
        failed.to_string(),
        "job probe failed: all models exhausted: no capacity within the wait bounds \
         (last rejection: no on A)"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn cancelled_and_shut_down_jobs_say_so() {
    let limiter = limiter();
    let cancelled = limiter.queue_job(JobRequest::new(
        "cancelled",
        Work::Job,
        sleeper::<Five>(LONG, Usage::new()),
    ));
    common::settle_tasks().await;
    cancelled.cancel();
    let failed = cancelled.await.unwrap_err();
    assert_eq!(failed.cause, Cause::Cancelled);
    assert_eq!(failed.to_string(), "job cancelled failed: cancelled");

    let running = limiter.queue_job(JobRequest::new(
        "running",
        Work::Job,
        sleeper::<Five>(LONG, Usage::new()),
    ));
    common::settle_tasks().await;
    limiter.stop(Duration::ZERO).await;
    let failed = running.await.unwrap_err();
    assert_eq!(failed.cause, Cause::ShutDown);
    assert_eq!(
        failed.to_string(),
        "job running failed: the limiter shut down"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_error_is_a_standard_error() {
    let limiter = limiter();
    let failed: JobError<Five, String> = limiter
        .queue_job(JobRequest::new("final", Work::Job, rejecting(false)))
        .await
        .unwrap_err();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(failed);
    assert_eq!(
        boxed.to_string(),
        "job final failed: rejected without delegation: no on A"
    );
    assert!(boxed.source().is_none());
    limiter.stop(Duration::ZERO).await;
}
