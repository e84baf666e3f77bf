//! `llmrl serve` end to end: the real binary on a loopback port, spoken to over HTTP/1.1.
//!
//! Every test starts its own server (on a port the system picks) and kills it when done, also
//! when it fails. Timings run on the wall clock, so they are checked loosely.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, now_ms};

/// Two models; `alpha` is first in the order. Nobody waits (`max_wait` 0), so an acquisition
/// answers at once. Day limits make the `used` checks immune to minute rollovers.
const TWO_MODELS: &str = r#"
escalation_order = ["alpha", "beta"]
instance_id = "serve-test"

[models.alpha]
tokens_per_minute = 1_000_000
tokens_per_day = 10_000_000
requests_per_minute = 1_000
requests_per_day = 100_000
max_concurrent_requests = 40
pricing = { input = 1.0, cached = 0.5, output = 2.0 }

[models.beta]
tokens_per_minute = 1_000_000
max_concurrent_requests = 40
pricing = { input = 3.0, cached = 0.3, output = 15.0 }

[job_types.chat]
estimated_tokens = 1_000
estimated_requests = 1
max_wait = { alpha = 0, beta = 0 }

[job_types.batch]
estimated_tokens = 2_000
max_wait = { alpha = 0, beta = 0 }
"#;

/// One model that runs one job at a time; a job waits up to `wait` for it.
fn solo(wait: &str) -> String {
    format!(
        r#"
instance_id = "solo"

[models.solo]
tokens_per_day = 1_000_000
max_concurrent_requests = 1
pricing = {{ input = 1.0, cached = 0.5, output = 2.0 }}

[job_types.chat]
estimated_tokens = 700
max_wait = {{ solo = "{wait}" }}
"#
    )
}

/// A UTC day, the window of day limits.
const DAY_MS: u64 = 86_400_000;

fn usage(input: u64, cached: u64, output: u64, requests: u64) -> Value {
    json!({
        "input_tokens": input,
        "cached_tokens": cached,
        "output_tokens": output,
        "requests": requests,
    })
}

/// One model's figures in an availability snapshot.
fn model<'a>(availability: &'a Value, name: &str) -> &'a Value {
    availability["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == name)
        .unwrap_or_else(|| panic!("no model {name} in {availability}"))
}

/// One job type's figures in an availability snapshot.
fn job_type<'a>(availability: &'a Value, name: &str) -> &'a Value {
    availability["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["job_type"] == name)
        .unwrap_or_else(|| panic!("no job type {name} in {availability}"))
}

/// `used` of one limit of one model.
fn used(availability: &Value, name: &str, limit: &str) -> u64 {
    model(availability, name)[limit]["used"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {limit}.used for {name} in {availability}"))
}

fn assert_close(actual: &Value, expected: f64) {
    let actual = actual.as_f64().unwrap_or(f64::NAN);
    assert!(
        (actual - expected).abs() < 1e-12,
        "{actual} is not {expected}"
    );
}

/// Polls `/v1/stats` until `done` holds for it (or panics after `limit`).
async fn stats_until(server: &Server, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let stats = server.stats().await;
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never got there: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_and_bearer_token() {
    let server = Server::start_with(TWO_MODELS, &["--token", "s3cret"]);
    // Health needs no token.
    let health = server.request_with("GET", "/healthz", &[], None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok");

    for path in ["/v1/stats", "/v1/availability", "/metrics", "/v1/events"] {
        let none = server.request_with("GET", path, &[], None).await;
        none.assert_error(401, Some("authorization"));
        for wrong in [
            "Bearer wrong",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            let answer = server
                .request_with("GET", path, &[("Authorization", wrong)], None)
                .await;
            answer.assert_error(401, Some("authorization"));
        }
    }
    // A refused acquisition takes nothing.
    let body = br#"{"job_type":"chat"}"#;
    server
        .request_with("POST", "/v1/leases", &[], Some(body))
        .await
        .assert_error(401, Some("authorization"));
    server
        .request_with("POST", "/v1/leases/x/release", &[], Some(b"{}"))
        .await
        .assert_error(401, Some("authorization"));

    // With the token (the helper sends it).
    let stats = server.stats().await;
    assert_eq!(stats["acquired"], 0, "{stats}");
    assert_eq!(stats["instance_id"], "serve-test");
    let lease = server.lease("chat", None).await;
    assert_eq!(lease["model"], "alpha");

    // LLMRL_TOKEN works like --token.
    let from_env = Server::spawn(
        TWO_MODELS,
        support::Options {
            args: &[],
            env: &[("LLMRL_TOKEN", "from-env")],
        },
    );
    from_env
        .request_with("GET", "/v1/stats", &[], None)
        .await
        .assert_error(401, Some("authorization"));
    let ok = from_env
        .request_with(
            "GET",
            "/v1/stats",
            &[("Authorization", "Bearer from-env")],
            None,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[tokio::test]
async fn acquire_release_cost_and_counters() {
    let server = Server::start(TWO_MODELS);
    let before = now_ms();
    let lease = server.lease("chat", Some("job-1")).await;
    assert_eq!(lease["model"], "alpha", "first model of the order: {lease}");
    assert_eq!(lease["job_id"], "job-1");
    assert_eq!(lease["attempt"], 1);
    let id = lease["lease_id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    // The default TTL is 600 s.
    let expires = lease["expires_at_ms"].as_u64().unwrap();
    assert!(
        expires >= before + 590_000 && expires <= now_ms() + 610_000,
        "expires_at_ms {expires} is not about 10 minutes after {before}"
    );

    // While held: the estimate is reserved and one concurrency unit is taken.
    let held = server.availability().await;
    assert_eq!(used(&held, "alpha", "concurrent_requests"), 1);
    if before / DAY_MS == now_ms() / DAY_MS {
        assert_eq!(used(&held, "alpha", "tokens_per_day"), 1_000);
        assert_eq!(used(&held, "alpha", "requests_per_day"), 1);
    }
    assert_eq!(used(&held, "beta", "concurrent_requests"), 0);
    assert_eq!(job_type(&held, "chat")["in_flight"], 1);
    assert_eq!(server.stats().await["leases_active"], 1);

    // SPEC §3.2's example: 3000 input, 500 cached, 1000 output at {1, 0.5, 2} costs 0.00525.
    let released = server
        .release(
            &id,
            &json!({"usage": usage(3_000, 500, 1_000, 2), "outcome": "done"}),
        )
        .await;
    assert_eq!(released.status, 200, "{}", released.text());
    let released = released.json();
    assert_eq!(released["next"], Value::Null);
    let entry = &released["usage"];
    assert_eq!(entry["model"], "alpha");
    assert_eq!(entry["input_tokens"], 3_000);
    assert_eq!(entry["cached_tokens"], 500);
    assert_eq!(entry["output_tokens"], 1_000);
    assert_eq!(entry["requests"], 2);
    assert_close(&entry["cost"], 0.00525);

    // The counters now hold the actual usage instead of the estimate (fleet-wide `used`),
    // unless the window ended meanwhile (UTC midnight, or the minute for minute limits).
    let after = server.availability().await;
    assert_eq!(used(&after, "alpha", "concurrent_requests"), 0);
    assert_eq!(job_type(&after, "chat")["in_flight"], 0);
    if before / DAY_MS == now_ms() / DAY_MS {
        assert_eq!(used(&after, "alpha", "tokens_per_day"), 4_500);
        assert_eq!(used(&after, "alpha", "requests_per_day"), 2);
        let day = &model(&after, "alpha")["tokens_per_day"];
        assert_eq!(day["remaining"], 10_000_000 - 4_500);
    }
    if before / 60_000 == now_ms() / 60_000 {
        assert_eq!(used(&after, "alpha", "tokens_per_minute"), 4_500);
        assert_eq!(used(&after, "alpha", "requests_per_minute"), 2);
    }

    // A lease without a job id is named "http"; `outcome` defaults to done.
    let anonymous = server.lease("batch", None).await;
    assert_eq!(anonymous["job_id"], "http");
    assert_ne!(anonymous["lease_id"].as_str().unwrap(), id);
    let released = server
        .release(
            anonymous["lease_id"].as_str().unwrap(),
            &json!({"usage": {}}),
        )
        .await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert_close(&released.json()["usage"]["cost"], 0.0);

    let stats = server.stats().await;
    assert_eq!(stats["instance_id"], "serve-test");
    for (counter, value) in [
        ("acquired", 2),
        ("released", 2),
        ("delegated", 0),
        ("exhausted", 0),
        ("expired", 0),
        ("bad_requests", 0),
        ("leases_active", 0),
    ] {
        assert_eq!(stats[counter], value, "{counter} in {stats}");
    }
}

#[tokio::test]
async fn delegation_walks_the_escalation_order() {
    let server = Server::start(TWO_MODELS);
    let first = server.lease("chat", Some("job-d")).await;
    assert_eq!(first["model"], "alpha");

    // Rejected (delegate defaults to true): settled on alpha, next lease on beta.
    let answer = server
        .release(
            first["lease_id"].as_str().unwrap(),
            &json!({"usage": usage(100, 0, 50, 1), "outcome": "rejected"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["usage"]["model"], "alpha");
    assert_close(&answer["usage"]["cost"], 0.000_2);
    let next = &answer["next"];
    assert_eq!(next["model"], "beta", "{answer}");
    assert_eq!(next["attempt"], 2);
    assert_eq!(next["job_id"], "job-d");
    assert_ne!(next["lease_id"], first["lease_id"]);
    let held = server.availability().await;
    assert_eq!(used(&held, "alpha", "concurrent_requests"), 0);
    assert_eq!(used(&held, "beta", "concurrent_requests"), 1);

    // Rejected on the last model: no next lease, and an error saying why.
    let last = server
        .release(
            next["lease_id"].as_str().unwrap(),
            &json!({"usage": usage(10, 0, 10, 1), "outcome": "rejected", "delegate": true}),
        )
        .await;
    assert_eq!(last.status, 200, "{}", last.text());
    let last = last.json();
    assert_eq!(last["usage"]["model"], "beta");
    assert_close(&last["usage"]["cost"], (10.0 * 3.0 + 10.0 * 15.0) / 1e6);
    assert_eq!(last["next"], Value::Null);
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("exhausted"), "{last}");

    // Rejected without delegation: settled, nothing next, no error.
    let plain = server.lease("chat", Some("job-e")).await;
    let answer = server
        .release(
            plain["lease_id"].as_str().unwrap(),
            &json!({"usage": usage(1, 0, 1, 1), "outcome": "rejected", "delegate": false}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["next"], Value::Null);
    assert!(answer.get("error").is_none(), "{answer}");

    let stats = server.stats().await;
    assert_eq!(stats["acquired"], 3, "{stats}");
    assert_eq!(stats["released"], 3, "{stats}");
    assert_eq!(stats["delegated"], 2, "{stats}");
    assert_eq!(stats["leases_active"], 0, "{stats}");
    let after = server.availability().await;
    assert_eq!(used(&after, "alpha", "concurrent_requests"), 0);
    assert_eq!(used(&after, "beta", "concurrent_requests"), 0);
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let server = Server::start(TWO_MODELS);
    let mut bad = 0;

    // Acquisitions.
    let acquisitions: &[(&[u8], Option<&str>)] = &[
        (br#"{"job_type":"nope"}"#, Some("job_type")),
        (br#"{"job_type":1}"#, Some("job_type")),
        (br#"{"job_type":null}"#, Some("job_type")),
        (br#"{"job_type":["chat"]}"#, Some("job_type")),
        (br#"{"job_type":"chat","job_id":5}"#, Some("job_id")),
        (br#"{"job_type":"chat","extra":true}"#, Some("extra")),
        (br#"{"job_id":"x"}"#, Some("job_type")),
        (br#"{}"#, Some("job_type")),
        (br#"{"job_type":"chat""#, None),
        (br#"{job_type: "chat"}"#, None),
        (b"", None),
        (b"null", None),
        (b"[]", None),
        (br#""chat""#, None),
        (b"\xff\xfe", None),
    ];
    for (body, field) in acquisitions {
        let answer = server.post_raw("/v1/leases", body).await;
        answer.assert_error(400, *field);
        bad += 1;
    }
    let unknown = server
        .acquire("nope", None)
        .await
        .assert_error(400, Some("job_type"));
    assert!(
        unknown.contains("chat"),
        "names the configured types: {unknown}"
    );
    bad += 1;

    // Releases of a real lease with bad bodies: refused, and the lease stays.
    let lease = server.lease("chat", None).await;
    let id = lease["lease_id"].as_str().unwrap();
    let path = format!("/v1/leases/{id}/release");
    let releases: &[(&str, Option<&str>)] = &[
        (
            r#"{"usage":{"input_tokens":-1}}"#,
            Some("usage.input_tokens"),
        ),
        (
            r#"{"usage":{"input_tokens":"10"}}"#,
            Some("usage.input_tokens"),
        ),
        (
            r#"{"usage":{"cached_tokens":1.5}}"#,
            Some("usage.cached_tokens"),
        ),
        (
            r#"{"usage":{"output_tokens":1e400}}"#,
            Some("usage.output_tokens"),
        ),
        (
            r#"{"usage":{"requests":18446744073709551616}}"#,
            Some("usage.requests"),
        ),
        (
            r#"{"usage":{"input_tokens":null}}"#,
            Some("usage.input_tokens"),
        ),
        (r#"{"usage":{"tokens":1}}"#, Some("usage.tokens")),
        (r#"{"usage":"none"}"#, Some("usage")),
        (r#"{"usage":{},"outcome":"maybe"}"#, Some("outcome")),
        (r#"{"usage":{},"outcome":"Done"}"#, Some("outcome")),
        (r#"{"usage":{},"delegate":"yes"}"#, Some("delegate")),
        (r#"{"usage":{},"extra":1}"#, Some("extra")),
        (r#"{"outcome":"done"}"#, Some("usage")),
        (r#"{"usage":{"input_tokens":1,}}"#, Some("usage")),
        (r#"{"usage":"#, Some("usage")),
        ("", None),
    ];
    for (body, field) in releases {
        server
            .post_raw(&path, body.as_bytes())
            .await
            .assert_error(400, *field);
        bad += 1;
    }
    assert_eq!(server.stats().await["leases_active"], 1);

    // The largest u64 is fine.
    let max = u64::MAX;
    let answer = server
        .release(id, &json!({"usage": usage(0, 0, 0, max)}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["usage"]["requests"], max);

    // Releasing twice, or a lease never given: 404 naming the lease.
    server
        .release(id, &json!({"usage": {}}))
        .await
        .assert_error(404, Some("lease_id"));
    server
        .release("no-such-lease", &json!({"usage": {}}))
        .await
        .assert_error(404, Some("lease_id"));

    let stats = server.stats().await;
    assert_eq!(stats["bad_requests"], bad, "{stats}");
    assert_eq!(stats["acquired"], 1, "{stats}");
    assert_eq!(stats["released"], 1, "{stats}");
    assert_eq!(stats["leases_active"], 0, "{stats}");

    // Wrong methods and paths are the router's plain 405 and 404.
    assert_eq!(server.get("/v1/leases").await.status, 405);
    assert_eq!(server.post("/v1/stats", &json!({})).await.status, 405);
    assert_eq!(
        server
            .request("DELETE", "/v1/leases/x/release", None)
            .await
            .status,
        405
    );
    assert_eq!(server.get("/v1/nothing").await.status, 404);
    assert_eq!(server.get("/v1/leases/x").await.status, 404);
}

#[tokio::test]
async fn long_poll_gets_a_lease_released_within_the_wait() {
    let server = Server::start(&solo("3s"));
    let first = server.lease("chat", Some("first")).await;
    let second = {
        let started = Instant::now();
        let server = &server;
        async move {
            let answer = server.acquire("chat", Some("second")).await;
            (answer, started.elapsed())
        }
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        // The second acquisition is waiting for the model.
        let availability = server.availability().await;
        let on_solo = &job_type(&availability, "chat")["models"][0];
        assert_eq!(on_solo["waiting"], 1, "{availability}");
        assert_eq!(on_solo["in_flight"], 1, "{availability}");
        let answer = server
            .release(first["lease_id"].as_str().unwrap(), &json!({"usage": {}}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    };
    let ((answer, waited), ()) = tokio::join!(second, release);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let lease = answer.json();
    assert_eq!(lease["model"], "solo");
    assert_eq!(lease["job_id"], "second");
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}, before the first lease was released"
    );
    let answer = server
        .release(lease["lease_id"].as_str().unwrap(), &json!({"usage": {}}))
        .await;
    assert_eq!(answer.status, 200);
    let stats = server.stats().await;
    assert_eq!(stats["acquired"], 2, "{stats}");
    assert_eq!(stats["exhausted"], 0, "{stats}");
    assert_eq!(stats["leases_active"], 0, "{stats}");
}

#[tokio::test]
async fn long_poll_answers_429_after_the_wait() {
    let server = Server::start(&solo("3s"));
    let first = server.lease("chat", None).await;
    let started = Instant::now();
    let answer = server.acquire("chat", None).await;
    let waited = started.elapsed();
    answer.assert_error(429, None);
    assert!(
        waited >= Duration::from_millis(2_500) && waited < Duration::from_secs(15),
        "429 after {waited:?}, not after about 3 s"
    );
    let stats = server.stats().await;
    assert_eq!(stats["exhausted"], 1, "{stats}");
    assert_eq!(stats["acquired"], 1, "{stats}");
    assert_eq!(stats["leases_active"], 1, "{stats}");
    // Nobody waits any more.
    let availability = server.availability().await;
    assert_eq!(job_type(&availability, "chat")["models"][0]["waiting"], 0);
    let answer = server
        .release(first["lease_id"].as_str().unwrap(), &json!({"usage": {}}))
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn unreleased_lease_expires() {
    // max_wait 0: the acquisition after the expiry proves the concurrency unit is free.
    let server = Server::start_with(&solo("0"), &["--lease-ttl", "1"]);
    let before = now_ms();
    let lease = server.lease("chat", Some("forgotten")).await;
    let expires = lease["expires_at_ms"].as_u64().unwrap();
    assert!(
        expires >= before + 1_000 && expires <= now_ms() + 1_000,
        "{lease}"
    );
    // Taken while held.
    server.acquire("chat", None).await.assert_error(429, None);

    let started = Instant::now();
    let stats = stats_until(&server, Duration::from_secs(8), |s| s["expired"] == 1).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "expired after {took:?}");
    assert_eq!(stats["leases_active"], 0, "{stats}");
    assert_eq!(stats["released"], 0, "{stats}");

    // Its usage is unknown: the estimate stays counted; the concurrency unit is free.
    let availability = server.availability().await;
    assert_eq!(used(&availability, "solo", "concurrent_requests"), 0);
    if before / DAY_MS == now_ms() / DAY_MS {
        assert_eq!(used(&availability, "solo", "tokens_per_day"), 700);
    }
    assert_eq!(job_type(&availability, "chat")["in_flight"], 0);

    // Gone for its client too.
    server
        .release(lease["lease_id"].as_str().unwrap(), &json!({"usage": {}}))
        .await
        .assert_error(404, Some("lease_id"));
    let again = server.lease("chat", None).await;
    assert_eq!(again["model"], "solo");
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.lines().any(|l| l == "llmrl_leases_expired_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn events_stream_reports_starts_and_slot_changes() {
    let server = Server::start(TWO_MODELS);
    let mut events = server.events().await;
    assert_eq!(events.status, 200);
    assert!(
        events
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        events.headers
    );
    // A second subscriber sees the same events.
    let mut other = server.events().await;

    let lease = server.lease("chat", Some("sse-job")).await;
    let wait = Duration::from_secs(5);
    let started = events
        .next_matching(wait, |e| e["event"] == "started")
        .await
        .expect("no `started` event");
    assert_eq!(
        started,
        json!({"event": "started", "job_id": "sse-job", "job_type": "chat", "model": "alpha", "attempt": 1})
    );
    let mut other_saw = other
        .next_matching(wait, |e| e["event"] == "started")
        .await
        .expect("no `started` event for the second subscriber");
    assert_eq!(other_saw["job_id"], "sse-job");

    // A fresh subscription sees the slot change of the next start, then the release's.
    let mut events = server.events().await;
    let second = server.lease("chat", Some("sse-2")).await;
    let changed = events
        .next_matching(wait, |e| e["event"] == "slots_changed")
        .await
        .expect("no `slots_changed` event");
    assert!(changed["slots"].is_u64(), "{changed}");
    assert!(changed["reason"].is_string(), "{changed}");

    // A release that used more than estimated: a usage adjustment, and slots changed by it.
    let answer = server
        .release(
            lease["lease_id"].as_str().unwrap(),
            &json!({"usage": usage(1_200, 0, 300, 1)}),
        )
        .await;
    assert_eq!(answer.status, 200);
    // Both, in either order.
    let (mut adjusted, mut by_adjustment) = (None, None);
    while adjusted.is_none() || by_adjustment.is_none() {
        let event = events
            .next_matching(wait, |e| {
                (e["event"] == "usage_adjusted" && e["limit"] == "tokens_per_day")
                    || (e["event"] == "slots_changed" && e["reason"] == "adjustment")
            })
            .await
            .unwrap_or_else(|| {
                panic!("no usage_adjusted and slots_changed events: {adjusted:?} {by_adjustment:?}")
            });
        if event["event"] == "usage_adjusted" {
            adjusted = Some(event);
        } else {
            by_adjustment = Some(event);
        }
    }
    let (adjusted, by_adjustment) = (adjusted.unwrap(), by_adjustment.unwrap());
    assert_eq!(adjusted["job_id"], "sse-job");
    assert_eq!(adjusted["estimated"], 1_000);
    assert_eq!(adjusted["actual"], 1_500);
    assert_eq!(adjusted["charged"], 500);
    assert_eq!(by_adjustment["adjustment"]["tokens_per_day"], 500);

    // Delegation is an event too.
    let answer = server
        .release(
            second["lease_id"].as_str().unwrap(),
            &json!({"usage": usage(1_000, 0, 0, 1), "outcome": "rejected"}),
        )
        .await;
    let next = answer.json()["next"].clone();
    let delegated = events
        .next_matching(wait, |e| e["event"] == "delegated")
        .await
        .expect("no `delegated` event");
    assert_eq!(delegated["from"], "alpha");
    assert_eq!(delegated["job_id"], "sse-2");
    other_saw = other
        .next_matching(wait, |e| e["event"] == "started" && e["model"] == "beta")
        .await
        .expect("no `started` on beta");
    assert_eq!(other_saw["attempt"], 2);
    let answer = server
        .release(next["lease_id"].as_str().unwrap(), &json!({"usage": {}}))
        .await;
    assert_eq!(answer.status, 200);
}

/// The value of the sample `series` (name and labels exactly as written) in a Prometheus text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn metrics_in_prometheus_text() {
    let server = Server::start(TWO_MODELS);
    let lease = server.lease("chat", None).await;
    let answer = server.get("/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        answer.headers
    );
    let text = answer.text();

    // Well-formed: comments, or `name{labels} value` with a number.
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name: {line}"
        );
        assert!(typed.contains(name), "no # TYPE for {name}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }

    let availability = server.availability().await;
    for t in ["chat", "batch"] {
        let slots = sample(&text, &format!("llmrl_slots{{job_type=\"{t}\"}}"));
        assert_eq!(
            slots,
            job_type(&availability, t)["slots"].as_f64(),
            "slots of {t}:\n{text}"
        );
        assert!(sample(&text, &format!("llmrl_ratio{{job_type=\"{t}\"}}")).is_some());
    }
    let series = |name: &str, model: &str, limit: &str| {
        sample(
            &text,
            &format!("{name}{{model=\"{model}\",limit=\"{limit}\"}}"),
        )
    };
    assert_eq!(
        series("llmrl_limit", "alpha", "tokens_per_minute"),
        Some(1e6)
    );
    assert_eq!(
        series("llmrl_limit", "alpha", "concurrent_requests"),
        Some(40.0)
    );
    assert_eq!(
        series("llmrl_used", "alpha", "concurrent_requests"),
        Some(1.0)
    );
    assert_eq!(
        series("llmrl_used", "alpha", "tokens_per_day"),
        Some(1_000.0)
    );
    assert_eq!(
        series("llmrl_available", "beta", "concurrent_requests"),
        Some(40.0)
    );
    // No line for a limit the model does not have.
    assert_eq!(series("llmrl_limit", "beta", "tokens_per_day"), None);
    assert_eq!(sample(&text, "llmrl_instances"), Some(1.0));
    assert_eq!(sample(&text, "llmrl_leases_active"), Some(1.0));
    assert_eq!(sample(&text, "llmrl_leases_acquired_total"), Some(1.0));
    for counter in [
        "llmrl_leases_released_total",
        "llmrl_leases_delegated_total",
        "llmrl_leases_exhausted_total",
        "llmrl_leases_expired_total",
        "llmrl_bad_requests_total",
    ] {
        assert_eq!(sample(&text, counter), Some(0.0), "{counter}:\n{text}");
        assert!(text.contains(&format!("# TYPE {counter} counter")));
    }

    let answer = server
        .release(lease["lease_id"].as_str().unwrap(), &json!({"usage": {}}))
        .await;
    assert_eq!(answer.status, 200);
    server
        .acquire("nope", None)
        .await
        .assert_error(400, Some("job_type"));
    let text = server.get("/metrics").await.text();
    assert_eq!(sample(&text, "llmrl_leases_active"), Some(0.0));
    assert_eq!(sample(&text, "llmrl_leases_released_total"), Some(1.0));
    assert_eq!(sample(&text, "llmrl_bad_requests_total"), Some(1.0));
}

/// xorshift64*: reproducible garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn json(&mut self, depth: usize) -> Value {
        const KEYS: &[&str] = &[
            "job_type",
            "job_id",
            "usage",
            "outcome",
            "delegate",
            "input_tokens",
            "cached_tokens",
            "output_tokens",
            "requests",
            "",
            "x",
        ];
        match self.below(if depth > 3 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(self.next() % 2 == 0),
            2 => self
                .pick(&[
                    json!(0),
                    json!(-1),
                    json!(1),
                    json!(u64::MAX),
                    json!(i64::MIN),
                    json!(1.5),
                    json!(1e308),
                    json!(-0.0),
                ])
                .clone(),
            3 => Value::from(*self.pick(&[
                "chat",
                "batch",
                "nope",
                "",
                "done",
                "rejected",
                "\u{0}",
                "é\u{fffd}",
            ])),
            4 => {
                let n = self.below(20);
                Value::from(String::from_utf8_lossy(&self.bytes(n)).into_owned())
            }
            5 => Value::from(
                (0..self.below(4))
                    .map(|_| self.json(depth + 1))
                    .collect::<Vec<_>>(),
            ),
            _ => {
                let mut object = serde_json::Map::new();
                for _ in 0..self.below(5) {
                    let key = (*self.pick(KEYS)).to_owned();
                    object.insert(key, self.json(depth + 1));
                }
                if depth == 0 && self.next() % 3 == 0 {
                    object.insert("job_type".into(), Value::from("chat"));
                }
                Value::Object(object)
            }
        }
    }
}

/// One request of the robustness run and the statuses allowed for it.
enum Probe {
    Http {
        method: &'static str,
        path: String,
        body: Option<Vec<u8>>,
        allowed: &'static [u16],
    },
    /// Bytes that may not even be HTTP: no answer, or a 4xx.
    Raw(Vec<u8>),
}

fn probes(rng: &mut Rng, leases: &[String]) -> Vec<Probe> {
    const ACQUIRE: &[u16] = &[200, 400, 429];
    const RELEASE: &[u16] = &[200, 400, 404];
    const GET_ROUTES: &[&str] = &["/healthz", "/v1/availability", "/v1/stats", "/metrics"];
    const ALL_ROUTES: &[&str] = &[
        "/healthz",
        "/v1/leases",
        "/v1/leases/x/release",
        "/v1/availability",
        "/v1/stats",
        "/v1/events",
        "/metrics",
    ];
    let mut probes = Vec::new();
    for i in 0..200 {
        let lease = leases[i % leases.len()].clone();
        let release_path = |rng: &mut Rng| match rng.below(3) {
            0 => format!("/v1/leases/{lease}/release"),
            1 => format!("/v1/leases/{lease}x/release"),
            _ => format!(
                "/v1/leases/{}/release",
                String::from_utf8_lossy(&rng.bytes(8))
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect::<String>()
            ),
        };
        let probe = match rng.below(14) {
            0 => Probe::Http {
                method: "POST",
                path: "/v1/leases".into(),
                body: Some({
                    let n = rng.below(200);
                    rng.bytes(n)
                }),
                allowed: &[400],
            },
            1 | 2 => Probe::Http {
                method: "POST",
                path: "/v1/leases".into(),
                body: Some(rng.json(0).to_string().into_bytes()),
                allowed: ACQUIRE,
            },
            3 | 4 => {
                let path = release_path(rng);
                let body = if rng.below(2) == 0 {
                    json!({"usage": rng.json(1), "outcome": rng.json(2), "delegate": rng.json(3)})
                } else {
                    rng.json(0)
                };
                Probe::Http {
                    method: "POST",
                    path,
                    body: Some(body.to_string().into_bytes()),
                    allowed: RELEASE,
                }
            }
            5 => {
                let depth = 2 + rng.below(100_000);
                let body = match rng.below(3) {
                    0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
                    1 => format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)),
                    _ => format!(r#"{{"usage":{}0{}}}"#, "[".repeat(depth), "]".repeat(depth)),
                };
                let path = if rng.below(2) == 0 {
                    "/v1/leases".into()
                } else {
                    format!("/v1/leases/{lease}/release")
                };
                Probe::Http {
                    method: "POST",
                    path,
                    body: Some(body.into_bytes()),
                    allowed: &[400],
                }
            }
            6 => {
                let field = rng.pick(&["input_tokens", "cached_tokens", "output_tokens", "requests"]);
                let number = rng.pick(&[
                    "1e400",
                    "-1e400",
                    "123456789012345678901234567890",
                    "-9223372036854775809",
                    "18446744073709551616",
                    "1.0e19",
                    "NaN",
                    "Infinity",
                    "0x10",
                    "00",
                ]);
                Probe::Http {
                    method: "POST",
                    path: format!("/v1/leases/{lease}/release"),
                    body: Some(format!(r#"{{"usage":{{"{field}":{number}}}}}"#).into_bytes()),
                    allowed: &[400],
                }
            }
            7 => {
                let path = (*rng.pick(ALL_ROUTES)).to_owned();
                let get_route = GET_ROUTES.contains(&path.as_str()) || path == "/v1/events";
                let method = if get_route {
                    rng.pick(&["POST", "PUT", "DELETE", "PATCH"])
                } else {
                    rng.pick(&["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
                };
                Probe::Http {
                    method,
                    path,
                    body: Some(b"{}".to_vec()),
                    allowed: &[405],
                }
            }
            8 => {
                let path = match rng.below(5) {
                    0 => "/v2/leases".to_owned(),
                    1 => format!("/v1/leases/{lease}"),
                    2 => format!("/{}", "a/".repeat(rng.below(3_000))),
                    3 => "/v1/leases/x/release/more".to_owned(),
                    _ => format!(
                        "/{}",
                        rng.bytes(10)
                            .iter()
                            .map(|b| format!("%{b:02x}"))
                            .collect::<String>()
                    ),
                };
                let method = *rng.pick(&["GET", "POST"]);
                Probe::Http {
                    method,
                    path,
                    body: None,
                    allowed: &[400, 404, 414, 431],
                }
            }
            9 => Probe::Http {
                method: "POST",
                path: "/v1/leases".into(),
                body: Some(
                    json!({"job_type": *rng.pick(&["chat", "batch", "nope"]), "job_id": format!("r{i}")})
                        .to_string()
                        .into_bytes(),
                ),
                allowed: ACQUIRE,
            },
            10 => {
                let outcome = *rng.pick(&["done", "rejected"]);
                Probe::Http {
                    method: "POST",
                    path: format!("/v1/leases/{lease}/release"),
                    body: Some(
                        json!({"usage": usage(rng.next() % 10_000, 0, rng.next() % 1_000, 1), "outcome": outcome})
                            .to_string()
                            .into_bytes(),
                    ),
                    allowed: RELEASE,
                }
            }
            11 => {
                let n = rng.below(300);
                let mut bytes = rng.bytes(n);
                if rng.below(2) == 0 {
                    let head = b"POST /v1/leases HTTP/1.1\r\nConnection: close\r\n";
                    bytes.splice(0..0, head.iter().copied());
                }
                bytes.extend_from_slice(b"\r\n\r\n");
                Probe::Raw(bytes)
            }
            12 => Probe::Http {
                method: "POST",
                path: if rng.below(2) == 0 {
                    "/v1/leases".into()
                } else {
                    format!("/v1/leases/{lease}/release")
                },
                // Over axum's default 2 MB body limit.
                body: Some(vec![b' '; 3 * 1024 * 1024]),
                allowed: &[413],
            },
            _ => Probe::Http {
                method: "GET",
                path: (*rng.pick(GET_ROUTES)).to_owned(),
                body: None,
                allowed: &[200],
            },
        };
        probes.push(probe);
    }
    probes
}

#[tokio::test]
async fn garbage_never_crashes_the_server_nor_leaks_leases() {
    let mut server = Server::start(TWO_MODELS);
    let mut leases = Vec::new();
    for i in 0..10 {
        let lease = server.lease("chat", Some(&format!("real-{i}"))).await;
        leases.push(lease["lease_id"].as_str().unwrap().to_owned());
    }
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let probes = probes(&mut rng, &leases);
    let mut statuses = BTreeMap::<u16, usize>::new();
    for batch in probes.chunks(20) {
        let answers = futures_util::future::join_all(batch.iter().map(|probe| async {
            match probe {
                Probe::Http {
                    method,
                    path,
                    body,
                    allowed,
                } => {
                    let answer = server.request(method, path, body.as_deref()).await;
                    assert!(
                        allowed.contains(&answer.status),
                        "{method} {path} with {:?}: status {} ({})",
                        body.as_deref()
                            .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()),
                        answer.status,
                        answer.text()
                    );
                    if answer.status == 400 && *path == "/v1/leases" {
                        answer.assert_error(400, answer.json()["field"].as_str());
                    }
                    // New leases to give back at the end.
                    let mut given = Vec::new();
                    if answer.status == 200 && *method == "POST" {
                        let body = answer.json();
                        for lease in [&body, &body["next"]] {
                            if let Some(id) = lease["lease_id"].as_str() {
                                given.push(id.to_owned());
                            }
                        }
                    }
                    (Some(answer.status), given)
                }
                Probe::Raw(bytes) => {
                    let answer = server.raw(bytes, Duration::from_secs(3)).await;
                    if let Some(answer) = &answer {
                        assert!(
                            (400..500).contains(&answer.status),
                            "raw garbage answered {}",
                            answer.status
                        );
                    }
                    (answer.map(|a| a.status), Vec::new())
                }
            }
        }))
        .await;
        for (status, given) in answers {
            if let Some(status) = status {
                *statuses.entry(status).or_default() += 1;
            }
            leases.extend(given);
        }
        server.assert_running();
    }
    assert!(
        statuses.keys().all(|s| *s < 500),
        "server errors: {statuses:?}"
    );
    // The run reached every kind of answer (not, say, only the router's 404s).
    for kind in [200, 400, 404, 405, 413] {
        assert!(statuses.contains_key(&kind), "no {kind} in {statuses:?}");
    }

    // Still healthy.
    let health = server.get("/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));

    // Give everything back (a rejected one may come back with a next lease: done here).
    while let Some(id) = leases.pop() {
        let answer = server.release(&id, &json!({"usage": {}})).await;
        assert!([200, 404].contains(&answer.status), "{}", answer.text());
    }
    let stats = server.stats().await;
    assert_eq!(stats["leases_active"], 0, "{stats} after {statuses:?}");
    assert_eq!(stats["acquired"], stats["released"], "{stats}");
    assert!(stats["bad_requests"].as_u64().unwrap() > 50, "{stats}");
    let availability = server.availability().await;
    for m in ["alpha", "beta"] {
        assert_eq!(used(&availability, m, "concurrent_requests"), 0, "{m}");
    }
    for t in ["chat", "batch"] {
        assert_eq!(job_type(&availability, t)["in_flight"], 0, "{t}");
    }
    server.assert_running();
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_server_even_with_a_subscriber() {
    let mut server = Server::start(TWO_MODELS);
    let lease = server.lease("chat", None).await;
    let mut events = server.events().await;
    assert_eq!(events.status, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit within 10 s of SIGTERM: {status:?}"
    );
    // The stream ended with it.
    assert_eq!(events.next_data(Duration::from_secs(2)).await, None);
    drop(lease);
}

// --- The OpenAPI document --------------------------------------------------------------------

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `docs/openapi.yaml`: written as JSON (a subset of YAML 1.2), so serde_json parses it.
fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("docs/openapi.yaml is not JSON-compatible YAML: {error}"))
}

/// The (path, method) pairs the router serves, read from `src/serve/*.rs`: every
/// `.route("PATH", get(..).post(..))`.
fn served_routes() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/serve");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for call in ["nest(", "nest_service(", "route_service(", "fallback("] {
            assert!(
                !source.contains(&format!(".{call}")),
                "the router uses .{call}: teach served_routes() about it"
            );
        }
        let mut rest = source.as_str();
        while let Some(start) = rest.find(".route(\"") {
            rest = &rest[start + ".route(\"".len()..];
            let end = rest.find('"').unwrap();
            let path = rest[..end].to_owned();
            // The arguments, up to the parenthesis closing `.route(`.
            let mut depth = 1;
            let arguments = rest
                .char_indices()
                .find_map(|(i, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then(|| &rest[end..i])
                })
                .unwrap();
            let mut found = false;
            for method in METHODS {
                let call = format!("{method}(");
                for (at, _) in arguments.match_indices(&call) {
                    let before = arguments[..at].chars().next_back();
                    if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                        routes.insert((path.clone(), (*method).to_owned()));
                        found = true;
                    }
                }
            }
            assert!(found, "no method found for route {path}: {arguments}");
        }
    }
    assert!(routes.len() >= 7, "too few routes found: {routes:?}");
    routes
}

/// Every `$ref` in `value` (recursively).
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    out.push(value.as_str().unwrap());
                } else {
                    refs(value, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let doc = openapi();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // Every route served is documented, and nothing else is.
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (key, _) in item.as_object().unwrap() {
            if METHODS.contains(&key.as_str()) {
                documented.insert((path.clone(), key.clone()));
            }
        }
    }
    let served = served_routes();
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    let stale: Vec<_> = documented.difference(&served).collect();
    assert!(stale.is_empty(), "documented but not served: {stale:?}");

    // Every $ref points at something.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for reference in all {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {reference}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {reference}");
    }
    let resolve = |value: &Value| -> Value {
        match value["$ref"].as_str() {
            Some(r) => doc.pointer(&r[1..]).unwrap().clone(),
            None => value.clone(),
        }
    };

    // The error schema, the bearer scheme, the SSE media type.
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["type"], "object");
    for field in ["error", "field"] {
        assert!(error["properties"][field].is_object(), "Error.{field}");
        assert!(
            error["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "Error.{field} required"
        );
    }
    let bearer = doc["components"]["securitySchemes"]
        .as_object()
        .unwrap()
        .values()
        .find(|s| s["type"] == "http" && s["scheme"] == "bearer")
        .expect("a bearer security scheme");
    assert!(bearer["description"].is_string());
    let events = &paths["/v1/events"]["get"]["responses"]["200"];
    assert!(
        resolve(events)["content"]["text/event-stream"].is_object(),
        "/v1/events must answer text/event-stream"
    );
    assert!(
        resolve(&paths["/metrics"]["get"]["responses"]["200"])["content"]["text/plain"].is_object()
    );

    // Every operation: an id, a summary, a 200 answer, and 401 when secured; its JSON answers
    // and bodies come with examples.
    let global_security = doc.get("security");
    for (path, method) in &served {
        let operation = &paths[path.as_str()][method.as_str()];
        let name = format!("{method} {path}");
        assert!(operation["operationId"].is_string(), "{name}: operationId");
        assert!(operation["summary"].is_string(), "{name}: summary");
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{name}: 200");
        let secured = match operation.get("security") {
            Some(list) => !list.as_array().unwrap().is_empty(),
            None => global_security.is_some_and(|s| !s.as_array().unwrap().is_empty()),
        };
        assert_eq!(secured, path != "/healthz", "{name}: security");
        if secured {
            assert!(responses.contains_key("401"), "{name}: 401");
        }
        for (status, response) in responses {
            let response = resolve(response);
            assert!(response["description"].is_string(), "{name} {status}");
            let Some(content) = response["content"].as_object() else {
                continue;
            };
            for (media, body) in content {
                assert!(
                    body["schema"].is_object(),
                    "{name} {status} {media}: schema"
                );
                let examples = body.get("example").is_some() || body.get("examples").is_some();
                assert!(examples, "{name} {status} {media}: example");
                if status != "200" {
                    assert_eq!(media, "application/json", "{name} {status}");
                    assert_eq!(
                        body["schema"]["$ref"], "#/components/schemas/Error",
                        "{name} {status}: errors use the Error schema"
                    );
                }
            }
        }
        if let Some(body) = operation.get("requestBody") {
            let json = &resolve(body)["content"]["application/json"];
            assert!(json["schema"].is_object(), "{name}: request schema");
            assert!(
                json.get("example").is_some() || json.get("examples").is_some(),
                "{name}: request example"
            );
        }
    }

    // The documented examples are what the server takes and answers.
    let server = Server::start(TWO_MODELS);
    let acquire = &paths["/v1/leases"]["post"]["requestBody"]["content"]["application/json"];
    let mut examples: Vec<&Value> = Vec::new();
    if let Some(example) = acquire.get("example") {
        examples.push(example);
    }
    if let Some(map) = acquire.get("examples").and_then(Value::as_object) {
        examples.extend(map.values().map(|e| &e["value"]));
    }
    assert!(!examples.is_empty());
    for example in examples {
        let mut example = example.clone();
        // The document's job types are not this test's.
        example["job_type"] = json!("chat");
        let lease = server.post("/v1/leases", &example).await;
        assert_eq!(lease.status, 200, "{example}: {}", lease.text());
        let lease = lease.json();
        let keys: BTreeSet<_> = lease.as_object().unwrap().keys().cloned().collect();
        let schema = resolve(
            &paths["/v1/leases"]["post"]["responses"]["200"]["content"]["application/json"]["schema"],
        );
        let documented: BTreeSet<_> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, documented, "the Lease schema's properties");
        let release =
            &paths["/v1/leases/{id}/release"]["post"]["requestBody"]["content"]["application/json"];
        let bodies: Vec<Value> = match release.get("examples").and_then(Value::as_object) {
            Some(map) => map.values().map(|e| e["value"].clone()).collect(),
            None => vec![release["example"].clone()],
        };
        let answer = server
            .release(lease["lease_id"].as_str().unwrap(), &bodies[0])
            .await;
        assert_eq!(answer.status, 200, "{}: {}", bodies[0], answer.text());
        let answer = answer.json();
        if let Some(next) = answer["next"]["lease_id"].as_str() {
            let done = server.release(next, &json!({"usage": {}})).await;
            assert_eq!(done.status, 200);
        }
        for body in &bodies[1..] {
            let lease = server.lease("chat", None).await;
            let answer = server
                .release(lease["lease_id"].as_str().unwrap(), body)
                .await;
            assert_eq!(answer.status, 200, "{body}: {}", answer.text());
            if let Some(next) = answer.json()["next"]["lease_id"].as_str() {
                let done = server.release(next, &json!({"usage": {}})).await;
                assert_eq!(done.status, 200);
            }
        }
    }
    // The documented stats and availability properties are the ones served.
    for (path, schema) in [("/v1/stats", "Stats"), ("/v1/availability", "Availability")] {
        let served: BTreeSet<String> = server
            .get_json(path)
            .await
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let documented: BTreeSet<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(served, documented, "{path} vs the {schema} schema");
    }
}

#[tokio::test]
async fn sigterm_answers_a_pending_long_poll_with_503_at_once() {
    let mut server = Server::start(&solo("60s"));
    let held = server.lease("chat", None).await;
    let pid = server.pid().to_string();
    let (answer, waited) = tokio::join!(server.acquire("chat", None), async {
        // Let the acquisition start waiting behind the held lease, then stop the server.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        started
    });
    answer.assert_error(503, None);
    assert!(
        waited.elapsed() < Duration::from_secs(10),
        "answered {:?} after SIGTERM, not at once",
        waited.elapsed()
    );
    assert!(
        server
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    drop(held);
}
