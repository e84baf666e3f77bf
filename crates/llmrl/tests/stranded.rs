//! A job type whose estimate is larger than this instance's fair share of a limit can never
//! start on that model at the current fleet size: the limiter says so in its availability and in
//! a warning (SPEC §7.1), rather than leaving the type silently stranded.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{clock, pricing};
use llmrl::backend::InProcessFleet;
use llmrl::{Config, JobTypeConfig, ModelConfig, NamedLimiter};

fn instance(fleet: &InProcessFleet, id: &str) -> NamedLimiter {
    // 10 000 TPM: one instance may take a 4 000-token job; at three, each share is 3 333.
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()).tokens_per_minute(10_000))
        .job_type(
            "big",
            JobTypeConfig::new()
                .estimated_tokens(4_000)
                .max_wait("m", Duration::ZERO),
        )
        .instance_id(id);
    NamedLimiter::builder(config)
        .clock(clock())
        .backend(fleet.clone())
        .build()
        .unwrap()
}

fn stranded(limiter: &NamedLimiter) -> bool {
    limiter.availability().job_types[0].models[0].stranded
}

#[tokio::test(start_paused = true)]
async fn a_type_larger_than_the_fair_share_is_reported_stranded_until_the_fleet_shrinks() {
    let fleet = InProcessFleet::new();
    let a = instance(&fleet, "a");
    a.ready().await;
    let b = instance(&fleet, "b");
    b.ready().await;
    common::advance(Duration::from_secs(1)).await;
    assert!(!stranded(&a) && !stranded(&b), "halves of 5 000 hold a job");

    let c = instance(&fleet, "c");
    c.ready().await;
    common::advance(Duration::from_secs(1)).await;
    for limiter in [&a, &b, &c] {
        assert!(stranded(limiter), "thirds of 3 333 hold none");
        assert_eq!(limiter.availability().job_types[0].slots, Some(0));
    }

    c.stop(Duration::ZERO).await;
    common::advance(Duration::from_secs(1)).await;
    assert!(!stranded(&a) && !stranded(&b), "back to halves");
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}
