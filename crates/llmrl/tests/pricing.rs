//! Costs: per attempt at the model's prices, summed over the attempts that ran.
#![allow(clippy::unwrap_used, clippy::float_cmp)]

mod common;

use std::time::Duration;

use common::{Five, Work, clock};
use llmrl::{
    JobContext, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Pricing, Usage,
};

const EPS: f64 = 1e-12;

#[test]
fn the_spec_example_costs_0_00525() {
    let usage = Usage::new()
        .input_tokens(3_000)
        .cached_tokens(500)
        .output_tokens(1_000);
    let cost = Pricing::new(1.0, 0.5, 2.0).cost(&usage);
    assert!((cost - 0.005_25).abs() < EPS, "{cost}");
}

#[test]
fn cached_tokens_use_the_cached_price() {
    let pricing = Pricing::new(3.0, 0.3, 15.0);
    let cached = Usage::new().cached_tokens(1_000_000);
    assert!((pricing.cost(&cached) - 0.3).abs() < EPS);
    let mixed = Usage::new()
        .input_tokens(200_000)
        .cached_tokens(800_000)
        .output_tokens(10_000);
    assert!((pricing.cost(&mixed) - (0.6 + 0.24 + 0.15)).abs() < EPS);
}

#[test]
fn free_models_and_empty_usage_cost_nothing() {
    assert_eq!(
        Pricing::new(0.0, 0.0, 0.0).cost(&Usage::new().input_tokens(5_000)),
        0.0
    );
    assert_eq!(Pricing::new(1.0, 1.0, 1.0).cost(&Usage::new()), 0.0);
}

#[tokio::test(start_paused = true)]
async fn totals_add_up_over_the_models_a_job_ran_on() {
    let limiter = Limiter::<Five, Work>::builder(|m| match m {
        Five::A => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)),
        Five::B => ModelConfig::new(Pricing::new(10.0, 1.0, 30.0)),
        _ => ModelConfig::new(Pricing::new(0.0, 0.0, 0.0)),
    })
    .job_types(|Work::Job| JobTypeConfig::new())
    .escalation_order([Five::A, Five::B, Five::C])
    .clock(clock())
    .build()
    .unwrap();
    let done = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            |ctx: JobContext<Five>| async move {
                let usage = Usage::new()
                    .input_tokens(3_000)
                    .cached_tokens(500)
                    .output_tokens(1_000);
                match ctx.model {
                    Five::C => JobResult::done((), usage),
                    _ => JobResult::rejected((), usage),
                }
            },
        ))
        .await
        .unwrap();
    let costs: Vec<f64> = done.usage.iter().map(|u| u.cost).collect();
    // A: 0.00525; B: (30 000 + 500 + 30 000) / 1e6 = 0.0605; C: free.
    assert!((costs[0] - 0.005_25).abs() < EPS);
    assert!((costs[1] - 0.060_5).abs() < EPS);
    assert_eq!(costs[2], 0.0);
    assert!((done.total_cost - 0.065_75).abs() < EPS);
    limiter.stop(Duration::ZERO).await;
}
