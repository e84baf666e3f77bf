//! Counts in a configuration (SPEC §2.5): estimates and limits are whole, finite, non-negative
//! numbers; anything else is reported with its path, its value and why, all at once.
#![allow(clippy::unwrap_used)]

use llmrl::Config;

fn problems(text: &str) -> Vec<(String, String, String)> {
    Config::from_toml_str(text)
        .unwrap()
        .validate()
        .unwrap_err()
        .problems()
        .iter()
        .map(|p| (p.path.clone(), p.value.clone(), p.message.clone()))
        .collect()
}

fn problem(path: &str, value: &str, message: &str) -> (String, String, String) {
    (path.to_owned(), value.to_owned(), message.to_owned())
}

#[test]
fn every_bad_count_is_reported_with_its_value_and_reason() {
    let found = problems(
        r#"
        [models.m]
        tokens_per_minute = nan
        requests_per_day = 2.5
        pricing = { input = 1, cached = 1, output = 1 }

        [job_types.j]
        estimated_tokens = nan
        estimated_requests = -inf
        estimated_memory_kb = -3
        "#,
    );
    assert_eq!(
        found,
        [
            problem("models.m.tokens_per_minute", "NaN", "is not a number"),
            problem("models.m.requests_per_day", "2.5", "must be a whole number"),
            problem("job_types.j.estimated_tokens", "NaN", "is not a number"),
            problem("job_types.j.estimated_requests", "-inf", "must be finite"),
            problem(
                "job_types.j.estimated_memory_kb",
                "-3",
                "must not be negative"
            ),
        ]
    );
}

#[test]
fn a_zero_estimate_is_valid_but_a_zero_limit_is_not() {
    let found = problems(
        r#"
        [models.m]
        requests_per_minute = 0
        pricing = { input = 1, cached = 1, output = 1 }

        [job_types.j]
        estimated_tokens = 0
        estimated_requests = 0
        "#,
    );
    assert_eq!(
        found,
        [problem(
            "models.m.requests_per_minute",
            "0",
            "must be greater than 0 (leave it out for no limit)"
        )]
    );
}
