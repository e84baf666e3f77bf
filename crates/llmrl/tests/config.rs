//! The string-keyed configuration: parsing TOML and JSON, validation that reports every problem
//! at once with its path and value (SPEC §2.5), ratio splitting (§2.3, §10), durations, files,
//! and the example configs shipped in `examples/`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llmrl::config::Problem;
use llmrl::{
    Cause, Clock, Config, ConfigError, JobContext, JobRequest, JobResult, JobTypeConfig,
    ModelConfig, NamedLimiter, Pricing, RatioAdjustmentConfig, Timestamp, Usage,
};

/// 2026-01-01T00:00:00Z: a minute boundary, so the default `max_wait` is 65 s.
const NEW_YEAR: u64 = 1_767_225_600_000;

fn toml(text: &str) -> Config {
    Config::from_toml_str(text).expect("the TOML parses")
}

/// The problems of a configuration that must not validate.
fn problems(config: &Config) -> Vec<Problem> {
    config
        .validate()
        .expect_err("the configuration is invalid")
        .problems()
        .to_vec()
}

fn paths(problems: &[Problem]) -> BTreeSet<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

/// The one problem at `path`.
fn at<'a>(problems: &'a [Problem], path: &str) -> &'a Problem {
    let found: Vec<&Problem> = problems.iter().filter(|p| p.path == path).collect();
    assert_eq!(found.len(), 1, "one problem at {path}, got {problems:#?}");
    found[0]
}

fn warnings(config: &Config) -> Vec<String> {
    config
        .validate()
        .expect("the configuration is valid")
        .warnings()
        .to_vec()
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples")).join(name)
}

// ---------------------------------------------------------------------------------------------
// Valid configurations and warnings
// ---------------------------------------------------------------------------------------------

const VALID_TOML: &str = r#"
escalation_order = ["gpt-4o", "claude"]
instance_id = "worker-1"

[models."gpt-4o"]
requests_per_minute = 500
tokens_per_minute = 100000
max_concurrent_requests = 20
pricing = { input = 2.5, cached = 1.25, output = 10.0 }

[models.claude]
tokens_per_minute = 80000
tokens_per_day = 2000000
pricing = { input = 3, cached = 0.3, output = 15 }
min_capacity = 1
max_capacity = 10

[models.spare]
requests_per_day = 1000
pricing = { input = 0, cached = 0, output = 0 }

[job_types.summary]
estimated_tokens = 10000
estimated_requests = 2
estimated_memory_kb = 512
ratio = { initial = 0.6, flexible = false }
max_wait = { "gpt-4o" = "30s", claude = 0 }

[job_types.chat]
estimated_tokens = 2000

[memory]
max_memory_kb = 1048576
recalculation_interval = "2s"

[ratio_adjustment]
interval = 5000
releases_per_adjustment = 10
high_load = 0.8
low_load = 0.2
max_adjustment = 0.1
min_ratio = 0.05
"#;

const VALID_JSON: &str = r#"{
  "escalation_order": ["gpt-4o", "claude"],
  "instance_id": "worker-1",
  "models": {
    "gpt-4o": {
      "requests_per_minute": 500,
      "tokens_per_minute": 100000,
      "max_concurrent_requests": 20,
      "pricing": { "input": 2.5, "cached": 1.25, "output": 10.0 }
    },
    "claude": {
      "tokens_per_minute": 80000,
      "tokens_per_day": 2000000,
      "pricing": { "input": 3, "cached": 0.3, "output": 15 },
      "min_capacity": 1,
      "max_capacity": 10
    },
    "spare": {
      "requests_per_day": 1000,
      "pricing": { "input": 0, "cached": 0, "output": 0 }
    }
  },
  "job_types": {
    "summary": {
      "estimated_tokens": 10000,
      "estimated_requests": 2,
      "estimated_memory_kb": 512,
      "ratio": { "initial": 0.6, "flexible": false },
      "max_wait": { "gpt-4o": "30s", "claude": 0 }
    },
    "chat": { "estimated_tokens": 2000 }
  },
  "memory": { "max_memory_kb": 1048576, "recalculation_interval": "2s" },
  "ratio_adjustment": {
    "interval": 5000,
    "releases_per_adjustment": 10,
    "high_load": 0.8,
    "low_load": 0.2,
    "max_adjustment": 0.1,
    "min_ratio": 0.05
  }
}"#;

#[test]
fn valid_toml_validates() {
    let config = toml(VALID_TOML);
    assert_eq!(
        config.model_ids().collect::<Vec<_>>(),
        ["gpt-4o", "claude", "spare"]
    );
    assert_eq!(
        config.job_type_names().collect::<Vec<_>>(),
        ["summary", "chat"]
    );
    let validated = config.validate().expect("the TOML config is valid");
    // "spare" is configured but not in the order; it is the only warning.
    assert_eq!(
        validated.warnings(),
        ["model \"spare\" is not in the escalation order and is never used"]
    );
}

#[test]
fn equivalent_json_validates_the_same() {
    let json = Config::from_json_str(VALID_JSON).expect("the JSON parses");
    let toml = toml(VALID_TOML);
    assert!(json.model_ids().eq(toml.model_ids()));
    assert!(json.job_type_names().eq(toml.job_type_names()));
    let json = json.validate().expect("the JSON config is valid");
    let toml = toml.validate().expect("the TOML config is valid");
    assert_eq!(json.warnings(), toml.warnings());
}

#[test]
fn config_from_code_validates_like_a_file() {
    let config = Config::new()
        .model(
            "gpt-4o",
            ModelConfig::new(Pricing::new(2.5, 1.25, 10.0))
                .requests_per_minute(500)
                .tokens_per_minute(100_000),
        )
        .model(
            "claude",
            ModelConfig::new(Pricing::new(3.0, 0.3, 15.0)).tokens_per_minute(80_000),
        )
        .escalation_order(["gpt-4o", "claude"])
        .job_type(
            "summary",
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .fixed_ratio(0.6)
                .max_wait("gpt-4o".to_owned(), Duration::from_secs(30)),
        )
        .job_type("chat", JobTypeConfig::new().estimated_tokens(2_000))
        .ratio_adjustment(RatioAdjustmentConfig::new().min_ratio(0.05))
        .instance_id("worker-1");
    assert_eq!(warnings(&config), Vec::<String>::new());
}

#[test]
fn warns_about_a_model_outside_the_escalation_order() {
    let config = toml(
        r#"
        escalation_order = ["a"]
        [models.a]
        pricing = { input = 1, cached = 1, output = 1 }
        [models.unused]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.chat]
        "#,
    );
    assert_eq!(
        warnings(&config),
        ["model \"unused\" is not in the escalation order and is never used"]
    );
}

#[test]
fn warns_about_a_flexible_type_whose_part_is_below_one_job() {
    // big gets 0.9 of 100 000 TPM; small gets the remaining 0.1 = 10 000 < 20 000.
    let config = toml(
        r#"
        [models.gpt]
        tokens_per_minute = 100000
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.big]
        estimated_tokens = 20000
        ratio = { initial = 0.9 }
        [job_types.small]
        estimated_tokens = 20000
        "#,
    );
    let warnings = warnings(&config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let w = &warnings[0];
    assert!(w.contains("job type \"small\""), "{w}");
    assert!(w.contains("model \"gpt\""), "{w}");
    assert!(w.contains("tokens_per_minute (100000)"), "{w}");
    assert!(w.contains("below one job (20000)"), "{w}");
    assert!(w.contains("it is flexible"), "{w}");
}

#[test]
fn warns_about_a_fixed_type_whose_part_is_below_one_job() {
    let config = toml(
        r#"
        [models.gpt]
        requests_per_minute = 10
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.bulk]
        ratio = { initial = 0.95 }
        [job_types.rare]
        estimated_requests = 1
        ratio = { initial = 0.05, flexible = false }
        "#,
    );
    let warnings = warnings(&config);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let w = &warnings[0];
    assert!(w.contains("job type \"rare\""), "{w}");
    assert!(w.contains("requests_per_minute (10)"), "{w}");
    assert!(w.contains("its ratio is fixed, so it never will"), "{w}");
}

#[test]
fn min_capacity_lifts_a_small_part_so_there_is_no_warning() {
    let config = toml(
        r#"
        [models.gpt]
        tokens_per_minute = 100000
        min_capacity = 1
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.big]
        estimated_tokens = 20000
        ratio = { initial = 0.9 }
        [job_types.small]
        estimated_tokens = 20000
        "#,
    );
    assert_eq!(warnings(&config), Vec::<String>::new());
}

#[test]
fn a_memory_estimate_above_the_budget_is_an_error_and_above_the_part_a_warning() {
    let config = |small_kb: u64| {
        toml(&format!(
            r#"
            [models.gpt]
            pricing = {{ input = 1, cached = 1, output = 1 }}
            [memory]
            max_memory_kb = 1000
            [job_types.big]
            estimated_memory_kb = 100
            ratio = {{ initial = 0.8 }}
            [job_types.small]
            estimated_memory_kb = {small_kb}
            "#
        ))
    };
    let problems = problems(&config(1001));
    let p = at(&problems, "job_types.small.estimated_memory_kb");
    assert_eq!(p.value, "1001");
    assert!(
        p.message.contains("above memory.max_memory_kb (1000)"),
        "{p:?}"
    );

    // 300 KB fits the budget but not small's part of it (0.2 of 1000 KB).
    let warnings = warnings(&config(300));
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("job type \"small\""), "{warnings:#?}");
    assert!(
        warnings[0].contains("memory.max_memory_kb (1000)"),
        "{warnings:#?}"
    );
    assert!(
        warnings[0].contains("below one job (300 KB)"),
        "{warnings:#?}"
    );
}

#[test]
fn warns_about_a_type_whose_concurrency_part_is_below_one_job() {
    // Five types share CONC 2: each part is 0.4 of a request in flight, so none can ever start
    // (see `a_concurrency_part_below_one_job_never_starts`), yet validation says nothing.
    let config = toml(
        r#"
        [models.gpt]
        max_concurrent_requests = 2
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.a]
        [job_types.b]
        [job_types.c]
        [job_types.d]
        [job_types.e]
        "#,
    );
    let warnings = warnings(&config);
    assert_eq!(warnings.len(), 5, "one per type: {warnings:#?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("max_concurrent_requests")),
        "{warnings:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Every problem reported at once
// ---------------------------------------------------------------------------------------------

const MANY_MISTAKES: &str = r#"
escalation_order = ["gpt-4o", "ghost", "gpt-4o", "claude"]
instance_id = ""
timezone = "UTC"

[models."gpt-4o"]
tokens_per_minute = 0
requests_per_minute = -5
requests_per_day = 10.5
max_concurrent_requests = inf
tokens_per_day = 1e300
pricing = { input = nan, cached = -1, output = inf }
tokens_per_minut = 5000

[models.claude]
tokens_per_minute = 10000
min_capacity = 5
max_capacity = 2
pricing = { input = 3, cached = 0.3, output = 15 }

[job_types.summary]
estimated_tokens = 20000
ratio = { initial = 1.5 }
max_wait = { phantom = 1000, "gpt-4o" = "5 parsecs" }
estimate_tokens = 100

[job_types.chat]
ratio = { initial = 0 }

[memory]
max_memory_kb = 0
free_memory_ratio = 2
extra = true

[ratio_adjustment]
low_load = 0.9
high_load = 0.5
intervall = "5s"
"#;

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let problems = problems(&toml(MANY_MISTAKES));
    let expected: BTreeSet<&str> = [
        "timezone",
        "escalation_order[1]",
        "escalation_order[2]",
        "instance_id",
        r#"models."gpt-4o".tokens_per_minute"#,
        r#"models."gpt-4o".requests_per_minute"#,
        r#"models."gpt-4o".requests_per_day"#,
        r#"models."gpt-4o".max_concurrent_requests"#,
        r#"models."gpt-4o".tokens_per_day"#,
        r#"models."gpt-4o".pricing.input"#,
        r#"models."gpt-4o".pricing.cached"#,
        r#"models."gpt-4o".pricing.output"#,
        r#"models."gpt-4o".tokens_per_minut"#,
        "models.claude.min_capacity",
        "job_types.summary.estimated_tokens",
        "job_types.summary.ratio.initial",
        "job_types.summary.max_wait.phantom",
        r#"job_types.summary.max_wait."gpt-4o""#,
        "job_types.summary.estimate_tokens",
        "job_types.chat.ratio.initial",
        "memory.max_memory_kb",
        "memory.free_memory_ratio",
        "memory.extra",
        "ratio_adjustment.low_load",
        "ratio_adjustment.intervall",
    ]
    .into();
    assert_eq!(paths(&problems), expected, "{problems:#?}");
    // Each mistake is reported once (the ratio sum is not checked while a ratio is invalid).
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn each_problem_shows_the_bad_value_and_says_what_is_wrong() {
    let problems = problems(&toml(MANY_MISTAKES));
    let cases = [
        (
            r#"models."gpt-4o".tokens_per_minute"#,
            "0",
            "greater than 0",
        ),
        (r#"models."gpt-4o".requests_per_minute"#, "-5", "negative"),
        (
            r#"models."gpt-4o".requests_per_day"#,
            "10.5",
            "whole number",
        ),
        (
            r#"models."gpt-4o".max_concurrent_requests"#,
            "inf",
            "finite",
        ),
        (r#"models."gpt-4o".pricing.input"#, "NaN", "finite and >= 0"),
        (r#"models."gpt-4o".pricing.cached"#, "-1", "finite and >= 0"),
        (
            r#"models."gpt-4o".pricing.output"#,
            "inf",
            "finite and >= 0",
        ),
        ("models.claude.min_capacity", "5", "above max_capacity (2)"),
        ("escalation_order[1]", "\"ghost\"", "not a configured model"),
        ("escalation_order[2]", "\"gpt-4o\"", "appears twice"),
        ("instance_id", "\"\"", "must not be empty"),
        ("job_types.summary.ratio.initial", "1.5", "(0, 1]"),
        ("job_types.chat.ratio.initial", "0", "(0, 1]"),
        (
            r#"job_types.summary.max_wait."gpt-4o""#,
            "\"5 parsecs\"",
            "unknown unit",
        ),
        ("memory.max_memory_kb", "0", "greater than 0"),
        ("memory.free_memory_ratio", "2", "(0, 1]"),
        ("ratio_adjustment.low_load", "0.9", "below high_load (0.5)"),
    ];
    for (path, value, message) in cases {
        let p = at(&problems, path);
        assert_eq!(p.value, value, "value at {path}");
        assert!(p.message.contains(message), "message at {path}: {p:?}");
    }
    let huge = at(&problems, r#"models."gpt-4o".tokens_per_day"#);
    assert_eq!(huge.value, "1e300", "written compactly: {huge:?}");
    assert!(huge.message.contains("too large"), "{huge:?}");
}

#[test]
fn an_estimate_that_can_never_fit_names_the_limit() {
    let problems = problems(&toml(MANY_MISTAKES));
    let p = at(&problems, "job_types.summary.estimated_tokens");
    assert_eq!(p.value, "20000");
    assert!(
        p.message
            .contains("can never fit models.claude.tokens_per_minute (10000)"),
        "{p:?}"
    );
}

#[test]
fn unknown_keys_are_reported_at_every_level() {
    let problems = problems(&toml(MANY_MISTAKES));
    for path in [
        "timezone",
        r#"models."gpt-4o".tokens_per_minut"#,
        "job_types.summary.estimate_tokens",
        "memory.extra",
        "ratio_adjustment.intervall",
    ] {
        assert_eq!(at(&problems, path).message, "is not a known setting");
    }
    let ghost = at(&problems, "job_types.summary.max_wait.phantom");
    assert_eq!(ghost.message, "is not a configured model");
}

#[test]
fn whitespace_names_are_rejected() {
    let problems = problems(&toml(
        r#"
        [models." "]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.""]
        "#,
    ));
    assert_eq!(
        paths(&problems),
        [r#"models." ""#, r#"job_types."""#].into(),
        "{problems:#?}"
    );
}

#[test]
fn a_blank_instance_id_shows_what_was_written() {
    let problems = problems(&toml(
        r#"
        instance_id = "   "
        [models.gpt]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.chat]
        "#,
    ));
    assert_eq!(at(&problems, "instance_id").value, "\"   \"");
}

// ---------------------------------------------------------------------------------------------
// Missing things
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_config_needs_models_and_job_types() {
    let problems = problems(&Config::new());
    assert_eq!(paths(&problems), ["models", "job_types"].into());
    assert!(
        at(&problems, "models")
            .message
            .contains("at least one model")
    );
    assert!(
        at(&problems, "job_types")
            .message
            .contains("at least one job type")
    );
}

#[test]
fn several_models_need_an_escalation_order() {
    let problems = problems(&toml(
        r#"
        [models.a]
        pricing = { input = 1, cached = 1, output = 1 }
        [models.b]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.chat]
        "#,
    ));
    assert_eq!(paths(&problems), ["escalation_order"].into());
    assert!(
        problems[0]
            .message
            .contains("required when there are several models")
    );
}

#[test]
fn one_model_needs_no_escalation_order() {
    let config = toml(
        r#"
        [models.a]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.chat]
        "#,
    );
    assert_eq!(warnings(&config), Vec::<String>::new());
}

#[test]
fn an_empty_escalation_order_is_an_error() {
    let problems = problems(&toml(
        r#"
        escalation_order = []
        [models.a]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.chat]
        "#,
    ));
    assert_eq!(paths(&problems), ["escalation_order"].into());
    assert_eq!(problems[0].value, "[]");
}

#[test]
fn pricing_is_required() {
    let problems = problems(&toml(
        r#"
        [models.free]
        tokens_per_minute = 1000
        [job_types.chat]
        "#,
    ));
    assert_eq!(paths(&problems), ["models.free.pricing"].into());
    assert!(problems[0].message.contains("is required"));
}

#[test]
fn an_incomplete_pricing_is_a_parse_error_naming_the_field() {
    let error = Config::from_toml_str(
        r#"
        [models.gpt]
        pricing = { input = 1, output = 1 }
        "#,
    )
    .expect_err("pricing needs all three prices");
    let [p] = error.problems() else {
        panic!("one problem: {error}");
    };
    assert_eq!(p.path, "models.gpt.pricing");
    assert!(p.message.contains("cached"), "{p:?}");
}

// ---------------------------------------------------------------------------------------------
// Ratios (SPEC §2.3, §10)
// ---------------------------------------------------------------------------------------------

/// One model of TPM 100 000 and five job types, two with ratios 0.3 and 0.4. No waiting and no
/// ratio adjustment, so only the initial split decides how many jobs of each type start at once.
/// The three types without a ratio differ in estimate so that together they pin their ratio:
/// 1 job of 10 000 tokens needs [0.1, 0.2), 2 of 5 000 need [0.1, 0.15), 10 of 1 000 need
/// [0.1, 0.11).
const FIVE_TYPES: &str = r#"
[models.gpt]
tokens_per_minute = 100000
pricing = { input = 1, cached = 1, output = 1 }

[job_types.a]
estimated_tokens = 10000
ratio = { initial = 0.3 }
max_wait = { gpt = 0 }

[job_types.b]
estimated_tokens = 10000
ratio = { initial = 0.4 }
max_wait = { gpt = 0 }

[job_types.c]
estimated_tokens = 10000
max_wait = { gpt = 0 }

[job_types.d]
estimated_tokens = 5000
max_wait = { gpt = 0 }

[job_types.e]
estimated_tokens = 1000
max_wait = { gpt = 0 }

[ratio_adjustment]
interval = 0
releases_per_adjustment = 0
"#;

/// Queues `count` jobs of `job_type` at the same instant, each running 1 s, and returns how many
/// completed and how many found no capacity.
async fn start_together(limiter: &NamedLimiter, job_type: &str, count: usize) -> (usize, usize) {
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let job = |_: JobContext<Arc<str>>| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                JobResult::<(), String>::done((), Usage::new().requests(1))
            };
            limiter
                .queue_job(JobRequest::new(format!("{job_type}-{i}"), job_type, job))
                .expect("the job type is configured")
        })
        .collect();
    let (mut done, mut exhausted) = (0, 0);
    for handle in handles {
        match handle.await {
            Ok(_) => done += 1,
            Err(e) if matches!(e.cause, Cause::Exhausted { .. }) => exhausted += 1,
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    (done, exhausted)
}

#[tokio::test(start_paused = true)]
async fn types_without_a_ratio_share_the_remainder_evenly() {
    let config = toml(FIVE_TYPES);
    assert_eq!(warnings(&config), Vec::<String>::new());
    let limiter = NamedLimiter::builder(config)
        .clock(Clock::virtual_at(Timestamp::from_millis(NEW_YEAR)))
        .build()
        .expect("the limiter builds");
    // One job more than each type's part holds: that one finds no capacity and gives up.
    let started = tokio::join!(
        start_together(&limiter, "a", 4),
        start_together(&limiter, "b", 5),
        start_together(&limiter, "c", 2),
        start_together(&limiter, "d", 3),
        start_together(&limiter, "e", 11),
    );
    assert_eq!(started, ((3, 1), (4, 1), (1, 1), (2, 1), (10, 1)));
    limiter.stop(Duration::from_secs(1)).await;
}

#[test]
fn ratios_summing_above_one_name_the_sum() {
    let problems = problems(&toml(
        r#"
        [models.gpt]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.a]
        ratio = { initial = 0.7 }
        [job_types.b]
        ratio = { initial = 0.4 }
        [job_types.c]
        "#,
    ));
    let p = at(&problems, "job_types");
    assert_eq!(p.value, "1.1");
    assert!(p.message.contains("sum to more than 1"), "{p:?}");
    assert_eq!(problems.len(), 1);
}

#[test]
fn ratios_all_given_must_sum_to_one() {
    let problems = problems(&toml(
        r#"
        [models.gpt]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.a]
        ratio = { initial = 0.5 }
        [job_types.b]
        ratio = { initial = 0.25 }
        "#,
    ));
    let p = at(&problems, "job_types");
    assert_eq!(p.value, "0.75");
    assert!(p.message.contains("sum to less than 1"), "{p:?}");
    assert!(p.message.contains("stranded"), "{p:?}");
}

#[test]
fn ratios_all_given_may_miss_one_by_rounding() {
    let config = toml(
        r#"
        [models.gpt]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.a]
        ratio = { initial = 0.3333333 }
        [job_types.b]
        ratio = { initial = 0.3333333 }
        [job_types.c]
        ratio = { initial = 0.3333333 }
        "#,
    );
    assert!(config.validate().is_ok());
}

#[test]
fn ratios_summing_to_one_leave_nothing_for_a_type_without_one() {
    let problems = problems(&toml(
        r#"
        [models.gpt]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.a]
        ratio = { initial = 0.5 }
        [job_types.b]
        ratio = { initial = 0.5, flexible = false }
        [job_types.c]
        "#,
    ));
    let p = at(&problems, "job_types");
    assert_eq!(p.value, "1");
    assert!(
        p.message.contains("without a ratio would get nothing"),
        "{p:?}"
    );
}

#[test]
fn a_ratio_that_is_not_a_number_is_an_error() {
    let problems = problems(&toml(
        r#"
        [models.gpt]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.a]
        ratio = { initial = nan }
        "#,
    ));
    let p = at(&problems, "job_types.a.ratio.initial");
    assert_eq!(p.value, "NaN");
    assert_eq!(
        problems.len(),
        1,
        "no sum is checked with a NaN: {problems:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

fn with_max_wait(value: &str) -> Config {
    toml(&format!(
        r#"
        [models.gpt]
        pricing = {{ input = 1, cached = 1, output = 1 }}
        [job_types.chat]
        max_wait = {{ gpt = {value} }}
        "#
    ))
}

#[test]
fn max_wait_accepts_milliseconds_and_units() {
    for value in [
        "0",
        "1500",
        "2.5",
        "\"5s\"",
        "\"500ms\"",
        "\"1m\"",
        "\"1.5m\"",
        "\"2h\"",
        "\"1d\"",
        "\" 5 s \"",
        "\"default\"",
        "\"DEFAULT\"",
    ] {
        assert!(
            with_max_wait(value).validate().is_ok(),
            "max_wait = {value} is valid"
        );
    }
}

#[test]
fn max_wait_accepts_huge_values() {
    for value in ["1e300", "inf", "\"100000000000000000000d\""] {
        assert!(
            with_max_wait(value).validate().is_ok(),
            "max_wait = {value} is valid"
        );
    }
}

#[test]
fn max_wait_rejects_bad_durations() {
    for (value, shown, message) in [
        ("-1", "-1", "must not be negative"),
        ("nan", "NaN", "is not a number"),
        ("\"5 parsecs\"", "\"5 parsecs\"", "unknown unit"),
        ("\"-1s\"", "\"-1s\"", "is not a duration"),
        ("\"soon\"", "\"soon\"", "is not a duration"),
        ("\"\"", "\"\"", "is not a duration"),
    ] {
        let problems = problems(&with_max_wait(value));
        let p = at(&problems, "job_types.chat.max_wait.gpt");
        assert_eq!(p.value, shown, "max_wait = {value}");
        assert!(p.message.contains(message), "max_wait = {value}: {p:?}");
    }
}

#[test]
fn a_max_wait_that_is_not_a_number_or_string_is_a_parse_error() {
    let error = Config::from_toml_str(
        r#"
        [job_types.chat]
        max_wait = { gpt = true }
        "#,
    )
    .expect_err("a boolean is not a duration");
    assert_eq!(error.problems()[0].path, "job_types.chat.max_wait.gpt");
}

#[test]
fn other_durations_are_checked_too() {
    let problems = problems(&toml(
        r#"
        [models.gpt]
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.chat]
        [memory]
        recalculation_interval = 0
        [ratio_adjustment]
        interval = "5 fortnights"
        "#,
    ));
    assert_eq!(
        paths(&problems),
        ["memory.recalculation_interval", "ratio_adjustment.interval"].into()
    );
    assert!(
        at(&problems, "memory.recalculation_interval")
            .message
            .contains("greater than 0")
    );
}

/// One model with a single concurrency unit, held for 1 s by a first job; a second job of the
/// same type arrives at the same instant and waits up to `max_wait`. Returns whether it completed,
/// and when it ended relative to the start.
async fn second_job_with_max_wait(max_wait: &str) -> (bool, Duration) {
    let config = toml(&format!(
        r#"
        [models.gpt]
        max_concurrent_requests = 1
        pricing = {{ input = 1, cached = 1, output = 1 }}
        [job_types.chat]
        max_wait = {{ gpt = {max_wait} }}
        "#
    ));
    let limiter = NamedLimiter::builder(config)
        .clock(Clock::virtual_at(Timestamp::from_millis(NEW_YEAR)))
        .build()
        .expect("the limiter builds");
    let start = tokio::time::Instant::now();
    let job = |_: JobContext<Arc<str>>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        JobResult::<(), String>::done((), Usage::new().requests(1))
    };
    let first = limiter
        .queue_job(JobRequest::new("first", "chat", job))
        .expect("configured");
    let second = limiter
        .queue_job(JobRequest::new("second", "chat", job))
        .expect("configured");
    let outcome = second.await;
    let ended = start.elapsed();
    first.await.expect("the first job completes");
    limiter.stop(Duration::from_secs(1)).await;
    match outcome {
        Ok(_) => (true, ended),
        Err(e) if matches!(e.cause, Cause::Exhausted { .. }) => (false, ended),
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_short_max_wait_gives_up_in_time() {
    let (completed, ended) = second_job_with_max_wait("\"500ms\"").await;
    assert!(!completed);
    assert_eq!(ended, Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_zero_max_wait_gives_up_at_once() {
    assert_eq!(second_job_with_max_wait("0").await, (false, Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_long_enough_max_wait_waits_for_capacity() {
    for max_wait in ["1500", "\"5s\"", "\"1m\"", "\"default\""] {
        let (completed, ended) = second_job_with_max_wait(max_wait).await;
        assert!(completed, "max_wait = {max_wait}");
        // Admitted when the first job ends at 1 s, then runs for 1 s.
        assert_eq!(ended, Duration::from_secs(2), "max_wait = {max_wait}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_huge_max_wait_does_not_overflow_into_an_instant_timeout() {
    for max_wait in ["1e300", "inf", "\"100000000000000000000d\""] {
        let (completed, ended) = second_job_with_max_wait(max_wait).await;
        assert!(completed, "max_wait = {max_wait}");
        assert_eq!(ended, Duration::from_secs(2), "max_wait = {max_wait}");
    }
}

// ---------------------------------------------------------------------------------------------
// Parse errors
// ---------------------------------------------------------------------------------------------

#[test]
fn a_string_where_a_number_belongs_names_the_field_in_toml() {
    let error = Config::from_toml_str(
        r#"
        [models."gpt-4o"]
        tokens_per_minute = "lots"
        "#,
    )
    .expect_err("a string is not a limit");
    let [p] = error.problems() else {
        panic!("one problem: {error}");
    };
    assert_eq!(p.path, r#"models."gpt-4o".tokens_per_minute"#);
    assert!(p.message.contains("invalid type: string \"lots\""), "{p:?}");
}

#[test]
fn a_string_where_a_number_belongs_names_the_field_in_json() {
    let error = Config::from_json_str(r#"{"job_types": {"summary": {"estimated_tokens": "ten"}}}"#)
        .expect_err("a string is not an estimate");
    let [p] = error.problems() else {
        panic!("one problem: {error}");
    };
    assert_eq!(p.path, "job_types.summary.estimated_tokens");
    assert!(p.message.contains("invalid type: string \"ten\""), "{p:?}");
}

#[test]
fn a_wrong_type_in_a_list_names_its_index() {
    let error = Config::from_json_str(r#"{"escalation_order": ["gpt", 3]}"#)
        .expect_err("a number is not a model id");
    assert_eq!(error.problems()[0].path, "escalation_order[1]");
}

#[test]
fn a_typo_in_a_ratio_is_a_parse_error_naming_it() {
    let error = Config::from_toml_str(
        r#"
        [job_types.chat]
        ratio = { inital = 0.5 }
        "#,
    )
    .expect_err("ratio has no `inital`");
    assert_eq!(error.problems()[0].path, "job_types.chat.ratio.inital");
}

#[test]
fn malformed_syntax_is_a_parse_error() {
    let error = Config::from_toml_str("[models.gpt\n").expect_err("unclosed table header");
    assert_eq!(error.problems().len(), 1);
    let error = Config::from_json_str("{\"models\": ").expect_err("truncated JSON");
    assert_eq!(error.problems().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// A file in the system's temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("llmrl-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("the file is written");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn from_path_reads_toml_and_json_by_extension() {
    let toml_file = TempFile::new("valid.toml", VALID_TOML);
    let json_file = TempFile::new("valid.JSON", VALID_JSON);
    let from_toml = Config::from_path(&toml_file.0).expect("the TOML file is read");
    let from_json = Config::from_path(&json_file.0).expect("the JSON file is read");
    assert!(from_toml.model_ids().eq(from_json.model_ids()));
    assert!(from_toml.validate().is_ok());
    assert!(from_json.validate().is_ok());
}

#[test]
fn from_path_reads_other_extensions_as_toml() {
    let file = TempFile::new("limits.conf", VALID_TOML);
    let config = Config::from_path(&file.0).expect("read as TOML");
    assert_eq!(config.model_ids().count(), 3);
    // JSON in a file not named .json is read as TOML and fails to parse.
    let file = TempFile::new("limits.txt", VALID_JSON);
    assert!(Config::from_path(&file.0).is_err());
}

#[test]
fn from_path_names_a_missing_file() {
    let path = std::env::temp_dir().join("llmrl-no-such-dir/missing.toml");
    let error = Config::from_path(&path).expect_err("there is no such file");
    let [p] = error.problems() else {
        panic!("one problem: {error}");
    };
    assert_eq!(p.path, path.display().to_string());
    assert!(p.message.contains("cannot read the file"), "{p:?}");
    assert!(error.to_string().contains("missing.toml"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

#[test]
fn display_lists_every_problem_on_its_own_line() {
    let error: ConfigError = toml(MANY_MISTAKES).validate().expect_err("invalid");
    let text = error.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let count = error.problems().len();
    assert_eq!(
        lines[0],
        format!("invalid configuration ({count} problems):")
    );
    assert_eq!(lines.len(), count + 1, "{text}");
    for (line, problem) in lines[1..].iter().zip(error.problems()) {
        assert_eq!(*line, format!("  - {problem}"));
        assert!(line.contains(&problem.path), "{line}");
        assert!(line.contains(&problem.message), "{line}");
    }
    assert!(
        text.contains(r#"  - models."gpt-4o".tokens_per_minute = 0: must be greater than 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"  - models."gpt-4o".tokens_per_minut = 5000: is not a known setting"#),
        "{text}"
    );
}

#[test]
fn display_of_one_problem_is_one_line() {
    let error = Config::new()
        .job_type("chat", JobTypeConfig::new())
        .validate()
        .expect_err("no models");
    assert_eq!(
        error.to_string(),
        "invalid configuration: models: at least one model is required"
    );
}

#[tokio::test]
async fn building_a_limiter_reports_the_same_problems() {
    let config = toml(MANY_MISTAKES);
    let expected = config.validate().expect_err("invalid");
    match NamedLimiter::builder(config).build() {
        Err(llmrl::BuildError::Config(error)) => assert_eq!(error, expected),
        Err(other) => panic!("unexpected build error: {other}"),
        Ok(_) => panic!("an invalid config must not build"),
    }
}

// ---------------------------------------------------------------------------------------------
// Shipped examples
// ---------------------------------------------------------------------------------------------

#[test]
fn example_configs_validate_and_agree() {
    let toml = Config::from_path(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/llmrl.toml"
    ))
    .expect("examples/llmrl.toml parses");
    let json = Config::from_path(example("llmrl.json")).expect("examples/llmrl.json parses");

    assert_eq!(
        toml.model_ids().collect::<Vec<_>>(),
        [
            "openai/gpt-5.2",
            "anthropic/claude-sonnet-4.5",
            "xai/grok-4.1-fast"
        ]
    );
    assert!(toml.model_ids().eq(json.model_ids()));
    assert!(toml.job_type_names().eq(json.job_type_names()));
    assert!(toml.job_type_names().count() >= 3);
    // Not only the names: every setting is the same.
    assert_eq!(
        serde_json::to_value(&toml).expect("serializable"),
        serde_json::to_value(&json).expect("serializable")
    );

    let toml = toml.validate().expect("examples/llmrl.toml is valid");
    let json = json.validate().expect("examples/llmrl.json is valid");
    assert_eq!(toml.warnings(), Vec::<String>::new().as_slice());
    assert_eq!(json.warnings(), toml.warnings());
}

#[tokio::test(start_paused = true)]
async fn example_config_builds_a_limiter() {
    let config = Config::from_path(example("llmrl.toml")).expect("the example parses");
    let limiter = NamedLimiter::builder(config)
        .clock(Clock::virtual_at(Timestamp::from_millis(NEW_YEAR)))
        .build()
        .expect("the example builds");
    let completion = limiter
        .queue_job(JobRequest::new(
            "example-1",
            "classify",
            |ctx: JobContext<Arc<str>>| async move {
                JobResult::<_, String>::done(ctx.model, Usage::new().input_tokens(1_000))
            },
        ))
        .expect("classify is configured")
        .await
        .expect("the job completes");
    assert_eq!(&*completion.model, "openai/gpt-5.2");
    limiter.stop(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// Behaviour behind the ignored bug tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_concurrency_part_below_one_job_never_starts() {
    // Five types share CONC 2 (0.4 of a request in flight each): a lone job finds no slot.
    let config = toml(
        r#"
        [models.gpt]
        max_concurrent_requests = 2
        pricing = { input = 1, cached = 1, output = 1 }
        [job_types.a]
        max_wait = { gpt = 0 }
        [job_types.b]
        [job_types.c]
        [job_types.d]
        [job_types.e]
        [ratio_adjustment]
        interval = 0
        releases_per_adjustment = 0
        "#,
    );
    let limiter = NamedLimiter::builder(config)
        .clock(Clock::virtual_at(Timestamp::from_millis(NEW_YEAR)))
        .build()
        .expect("the limiter builds");
    assert_eq!(start_together(&limiter, "a", 1).await, (0, 1));
    limiter.stop(Duration::from_secs(1)).await;
}
