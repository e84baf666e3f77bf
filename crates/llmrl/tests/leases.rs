//! Leases: capacity for jobs that run outside the limiter.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Five, Work, clock, pricing};
use llmrl::{AcquireError, JobTypeConfig, Limiter, ModelConfig, Usage};

fn limiter() -> Limiter<Five, Work> {
    Limiter::<Five, Work>::builder(|_| {
        ModelConfig::new(pricing())
            .max_concurrent_requests(1)
            .tokens_per_minute(10_000)
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

fn used(limiter: &Limiter<Five, Work>, model: usize) -> (u64, u64) {
    let a = limiter.availability();
    let m = &a.models[model];
    (
        m.concurrent_requests.unwrap().used,
        m.tokens_per_minute.unwrap().used,
    )
}

#[tokio::test(start_paused = true)]
async fn a_lease_holds_capacity_until_released_with_its_usage() {
    let limiter = limiter();
    let lease = limiter.acquire("job-1", Work::Job).await.unwrap();
    assert_eq!((*lease.model(), lease.attempt()), (Five::A, 1));
    assert_eq!(used(&limiter, 0), (1, 1_000));
    let entry = lease
        .release(Usage::new().input_tokens(600).output_tokens(100))
        .await;
    assert_eq!(entry.model, Five::A);
    assert!((entry.cost - (600.0 + 200.0) / 1e6).abs() < 1e-12);
    assert_eq!(used(&limiter, 0), (0, 700));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn leases_follow_the_escalation_order_and_run_out() {
    let limiter = limiter();
    let first = limiter.acquire("one", Work::Job).await.unwrap();
    let second = limiter.acquire("two", Work::Job).await.unwrap();
    assert_eq!((*first.model(), *second.model()), (Five::A, Five::B));
    assert_eq!(
        limiter.acquire("three", Work::Job).await.unwrap_err(),
        AcquireError::Exhausted
    );
    drop((first, second));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn delegating_settles_here_and_moves_to_the_next_model() {
    let limiter = limiter();
    let lease = limiter.acquire("job", Work::Job).await.unwrap();
    let (entry, next) = lease.delegate(Usage::new().input_tokens(300)).await;
    assert_eq!((entry.model, entry.input_tokens), (Five::A, 300));
    let next = next.unwrap();
    assert_eq!((*next.model(), next.attempt()), (Five::B, 2));
    assert_eq!(
        (used(&limiter, 0), used(&limiter, 1)),
        ((0, 300), (1, 1_000))
    );
    let (_, after_last) = next.delegate(Usage::new()).await;
    assert_eq!(
        after_last.unwrap_err(),
        AcquireError::Exhausted,
        "each model at most once"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_lease_frees_concurrency_and_keeps_its_estimate() {
    let limiter = limiter();
    let lease = limiter.acquire("lost", Work::Job).await.unwrap();
    drop(lease);
    assert_eq!(
        used(&limiter, 0),
        (0, 1_000),
        "unknown usage: the provider may have been called"
    );
    limiter.stop(Duration::ZERO).await;
    assert_eq!(
        limiter.acquire("late", Work::Job).await.unwrap_err(),
        AcquireError::ShutDown
    );
}
