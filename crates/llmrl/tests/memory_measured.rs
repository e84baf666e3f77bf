//! A measured memory budget (SPEC §6.3): without `max_memory_kb`, the process budget is the
//! memory available to the process times `free_memory_ratio`, measured again every
//! `recalculation_interval` for every limiter of the process, and a new measure that moves
//! slots is reported with the `memory` reason.
//!
//! The pool is process-wide, so this file's tests take turns and stop their limiters. Nothing
//! here assumes how much memory the machine has: only that it has some, and that taking 64 MiB
//! changes what is available.
#![allow(clippy::unwrap_used, clippy::await_holding_lock)]

mod common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{clock, pricing, sleeper};
use llmrl::{
    Config, JobRequest, JobTypeConfig, MemoryConfig, ModelConfig, NamedLimiter, SlotsChangeReason,
    Usage,
};

fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Calls = Arc<Mutex<Vec<(SlotsChangeReason, u64)>>>;

/// One job type of 1 KB: its slots follow the budget to the kilobyte.
fn limiter(memory: MemoryConfig, calls: &Calls) -> NamedLimiter {
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type("j", JobTypeConfig::new().estimated_memory_kb(1))
        .memory(memory);
    let seen = calls.clone();
    NamedLimiter::builder(config)
        .clock(clock())
        .on_available_slots_change(move |availability, reason, _| {
            let total = availability.memory.unwrap().total_kb;
            seen.lock().unwrap().push((reason, total));
        })
        .build()
        .unwrap()
}

fn total_kb(limiter: &NamedLimiter) -> u64 {
    limiter.availability().memory.unwrap().total_kb
}

/// Advances one `recalculation_interval` (1 s) at a time until `limiter`'s budget differs from
/// `first`. The kernel refreshes its memory figures about once a (real) second, so each round
/// also waits a little real time; the 64 MiB ballast, and every other process, move them.
async fn remeasured(limiter: &NamedLimiter, first: u64) -> u64 {
    for _ in 0..40 {
        common::advance(Duration::from_secs(1)).await;
        let now = total_kb(limiter);
        if now != first {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the budget never changed: it is not measured again");
}

/// 64 MiB, written so that the pages are really taken.
fn ballast() -> Vec<u8> {
    std::hint::black_box(vec![1_u8; 64 << 20])
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_measured_from_the_machine() {
    let _turn = turn();
    let calls = Calls::default();
    let limiter = limiter(
        MemoryConfig::measured(0.5).recalculation_interval(Duration::from_secs(1)),
        &calls,
    );
    let first = total_kb(&limiter);
    assert!(
        first > 0,
        "a measured budget is never empty on a running machine"
    );
    let a = limiter.availability();
    assert_eq!(
        a.slots,
        Some(first),
        "1 KB jobs: one slot per KB of the budget"
    );
    let memory = a.memory.unwrap();
    assert_eq!((memory.free_kb, memory.held_kb), (first, 0));

    common::advance(Duration::from_millis(1_500)).await;
    assert!(
        total_kb(&limiter) > 0,
        "still a budget after it is measured again"
    );

    // Jobs still run against the measured budget.
    let done = limiter
        .queue_job(JobRequest::new(
            "j",
            "j",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap()
        .await;
    assert!(done.is_ok());
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_not_measured_again_before_its_interval() {
    let _turn = turn();
    let calls = Calls::default();
    let limiter = limiter(
        MemoryConfig::measured(0.5).recalculation_interval(Duration::from_secs(3_600)),
        &calls,
    );
    let first = total_kb(&limiter);
    assert!(first > 0);
    common::advance(Duration::from_secs(60)).await;
    assert_eq!(total_kb(&limiter), first, "an hour has not passed");
    assert!(
        calls.lock().unwrap().is_empty(),
        "no memory change reported"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn limiters_with_the_same_settings_share_one_measure() {
    let _turn = turn();
    let settings = || MemoryConfig::measured(0.5).recalculation_interval(Duration::from_secs(1));
    let (calls_a, calls_b) = (Calls::default(), Calls::default());
    let a = limiter(settings(), &calls_a);
    let b = limiter(settings(), &calls_b);
    let first = total_kb(&a);
    assert_eq!(total_kb(&b), first, "one process budget");
    let ballast = ballast();
    let second = remeasured(&a, first).await;
    assert_eq!(total_kb(&b), second, "both see the new measure");
    for calls in [&calls_a, &calls_b] {
        let calls = calls.lock().unwrap().clone();
        assert!(
            calls.contains(&(SlotsChangeReason::Memory, second)),
            "{calls:?}"
        );
    }
    drop(ballast);
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_fixed_budget_while_a_measured_one_is_in_use_is_a_build_error() {
    let _turn = turn();
    let measured = limiter(
        MemoryConfig::measured(0.5).recalculation_interval(Duration::from_secs(1)),
        &Calls::default(),
    );
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type("j", JobTypeConfig::new().estimated_memory_kb(1))
        .memory(MemoryConfig::fixed_kb(1_000));
    let error = NamedLimiter::builder(config)
        .clock(clock())
        .build()
        .unwrap_err();
    assert!(
        matches!(error, llmrl::BuildError::MemoryConflict { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "memory settings conflict: this process's limiters share one memory budget \
         (measured, free_memory_ratio = 0.5, recalculation_interval = 1s), but this limiter \
         asks for max_memory_kb = 1000"
    );
    measured.stop(Duration::ZERO).await;
}
