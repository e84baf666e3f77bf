//! `on_available_slots_change` (SPEC §6.5): fired on every slot change, with the first changed
//! resource as its reason, and the settlement's adjustment when one moved the counters.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clock, pricing, sleeper};
use llmrl::{
    Config, JobRequest, JobTypeConfig, ModelConfig, NamedLimiter, RatioAdjustmentConfig,
    RelativeAdjustment, SlotsChangeReason, Usage,
};

type Calls = Arc<Mutex<Vec<(SlotsChangeReason, Option<u64>, Option<RelativeAdjustment>)>>>;

fn limiter(model: ModelConfig, job: JobTypeConfig, calls: &Calls) -> NamedLimiter {
    let seen = calls.clone();
    let config = Config::new()
        .model("m", model)
        .job_type("j", job.max_wait("m", Duration::from_secs(3_600)))
        .ratio_adjustment(
            RatioAdjustmentConfig::new()
                .interval(Duration::ZERO)
                .releases_per_adjustment(0),
        );
    NamedLimiter::builder(config)
        .clock(clock())
        .on_available_slots_change(move |availability, reason, adjustment| {
            seen.lock()
                .unwrap()
                .push((reason, availability.slots, adjustment.copied()));
        })
        .build()
        .unwrap()
}

fn run(
    limiter: &NamedLimiter,
    id: &str,
    secs: u64,
    usage: Usage,
) -> llmrl::JobHandle<Arc<str>, Arc<str>, String> {
    let job = sleeper(Duration::from_secs(secs), usage);
    limiter
        .queue_job(JobRequest::new(id.to_string(), "j".to_string(), job))
        .unwrap()
}

fn reasons(calls: &Calls) -> Vec<SlotsChangeReason> {
    calls.lock().unwrap().iter().map(|c| c.0).collect()
}

#[tokio::test(start_paused = true)]
async fn each_limited_resource_is_the_reason_when_it_alone_changes() {
    let job = || {
        JobTypeConfig::new()
            .estimated_tokens(100)
            .estimated_requests(1)
    };
    let cases = [
        (
            ModelConfig::new(pricing()).tokens_per_minute(1_000),
            SlotsChangeReason::TokensMinute,
        ),
        (
            ModelConfig::new(pricing()).tokens_per_day(1_000),
            SlotsChangeReason::TokensDay,
        ),
        (
            ModelConfig::new(pricing()).requests_per_minute(10),
            SlotsChangeReason::RequestsMinute,
        ),
        (
            ModelConfig::new(pricing()).requests_per_day(10),
            SlotsChangeReason::RequestsDay,
        ),
        (
            ModelConfig::new(pricing()).max_concurrent_requests(10),
            SlotsChangeReason::ConcurrentRequests,
        ),
    ];
    for (model, expected) in cases {
        let calls = Calls::default();
        let limiter = limiter(model, job(), &calls);
        let _running = run(
            &limiter,
            "one",
            60,
            Usage::new().input_tokens(100).requests(1),
        );
        common::settle_tasks().await;
        assert_eq!(reasons(&calls), vec![expected]);
        assert_eq!(
            calls.lock().unwrap()[0].1,
            Some(9),
            "the new availability comes with it"
        );
        limiter.stop(Duration::ZERO).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_changed_resource_in_priority_order_wins() {
    let calls = Calls::default();
    let model = ModelConfig::new(pricing())
        .tokens_per_minute(1_000)
        .max_concurrent_requests(3);
    let limiter = limiter(model, JobTypeConfig::new().estimated_tokens(100), &calls);
    // Admission moves tokens and concurrency: tokens come first. Settling exactly as estimated
    // moves only concurrency.
    run(
        &limiter,
        "one",
        5,
        Usage::new().input_tokens(100).requests(1),
    )
    .await
    .unwrap();
    assert_eq!(
        reasons(&calls),
        vec![
            SlotsChangeReason::TokensMinute,
            SlotsChangeReason::ConcurrentRequests
        ]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_refund_is_a_negative_adjustment_and_an_overage_a_positive_one() {
    let calls = Calls::default();
    // 1 050 TPM with 100-token jobs: 9 slots after one admission, back to 10 after a refund of
    // 50, down to 8 after an overage of 50.
    let model = ModelConfig::new(pricing())
        .tokens_per_minute(1_050)
        .tokens_per_day(100_000);
    let limiter = limiter(model, JobTypeConfig::new().estimated_tokens(100), &calls);
    // Reserved 100, used 50: −50.
    run(
        &limiter,
        "refund",
        1,
        Usage::new().input_tokens(50).requests(1),
    )
    .await
    .unwrap();
    // Reserved 100, used 150: +50.
    run(
        &limiter,
        "overage",
        1,
        Usage::new().input_tokens(150).requests(1),
    )
    .await
    .unwrap();
    let calls = calls.lock().unwrap().clone();
    let adjustments: Vec<_> = calls
        .iter()
        .filter(|c| c.0 == SlotsChangeReason::Adjustment)
        .map(|c| c.2.unwrap())
        .collect();
    assert_eq!(adjustments.len(), 2, "{calls:?}");
    for (adjustment, tokens) in adjustments.iter().zip([-50, 50]) {
        assert_eq!(
            (adjustment.tokens_per_minute, adjustment.tokens_per_day),
            (tokens, tokens)
        );
        assert_eq!(
            (adjustment.requests_per_minute, adjustment.requests_per_day),
            (0, 0)
        );
        assert_eq!(
            (adjustment.concurrent_requests, adjustment.memory_kb),
            (0, 0)
        );
    }
    assert!(
        calls
            .iter()
            .filter(|c| c.0 != SlotsChangeReason::Adjustment)
            .all(|c| c.2.is_none())
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_window_rollover_is_reported() {
    let calls = Calls::default();
    let model = ModelConfig::new(pricing()).tokens_per_minute(1_000);
    let limiter = limiter(model, JobTypeConfig::new().estimated_tokens(500), &calls);
    run(
        &limiter,
        "one",
        1,
        Usage::new().input_tokens(500).requests(1),
    )
    .await
    .unwrap();
    calls.lock().unwrap().clear();
    common::advance(Duration::from_secs(60)).await;
    assert_eq!(
        *calls.lock().unwrap(),
        vec![(SlotsChangeReason::TokensMinute, Some(2), None)]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_reported_when_no_slot_count_changed() {
    let calls = Calls::default();
    let model = ModelConfig::new(pricing()).tokens_per_minute(1_000);
    let limiter = limiter(model, JobTypeConfig::new().estimated_tokens(100), &calls);
    // Settling exactly as estimated on a model without a concurrency limit changes no slot.
    run(
        &limiter,
        "exact",
        1,
        Usage::new().input_tokens(100).requests(1),
    )
    .await
    .unwrap();
    assert_eq!(
        reasons(&calls),
        vec![SlotsChangeReason::TokensMinute],
        "admission only"
    );
    let _ = limiter.availability();
    common::advance(Duration::from_secs(30)).await;
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "reading availability or waiting changes nothing"
    );
    limiter.stop(Duration::ZERO).await;
}
