//! Panics, cancellation and shutdown never leak concurrency or budget (SPEC §4.3, §5).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Solo, Work, clock, pricing, sleeper};
use llmrl::{
    Cause, JobContext, JobHandle, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Usage,
};

fn limiter() -> Limiter<Solo, Work> {
    Limiter::<Solo, Work>::builder(|Solo::Only| {
        ModelConfig::new(pricing())
            .max_concurrent_requests(1)
            .tokens_per_minute(10_000)
    })
    .job_types(|Work::Job| JobTypeConfig::new().estimated_tokens(1_000))
    .clock(clock())
    .build()
    .unwrap()
}

/// (in flight, tokens used this minute, waiting)
fn state(limiter: &Limiter<Solo, Work>) -> (u64, u64, u64) {
    let a = limiter.availability();
    let model = &a.models[0];
    (
        model.concurrent_requests.unwrap().used,
        model.tokens_per_minute.unwrap().used,
        a.job_types[0].models[0].waiting,
    )
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_frees_its_slot_and_keeps_its_estimate() {
    let limiter = limiter();
    let failed = limiter
        .queue_job(JobRequest::new(
            "boom",
            Work::Job,
            |_: JobContext<Solo>| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                panic!("provider client exploded");
                #[allow(unreachable_code)]
                JobResult::<(), ()>::done((), Usage::new())
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::Panicked("provider client exploded".into())
    );
    assert!(failed.usage.is_empty(), "unknown usage has no entry");
    assert_eq!(
        state(&limiter),
        (0, 1_000, 0),
        "CONC free, estimate kept: the provider may have been called"
    );
    let next = limiter.queue_job(JobRequest::new(
        "next",
        Work::Job,
        sleeper(Duration::ZERO, Usage::new()),
    ));
    assert!(next.await.is_ok());
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_running_frees_its_slot_and_keeps_its_estimate() {
    let limiter = limiter();
    let running = limiter.queue_job(JobRequest::new(
        "running",
        Work::Job,
        sleeper(Duration::from_secs(60), Usage::new()),
    ));
    common::advance(Duration::from_secs(5)).await;
    assert_eq!(state(&limiter), (1, 1_000, 0));
    running.cancel();
    assert_eq!(running.await.unwrap_err().cause, Cause::Cancelled);
    assert_eq!(state(&limiter), (0, 1_000, 0));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_waiting_leaves_the_queue_and_reserves_nothing() {
    let limiter = limiter();
    let _running = limiter.queue_job(JobRequest::new(
        "running",
        Work::Job,
        sleeper(Duration::from_secs(30), Usage::new().input_tokens(1_000)),
    ));
    let waiting = limiter.queue_job(JobRequest::new(
        "waiting",
        Work::Job,
        sleeper(Duration::from_secs(1), Usage::new()),
    ));
    let behind = limiter.queue_job(JobRequest::new(
        "behind",
        Work::Job,
        sleeper(Duration::from_secs(1), Usage::new().input_tokens(1_000)),
    ));
    common::settle_tasks().await;
    assert_eq!(state(&limiter), (1, 1_000, 2));
    waiting.cancel();
    assert_eq!(waiting.await.unwrap_err().cause, Cause::Cancelled);
    assert_eq!(state(&limiter), (1, 1_000, 1));
    // The job behind it moves up and starts as soon as the running one ends.
    behind.await.unwrap();
    assert_eq!(state(&limiter), (0, 2_000, 0));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_after_its_grant_but_before_it_ran_gives_everything_back() {
    let limiter = limiter();
    // `first`'s settlement grants its slot to `granted`; `first`'s on_complete runs right after,
    // before `granted`'s task is polled, and cancels it there.
    let slot: Arc<Mutex<Option<JobHandle<Solo, Solo, String>>>> = Arc::default();
    let canceller = slot.clone();
    let first = limiter.queue_job(
        JobRequest::new(
            "first",
            Work::Job,
            sleeper(Duration::from_secs(10), Usage::new().input_tokens(500)),
        )
        .on_complete(move |_| {
            if let Some(granted) = canceller.lock().unwrap().as_ref() {
                granted.cancel();
            }
        }),
    );
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let granted = limiter.queue_job(JobRequest::new(
        "granted",
        Work::Job,
        move |ctx: JobContext<Solo>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { JobResult::done(ctx.model, Usage::new()) }
        },
    ));
    *slot.lock().unwrap() = Some(granted);
    common::settle_tasks().await;
    first.await.unwrap();
    let granted = slot.lock().unwrap().take().unwrap();
    assert_eq!(granted.await.unwrap_err().cause, Cause::Cancelled);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the job never ran");
    assert_eq!(
        state(&limiter),
        (0, 500, 0),
        "so its whole reservation came back"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn stop_fails_waiters_lets_running_jobs_finish_and_leaves_no_task() {
    let limiter = limiter();
    let short = limiter.queue_job(JobRequest::new(
        "short",
        Work::Job,
        sleeper(Duration::from_secs(2), Usage::new().input_tokens(10)),
    ));
    let waiting = limiter.queue_job(JobRequest::new(
        "waiting",
        Work::Job,
        sleeper(Duration::from_secs(1), Usage::new()),
    ));
    common::settle_tasks().await;
    limiter.stop(Duration::from_secs(5)).await;
    assert!(short.await.is_ok(), "finished within the grace period");
    assert_eq!(waiting.await.unwrap_err().cause, Cause::ShutDown);
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn stop_drops_jobs_still_running_after_the_grace_period() {
    let limiter = limiter();
    let long = limiter.queue_job(JobRequest::new(
        "long",
        Work::Job,
        sleeper(Duration::from_secs(600), Usage::new()),
    ));
    common::settle_tasks().await;
    limiter.stop(Duration::from_secs(3)).await;
    assert_eq!(long.await.unwrap_err().cause, Cause::ShutDown);
    assert_eq!(state(&limiter), (0, 1_000, 0), "CONC freed, estimate kept");
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}
