//! Parse errors (SPEC §2.5): a value of the wrong shape is reported with the path that leads to
//! it, down into enum variants and list items, in TOML and JSON alike.
#![allow(clippy::unwrap_used)]

use llmrl::Config;

fn parse_problem(result: Result<Config, llmrl::ConfigError>) -> (String, String) {
    let error = result.unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    (problems[0].path.clone(), problems[0].message.clone())
}

#[test]
fn a_value_inside_an_enum_variant_is_named_through_the_variant() {
    // `failure_mode` is one of a few names; written as a table, the variant's content is wrong.
    let (path, message) = parse_problem(Config::from_toml_str(
        r#"
        [backend]
        failure_mode = { closed = 1 }
        "#,
    ));
    assert_eq!(path, "backend.failure_mode.closed");
    assert!(message.contains("found integer"), "{message}");

    let (path, _) = parse_problem(Config::from_json_str(
        r#"{"backend": {"failure_mode": {"open": [1]}}}"#,
    ));
    assert_eq!(path, "backend.failure_mode.open");
}

#[test]
fn list_items_and_quoted_keys_are_named_in_the_path() {
    let (path, _) = parse_problem(Config::from_json_str(r#"{"escalation_order": ["a", 7]}"#));
    assert_eq!(path, "escalation_order[1]");
    let (path, _) = parse_problem(Config::from_json_str(
        r#"{"models": {"gpt-4o": {"tokens_per_minute": "many"}}}"#,
    ));
    assert_eq!(path, "models.\"gpt-4o\".tokens_per_minute");
}
