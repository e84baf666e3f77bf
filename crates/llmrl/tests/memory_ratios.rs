//! Memory parts follow ratios (SPEC §6.2, §6.3): a job type may hold `ratio × budget` KB, so
//! when a flexible ratio moves toward a loaded type, its memory slots move with it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Solo, clock, pricing, sleeper};
use llmrl::{
    JobRequest, JobTypeConfig, Limiter, MemoryConfig, ModelConfig, RatioAdjustmentConfig, Usage,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Kind {
    Busy,
    Idle,
}

#[tokio::test(start_paused = true)]
async fn a_ratio_moved_to_a_loaded_type_gives_it_memory_slots() {
    // 1 000 KB, half each; 100 KB jobs: 5 slots each. The model limits nothing else.
    let limiter = Limiter::<Solo, Kind>::builder(|Solo::Only| ModelConfig::new(pricing()))
        .job_types(|_| JobTypeConfig::new().estimated_memory_kb(100))
        .memory(MemoryConfig::fixed_kb(1_000))
        .ratio_adjustment(RatioAdjustmentConfig::new().interval(Duration::from_secs(1)))
        .clock(clock())
        .build()
        .unwrap();
    let slots = |limiter: &Limiter<Solo, Kind>| {
        let a = limiter.availability();
        (a.job_types[0].slots, a.job_types[1].slots)
    };
    assert_eq!(slots(&limiter), (Some(5), Some(5)));
    let _busy: Vec<_> = (0..5)
        .map(|i| {
            limiter.queue_job(JobRequest::new(
                format!("busy-{i}"),
                Kind::Busy,
                sleeper(Duration::from_secs(600), Usage::new()),
            ))
        })
        .collect();
    common::settle_tasks().await;
    assert_eq!(slots(&limiter), (Some(0), Some(5)), "Busy holds its 500 KB");
    // Busy is fully loaded, Idle not at all: 0.2 moves to Busy, so 700 KB and 300 KB.
    common::advance(Duration::from_millis(1_500)).await;
    let a = limiter.availability();
    assert!((a.job_types[0].ratio - 0.7).abs() < 1e-9);
    assert_eq!(slots(&limiter), (Some(2), Some(3)));
    assert_eq!(a.memory.unwrap().held_kb, 500);
    limiter.stop(Duration::ZERO).await;
}
