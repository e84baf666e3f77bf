//! Flexible ratios adapt to local load (SPEC §6.2, §10); fixed ratios never move.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clock, elapsed_ms, pricing, sleeper};
use llmrl::{
    Clock, Config, Event, JobHandle, JobRequest, JobTypeConfig, ModelConfig, NamedLimiter,
    RatioAdjustmentConfig, Usage,
};

type Changes = Arc<Mutex<Vec<(u64, String, f64, f64)>>>;

/// CONC 20 shared by `a` (fixed 0.4), `b` and `c` (flexible 0.3 each).
fn limiter(adjustment: RatioAdjustmentConfig, clock: &Clock, changes: &Changes) -> NamedLimiter {
    let seen = changes.clone();
    let at = clock.clone();
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()).max_concurrent_requests(20))
        .job_type(
            "a",
            JobTypeConfig::new()
                .fixed_ratio(0.4)
                .max_wait("m", Duration::from_secs(600)),
        )
        .job_type(
            "b",
            JobTypeConfig::new()
                .ratio(0.3)
                .max_wait("m", Duration::from_secs(600)),
        )
        .job_type(
            "c",
            JobTypeConfig::new()
                .ratio(0.3)
                .max_wait("m", Duration::from_secs(600)),
        )
        .ratio_adjustment(adjustment);
    NamedLimiter::builder(config)
        .clock(clock.clone())
        .on_event(move |event| {
            if let Event::RatioChanged { job_type, from, to } = event {
                seen.lock()
                    .unwrap()
                    .push((elapsed_ms(&at), job_type.to_string(), *from, *to));
            }
        })
        .build()
        .unwrap()
}

fn ratios(limiter: &NamedLimiter) -> Vec<f64> {
    limiter
        .availability()
        .job_types
        .iter()
        .map(|t| t.ratio)
        .collect()
}

fn slots(limiter: &NamedLimiter, job_type: usize) -> Option<u64> {
    limiter.availability().job_types[job_type].slots
}

fn queue(
    limiter: &NamedLimiter,
    job_type: &str,
    n: usize,
    run_for: Duration,
) -> Vec<JobHandle<Arc<str>, Arc<str>, String>> {
    (0..n)
        .map(|i| {
            let job = sleeper(run_for, Usage::new());
            limiter
                .queue_job(JobRequest::new(
                    format!("{job_type}-{i}"),
                    job_type.to_string(),
                    job,
                ))
                .unwrap()
        })
        .collect()
}

fn every_5s() -> RatioAdjustmentConfig {
    RatioAdjustmentConfig::new()
        .interval(Duration::from_secs(5))
        .releases_per_adjustment(0)
}

fn assert_sum_is_one(ratios: &[f64]) {
    let sum: f64 = ratios.iter().sum();
    assert!((sum - 1.0).abs() < 1e-9, "ratios {ratios:?} sum to {sum}");
}

#[tokio::test(start_paused = true)]
async fn a_fixed_type_is_untouched_while_a_flexible_one_is_saturated() {
    let (clock, changes) = (clock(), Changes::default());
    let limiter = limiter(every_5s(), &clock, &changes);
    assert_eq!(slots(&limiter, 0), Some(8));
    let _b = queue(&limiter, "b", 30, Duration::from_secs(120));
    common::advance(Duration::from_secs(31)).await;
    let now = ratios(&limiter);
    assert!((now[0] - 0.4).abs() < 1e-12, "fixed: {now:?}");
    assert!(
        now[1] > 0.3 && now[2] < 0.3,
        "b receives what c gives: {now:?}"
    );
    assert_sum_is_one(&now);
    assert!(changes.lock().unwrap().iter().all(|(_, t, _, _)| t != "a"));
    assert_eq!(slots(&limiter, 0), Some(8), "a's slots never moved");
    // a's jobs start at once.
    let started = elapsed_ms(&clock);
    let a = queue(&limiter, "a", 8, Duration::ZERO);
    for handle in a {
        handle.await.unwrap();
    }
    assert_eq!(elapsed_ms(&clock), started, "no delay for the fixed type");
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn ratio_moves_toward_the_loaded_type_within_max_adjustment_and_min_ratio() {
    let (clock, changes) = (clock(), Changes::default());
    let limiter = limiter(every_5s(), &clock, &changes);
    let _b = queue(&limiter, "b", 40, Duration::from_secs(300));
    common::advance(Duration::from_secs(5)).await;
    // First tick at 5 s: c (idle, load 0) gives min(0.3 − 0.01, 0.2) × (1 − 0) = 0.2 to b.
    let first = ratios(&limiter);
    assert!(
        (first[1] - 0.5).abs() < 1e-9 && (first[2] - 0.1).abs() < 1e-9,
        "{first:?}"
    );
    assert_eq!(
        changes
            .lock()
            .unwrap()
            .iter()
            .map(|(at, t, _, _)| (*at, t.clone()))
            .collect::<Vec<_>>(),
        vec![(5_000, "b".into()), (5_000, "c".into())]
    );
    // Then c gives what is left above min_ratio, never more.
    common::advance(Duration::from_secs(30)).await;
    let later = ratios(&limiter);
    assert!(
        (later[2] - 0.01).abs() < 1e-9,
        "c stops at min_ratio: {later:?}"
    );
    assert!((later[1] - 0.59).abs() < 1e-9, "{later:?}");
    assert_sum_is_one(&later);
    for (_, _, from, to) in changes.lock().unwrap().iter() {
        assert!(
            (to - from).abs() <= 0.2 + 1e-9,
            "at most max_adjustment per cycle"
        );
    }
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn waiters_start_when_their_type_receives_capacity() {
    let (clock, changes) = (clock(), Changes::default());
    let limiter = limiter(every_5s(), &clock, &changes);
    // b has 6 slots; the seventh waits until the 5 s tick gives b more ratio.
    let b = queue(&limiter, "b", 7, Duration::from_secs(60));
    let mut b = b.into_iter();
    let seventh = b.next_back().unwrap();
    common::settle_tasks().await;
    assert_eq!(limiter.availability().job_types[1].models[0].waiting, 1);
    common::advance(Duration::from_secs(5)).await;
    assert_eq!(
        limiter.availability().job_types[1].in_flight,
        7,
        "started at the 5 s tick"
    );
    assert_eq!(limiter.availability().job_types[1].models[0].waiting, 0);
    seventh.await.unwrap();
    assert_eq!(elapsed_ms(&clock), 65_000, "ran from 5 s for 60 s");
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_moves_when_every_type_is_busy_or_every_type_is_idle() {
    let (clock, changes) = (clock(), Changes::default());
    let limiter = limiter(every_5s(), &clock, &changes);
    common::advance(Duration::from_secs(30)).await;
    assert!(changes.lock().unwrap().is_empty(), "all idle: no receiver");
    let _b = queue(&limiter, "b", 10, Duration::from_secs(120));
    let _c = queue(&limiter, "c", 10, Duration::from_secs(120));
    common::advance(Duration::from_secs(30)).await;
    assert!(
        changes.lock().unwrap().is_empty(),
        "all flexible types busy: no donor"
    );
    let now = ratios(&limiter);
    assert!((now[1] - 0.3).abs() < 1e-12 && (now[2] - 0.3).abs() < 1e-12);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn every_n_settlements_trigger_an_adjustment() {
    let (clock, changes) = (clock(), Changes::default());
    let adjustment = RatioAdjustmentConfig::new()
        .interval(Duration::ZERO)
        .releases_per_adjustment(10);
    let limiter = limiter(adjustment, &clock, &changes);
    // b stays saturated with 6 running and more waiting; short jobs settle every second.
    let _b = queue(&limiter, "b", 60, Duration::from_secs(1));
    common::advance(Duration::from_millis(1_500)).await;
    assert!(changes.lock().unwrap().is_empty(), "six settlements so far");
    common::advance(Duration::from_secs(1)).await;
    let first = changes.lock().unwrap().first().cloned().unwrap();
    assert_eq!(first.0, 2_000, "the tenth settlement happened at 2 s");
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn the_interval_keeps_its_cadence_from_build_time() {
    let (clock, changes) = (clock(), Changes::default());
    let adjustment = RatioAdjustmentConfig::new()
        .interval(Duration::from_secs(5))
        .releases_per_adjustment(3)
        .max_adjustment(0.001);
    let limiter = limiter(adjustment, &clock, &changes);
    common::advance(Duration::from_millis(2_500)).await;
    // From 2.5 s, short b jobs settle three at a time: extra adjustments at odd instants.
    let _b = queue(&limiter, "b", 400, Duration::from_millis(700));
    common::advance(Duration::from_secs(20)).await;
    let times: Vec<u64> = changes.lock().unwrap().iter().map(|c| c.0).collect();
    assert!(
        times.iter().any(|t| t % 5_000 != 0),
        "settlement-triggered adjustments: {times:?}"
    );
    for tick in [5_000, 10_000, 15_000, 20_000] {
        assert!(
            times.contains(&tick),
            "the {tick} ms tick still happened: {times:?}"
        );
    }
    limiter.stop(Duration::ZERO).await;
}
