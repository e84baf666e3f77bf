//! Two limiters with different key prefixes on one Redis never see each other (SPEC §7.5):
//! each is alone in its fleet, their usage is counted apart, and one's changes never reach the
//! other by pub/sub. The prefixes are chosen to look alike (one is the other plus `:2`) and the
//! instances share one id.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llmrl::{
    Config, JobContext, JobResult, JobTypeConfig, ModelConfig, NamedLimiter, Pricing, Usage,
};
use llmrl_redis::test_support::RedisServer;
use llmrl_redis::{RedisBackend, RedisConfig};
use tokio::sync::Semaphore;

const TPM: u64 = 100_000;
const CONC: u64 = 10;

fn limiter(server: &RedisServer, prefix: &str, id: &str, changes: Arc<AtomicU64>) -> NamedLimiter {
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(Pricing::new(0.0, 0.0, 0.0))
                .tokens_per_minute(TPM)
                .max_concurrent_requests(CONC),
        )
        .job_type("j", JobTypeConfig::new().estimated_tokens(1_000))
        .instance_id(id);
    let backend = RedisBackend::new(RedisConfig::new(server.url()).prefix(prefix)).unwrap();
    NamedLimiter::builder(config)
        .backend(backend)
        .on_available_slots_change(move |_, _, _| {
            changes.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap()
}

fn figures(limiter: &NamedLimiter) -> (usize, u64, u64, u64) {
    let a = limiter.availability();
    let m = &a.models[0];
    let (tpm, conc) = (m.tokens_per_minute.unwrap(), m.concurrent_requests.unwrap());
    (a.instances, tpm.share, tpm.used, conc.used)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let since = Instant::now();
    while !f() {
        assert!(since.elapsed() < Duration::from_secs(5), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn keys(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}:*"))
        .query(&mut server.connection())
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiters_with_different_prefixes_never_see_each_other() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let (a_changes, b_changes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let a = limiter(&server, "svc", "same-id", a_changes.clone());
    let b = limiter(&server, "svc:2", "same-id", b_changes.clone());
    a.ready().await;
    b.ready().await;
    // Each alone in its fleet, with the whole limit.
    assert_eq!(figures(&a), (1, TPM, 0, 0));
    assert_eq!(figures(&b), (1, TPM, 0, 0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b_before = b_changes.load(Ordering::SeqCst);

    // Five jobs run on A and stay running until released.
    let gate = Arc::new(Semaphore::new(0));
    let handles: Vec<_> = (0..5)
        .map(|n| {
            let gate = gate.clone();
            a.queue_job(llmrl::JobRequest::new(
                format!("a-{n}"),
                "j",
                move |_: JobContext<Arc<str>>| {
                    let gate = gate.clone();
                    async move {
                        gate.acquire().await.unwrap().forget();
                        JobResult::<(), ()>::done((), Usage::new().input_tokens(1_000))
                    }
                },
            ))
            .unwrap()
        })
        .collect();
    eventually("A's five jobs in flight", || figures(&a).3 == 5).await;
    assert_eq!(figures(&a), (1, TPM, 5_000, 5));
    gate.add_permits(5);
    for handle in handles {
        handle.await.unwrap();
    }
    eventually("A's jobs settled", || figures(&a) == (1, TPM, 5_000, 0)).await;
    // Well past a publishing period: B heard nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(figures(&b), (1, TPM, 0, 0), "B counts none of A's usage");
    assert_eq!(
        b_changes.load(Ordering::SeqCst),
        b_before,
        "no change of A's reached B"
    );
    assert!(a_changes.load(Ordering::SeqCst) > 0);

    // In Redis: two sets of keys, one member each, A's counters only under A's prefix.
    let (a_keys, b_keys) = (keys(&server, "svc"), keys(&server, "svc:2"));
    assert!(a_keys.iter().all(|k| k.starts_with("{svc}:")), "{a_keys:?}");
    assert!(
        b_keys.iter().all(|k| k.starts_with("{svc:2}:")),
        "{b_keys:?}"
    );
    let mut redis = server.connection();
    // Tokens used this minute under a prefix (B's window hash holds its members' shares only).
    let mut used = |keys: &[String]| -> u64 {
        keys.iter()
            .filter(|k| k.contains(":minute:"))
            .map(|k| {
                let used: Option<u64> = redis::cmd("HGET")
                    .arg(k)
                    .arg("u0")
                    .query(&mut redis)
                    .unwrap();
                used.unwrap_or(0)
            })
            .sum()
    };
    assert!(used(&a_keys) > 0, "{a_keys:?}");
    assert_eq!(used(&b_keys), 0, "{b_keys:?}");
    for prefix in ["svc", "svc:2"] {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{{{prefix}}}:members"))
            .arg(0)
            .arg(-1)
            .query(&mut redis)
            .unwrap();
        assert_eq!(members, ["same-id"], "{prefix}");
    }

    // A second instance on A's prefix joins A's fleet only.
    let a2 = limiter(&server, "svc", "other-id", Arc::default());
    a2.ready().await;
    eventually("A sees its new peer", || figures(&a).0 == 2).await;
    assert_eq!(figures(&a2).0, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(figures(&b), (1, TPM, 0, 0), "B is still alone");
    let subscribers: Vec<(String, u64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("{svc}:changes")
        .arg("{svc:2}:changes")
        .query(&mut redis)
        .unwrap();
    assert_eq!(
        subscribers,
        [("{svc}:changes".into(), 2), ("{svc:2}:changes".into(), 1)]
    );

    for limiter in [&a, &a2, &b] {
        limiter.stop(Duration::from_secs(1)).await;
    }
}
