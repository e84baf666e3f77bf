//! The default wait bound: until the first minute boundary after the job starts waiting, + 5 s.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Five, Recorder, Work, clock, elapsed_ms, pricing, sleeper};
use llmrl::{JobRequest, JobTypeConfig, Limiter, ModelConfig, Usage};

/// A holds one job at a time and is held for an hour; B always has room. A job arriving at
/// `offset_ms` waits the default bound on A, then falls back to B.
async fn fallback_delay(offset_ms: u64) -> u64 {
    let clock = clock();
    let recorder = Recorder::default();
    let limiter = Limiter::<Five, Work>::builder(|m| match m {
        Five::A => ModelConfig::new(pricing()).max_concurrent_requests(1),
        _ => ModelConfig::new(pricing()),
    })
    .job_types(|Work::Job| JobTypeConfig::new())
    .escalation_order([Five::A, Five::B])
    .on_event(recorder.listener(clock.clone()))
    .clock(clock.clone())
    .build()
    .unwrap();
    let _hold = limiter.queue_job(JobRequest::new(
        "hold",
        Work::Job,
        sleeper(Duration::from_secs(3_600), Usage::new()),
    ));
    common::advance(Duration::from_millis(offset_ms)).await;
    assert_eq!(elapsed_ms(&clock), offset_ms);
    let done = limiter
        .queue_job(JobRequest::new(
            "probe",
            Work::Job,
            sleeper(Duration::ZERO, Usage::new()),
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::B);
    limiter.stop(Duration::ZERO).await;
    recorder.escalations("probe")[0].1 - offset_ms
}

#[tokio::test(start_paused = true)]
async fn default_wait_is_until_the_next_minute_plus_five_seconds() {
    assert_eq!(
        fallback_delay(0).await,
        65_000,
        "at :00.000 exactly: 60 s + 5 s"
    );
    assert_eq!(fallback_delay(30_000).await, 35_000);
    assert_eq!(fallback_delay(59_000).await, 6_000);
    assert_eq!(fallback_delay(59_999).await, 5_001, "to the millisecond");
    assert_eq!(fallback_delay(60_000).await, 65_000);
}

#[tokio::test(start_paused = true)]
async fn a_huge_wait_does_not_overflow_into_an_instant_timeout() {
    let clock = clock();
    let recorder = Recorder::default();
    let limiter =
        Limiter::<Five, Work>::builder(|_| ModelConfig::new(pricing()).max_concurrent_requests(1))
            .job_types(|Work::Job| JobTypeConfig::new().max_wait(Five::A, Duration::MAX))
            .escalation_order([Five::A, Five::B])
            .on_event(recorder.listener(clock.clone()))
            .clock(clock)
            .build()
            .unwrap();
    let _hold = limiter.queue_job(JobRequest::new(
        "hold",
        Work::Job,
        sleeper(Duration::from_secs(7_200), Usage::new()),
    ));
    let probe = limiter.queue_job(JobRequest::new(
        "probe",
        Work::Job,
        sleeper(Duration::ZERO, Usage::new()),
    ));
    assert_eq!(
        probe.await.unwrap().model,
        Five::A,
        "waited two hours on A rather than falling back"
    );
    assert!(recorder.escalations("probe").is_empty());
    assert_eq!(recorder.starts("probe"), vec![("A".into(), 7_200_000)]);
    limiter.stop(Duration::ZERO).await;
}
