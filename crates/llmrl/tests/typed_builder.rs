//! The typed builder (SPEC §2.4, §3): every limiter-wide option it takes reaches the limiter,
//! and building fails, with a readable error, outside a runtime or with a bad configuration.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Solo, Work, clock, elapsed_ms, pricing, sleeper};
use llmrl::backend::InProcessFleet;
use llmrl::{
    BuildError, Config, Event, FailureMode, JobRequest, JobTypeConfig, Limiter, MemoryConfig,
    ModelConfig, NamedLimiter, RatioAdjustmentConfig, SlotsChangeReason, Usage,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Kind {
    Busy,
    Idle,
}

#[test]
fn building_outside_a_tokio_runtime_is_an_error() {
    let typed = Limiter::<Solo, Work>::builder(|Solo::Only| ModelConfig::new(pricing())).build();
    let error = typed.unwrap_err();
    assert!(matches!(error, BuildError::NoRuntime), "{error:?}");
    assert_eq!(
        error.to_string(),
        "a limiter must be built inside a tokio runtime (its jobs and timers run there)"
    );
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type("j", JobTypeConfig::new());
    let named = NamedLimiter::builder(config).build();
    assert!(matches!(named.unwrap_err(), BuildError::NoRuntime));
}

#[tokio::test]
async fn a_configuration_error_prints_as_the_configuration_problems() {
    let error = Limiter::<Solo, Work>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).tokens_per_minute(0)
    })
    .build()
    .unwrap_err();
    let BuildError::Config(problems) = &error else {
        panic!("expected a configuration error, got {error:?}");
    };
    assert_eq!(error.to_string(), problems.to_string());
    assert!(
        error.to_string().contains("models.Only.tokens_per_minute"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_limiter_reports_its_instance_id_clock_and_warnings() {
    let limiter = Limiter::<Solo, Kind>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).tokens_per_minute(10_000)
    })
    .job_types(|kind| match kind {
        // Idle's part, 0.1 of 10 000 TPM, is below one 5 000-token job.
        Kind::Busy => JobTypeConfig::new().estimated_tokens(5_000).ratio(0.9),
        Kind::Idle => JobTypeConfig::new().estimated_tokens(5_000),
    })
    .instance_id("typed-1")
    .clock(clock())
    .build()
    .unwrap();
    assert_eq!(limiter.instance_id(), "typed-1");
    let debug = format!("{limiter:?}");
    assert!(
        debug.contains("Limiter") && debug.contains("typed-1"),
        "{debug}"
    );
    limiter.ready().await;
    assert_eq!(
        elapsed_ms(limiter.clock()),
        0,
        "ready at once without a fleet"
    );
    common::advance(Duration::from_secs(2)).await;
    assert_eq!(elapsed_ms(limiter.clock()), 2_000);
    let clone = limiter.clone();
    assert_eq!(clone.instance_id(), "typed-1", "clones share the limiter");
    let warnings = limiter.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("job type \"Idle\""), "{}", warnings[0]);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn the_memory_budget_setting_bounds_slots() {
    let limiter = Limiter::<Solo, Work>::builder(|Solo::Only| ModelConfig::new(pricing()))
        .job_types(|Work::Job| JobTypeConfig::new().estimated_memory_kb(100))
        .memory(MemoryConfig::fixed_kb(1_000))
        .clock(clock())
        .build()
        .unwrap();
    let a = limiter.availability();
    let memory = a.memory.unwrap();
    assert_eq!(
        (memory.total_kb, memory.free_kb, memory.held_kb),
        (1_000, 1_000, 0)
    );
    assert_eq!(a.slots, Some(10), "1 000 KB of 100 KB jobs");
    let handle = limiter.queue_job(JobRequest::new(
        "j",
        Work::Job,
        sleeper(Duration::from_secs(5), Usage::new()),
    ));
    common::settle_tasks().await;
    let a = limiter.availability();
    assert_eq!(a.memory.unwrap().held_kb, 100);
    assert_eq!(a.slots, Some(9));
    handle.await.unwrap();
    limiter.stop(Duration::ZERO).await;
}

/// Busy and Idle share 10 concurrent requests half and half; five long Busy jobs load Busy
/// fully. Returns the ratio changes seen within `within`.
async fn ratio_changes(
    settings: Option<RatioAdjustmentConfig>,
    within: Duration,
) -> Vec<(String, f64, f64)> {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let builder = Limiter::<Solo, Kind>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).max_concurrent_requests(10)
    })
    .on_event(move |event| {
        if let Event::RatioChanged { job_type, from, to } = event {
            seen.lock()
                .unwrap()
                .push((job_type.to_string(), *from, *to));
        }
    })
    .clock(clock());
    let builder = match settings {
        Some(settings) => builder.ratio_adjustment(settings),
        None => builder,
    };
    let limiter = builder.build().unwrap();
    let _busy: Vec<_> = (0..5)
        .map(|i| {
            limiter.queue_job(JobRequest::new(
                format!("busy-{i}"),
                Kind::Busy,
                sleeper(Duration::from_secs(3_600), Usage::new()),
            ))
        })
        .collect();
    common::advance(within).await;
    limiter.stop(Duration::ZERO).await;
    changes.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn the_ratio_adjustment_settings_set_when_ratios_move() {
    // Every second: after 1.5 s the idle type has given 0.2 to the busy one.
    let changes = ratio_changes(
        Some(RatioAdjustmentConfig::new().interval(Duration::from_secs(1))),
        Duration::from_millis(1_500),
    )
    .await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    let (busy, idle) = (&changes[0], &changes[1]);
    assert_eq!(busy.0, "Busy");
    assert!(
        (busy.1 - 0.5).abs() < 1e-9 && (busy.2 - 0.7).abs() < 1e-9,
        "{busy:?}"
    );
    assert_eq!(idle.0, "Idle");
    assert!(
        (idle.1 - 0.5).abs() < 1e-9 && (idle.2 - 0.3).abs() < 1e-9,
        "{idle:?}"
    );
    // The default cadence is 5 s: nothing has moved after 1.5 s.
    assert!(
        ratio_changes(None, Duration::from_millis(1_500))
            .await
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn slot_changes_reach_a_typed_callback_with_typed_ids() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let limiter = Limiter::<Solo, Work>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).max_concurrent_requests(2)
    })
    .on_available_slots_change(move |availability, reason, adjustment| {
        let job_type = &availability.job_types[0];
        seen.lock().unwrap().push((
            job_type.job_type,
            job_type.models[0].model,
            job_type.slots,
            reason,
            adjustment.is_some(),
        ));
    })
    .clock(clock())
    .build()
    .unwrap();
    limiter
        .queue_job(JobRequest::new(
            "j",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            (
                Work::Job,
                Solo::Only,
                Some(1),
                SlotsChangeReason::ConcurrentRequests,
                false
            ),
            (
                Work::Job,
                Solo::Only,
                Some(2),
                SlotsChangeReason::ConcurrentRequests,
                false
            ),
        ]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn the_last_backend_given_is_joined_with_the_fleet_settings_given_before_it() {
    let (first, second) = (InProcessFleet::new(), InProcessFleet::new());
    let limiter = Limiter::<Solo, Work>::builder(|Solo::Only| {
        ModelConfig::new(pricing()).tokens_per_minute(10_000)
    })
    .job_types(|Work::Job| {
        JobTypeConfig::new()
            .estimated_tokens(1_000)
            .max_wait(Solo::Only, Duration::ZERO)
    })
    .backend(first.clone())
    .failure_mode(FailureMode::Closed)
    .backend(second.clone())
    .clock(clock())
    .build()
    .unwrap();
    limiter.ready().await;
    assert_eq!((first.instances(), second.instances()), (0, 1));
    // The failure mode set for the first backend still applies: closed admits nothing.
    second.set_reachable(false);
    let failed = limiter
        .queue_job(JobRequest::new(
            "j",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .await
        .unwrap_err();
    assert!(matches!(failed.cause, llmrl::Cause::Exhausted { .. }));
    second.set_reachable(true);
    limiter.stop(Duration::ZERO).await;
}
