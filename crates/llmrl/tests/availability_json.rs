//! Availability as the CLI and sidecar print it (SPEC §6.5, §10): the snapshot, the reason of a
//! slot change and a settlement's adjustment serialize with `snake_case` names, and unbounded
//! dimensions are `null`, never a huge number.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clock, pricing, sleeper};
use llmrl::{
    Config, JobRequest, JobTypeConfig, ModelConfig, NamedLimiter, RelativeAdjustment,
    SlotsChangeReason, Usage, WindowLimit,
};
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn a_snapshot_serializes_every_figure_and_null_for_what_is_unbounded() {
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(pricing())
                .tokens_per_minute(100_000)
                .max_concurrent_requests(2),
        )
        .job_type("j", JobTypeConfig::new().estimated_tokens(10_000));
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .build()
        .unwrap();
    let _running = limiter
        .queue_job(JobRequest::new(
            "r",
            "j",
            sleeper(Duration::from_secs(60), Usage::new()),
        ))
        .unwrap();
    common::settle_tasks().await;
    let availability = limiter.availability();
    let model = &availability.models[0];
    assert_eq!(
        model.window(WindowLimit::TokensPerMinute),
        model.tokens_per_minute.as_ref()
    );
    for unbounded in [
        WindowLimit::TokensPerDay,
        WindowLimit::RequestsPerMinute,
        WindowLimit::RequestsPerDay,
    ] {
        assert_eq!(model.window(unbounded), None, "{unbounded:?}");
    }
    assert_eq!(
        serde_json::to_value(&availability).unwrap(),
        json!({
            "slots": 1,
            "job_types": [{
                "job_type": "j",
                "slots": 1,
                "ratio": 1.0,
                "flexible": true,
                "in_flight": 1,
                "memory_kb": 0,
                "models": [{
                    "model": "m", "slots": 1, "in_flight": 1, "waiting": 0, "stranded": false,
                }],
            }],
            "models": [{
                "model": "m",
                "tokens_per_minute": {
                    "limit": 100_000, "used": 10_000, "remaining": 90_000,
                    "available": 90_000, "share": 100_000, "own": 10_000,
                },
                "tokens_per_day": null,
                "requests_per_minute": null,
                "requests_per_day": null,
                "concurrent_requests": {
                    "limit": 2, "used": 1, "remaining": 1,
                    "available": 1, "share": 2, "own": 1,
                },
            }],
            "memory": null,
            "instances": 1,
        })
    );
    limiter.stop(Duration::ZERO).await;
}

#[test]
fn reasons_are_named_alike_in_logs_and_in_json_in_priority_order() {
    let reasons = [
        (SlotsChangeReason::Adjustment, "adjustment"),
        (SlotsChangeReason::TokensMinute, "tokens_minute"),
        (SlotsChangeReason::TokensDay, "tokens_day"),
        (SlotsChangeReason::RequestsMinute, "requests_minute"),
        (SlotsChangeReason::RequestsDay, "requests_day"),
        (SlotsChangeReason::ConcurrentRequests, "concurrent_requests"),
        (SlotsChangeReason::Memory, "memory"),
        (SlotsChangeReason::Distributed, "distributed"),
    ];
    for (reason, name) in reasons {
        assert_eq!(reason.as_str(), name);
        assert_eq!(serde_json::to_value(reason).unwrap(), json!(name));
    }
    let mut sorted: Vec<_> = reasons.iter().map(|&(r, _)| r).collect();
    sorted.reverse();
    sorted.sort();
    let listed: Vec<_> = reasons.iter().map(|&(r, _)| r).collect();
    assert_eq!(sorted, listed, "ordered by SPEC §6.5's priority");
}

#[tokio::test(start_paused = true)]
async fn a_settlement_adjustment_serializes_per_resource() {
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(pricing())
                .tokens_per_minute(100_000)
                .tokens_per_day(1_000_000)
                .requests_per_minute(100)
                .requests_per_day(1_000),
        )
        .job_type(
            "j",
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .estimated_requests(1),
        );
    let adjustments: Arc<Mutex<Vec<RelativeAdjustment>>> = Arc::default();
    let seen = adjustments.clone();
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .on_available_slots_change(move |_, reason, adjustment| {
            if let Some(adjustment) = adjustment {
                assert_eq!(reason, SlotsChangeReason::Adjustment);
                seen.lock().unwrap().push(*adjustment);
            }
        })
        .build()
        .unwrap();
    limiter
        .queue_job(JobRequest::new(
            "r",
            "j",
            sleeper(
                Duration::from_secs(1),
                // An overage of 15 000 tokens and 1 request: 7 slots left, not 9.
                Usage::new().input_tokens(25_000).requests(2),
            ),
        ))
        .unwrap()
        .await
        .unwrap();
    let adjustments = adjustments.lock().unwrap().clone();
    assert_eq!(adjustments.len(), 1);
    assert_eq!(
        serde_json::to_value(adjustments[0]).unwrap(),
        json!({
            "tokens_per_minute": 15_000,
            "tokens_per_day": 15_000,
            "requests_per_minute": 1,
            "requests_per_day": 1,
            "concurrent_requests": 0,
            "memory_kb": 0,
        })
    );
    assert_eq!(RelativeAdjustment::default().tokens_per_minute, 0);
    limiter.stop(Duration::ZERO).await;
}
