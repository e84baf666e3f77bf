//! The `[backend]` section: validated with the rest, secrets never echoed, settings applied.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use llmrl::backend::InProcessFleet;
use llmrl::{Cause, Config, FailureMode, JobRequest, NamedLimiter, Usage};

const MODELS: &str = r#"
    [models.m]
    tokens_per_minute = 100000
    pricing = { input = 0, cached = 0, output = 0 }
    [job_types.j]
    estimated_tokens = 1000
    max_wait = { m = 0 }
"#;

fn config(backend: &str) -> Config {
    Config::from_toml_str(&format!("{MODELS}\n[backend]\n{backend}")).unwrap()
}

fn paths(config: &Config) -> Vec<(String, String)> {
    let error = config.validate().unwrap_err();
    error
        .problems()
        .iter()
        .map(|p| (p.path.clone(), p.value.clone()))
        .collect()
}

#[test]
fn a_redis_backend_validates_and_exposes_its_settings() {
    let config = config(
        "kind = \"redis\"\nurl = \"rediss://user:s3cret@cache:6380/2\"\nprefix = \"svc\"\nfailure_mode = \"closed\"\nheartbeat_interval = \"2s\"\nstale_after = \"7s\"\ntimeout = 250",
    );
    assert!(config.validate().is_ok());
    let backend = config.backend_settings().unwrap();
    assert_eq!(backend.kind(), "redis");
    assert_eq!(backend.url(), Some("rediss://user:s3cret@cache:6380/2"));
    assert_eq!(backend.prefix(), "svc");
    assert_eq!(backend.stale_after(), Duration::from_secs(7));
}

#[test]
fn every_backend_problem_is_reported_and_no_password_is_echoed() {
    let config = config(
        "kind = \"redis\"\nurl = \"http://user:s3cret@cache\"\nprefix = \"{x}\"\nheartbeat_interval = 0\ntimeout = \"soon\"\nretries = 3",
    );
    let problems = paths(&config);
    let at = |path: &str| {
        problems
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        at("backend.url"),
        Some("\"http\"".into()),
        "only the scheme is shown"
    );
    assert!(at("backend.prefix").is_some());
    assert!(at("backend.heartbeat_interval").is_some());
    assert!(at("backend.timeout").is_some());
    assert!(at("backend.retries").is_some());
    let text = config.validate().unwrap_err().to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(
        paths(&self::config("kind = \"etcd\"")),
        vec![("backend.kind".into(), "\"etcd\"".into())]
    );
    assert_eq!(
        paths(&self::config("kind = \"redis\"")),
        vec![("backend.url".into(), String::new())]
    );
    let stale = paths(&self::config(
        "heartbeat_interval = \"5s\"\nstale_after = \"5s\"",
    ));
    assert_eq!(stale[0].0, "backend.stale_after");
}

#[tokio::test(start_paused = true)]
async fn the_failure_mode_of_the_file_applies() {
    let fleet = InProcessFleet::new();
    let limiter = NamedLimiter::builder(config("failure_mode = \"closed\""))
        .clock(common::clock())
        .backend(fleet.clone())
        .build()
        .unwrap();
    limiter.ready().await;
    fleet.set_reachable(false);
    let job = |id: &str| {
        let run = common::sleeper(Duration::from_secs(1), Usage::new().input_tokens(1_000));
        limiter
            .queue_job(JobRequest::new(id.to_string(), "j".to_string(), run))
            .unwrap()
    };
    // The first admission finds the backend down and enters the outage; closed admits nothing.
    assert!(matches!(
        job("first").await.unwrap_err().cause,
        Cause::Exhausted { .. }
    ));
    assert!(matches!(
        job("second").await.unwrap_err().cause,
        Cause::Exhausted { .. }
    ));
    // A builder setting wins over the file.
    let open = NamedLimiter::builder(config("failure_mode = \"closed\""))
        .clock(common::clock())
        .backend(fleet.clone())
        .failure_mode(FailureMode::Open)
        .build()
        .unwrap();
    open.ready().await;
    let run = common::sleeper(Duration::from_secs(1), Usage::new().input_tokens(1_000));
    let handle = open
        .queue_job(JobRequest::new("open".to_string(), "j".to_string(), run))
        .unwrap();
    assert!(
        handle.await.is_ok(),
        "open admits on local limits while the backend is down"
    );
    fleet.set_reachable(true);
    limiter.stop(Duration::ZERO).await;
    open.stop(Duration::ZERO).await;
}
