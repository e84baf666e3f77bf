//! The Redis backend under load, on a local redis-server started by `test_support` (issue 5).
//!
//! 1. Criterion: admit + settle throughput of no-op jobs, 256 at a time, through 1 and 4
//!    instances (each with its own connections) in this process, system clock, windows on the
//!    server's clock. Each job is queue → local admission → admit call → run → local
//!    settlement → settle call; an instance's admissions and settlements made while one of its
//!    calls is in flight share its next call (`FCALL`, or `EVALSHA` in script mode).
//! 2. Figures printed after criterion's: sustained throughput over a fixed job count with what
//!    Redis saw (`INFO commandstats`: library calls and PUBLISH per job, µs per call; `INFO
//!    cpu`: server CPU per job), this process's CPU per job, pub/sub messages received; then
//!    admission latency (`acquire`, one backend round trip) at a paced rate of about half the
//!    measured throughput, and at one job at a time.
//! 3. Escalation under contention: 4 instances, two models whose concurrency the load
//!    exceeds, no wait on the first: how often the fleet refuses a reservation an instance
//!    made from its own (slightly stale) view, which is what admitting on the first model that
//!    fits in a single call could save.
//!
//! Run with `cargo bench -p llmrl-redis --bench redis` (add `-- --warm-up-time 1
//! --measurement-time 3` for a quick run). `LLMRL_BENCH_JOBS` sets the job count of part 2
//! (default 100 000); `LLMRL_BENCH_LUA=eval` runs the library as `EVALSHA` scripts. The
//! machine's load average is printed: on a shared machine figures move.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures_util::StreamExt;
use llmrl::{
    Config, Event, JobContext, JobRequest, JobResult, JobTypeConfig, ModelConfig, NamedLimiter,
    Pricing, RatioAdjustmentConfig, Usage,
};
use llmrl_redis::test_support::RedisServer;
use llmrl_redis::{LuaMode, RedisBackend, RedisConfig};

/// Jobs in flight at once.
const CONCURRENT: u64 = 256;

fn config(id: &str) -> Config {
    // Huge limits: nothing ever waits, every job costs exactly its round trips.
    let model = ModelConfig::new(Pricing::new(0.0, 0.0, 0.0))
        .tokens_per_minute(1_000_000_000_000)
        .requests_per_minute(1_000_000_000)
        .max_concurrent_requests(1_000_000);
    Config::new()
        .model("m", model)
        .job_type("j", JobTypeConfig::new().estimated_tokens(100))
        .ratio_adjustment(
            RatioAdjustmentConfig::new()
                .interval(Duration::ZERO)
                .releases_per_adjustment(0),
        )
        .instance_id(id)
}

/// How the library runs: `LLMRL_BENCH_LUA=eval` for scripts, functions otherwise.
fn lua_mode() -> LuaMode {
    match std::env::var("LLMRL_BENCH_LUA").as_deref() {
        Ok("eval") => LuaMode::Eval,
        _ => LuaMode::Function,
    }
}

async fn fleet(url: &str, prefix: &str, instances: usize) -> Vec<NamedLimiter> {
    let mut limiters = Vec::new();
    for i in 0..instances {
        let redis = RedisConfig::new(url).prefix(prefix).lua_mode(lua_mode());
        let backend = RedisBackend::new(redis).unwrap();
        let limiter = NamedLimiter::builder(config(&format!("{prefix}-{i}")))
            .backend(backend)
            .build()
            .unwrap();
        limiter.ready().await;
        limiters.push(limiter);
    }
    limiters
}

/// Runs `jobs` no-op jobs, [`CONCURRENT`] at a time, round robin over the instances.
async fn run(limiters: &[NamedLimiter], jobs: u64) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENT)
        .map(|w| {
            let (next, limiters) = (next.clone(), limiters.to_vec());
            tokio::spawn(async move {
                let limiter = &limiters[w as usize % limiters.len()];
                while next.fetch_add(1, Ordering::Relaxed) < jobs {
                    limiter
                        .queue_job(JobRequest::new("b", "j", |_: JobContext<Arc<str>>| async {
                            JobResult::<(), ()>::done((), Usage::new().input_tokens(60).requests(1))
                        }))
                        .unwrap()
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    started.elapsed()
}

fn throughput(c: &mut Criterion, runtime: &tokio::runtime::Runtime, url: &str) {
    let mut group = c.benchmark_group("redis_admit_settle");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    for instances in [1, 4] {
        let limiters = runtime.block_on(fleet(url, &format!("criterion-{instances}"), instances));
        group.bench_function(format!("{instances}_instances"), |b| {
            b.iter_custom(|jobs| runtime.block_on(run(&limiters, jobs)));
        });
        runtime.block_on(async {
            for limiter in &limiters {
                limiter.stop(Duration::from_secs(1)).await;
            }
        });
    }
    group.finish();
}

/// `INFO <section>` as key → value (commandstats lines keep their `calls=…,usec=…` value).
fn info(redis: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(redis).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// (calls, usec) of one command from `INFO commandstats`.
fn command(stats: &HashMap<String, String>, name: &str) -> (u64, u64) {
    let Some(line) = stats.get(&format!("cmdstat_{name}")) else {
        return (0, 0);
    };
    let field = |key: &str| {
        line.split(',')
            .find_map(|f| f.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("calls"), field("usec"))
}

fn server_cpu(redis: &mut redis::Connection) -> f64 {
    let cpu = info(redis, "cpu");
    let get = |k: &str| {
        cpu.get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    get("used_cpu_user") + get("used_cpu_sys")
}

/// This process's CPU time (user + system) in seconds.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the state's.
    (ticks(11) + ticks(12)) / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sustained throughput and what it cost Redis; returns jobs/s.
fn sustained(runtime: &tokio::runtime::Runtime, server: &RedisServer, instances: usize) -> f64 {
    let jobs: u64 = std::env::var("LLMRL_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let prefix = format!("sustained-{instances}");
    let limiters = runtime.block_on(fleet(server.url(), &prefix, instances));
    runtime.block_on(run(&limiters, 5_000));
    // Count what one subscriber receives on the fleet's channel (each instance receives the same).
    let received = Arc::new(AtomicU64::new(0));
    let listener = {
        let (received, url, channel) = (
            received.clone(),
            server.url().to_owned(),
            format!("{{{prefix}}}:changes"),
        );
        runtime.spawn(async move {
            let client = redis::Client::open(url).unwrap();
            let mut pubsub = client.get_async_pubsub().await.unwrap();
            pubsub.subscribe(channel).await.unwrap();
            let mut messages = pubsub.on_message();
            while messages.next().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut redis = server.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis)
        .unwrap();
    let (redis_cpu, client_cpu) = (server_cpu(&mut redis), own_cpu());
    let elapsed = runtime.block_on(run(&limiters, jobs));
    let (redis_cpu, client_cpu) = (server_cpu(&mut redis) - redis_cpu, own_cpu() - client_cpu);
    let stats = info(&mut redis, "commandstats");
    listener.abort();
    let (evalsha, evalsha_usec) = command(&stats, "evalsha");
    let (fcall, fcall_usec) = command(&stats, "fcall");
    let (calls, calls_usec) = (evalsha + fcall, evalsha_usec + fcall_usec);
    let (publish, _) = command(&stats, "publish");
    let (eval, _) = command(&stats, "eval");
    let (script, _) = command(&stats, "script");
    let per_job = |n: u64| n as f64 / jobs as f64;
    let rate = jobs as f64 / elapsed.as_secs_f64();
    let received = received.load(Ordering::Relaxed);
    println!(
        "sustained, {instances} instance(s), {jobs} jobs, {CONCURRENT} at a time: {rate:.0} jobs/s \
         ({:.1} µs/job wall)",
        elapsed.as_secs_f64() * 1e6 / jobs as f64
    );
    println!(
        "  redis: {:?} library calls (FCALL {fcall}, EVALSHA {evalsha}) {:.3}/job, {:.1} jobs per \
         call, at {:.1} µs/call ({:.1} µs/job); PUBLISH {:.4}/job ({publish} in {:.1} s = \
         {:.1}/s); EVAL {eval}, SCRIPT {script}",
        lua_mode(),
        per_job(calls),
        jobs as f64 / calls.max(1) as f64,
        calls_usec as f64 / calls.max(1) as f64,
        calls_usec as f64 / jobs as f64,
        per_job(publish),
        elapsed.as_secs_f64(),
        publish as f64 / elapsed.as_secs_f64(),
    );
    println!(
        "  pub/sub received: {received} per subscriber ({:.4}/job; × {instances} instances = {:.4}/job)",
        per_job(received),
        per_job(received * instances as u64)
    );
    println!(
        "  cpu: redis-server {:.1} µs/job ({:.0} % of a core), this process {:.1} µs/job ({:.0} % of a core)",
        redis_cpu * 1e6 / jobs as f64,
        redis_cpu * 100.0 / elapsed.as_secs_f64(),
        client_cpu * 1e6 / jobs as f64,
        client_cpu * 100.0 / elapsed.as_secs_f64(),
    );
    let mut calls: Vec<(String, u64, u64)> = stats
        .keys()
        .filter_map(|k| k.strip_prefix("cmdstat_"))
        .map(|name| {
            let (calls, usec) = command(&stats, name);
            (name.to_owned(), calls, usec)
        })
        .collect();
    calls.sort_by_key(|(_, calls, _)| std::cmp::Reverse(*calls));
    let listed: Vec<String> = calls
        .iter()
        .map(|(name, calls, usec)| format!("{name} {:.2}/job {usec} µs", per_job(*calls)))
        .collect();
    println!("  commands (scripts' own included): {}", listed.join(", "));
    runtime.block_on(async {
        for limiter in &limiters {
            limiter.stop(Duration::from_secs(1)).await;
        }
    });
    rate
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1_000.0
}

/// Admission (`acquire`) and settlement (`release`) latencies in ns at `rate` jobs/s, each
/// measured from when it was due.
async fn paced(limiters: &[NamedLimiter], rate: f64, span: Duration) -> (Vec<u64>, Vec<u64>, f64) {
    let samples = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let mut tasks = Vec::new();
    let started = Instant::now();
    let mut issued = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while started.elapsed() < span {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while issued < due {
            let limiter = limiters[issued as usize % limiters.len()].clone();
            let samples = samples.clone();
            let at = Instant::now();
            tasks.push(tokio::spawn(async move {
                let lease = limiter.acquire("p", "j").await.unwrap().unwrap();
                let admitted = at.elapsed();
                let settling = Instant::now();
                lease
                    .release(Usage::new().input_tokens(60).requests(1))
                    .await;
                let settled = settling.elapsed();
                let mut samples = samples.lock().unwrap();
                samples.0.push(admitted.as_nanos() as u64);
                samples.1.push(settled.as_nanos() as u64);
            }));
            issued += 1;
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let achieved = issued as f64 / started.elapsed().as_secs_f64();
    let (mut admit, mut settle) = std::mem::take(&mut *samples.lock().unwrap());
    admit.sort_unstable();
    settle.sort_unstable();
    (admit, settle, achieved)
}

fn latency(runtime: &tokio::runtime::Runtime, server: &RedisServer, instances: usize, rate: f64) {
    let prefix = format!("latency-{instances}");
    let limiters = runtime.block_on(fleet(server.url(), &prefix, instances));
    runtime.block_on(run(&limiters, 5_000));
    let (admit, settle, achieved) =
        runtime.block_on(paced(&limiters, rate, Duration::from_secs(5)));
    println!(
        "paced at {achieved:.0} jobs/s, {instances} instance(s): admission p50 {:.3} ms, p99 {:.3} ms, \
         p99.9 {:.3} ms, max {:.3} ms; settlement p50 {:.3} ms, p99 {:.3} ms ({} jobs)",
        percentile(&admit, 0.5) / 1_000.0,
        percentile(&admit, 0.99) / 1_000.0,
        percentile(&admit, 0.999) / 1_000.0,
        percentile(&admit, 1.0) / 1_000.0,
        percentile(&settle, 0.5) / 1_000.0,
        percentile(&settle, 0.99) / 1_000.0,
        admit.len()
    );
    // One job at a time: the round trip alone.
    let (mut admit, mut settle) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..2_000 {
            let at = Instant::now();
            let lease = limiters[0].acquire("s", "j").await.unwrap().unwrap();
            admit.push(at.elapsed().as_nanos() as u64);
            let at = Instant::now();
            lease
                .release(Usage::new().input_tokens(60).requests(1))
                .await;
            settle.push(at.elapsed().as_nanos() as u64);
        }
        for limiter in &limiters {
            limiter.stop(Duration::from_secs(1)).await;
        }
    });
    admit.sort_unstable();
    settle.sort_unstable();
    println!(
        "one at a time, {instances} instance(s): admission p50 {:.3} ms, p99 {:.3} ms; settlement \
         p50 {:.3} ms, p99 {:.3} ms",
        percentile(&admit, 0.5) / 1_000.0,
        percentile(&admit, 0.99) / 1_000.0,
        percentile(&settle, 0.5) / 1_000.0,
        percentile(&settle, 0.99) / 1_000.0,
    );
}

/// Counts of events and outcomes over the escalation scenario.
#[derive(Default)]
struct Contention {
    started: AtomicU64,
    refused: AtomicU64,
    escalated: AtomicU64,
}

fn escalation(runtime: &tokio::runtime::Runtime, server: &RedisServer) {
    const INSTANCES: usize = 4;
    const JOBS: u64 = 20_000;
    const CONC: u64 = 32;
    let counts = Arc::new(Contention::default());
    let model = || {
        ModelConfig::new(Pricing::new(0.0, 0.0, 0.0))
            .tokens_per_minute(1_000_000_000_000)
            .max_concurrent_requests(CONC)
    };
    let limiters: Vec<NamedLimiter> = runtime.block_on(async {
        let mut limiters = Vec::new();
        for i in 0..INSTANCES {
            let config = Config::new()
                .model("a", model())
                .model("b", model())
                .escalation_order(["a", "b"])
                .job_type(
                    "j",
                    JobTypeConfig::new()
                        .estimated_tokens(100)
                        .max_wait("a", Duration::ZERO)
                        .max_wait("b", Duration::from_secs(5)),
                )
                .instance_id(format!("contended-{i}"));
            let redis = RedisConfig::new(server.url())
                .prefix("contended")
                .lua_mode(lua_mode());
            let counts = counts.clone();
            let limiter = NamedLimiter::builder(config)
                .backend(RedisBackend::new(redis).unwrap())
                .on_event(move |event| {
                    let counter = match event {
                        Event::Started { .. } => &counts.started,
                        Event::AdmissionRefused { .. } => &counts.refused,
                        Event::Escalated { .. } => &counts.escalated,
                        _ => return,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                })
                .build()
                .unwrap();
            limiter.ready().await;
            limiters.push(limiter);
        }
        limiters
    });
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        // Four times what both models together let run at once: each job holds its unit for
        // 2 ms.
        let workers: Vec<_> = (0..CONC * 8)
            .map(|w| {
                let (next, limiters) = (next.clone(), limiters.clone());
                tokio::spawn(async move {
                    let limiter = &limiters[w as usize % limiters.len()];
                    while next.fetch_add(1, Ordering::Relaxed) < JOBS {
                        let _ = limiter
                            .queue_job(JobRequest::new("c", "j", |_: JobContext<Arc<str>>| async {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                JobResult::<(), ()>::done(
                                    (),
                                    Usage::new().input_tokens(100).requests(1),
                                )
                            }))
                            .unwrap()
                            .await;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        for limiter in &limiters {
            limiter.stop(Duration::from_secs(1)).await;
        }
    });
    let (started_jobs, refused, escalated) = (
        counts.started.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.escalated.load(Ordering::Relaxed),
    );
    println!(
        "escalation under contention, {INSTANCES} instances, 2 models × {CONC} concurrent, \
         {JOBS} jobs in {:.1} s: {started_jobs} attempts started, {escalated} escalations \
         ({:.3}/job), {refused} reservations refused by the fleet ({:.4}/job)",
        started.elapsed().as_secs_f64(),
        escalated as f64 / JOBS as f64,
        refused as f64 / JOBS as f64,
    );
}

fn main() {
    let server = RedisServer::start().expect("redis-server must be installed");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let load_before = load_average();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    throughput(&mut criterion, &runtime, server.url());
    criterion.final_summary();
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }

    println!();
    println!(
        "machine: {} cores; load average before {load_before}, now {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let one = sustained(&runtime, &server, 1);
    let four = sustained(&runtime, &server, 4);
    latency(&runtime, &server, 1, one / 2.0);
    latency(&runtime, &server, 4, four / 2.0);
    escalation(&runtime, &server);
    println!("load average after: {}", load_average());
}
