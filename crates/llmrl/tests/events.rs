//! Events (SPEC §4.4, §5): what a listener hears while jobs start, escalate, delegate and
//! settle, and how each event serializes (tagged by `"event"`, as the CLI prints them).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Five, Work, clock, pricing, sleeper};
use llmrl::{Event, JobContext, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Usage};
use serde_json::{Value, json};

/// A and B take one job at a time and count tokens per minute; jobs estimate 1 000 tokens and
/// never wait.
fn limiter(events: &Arc<Mutex<Vec<Event>>>) -> Limiter<Five, Work> {
    let seen = events.clone();
    Limiter::<Five, Work>::builder(|_| {
        ModelConfig::new(pricing())
            .max_concurrent_requests(1)
            .tokens_per_minute(100_000)
    })
    .job_types(|Work::Job| {
        JobTypeConfig::new()
            .estimated_tokens(1_000)
            .max_wait(Five::A, Duration::ZERO)
            .max_wait(Five::B, Duration::ZERO)
    })
    .escalation_order([Five::A, Five::B])
    .on_event(move |event| seen.lock().unwrap().push(event.clone()))
    .clock(clock())
    .build()
    .unwrap()
}

fn json_of(events: &Arc<Mutex<Vec<Event>>>) -> Vec<Value> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_delegated_job_reports_its_starts_delegation_and_settlements() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let limiter = limiter(&events);
    let done = limiter
        .queue_job(JobRequest::new(
            "d",
            Work::Job,
            |ctx: JobContext<Five>| async move {
                if ctx.model == Five::A {
                    // 500 tokens over the estimate, then try B.
                    JobResult::rejected("busy", Usage::new().input_tokens(1_500))
                } else {
                    // 600 under it.
                    JobResult::done(ctx.attempt, Usage::new().output_tokens(400))
                }
            },
        ))
        .await
        .unwrap();
    assert_eq!((done.model, done.value), (Five::B, 2));
    let adjustment = |model: &str, actual: u64, charged: i64| {
        json!({
            "event": "usage_adjusted",
            "job_id": "d",
            "model": model,
            "job_type": "Job",
            "limit": "tokens_per_minute",
            "estimated": 1_000,
            "actual": actual,
            "charged": charged,
            "cross_window": false,
        })
    };
    assert_eq!(
        json_of(&events),
        vec![
            json!({"event": "started", "job_id": "d", "job_type": "Job", "model": "A", "attempt": 1}),
            adjustment("A", 1_500, 500),
            json!({"event": "delegated", "job_id": "d", "job_type": "Job", "from": "A"}),
            json!({"event": "started", "job_id": "d", "job_type": "Job", "model": "B", "attempt": 2}),
            adjustment("B", 400, -600),
        ]
    );
    let overages: Vec<bool> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::UsageAdjusted(a) => Some(a.is_overage()),
            _ => None,
        })
        .collect();
    assert_eq!(overages, [true, false], "an overage on A, a refund on B");
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_that_finds_a_model_full_reports_its_escalation() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let limiter = limiter(&events);
    let _filler = limiter.queue_job(JobRequest::new(
        "filler",
        Work::Job,
        sleeper(Duration::from_secs(3_600), Usage::new().input_tokens(1_000)),
    ));
    common::settle_tasks().await;
    events.lock().unwrap().clear();
    let done = limiter
        .queue_job(JobRequest::new(
            "e",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new().input_tokens(1_000)),
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::B);
    assert_eq!(
        json_of(&events),
        vec![
            json!({"event": "escalated", "job_id": "e", "job_type": "Job", "from": "A"}),
            json!({"event": "started", "job_id": "e", "job_type": "Job", "model": "B", "attempt": 1}),
        ],
        "exact usage: no adjustment"
    );
    limiter.stop(Duration::ZERO).await;
}

#[test]
fn a_ratio_change_serializes_with_both_ratios() {
    let event = Event::RatioChanged {
        job_type: Arc::from("chat"),
        from: 0.5,
        to: 0.7,
    };
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({"event": "ratio_changed", "job_type": "chat", "from": 0.5, "to": 0.7})
    );
}
