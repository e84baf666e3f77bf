//! The process memory budget (SPEC §6.3, §10): per-type parts by ratio, one pool for every
//! limiter in the process.
//!
//! The pool is process-wide, so these tests take turns (a shared lock) and each stops its
//! limiters, which leaves the pool for the next one.
#![allow(clippy::unwrap_used, clippy::await_holding_lock)]

mod common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{clock, elapsed_ms, pricing, sleeper};
use llmrl::{
    BuildError, Config, JobRequest, JobTypeConfig, MemoryConfig, ModelConfig, NamedLimiter,
    RatioAdjustmentConfig, SlotsChangeReason, Usage,
};

const MB: u64 = 1_024;

fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 100 MB; A needs 10 MB and B 5 MB, half the budget each; the model limits nothing.
fn config(budget_mb: u64) -> Config {
    Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type(
            "a",
            JobTypeConfig::new()
                .estimated_memory_kb(10 * MB)
                .ratio(0.5)
                .max_wait("m", Duration::from_secs(600)),
        )
        .job_type(
            "b",
            JobTypeConfig::new()
                .estimated_memory_kb(5 * MB)
                .ratio(0.5)
                .max_wait("m", Duration::from_secs(600)),
        )
        .memory(MemoryConfig::fixed_kb(budget_mb * MB))
        .ratio_adjustment(
            RatioAdjustmentConfig::new()
                .interval(Duration::ZERO)
                .releases_per_adjustment(0),
        )
}

fn limiter(budget_mb: u64) -> NamedLimiter {
    NamedLimiter::builder(config(budget_mb))
        .clock(clock())
        .build()
        .unwrap()
}

fn slots(limiter: &NamedLimiter) -> (Option<u64>, Option<u64>) {
    let a = limiter.availability();
    (a.job_types[0].slots, a.job_types[1].slots)
}

fn run(
    limiter: &NamedLimiter,
    job_type: &str,
    id: &str,
    secs: u64,
) -> llmrl::JobHandle<Arc<str>, Arc<str>, String> {
    let job = sleeper(Duration::from_secs(secs), Usage::new());
    limiter
        .queue_job(JobRequest::new(id.to_string(), job_type.to_string(), job))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn ratio_parts_of_memory_give_five_and_ten_slots() {
    let _turn = turn();
    let limiter = limiter(100);
    assert_eq!(slots(&limiter), (Some(5), Some(10)));
    let memory = limiter.availability().memory.unwrap();
    assert_eq!(
        (memory.total_kb, memory.free_kb, memory.held_kb),
        (100 * MB, 100 * MB, 0)
    );
    let _a = run(&limiter, "a", "a-1", 60);
    common::settle_tasks().await;
    assert_eq!(slots(&limiter), (Some(4), Some(10)));
    assert_eq!(limiter.availability().memory.unwrap().held_kb, 10 * MB);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn the_sixth_job_waits_and_starts_right_after_one_finishes() {
    let _turn = turn();
    let clock = clock();
    let limiter = NamedLimiter::builder(config(100))
        .clock(clock.clone())
        .build()
        .unwrap();
    let first = run(&limiter, "a", "a-0", 10);
    let _others: Vec<_> = (1..5)
        .map(|i| run(&limiter, "a", &format!("a-{i}"), 60))
        .collect();
    let sixth = run(&limiter, "a", "a-5", 1);
    common::settle_tasks().await;
    assert_eq!(limiter.availability().job_types[0].models[0].waiting, 1);
    first.await.unwrap();
    sixth.await.unwrap();
    assert_eq!(
        elapsed_ms(&clock),
        11_000,
        "started at 10 s, when the first released its 10 MB"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn two_limiters_in_one_process_share_the_budget() {
    let _turn = turn();
    let clock = clock();
    let one = NamedLimiter::builder(config(100))
        .clock(clock.clone())
        .build()
        .unwrap();
    let two = NamedLimiter::builder(config(100))
        .clock(clock.clone())
        .build()
        .unwrap();
    // `one` fills the whole process budget: 5 × 10 MB + 10 × 5 MB.
    let mut held: Vec<_> = (0..5)
        .map(|i| run(&one, "a", &format!("a-{i}"), 30))
        .collect();
    held.extend((0..10).map(|i| run(&one, "b", &format!("b-{i}"), 60)));
    common::settle_tasks().await;
    assert_eq!(one.availability().memory.unwrap().free_kb, 0);
    assert_eq!(
        slots(&two),
        (Some(0), Some(0)),
        "its own parts are untouched, the process is full"
    );
    let waiting = run(&two, "a", "two-a", 1);
    common::settle_tasks().await;
    assert_eq!(two.availability().job_types[0].models[0].waiting, 1);
    // When `one`'s A jobs end at 30 s, `two`'s waiter is told and starts.
    waiting.await.unwrap();
    assert_eq!(elapsed_ms(&clock), 31_000);
    one.stop(Duration::ZERO).await;
    two.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn limiters_with_different_budgets_in_one_process_are_a_build_error() {
    let _turn = turn();
    let first = limiter(100);
    let conflict = NamedLimiter::builder(config(50))
        .clock(clock())
        .build()
        .unwrap_err();
    assert!(
        matches!(conflict, BuildError::MemoryConflict { .. }),
        "{conflict}"
    );
    assert!(
        conflict.to_string().contains("max_memory_kb = 102400"),
        "{conflict}"
    );
    // A limiter whose jobs use no memory does not join the pool, whatever its settings.
    let neutral = Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type("x", JobTypeConfig::new())
        .memory(MemoryConfig::fixed_kb(7));
    let neutral = NamedLimiter::builder(neutral)
        .clock(clock())
        .build()
        .unwrap();
    first.stop(Duration::ZERO).await;
    neutral.stop(Duration::ZERO).await;
    // Once nobody uses the pool, a new budget may be set.
    let after = limiter(50);
    assert_eq!(slots(&after), (Some(2), Some(5)));
    after.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_memory_change_is_reported_with_the_memory_reason() {
    let _turn = turn();
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let seen = reasons.clone();
    let limiter = NamedLimiter::builder(config(100))
        .clock(clock())
        .on_available_slots_change(move |availability, reason, adjustment| {
            seen.lock().unwrap().push((
                reason,
                availability.job_types[0].slots,
                adjustment.copied(),
            ));
        })
        .build()
        .unwrap();
    run(&limiter, "a", "a", 5).await.unwrap();
    let reasons = reasons.lock().unwrap().clone();
    assert_eq!(
        reasons,
        vec![
            (SlotsChangeReason::Memory, Some(4), None),
            (SlotsChangeReason::Memory, Some(5), None),
        ]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_that_can_never_fit_the_budget_fails_instead_of_waiting() {
    let _turn = turn();
    // The budget is measured from the system: a 1 TB estimate passes validation but can never
    // fit, so the job gives up at once instead of waiting forever.
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type(
            "huge",
            JobTypeConfig::new()
                .estimated_memory_kb(1 << 30)
                .max_wait("m", Duration::from_secs(86_400)),
        )
        .memory(MemoryConfig::measured(0.8));
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .build()
        .unwrap();
    let failed = run(&limiter, "huge", "huge", 1).await.unwrap_err();
    assert!(matches!(failed.cause, llmrl::Cause::Exhausted { .. }));
    limiter.stop(Duration::ZERO).await;
}
