//! The string-keyed face (SPEC §3): a `NamedLimiter` built from a `Config` names its models and
//! job types as configured, refuses job types it does not know, and hands out leases by name.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{clock, elapsed_ms, pricing, sleeper};
use llmrl::{
    AcquireError, Config, JobRequest, JobTypeConfig, ModelConfig, NamedLimiter, QueueError, Usage,
};

/// Two models, `fast` then `slow`, ten jobs at a time each; jobs never wait. `bulk`'s part of
/// `slow`'s tokens (0.1 of 10 000 TPM) is below one job, which is a warning.
fn config() -> Config {
    let never_wait = |t: JobTypeConfig| {
        t.estimated_tokens(2_000)
            .max_wait("fast", Duration::ZERO)
            .max_wait("slow", Duration::ZERO)
    };
    Config::new()
        .model(
            "fast",
            ModelConfig::new(pricing()).max_concurrent_requests(10),
        )
        .model(
            "slow",
            ModelConfig::new(pricing())
                .max_concurrent_requests(10)
                .tokens_per_minute(10_000),
        )
        .escalation_order(["fast", "slow"])
        .job_type("chat", never_wait(JobTypeConfig::new().ratio(0.9)))
        .job_type("bulk", never_wait(JobTypeConfig::new()))
        .instance_id("named-1")
}

fn limiter() -> NamedLimiter {
    NamedLimiter::builder(config())
        .clock(clock())
        .build()
        .unwrap()
}

/// The same two models taking one job at a time, and `chat` alone.
fn one_at_a_time() -> NamedLimiter {
    let config = Config::new()
        .model(
            "fast",
            ModelConfig::new(pricing()).max_concurrent_requests(1),
        )
        .model(
            "slow",
            ModelConfig::new(pricing()).max_concurrent_requests(1),
        )
        .escalation_order(["fast", "slow"])
        .job_type(
            "chat",
            JobTypeConfig::new()
                .max_wait("fast", Duration::ZERO)
                .max_wait("slow", Duration::ZERO),
        );
    NamedLimiter::builder(config)
        .clock(clock())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn it_names_its_models_job_types_instance_and_clock_as_configured() {
    let limiter = limiter();
    assert_eq!(limiter.model_ids().collect::<Vec<_>>(), ["fast", "slow"]);
    assert_eq!(
        limiter.job_type_names().collect::<Vec<_>>(),
        ["chat", "bulk"]
    );
    assert_eq!(limiter.instance_id(), "named-1");
    let debug = format!("{limiter:?}");
    assert!(
        debug.contains("NamedLimiter") && debug.contains("named-1"),
        "{debug}"
    );
    assert_eq!(elapsed_ms(limiter.clock()), 0);
    common::advance(Duration::from_secs(3)).await;
    assert_eq!(
        elapsed_ms(limiter.clock()),
        3_000,
        "the clock it was built with"
    );
    let warnings = limiter.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("job type \"bulk\""), "{}", warnings[0]);
    assert!(warnings[0].contains("model \"slow\""), "{}", warnings[0]);
    let availability = limiter.availability();
    let names: Vec<&str> = availability.models.iter().map(|m| &*m.model).collect();
    assert_eq!(names, ["fast", "slow"]);
    let types: Vec<&str> = availability
        .job_types
        .iter()
        .map(|t| &*t.job_type)
        .collect();
    assert_eq!(types, ["chat", "bulk"]);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_limiter_without_an_instance_id_gets_a_unique_one() {
    let plain = || {
        Config::new()
            .model("m", ModelConfig::new(pricing()))
            .job_type("j", JobTypeConfig::new())
    };
    let a = NamedLimiter::builder(plain())
        .clock(clock())
        .build()
        .unwrap();
    let b = NamedLimiter::builder(plain())
        .clock(clock())
        .build()
        .unwrap();
    assert!(!a.instance_id().is_empty());
    assert_ne!(a.instance_id(), b.instance_id());
    assert!(a.warnings().is_empty());
    a.stop(Duration::ZERO).await;
    b.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn an_unknown_job_type_is_refused_naming_the_known_ones() {
    let limiter = limiter();
    let expected = QueueError::UnknownJobType {
        name: "summary".into(),
        known: "chat, bulk".into(),
    };
    let queued = limiter.queue_job(JobRequest::new(
        "q",
        "summary",
        sleeper::<Arc<str>>(Duration::from_secs(1), Usage::new()),
    ));
    assert_eq!(queued.unwrap_err(), expected);
    let acquired = limiter.acquire("a", "summary").await;
    let error = acquired.unwrap_err();
    assert_eq!(error, expected);
    assert_eq!(
        error.to_string(),
        "unknown job type \"summary\" (configured: chat, bulk)"
    );
    // Nothing was reserved for either.
    let availability = limiter.availability();
    assert!(
        availability
            .models
            .iter()
            .all(|m| m.concurrent_requests.unwrap().used == 0)
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn leases_by_name_walk_the_order_and_name_their_model() {
    let limiter = one_at_a_time();
    let first = limiter.acquire("one", "chat").await.unwrap().unwrap();
    assert_eq!(&**first.model(), "fast");
    assert_eq!(first.job_id(), "one");
    assert_eq!(first.attempt(), 1);
    let debug = format!("{first:?}");
    assert!(
        debug.contains("Lease") && debug.contains("\"one\"") && debug.contains("fast"),
        "{debug}"
    );
    let second = limiter
        .acquire(String::from("two"), "chat")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&**second.model(), "slow");
    assert_eq!(
        limiter.acquire("three", "chat").await.unwrap().unwrap_err(),
        AcquireError::Exhausted,
        "both models are busy and chat never waits"
    );
    let entry = first.release(Usage::new().input_tokens(1_500)).await;
    assert_eq!(&*entry.model, "fast");
    assert_eq!(entry.input_tokens, 1_500);
    let again = limiter.acquire("four", "chat").await.unwrap().unwrap();
    assert_eq!(&**again.model(), "fast", "fast is free again");
    drop(again);
    drop(second);
    limiter.stop(Duration::ZERO).await;
    assert_eq!(
        limiter.acquire("late", "chat").await.unwrap().unwrap_err(),
        AcquireError::ShutDown
    );
}
