//! Key hygiene (SPEC §7.5): every window key expires after its window (plus a margin), and a
//! limiter's keys do not grow with the number of jobs: 10 000 jobs leave about as many keys as
//! 1 000, a small constant, and stopping leaves only a few fleet-wide keys.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use llmrl::{
    Config, JobContext, JobRequest, JobResult, JobTypeConfig, ModelConfig, NamedLimiter, Pricing,
    Usage,
};
use llmrl_redis::test_support::RedisServer;
use llmrl_redis::{RedisBackend, RedisConfig};

const PREFIX: &str = "hygiene";
/// Window keys live for their window plus this margin (`fleet.lua`).
const MARGIN_MS: i64 = 120_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// At most this many keys, whatever the job count.
const BOUND: usize = 40;

fn limiter(server: &RedisServer, id: &str) -> NamedLimiter {
    // Every limit, huge: nothing waits.
    let model = ModelConfig::new(Pricing::new(0.0, 0.0, 0.0))
        .tokens_per_minute(1_000_000_000)
        .tokens_per_day(10_000_000_000)
        .requests_per_minute(10_000_000)
        .requests_per_day(100_000_000)
        .max_concurrent_requests(100_000);
    let config = Config::new()
        .model("m", model)
        .job_type("j", JobTypeConfig::new().estimated_tokens(100))
        .instance_id(id);
    let backend = RedisBackend::new(RedisConfig::new(server.url()).prefix(PREFIX)).unwrap();
    NamedLimiter::builder(config)
        .backend(backend)
        .build()
        .unwrap()
}

async fn run_jobs(limiters: &[NamedLimiter], jobs: usize) {
    let handles: Vec<_> = (0..jobs)
        .map(|n| {
            limiters[n % limiters.len()]
                .queue_job(JobRequest::new(
                    format!("job-{n}"),
                    "j",
                    |_: JobContext<Arc<str>>| async {
                        JobResult::<(), ()>::done((), Usage::new().input_tokens(60).requests(1))
                    },
                ))
                .unwrap()
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

/// Every key of the prefix with its remaining time to live (ms; -1 = none).
fn keys(server: &RedisServer) -> BTreeMap<String, i64> {
    let mut redis = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{PREFIX}}}:*"))
        .query(&mut redis)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut redis).unwrap();
            (k, ttl)
        })
        .collect()
}

/// Checks every key's time to live: window keys (one hash per model and window) expire within
/// their window plus the margin; a member's early usage within a day plus the margin; the only
/// keys without expiry are the fleet's own few.
fn check_expiry(keys: &BTreeMap<String, i64>) {
    for (key, &ttl) in keys {
        let rest = key.strip_prefix(&format!("{{{PREFIX}}}:")).unwrap();
        let parts: Vec<&str> = rest.split(':').collect();
        let most = match parts.as_slice() {
            ["minute", _, _] => Some(MINUTE_MS + MARGIN_MS),
            ["day", _, _] | ["early", _] => Some(DAY_MS + MARGIN_MS),
            ["fleet" | "members" | "seen" | "limits"] => None,
            _ => panic!("{key}: unexpected key (PTTL {ttl})"),
        };
        if let Some(most) = most {
            assert!(
                ttl > 0 && ttl <= most,
                "{key}: must expire within {most} ms, PTTL {ttl}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_keys_expire_and_nothing_grows_with_the_job_count() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let limiters = [limiter(&server, "h-0"), limiter(&server, "h-1")];
    for limiter in &limiters {
        limiter.ready().await;
    }
    let registered = keys(&server);
    check_expiry(&registered);

    run_jobs(&limiters, 1_000).await;
    let after_1k = keys(&server);
    check_expiry(&after_1k);
    assert!(
        after_1k.keys().any(|k| k.contains(":minute:")),
        "jobs were counted: {after_1k:?}"
    );

    run_jobs(&limiters, 9_000).await;
    let after_10k = keys(&server);
    check_expiry(&after_10k);
    // A minute boundary may have passed meanwhile: one window key per model and minute.
    assert!(
        after_10k.len() <= after_1k.len() + 1 && after_10k.len() < BOUND,
        "keys grew with jobs: {} after 1 000 jobs, {} after 10 000: {:?}",
        after_1k.len(),
        after_10k.len(),
        after_10k.keys()
    );
    eprintln!(
        "keys: {} registered, {} after 1 000 jobs, {} after 10 000: {:?}",
        registered.len(),
        after_1k.len(),
        after_10k.len(),
        after_10k
    );
    let dbsize: usize = redis::cmd("DBSIZE")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(dbsize, after_10k.len(), "nothing outside the prefix");

    for limiter in &limiters {
        limiter.stop(Duration::from_secs(1)).await;
    }
    let stopped = keys(&server);
    check_expiry(&stopped);
    let lasting: Vec<&String> = stopped
        .iter()
        .filter(|(_, ttl)| **ttl < 0)
        .map(|(k, _)| k)
        .collect();
    // At most the fleet hash (its sequence and version): nothing per member or per job once
    // everyone has left.
    eprintln!("after stop: {stopped:?}");
    assert!(lasting.len() <= 1, "{lasting:?}");
    assert!(
        !stopped.keys().any(|k| k.contains(":early:")),
        "{stopped:?}"
    );
}

/// A limiter with `tpm` tokens per minute on `PREFIX`.
fn limiter_with(server: &RedisServer, id: &str, tpm: u64) -> NamedLimiter {
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(Pricing::new(0.0, 0.0, 0.0)).tokens_per_minute(tpm),
        )
        .job_type("j", JobTypeConfig::new().estimated_tokens(100))
        .instance_id(id);
    let backend = RedisBackend::new(RedisConfig::new(server.url()).prefix(PREFIX)).unwrap();
    NamedLimiter::builder(config)
        .backend(backend)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_that_left_does_not_pin_its_limits_on_the_next_one() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let old = limiter_with(&server, "old", 100_000);
    old.ready().await;
    run_jobs(std::slice::from_ref(&old), 10).await;
    old.stop(Duration::from_secs(1)).await;
    // Every instance has left; the service is redeployed with a new limit.
    let new = limiter_with(&server, "new", 200_000);
    new.ready().await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{{{PREFIX}}}:members"))
        .arg(0)
        .arg(-1)
        .query(&mut server.connection())
        .unwrap();
    let share = new.availability().models[0]
        .tokens_per_minute
        .unwrap()
        .share;
    new.stop(Duration::from_secs(1)).await;
    assert_eq!(
        (members, share),
        (vec!["new".to_owned()], 200_000),
        "the new configuration joined the (empty) fleet"
    );
}
