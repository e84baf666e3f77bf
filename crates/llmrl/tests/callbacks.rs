//! Callbacks: exactly one of `on_complete` / `on_error` is called, once, with id, usage and cost.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Five, Work, clock, pricing, sleeper};
use llmrl::{
    Cause, Completion, JobContext, JobError, JobRequest, JobResult, JobTypeConfig, Limiter,
    ModelConfig, Usage,
};

type Calls = Arc<Mutex<Vec<String>>>;

fn limiter() -> Limiter<Five, Work> {
    Limiter::<Five, Work>::builder(|m| match m {
        Five::A => ModelConfig::new(pricing()).max_concurrent_requests(1),
        _ => ModelConfig::new(pricing()).max_concurrent_requests(5),
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

fn record_complete(calls: &Calls) -> impl FnOnce(&Completion<Five, Five>) + Send + 'static {
    let calls = calls.clone();
    move |done| {
        let models: Vec<_> = done
            .usage
            .iter()
            .map(|u| format!("{:?}", u.model))
            .collect();
        calls.lock().unwrap().push(format!(
            "complete {} {:?} [{}] {:.6}",
            done.job_id,
            done.model,
            models.join(","),
            done.total_cost
        ));
    }
}

fn record_error<E: std::fmt::Debug>(
    calls: &Calls,
) -> impl FnOnce(&JobError<Five, E>) + Send + 'static {
    let calls = calls.clone();
    move |failed| {
        let models: Vec<_> = failed
            .usage
            .iter()
            .map(|u| format!("{:?}", u.model))
            .collect();
        calls.lock().unwrap().push(format!(
            "error {} {:?} [{}] {:.6}",
            failed.job_id,
            failed.cause,
            models.join(","),
            failed.total_cost
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn on_complete_gets_id_usage_and_cost_of_the_models_that_ran() {
    let limiter = limiter();
    let calls = Calls::default();
    let usage = Usage::new().input_tokens(1_000).output_tokens(500);
    let done = limiter
        .queue_job(
            JobRequest::new("job-1", Work::Job, sleeper(Duration::from_secs(1), usage))
                .on_complete(record_complete(&calls))
                .on_error(record_error::<String>(&calls)),
        )
        .await
        .unwrap();
    // 1000 × $1 + 500 × $2 per million = $0.002
    assert_eq!(
        *calls.lock().unwrap(),
        vec!["complete job-1 A [A] 0.002000".to_string()]
    );
    assert!((done.total_cost - 0.002).abs() < 1e-12);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_model_skipped_for_capacity_has_no_entry() {
    let limiter = limiter();
    let calls = Calls::default();
    let _busy = limiter.queue_job(JobRequest::new(
        "busy",
        Work::Job,
        sleeper(Duration::from_secs(60), Usage::new()),
    ));
    common::settle_tasks().await;
    let usage = Usage::new().input_tokens(2_000);
    limiter
        .queue_job(
            JobRequest::new("job-2", Work::Job, sleeper(Duration::from_secs(1), usage))
                .on_complete(record_complete(&calls))
                .on_error(record_error::<String>(&calls)),
        )
        .await
        .unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        vec!["complete job-2 B [B] 0.002000".to_string()]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn on_error_when_models_are_exhausted_and_when_the_last_model_rejects() {
    let limiter = limiter();
    let calls = Calls::default();
    // A is full, then B rejects: B ran, so it has an entry; A has none.
    let _busy = limiter.queue_job(JobRequest::new(
        "busy",
        Work::Job,
        sleeper(Duration::from_secs(60), Usage::new()),
    ));
    common::settle_tasks().await;
    let failed = limiter
        .queue_job(
            JobRequest::new("job-3", Work::Job, |_: JobContext<Five>| async {
                JobResult::<Five, _>::rejected("B down".to_string(), Usage::new().input_tokens(500))
            })
            .on_complete(record_complete(&calls))
            .on_error(record_error(&calls)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::RejectedOnLastModel("B down".to_string())
    );
    // Both models full: exhausted, no usage at all.
    let _busy_b: Vec<_> = (0..5)
        .map(|i| {
            limiter.queue_job(JobRequest::new(
                format!("b-{i}"),
                Work::Job,
                sleeper(Duration::from_secs(60), Usage::new()),
            ))
        })
        .collect();
    common::settle_tasks().await;
    let exhausted = limiter
        .queue_job(
            JobRequest::new(
                "job-4",
                Work::Job,
                sleeper(Duration::from_secs(1), Usage::new()),
            )
            .on_complete(record_complete(&calls))
            .on_error(record_error(&calls)),
        )
        .await
        .unwrap_err();
    assert!(exhausted.usage.is_empty());
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            "error job-3 RejectedOnLastModel(\"B down\") [B] 0.000500".to_string(),
            "error job-4 Exhausted { last_rejection: None } [] 0.000000".to_string(),
        ]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn exactly_one_callback_per_job_even_when_cancelled_or_stopped() {
    let limiter = limiter();
    let calls = Calls::default();
    let running = limiter.queue_job(
        JobRequest::new(
            "running",
            Work::Job,
            sleeper(Duration::from_secs(60), Usage::new()),
        )
        .on_complete(record_complete(&calls))
        .on_error(record_error::<String>(&calls)),
    );
    common::settle_tasks().await;
    running.cancel();
    let cancelled = running.await.unwrap_err();
    assert_eq!(cancelled.cause, Cause::Cancelled);
    let _long = limiter.queue_job(
        JobRequest::new(
            "at-stop",
            Work::Job,
            sleeper(Duration::from_secs(600), Usage::new()),
        )
        .on_complete(record_complete(&calls))
        .on_error(record_error::<String>(&calls)),
    );
    common::settle_tasks().await;
    limiter.stop(Duration::from_secs(1)).await;
    let after = limiter.queue_job(
        JobRequest::new(
            "after-stop",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new()),
        )
        .on_complete(record_complete(&calls))
        .on_error(record_error::<String>(&calls)),
    );
    assert_eq!(after.await.unwrap_err().cause, Cause::ShutDown);
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            "error running Cancelled [] 0.000000".to_string(),
            "error at-stop ShutDown [] 0.000000".to_string(),
            "error after-stop ShutDown [] 0.000000".to_string(),
        ]
    );
}
