//! Configuration from code (SPEC §2, §3): the builder methods spell exactly what a file says,
//! and a validated configuration reports each job type's estimate and the escalation order.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{clock, pricing};
use llmrl::{
    BackendConfig, Config, Estimate, FailureMode, JobTypeConfig, MemoryConfig, ModelConfig,
    NamedLimiter, RatioAdjustmentConfig,
};

const FILE: &str = r#"
escalation_order = ["b", "a"]

[models.a]
tokens_per_minute = 100000
pricing = { input = 1, cached = 0.5, output = 2 }

[models.b]
requests_per_minute = 60
pricing = { input = 1, cached = 0.5, output = 2 }

[job_types.chat]
estimated_tokens = 2000
estimated_memory_kb = 64
ratio = { initial = 0.25, flexible = false }

[job_types.bulk]
estimated_requests = 3
ratio = { flexible = false }

[job_types.misc]

[memory]
free_memory_ratio = 0.5
recalculation_interval = 2000

[ratio_adjustment]
interval = 3000
high_load = 0.8
low_load = 0.2

[backend]
kind = "redis"
url = "redis://cache:6379/0"
prefix = "svc"
failure_mode = "closed"
"#;

fn from_code() -> Config {
    Config::new()
        .escalation_order(["b", "a"])
        .model("a", ModelConfig::new(pricing()).tokens_per_minute(100_000))
        .model("b", ModelConfig::new(pricing()).requests_per_minute(60))
        .job_type(
            "chat",
            JobTypeConfig::new()
                .estimated_tokens(2_000)
                .estimated_memory_kb(64)
                .ratio(0.25)
                .flexible(false),
        )
        .job_type(
            "bulk",
            JobTypeConfig::new().estimated_requests(3).flexible(false),
        )
        .job_type("misc", JobTypeConfig::new())
        .memory(MemoryConfig::measured(0.5).recalculation_interval(Duration::from_secs(2)))
        .ratio_adjustment(
            RatioAdjustmentConfig::new()
                .interval(Duration::from_secs(3))
                .high_load(0.8)
                .low_load(0.2),
        )
        .backend(
            BackendConfig::redis("redis://cache:6379/0")
                .with_prefix("svc")
                .with_failure_mode(FailureMode::Closed),
        )
}

#[test]
fn the_builders_write_what_the_file_says() {
    let file = Config::from_toml_str(FILE).unwrap();
    assert_eq!(
        serde_json::to_value(from_code()).unwrap(),
        serde_json::to_value(&file).unwrap()
    );
}

#[test]
fn backend_settings_read_back_with_their_defaults() {
    let code = from_code();
    let backend = code.backend_settings().unwrap();
    assert_eq!(backend.kind(), "redis");
    assert_eq!(backend.url(), Some("redis://cache:6379/0"));
    assert_eq!(backend.prefix(), "svc");
    assert_eq!(
        backend.stale_after(),
        Duration::from_secs(15),
        "the default"
    );

    let local = BackendConfig::in_process();
    assert_eq!(local.kind(), "in_process");
    assert_eq!(local.url(), None);
    assert_eq!(local.prefix(), "llmrl", "the default prefix");
    assert_eq!(
        serde_json::to_value(&local).unwrap(),
        serde_json::json!({"kind": "in_process"})
    );
    assert!(Config::new().backend_settings().is_none());
}

#[test]
fn a_validated_config_reports_estimates_and_the_order() {
    let validated = from_code().validate().unwrap();
    let estimates: Vec<(&str, Estimate)> = validated.job_types().collect();
    let estimate = |tokens, requests, memory_kb| {
        let mut e = Estimate::default();
        e.tokens = tokens;
        e.requests = requests;
        e.memory_kb = memory_kb;
        e
    };
    assert_eq!(
        estimates,
        [
            ("chat", estimate(2_000, 1, 64)),
            ("bulk", estimate(0, 3, 0)),
            ("misc", estimate(0, 1, 0)),
        ],
        "defaults: 0 tokens, 1 request, 0 KB"
    );
    assert_eq!(validated.escalation_order().collect::<Vec<_>>(), ["b", "a"]);
    let single = Config::new()
        .model("only", ModelConfig::new(pricing()))
        .job_type("j", JobTypeConfig::new())
        .validate()
        .unwrap();
    assert_eq!(
        single.escalation_order().collect::<Vec<_>>(),
        ["only"],
        "one model is its own order"
    );
}

#[tokio::test(start_paused = true)]
async fn flexible_false_fixes_a_ratio_given_or_not() {
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()).max_concurrent_requests(10))
        .job_type("fixed", JobTypeConfig::new().ratio(0.4).flexible(false))
        .job_type("rest", JobTypeConfig::new().flexible(false))
        .job_type("free", JobTypeConfig::new().ratio(0.3).flexible(true));
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .build()
        .unwrap();
    let types: Vec<(String, f64, bool)> = limiter
        .availability()
        .job_types
        .iter()
        .map(|t| (t.job_type.to_string(), t.ratio, t.flexible))
        .collect();
    assert_eq!(
        types,
        [
            ("fixed".to_owned(), 0.4, false),
            ("rest".to_owned(), 0.3, false),
            ("free".to_owned(), 0.3, true),
        ]
    );
    limiter.stop(Duration::ZERO).await;
}
