//! Escalation: a job moves down the order when a model has no capacity within its wait bound.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Five, Recorder, Work, clock, pricing, sleeper};
use llmrl::{Cause, Id, JobRequest, JobTypeConfig, Limiter, ModelConfig, Usage};

const LONG: Duration = Duration::from_secs(3_600);

/// Every model takes one job at a time; the job type waits `wait(model)` on each.
fn limiter(
    order: &[Five],
    wait: impl Fn(Five) -> Duration,
    recorder: &Recorder,
) -> Limiter<Five, Work> {
    let clock = clock();
    Limiter::<Five, Work>::builder(|_| ModelConfig::new(pricing()).max_concurrent_requests(1))
        .job_types(|Work::Job| {
            Five::ALL
                .iter()
                .fold(JobTypeConfig::new().estimated_tokens(100), |t, &m| {
                    t.max_wait(m, wait(m))
                })
        })
        .escalation_order(order.iter().copied())
        .on_event(recorder.listener(clock.clone()))
        .clock(clock)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_model_sends_the_job_to_the_next_for_chains_of_two_to_five() {
    for length in 2..=5 {
        let recorder = Recorder::default();
        let order = &Five::ALL[..length];
        let limiter = limiter(order, |_| Duration::ZERO, &recorder);
        // Fill models 1..n-1 with long jobs; each escalates past the full ones at once.
        let fillers: Vec<_> = (0..length - 1)
            .map(|i| {
                let id = format!("filler-{i}");
                limiter.queue_job(JobRequest::new(id, Work::Job, sleeper(LONG, Usage::new())))
            })
            .collect();
        common::settle_tasks().await;
        let probe = limiter
            .queue_job(JobRequest::new(
                "probe",
                Work::Job,
                sleeper(Duration::from_secs(1), Usage::new().input_tokens(100)),
            ))
            .await
            .unwrap();
        assert_eq!(probe.model, order[length - 1], "chain of {length}");
        assert_eq!(probe.value, order[length - 1]);
        assert_eq!(probe.usage.len(), 1, "skipped models leave no usage entry");
        assert_eq!(probe.usage[0].model, order[length - 1]);
        let skipped: Vec<String> = recorder
            .escalations("probe")
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        let expected: Vec<String> = order[..length - 1]
            .iter()
            .map(|m| format!("{m:?}"))
            .collect();
        assert_eq!(skipped, expected, "tried in order, each once");
        for (i, filler) in fillers.iter().enumerate() {
            assert_eq!(
                recorder.starts(filler.job_id()),
                vec![(format!("{:?}", order[i]), 0)]
            );
        }
        limiter.stop(Duration::ZERO).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_order_is_respected_whatever_the_declaration_order() {
    let recorder = Recorder::default();
    let limiter = limiter(&[Five::C, Five::A, Five::E], |_| Duration::ZERO, &recorder);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            limiter.queue_job(JobRequest::new(
                format!("job-{i}"),
                Work::Job,
                sleeper(LONG, Usage::new()),
            ))
        })
        .collect();
    common::settle_tasks().await;
    let starts: Vec<_> = (0..4)
        .map(|i| recorder.starts(&format!("job-{i}")))
        .collect();
    assert_eq!(starts[0], vec![("C".into(), 0)]);
    assert_eq!(starts[1], vec![("A".into(), 0)]);
    assert_eq!(starts[2], vec![("E".into(), 0)]);
    assert!(starts[3].is_empty());
    let mut handles = handles.into_iter();
    let last = handles.next_back().unwrap().await.unwrap_err();
    assert_eq!(
        last.cause,
        Cause::Exhausted {
            last_rejection: None
        }
    );
    assert!(last.usage.is_empty());
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn zero_max_wait_falls_back_immediately() {
    let recorder = Recorder::default();
    let limiter = limiter(&[Five::A, Five::B], |_| Duration::ZERO, &recorder);
    let _filler = limiter.queue_job(JobRequest::new(
        "filler",
        Work::Job,
        sleeper(LONG, Usage::new()),
    ));
    common::advance(Duration::from_secs(7)).await;
    let _probe = limiter.queue_job(JobRequest::new(
        "probe",
        Work::Job,
        sleeper(LONG, Usage::new()),
    ));
    common::settle_tasks().await;
    assert_eq!(recorder.escalations("probe"), vec![("A".into(), 7_000)]);
    assert_eq!(recorder.starts("probe"), vec![("B".into(), 7_000)]);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn waits_of_five_then_three_seconds_fall_back_at_five_and_eight() {
    let recorder = Recorder::default();
    let wait = |m| match m {
        Five::A => Duration::from_secs(5),
        Five::B => Duration::from_secs(3),
        _ => Duration::ZERO,
    };
    let limiter = limiter(&[Five::A, Five::B, Five::C], wait, &recorder);
    // Fill A at 0; the second filler waits 5 s on A, then takes B.
    let _a = limiter.queue_job(JobRequest::new(
        "fill-a",
        Work::Job,
        sleeper(LONG, Usage::new()),
    ));
    let _b = limiter.queue_job(JobRequest::new(
        "fill-b",
        Work::Job,
        sleeper(LONG, Usage::new()),
    ));
    common::advance(Duration::from_secs(10)).await;
    assert_eq!(recorder.starts("fill-b"), vec![("B".into(), 5_000)]);
    let probe = limiter.queue_job(JobRequest::new(
        "probe",
        Work::Job,
        sleeper(Duration::from_secs(1), Usage::new()),
    ));
    let done = probe.await.unwrap();
    assert_eq!(done.model, Five::C);
    assert_eq!(
        recorder.escalations("probe"),
        vec![("A".into(), 15_000), ("B".into(), 18_000)],
        "5 s on A, then 3 s on B"
    );
    assert_eq!(recorder.starts("probe"), vec![("C".into(), 18_000)]);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_waiting_job_starts_as_soon_as_capacity_returns() {
    let recorder = Recorder::default();
    let limiter = limiter(
        &[Five::A, Five::B],
        |m| {
            if m == Five::A {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            }
        },
        &recorder,
    );
    let _first = limiter.queue_job(JobRequest::new(
        "first",
        Work::Job,
        sleeper(Duration::from_secs(12), Usage::new()),
    ));
    common::settle_tasks().await;
    let second = limiter.queue_job(JobRequest::new(
        "second",
        Work::Job,
        sleeper(Duration::from_secs(1), Usage::new()),
    ));
    assert_eq!(second.await.unwrap().model, Five::A);
    assert_eq!(recorder.starts("second"), vec![("A".into(), 12_000)]);
    limiter.stop(Duration::ZERO).await;
}
