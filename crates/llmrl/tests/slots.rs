//! Slots (SPEC §6.1, §6.4): whole jobs of each type that can start now, per model and in total.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{clock, pricing, sleeper};
use llmrl::{
    Availability, Config, JobRequest, JobTypeConfig, ModelConfig, NamedLimiter,
    RatioAdjustmentConfig, Usage,
};

/// Static ratios: these tests are about the arithmetic, not about adaptation.
fn limiter(config: Config) -> NamedLimiter {
    let config = config.ratio_adjustment(
        RatioAdjustmentConfig::new()
            .interval(Duration::ZERO)
            .releases_per_adjustment(0),
    );
    NamedLimiter::builder(config)
        .clock(clock())
        .build()
        .unwrap()
}

/// Slots of `job_type` on `model` (None: unbounded).
fn on(
    a: &Availability<std::sync::Arc<str>, std::sync::Arc<str>>,
    job_type: &str,
    model: &str,
) -> Option<u64> {
    let t = a
        .job_types
        .iter()
        .find(|t| &*t.job_type == job_type)
        .unwrap();
    t.models.iter().find(|m| &*m.model == model).unwrap().slots
}

fn total(
    a: &Availability<std::sync::Arc<str>, std::sync::Arc<str>>,
    job_type: &str,
) -> Option<u64> {
    a.job_types
        .iter()
        .find(|t| &*t.job_type == job_type)
        .unwrap()
        .slots
}

fn long_job(
    limiter: &NamedLimiter,
    job_type: &str,
) -> llmrl::JobHandle<std::sync::Arc<str>, std::sync::Arc<str>, String> {
    limiter
        .queue_job(JobRequest::new(
            format!("{job_type}-long"),
            job_type.to_string(),
            sleeper(Duration::from_secs(3_600), Usage::new()),
        ))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn spec_example_six_and_eight_then_four_and_eight() {
    let limiter = limiter(
        Config::new()
            .model("m", ModelConfig::new(pricing()).tokens_per_minute(100_000))
            .job_type(
                "a",
                JobTypeConfig::new().estimated_tokens(10_000).ratio(0.6),
            )
            .job_type("b", JobTypeConfig::new().estimated_tokens(5_000).ratio(0.4)),
    );
    let a = limiter.availability();
    assert_eq!(
        (total(&a, "a"), total(&a, "b"), a.slots),
        (Some(6), Some(8), Some(14))
    );
    let _one = long_job(&limiter, "a");
    let _two = long_job(&limiter, "a");
    common::settle_tasks().await;
    let a = limiter.availability();
    assert_eq!((total(&a, "a"), total(&a, "b")), (Some(4), Some(8)));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn thirds_of_one_hundred_thousand_give_three_each() {
    let mut config =
        Config::new().model("m", ModelConfig::new(pricing()).tokens_per_minute(100_000));
    for (name, ratio) in [("a", 0.33), ("b", 0.33), ("c", 0.34)] {
        config = config.job_type(
            name,
            JobTypeConfig::new().estimated_tokens(10_000).ratio(ratio),
        );
    }
    let limiter = limiter(config);
    let a = limiter.availability();
    assert_eq!(
        [total(&a, "a"), total(&a, "b"), total(&a, "c")],
        [Some(3); 3]
    );
    limiter.stop(Duration::ZERO).await;
}

/// Three models limited by different resources, three job types of different sizes.
fn three_by_three() -> Config {
    Config::new()
        .model(
            "conc",
            ModelConfig::new(pricing()).max_concurrent_requests(10),
        )
        .model("rpm", ModelConfig::new(pricing()).requests_per_minute(60))
        .model("tpd", ModelConfig::new(pricing()).tokens_per_day(1_000_000))
        .escalation_order(["conc", "rpm", "tpd"])
        .job_type(
            "small",
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .estimated_requests(1)
                .ratio(0.5),
        )
        .job_type(
            "medium",
            JobTypeConfig::new()
                .estimated_tokens(20_000)
                .estimated_requests(2)
                .ratio(0.3),
        )
        .job_type(
            "large",
            JobTypeConfig::new()
                .estimated_tokens(50_000)
                .estimated_requests(3)
                .ratio(0.2),
        )
}

#[tokio::test(start_paused = true)]
async fn three_models_three_job_types_each_limited_by_its_own_resource() {
    let limiter = limiter(three_by_three());
    let a = limiter.availability();
    // CONC 10 × ratio: 5 / 3 / 2.
    assert_eq!(
        [
            on(&a, "small", "conc"),
            on(&a, "medium", "conc"),
            on(&a, "large", "conc")
        ],
        [Some(5), Some(3), Some(2)]
    );
    // RPM 60 × ratio / requests: 30/1, 18/2, 12/3.
    assert_eq!(
        [
            on(&a, "small", "rpm"),
            on(&a, "medium", "rpm"),
            on(&a, "large", "rpm")
        ],
        [Some(30), Some(9), Some(4)]
    );
    // TPD 1 000 000 × ratio / tokens: 500 000/10 000, 300 000/20 000, 200 000/50 000.
    assert_eq!(
        [
            on(&a, "small", "tpd"),
            on(&a, "medium", "tpd"),
            on(&a, "large", "tpd")
        ],
        [Some(50), Some(15), Some(4)]
    );
    assert_eq!(
        [total(&a, "small"), total(&a, "medium"), total(&a, "large")],
        [Some(85), Some(27), Some(10)]
    );
    assert_eq!(a.slots, Some(122));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn running_jobs_take_slots_only_where_they_run() {
    let config = three_by_three().job_type(
        "small",
        JobTypeConfig::new()
            .estimated_tokens(10_000)
            .estimated_requests(1)
            .ratio(0.5)
            .max_wait("conc", Duration::ZERO),
    );
    let limiter = limiter(config);
    // Fill small's five concurrency slots; the sixth does not wait and falls through to rpm.
    let _jobs: Vec<_> = (0..6).map(|_| long_job(&limiter, "small")).collect();
    common::settle_tasks().await;
    let a = limiter.availability();
    assert_eq!(on(&a, "small", "conc"), Some(0));
    // 60 RPM: small used 1 request of its 30.
    assert_eq!(on(&a, "small", "rpm"), Some(29));
    assert_eq!(
        on(&a, "medium", "conc"),
        Some(3),
        "other types keep their parts"
    );
    let rpm = &a.models[1].requests_per_minute.unwrap();
    assert_eq!((rpm.used, rpm.remaining), (1, 59));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn min_capacity_lifts_a_small_part_but_never_past_what_exists() {
    let limiter = limiter(
        Config::new()
            .model(
                "m",
                ModelConfig::new(pricing())
                    .tokens_per_minute(100_000)
                    .min_capacity(2),
            )
            .job_type(
                "big",
                JobTypeConfig::new().estimated_tokens(10_000).ratio(0.99),
            )
            .job_type(
                "tiny",
                JobTypeConfig::new().estimated_tokens(10_000).ratio(0.01),
            ),
    );
    let a = limiter.availability();
    // tiny's 1 000 tokens are lifted to two jobs; the parts now promise 119 000 of 100 000, so
    // both are scaled down and together never exceed ten jobs.
    let (big, tiny) = (total(&a, "big").unwrap(), total(&a, "tiny").unwrap());
    assert!(tiny >= 1, "lifted from 0: {tiny}");
    assert!(
        big + tiny <= 10,
        "{big} + {tiny} jobs of 10 000 tokens in 100 000"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn max_capacity_caps_a_large_part() {
    let limiter = limiter(
        Config::new()
            .model(
                "m",
                ModelConfig::new(pricing())
                    .tokens_per_minute(100_000)
                    .max_capacity(3),
            )
            .job_type(
                "a",
                JobTypeConfig::new().estimated_tokens(10_000).ratio(0.6),
            )
            .job_type(
                "b",
                JobTypeConfig::new().estimated_tokens(10_000).ratio(0.4),
            ),
    );
    let a = limiter.availability();
    assert_eq!((total(&a, "a"), total(&a, "b")), (Some(3), Some(3)));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn min_capacity_never_promises_capacity_a_full_model_lacks() {
    let limiter = limiter(
        Config::new()
            .model(
                "m",
                ModelConfig::new(pricing())
                    .tokens_per_minute(20_000)
                    .min_capacity(5),
            )
            .job_type("a", JobTypeConfig::new().estimated_tokens(10_000)),
    );
    assert_eq!(
        limiter.availability().slots,
        Some(2),
        "five promised, two exist"
    );
    let _one = long_job(&limiter, "a");
    let _two = limiter
        .queue_job(JobRequest::new(
            "two",
            "a".to_string(),
            sleeper(Duration::from_secs(3_600), Usage::new()),
        ))
        .unwrap();
    common::settle_tasks().await;
    assert_eq!(limiter.availability().slots, Some(0));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn unbounded_dimensions_are_absent() {
    let limiter = limiter(
        Config::new()
            .model("free", ModelConfig::new(pricing()))
            .job_type("a", JobTypeConfig::new().estimated_tokens(100)),
    );
    let a = limiter.availability();
    assert_eq!(a.slots, None);
    assert_eq!(a.models[0].tokens_per_minute, None);
    assert_eq!(a.models[0].concurrent_requests, None);
    assert_eq!(a.memory, None);
    limiter.stop(Duration::ZERO).await;
}
