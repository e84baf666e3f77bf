//! Shared by the Redis backend's fleet tests: the fleet's configuration, a *worker* (the test
//! binary run again as one limiter instance in its own OS process), and probes that read the
//! fleet's state straight from Redis.
//!
//! A worker is a `#[test] fn worker()` in the test file that returns at once unless
//! [`WORKER_ENV`] holds its plan (JSON). The parent runs the binary again with
//! `--exact worker --nocapture --test-threads 1`; the worker registers, prints
//! `LLMRL-READY`, waits for `go` on its stdin (so that every instance has joined before any job
//! starts), runs its jobs, checks its own `availability()` at every job start, prints one
//! `LLMRL-SUMMARY {json}` line and exits with status 0 (or panics: status 101).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::missing_panics_doc
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use llmrl::{
    Availability, Cause, Clock, Config, JobContext, JobError, JobRequest, JobResult, JobTypeConfig,
    ModelConfig, NamedLimiter, Pricing, RatioAdjustmentConfig, Remaining, Timestamp, Usage,
};
use llmrl_redis::{RedisBackend, RedisConfig, WindowClock};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z: aligned on a minute and a UTC day.
pub const T0: u64 = 1_767_225_600_000;
/// The environment variable that holds a worker's plan.
pub const WORKER_ENV: &str = "LLMRL_TEST_WORKER";
/// The one model.
pub const MODEL: &str = "m";
/// Minute windows in ms.
pub const MINUTE_MS: u64 = 60_000;

/// The limits every instance of a fleet shares.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub tpm: u64,
    pub rpm: u64,
    pub conc: u64,
}

/// Two job types, each with half of the instance's part (fixed ratios, no adjustment).
pub const SHORT_TOKENS: u64 = 1_000;
pub const LONG_TOKENS: u64 = 4_000;

/// The configuration of every instance of a fleet.
pub fn config(limits: Limits, max_wait: Duration) -> Config {
    let model = ModelConfig::new(Pricing::new(0.0, 0.0, 0.0))
        .tokens_per_minute(limits.tpm)
        .requests_per_minute(limits.rpm)
        .max_concurrent_requests(limits.conc);
    let job_type = |tokens| {
        JobTypeConfig::new()
            .estimated_tokens(tokens)
            .estimated_requests(1)
            .fixed_ratio(0.5)
            .max_wait(MODEL, max_wait)
    };
    Config::new()
        .model(MODEL, model)
        .job_type("short", job_type(SHORT_TOKENS))
        .job_type("long", job_type(LONG_TOKENS))
        .ratio_adjustment(
            RatioAdjustmentConfig::new()
                .interval(Duration::ZERO)
                .releases_per_adjustment(0),
        )
}

/// What one worker does; travels to it as JSON in [`WORKER_ENV`].
#[derive(Clone, Debug)]
pub struct Plan {
    pub url: String,
    pub prefix: String,
    pub instance: String,
    /// `Clock::scaled(anchor, start, factor)`.
    pub anchor: u64,
    pub start: u64,
    pub factor: u32,
    /// Instances the fleet has when complete (the worker waits for them).
    pub fleet: usize,
    pub jobs: u64,
    pub seed: u64,
    /// Jobs arrive evenly over this span (scaled ms) after `go`.
    pub arrival_ms: u64,
    /// A job runs for `[min, max]` scaled ms.
    pub run_ms: (u64, u64),
    /// The backend's stale threshold (scaled ms: the window clock is the client's).
    pub stale_ms: u64,
    pub max_wait_ms: u64,
    pub limits: Limits,
}

impl Plan {
    pub fn to_json(&self) -> String {
        json!({
            "url": self.url, "prefix": self.prefix, "instance": self.instance,
            "anchor": self.anchor, "start": self.start, "factor": self.factor,
            "fleet": self.fleet, "jobs": self.jobs, "seed": self.seed,
            "arrival_ms": self.arrival_ms, "run_ms": [self.run_ms.0, self.run_ms.1],
            "stale_ms": self.stale_ms, "max_wait_ms": self.max_wait_ms,
            "tpm": self.limits.tpm, "rpm": self.limits.rpm, "conc": self.limits.conc,
        })
        .to_string()
    }

    pub fn from_json(text: &str) -> Self {
        let v: Value = serde_json::from_str(text).unwrap();
        let n = |k: &str| v[k].as_u64().unwrap();
        Self {
            url: v["url"].as_str().unwrap().to_owned(),
            prefix: v["prefix"].as_str().unwrap().to_owned(),
            instance: v["instance"].as_str().unwrap().to_owned(),
            anchor: n("anchor"),
            start: n("start"),
            factor: u32::try_from(n("factor")).unwrap(),
            fleet: usize::try_from(n("fleet")).unwrap(),
            jobs: n("jobs"),
            seed: n("seed"),
            arrival_ms: n("arrival_ms"),
            run_ms: (
                v["run_ms"][0].as_u64().unwrap(),
                v["run_ms"][1].as_u64().unwrap(),
            ),
            stale_ms: n("stale_ms"),
            max_wait_ms: n("max_wait_ms"),
            limits: Limits {
                tpm: n("tpm"),
                rpm: n("rpm"),
                conc: n("conc"),
            },
        }
    }

    pub fn clock(&self) -> Clock {
        Clock::scaled(
            Timestamp::from_millis(self.anchor),
            Timestamp::from_millis(self.start),
            self.factor,
        )
    }

    /// A limiter of this plan's fleet (also for the parent's own observer instance).
    pub fn limiter(&self, instance: &str) -> NamedLimiter {
        let backend = RedisBackend::new(
            RedisConfig::new(self.url.clone())
                .prefix(self.prefix.clone())
                .stale_after(Duration::from_millis(self.stale_ms))
                .window_clock(WindowClock::Client),
        )
        .unwrap();
        NamedLimiter::builder(
            config(self.limits, Duration::from_millis(self.max_wait_ms)).instance_id(instance),
        )
        .clock(self.clock())
        .backend(backend)
        .build()
        .unwrap()
    }
}

/// The wall clock in ms since the epoch.
pub fn wall_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// SplitMix64: a tiny deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// What a worker saw; printed as its summary.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub started: u64,
    pub waited_next_minute: u64,
    pub violations: u64,
    pub first_violations: Vec<String>,
    pub instances_min: u64,
    pub instances_max: u64,
    pub tpm_share_min: u64,
    pub tpm_share_max: u64,
    pub conc_share_min: u64,
    pub conc_share_max: u64,
    pub own_tpm_max: u64,
    pub fleet_tpm_used_max: u64,
    pub fleet_inflight_max: u64,
    pub own_running_max: u64,
}

impl Record {
    pub fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.first_violations.len() < 10 {
            self.first_violations.push(what);
        }
    }
}

/// Checks one instance's own figures at a job start: its own usage within its share, the
/// fleet's within the limit, and `running` (the jobs this process counts as running, itself
/// included) within its share of concurrency.
pub fn check_start(
    record: &mut Record,
    availability: &Availability<Arc<str>, Arc<str>>,
    running: u64,
) {
    let model = &availability.models[0];
    let instances = availability.instances as u64;
    let check = |record: &mut Record, name: &str, r: Option<Remaining>| {
        let Some(r) = r else {
            record.violation(format!("{name}: no figures"));
            return;
        };
        if r.own > r.share {
            record.violation(format!("{name}: own {} above share {}", r.own, r.share));
        }
        if r.used > r.limit {
            record.violation(format!("{name}: fleet {} above limit {}", r.used, r.limit));
        }
    };
    check(record, "tokens_per_minute", model.tokens_per_minute);
    check(record, "requests_per_minute", model.requests_per_minute);
    check(record, "concurrent_requests", model.concurrent_requests);
    let (tpm, conc) = (
        model.tokens_per_minute.unwrap(),
        model.concurrent_requests.unwrap(),
    );
    if running > conc.share {
        record.violation(format!(
            "{running} jobs running, above the concurrency share {}",
            conc.share
        ));
    }
    if record.started == 0 {
        record.instances_min = instances;
        record.tpm_share_min = tpm.share;
        record.conc_share_min = conc.share;
    }
    record.started += 1;
    record.instances_min = record.instances_min.min(instances);
    record.instances_max = record.instances_max.max(instances);
    record.tpm_share_min = record.tpm_share_min.min(tpm.share);
    record.tpm_share_max = record.tpm_share_max.max(tpm.share);
    record.conc_share_min = record.conc_share_min.min(conc.share);
    record.conc_share_max = record.conc_share_max.max(conc.share);
    record.own_tpm_max = record.own_tpm_max.max(tpm.own);
    record.fleet_tpm_used_max = record.fleet_tpm_used_max.max(tpm.used);
    record.fleet_inflight_max = record.fleet_inflight_max.max(conc.used);
    record.own_running_max = record.own_running_max.max(running);
}

/// Runs a worker's plan; returns its summary (JSON) and whether every check passed.
pub async fn run_worker(plan: Plan) -> (Value, bool) {
    let limiter = plan.limiter(&plan.instance);
    let clock = limiter.clock().clone();
    limiter.ready().await;
    let joined = Instant::now();
    while limiter.availability().instances != plan.fleet {
        assert!(
            joined.elapsed() < Duration::from_secs(60),
            "{}: the fleet never reached {} instances",
            plan.instance,
            plan.fleet
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("LLMRL-READY {}", plan.instance);
    std::io::stdout().flush().unwrap();
    let go = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert_eq!(go.trim(), "go", "{}: expected go", plan.instance);

    let record = Arc::new(Mutex::new(Record::default()));
    let running = Arc::new(AtomicU64::new(0));
    let mut rng = Rng(plan.seed);
    let load_start = clock.now();
    let mut handles = Vec::with_capacity(usize::try_from(plan.jobs).unwrap());
    for i in 0..plan.jobs {
        let at = load_start.saturating_add(Duration::from_millis(plan.arrival_ms * i / plan.jobs));
        clock.sleep_until(at).await;
        let long = rng.between(0, 9) < 4;
        let (job_type, estimate) = if long {
            ("long", LONG_TOKENS)
        } else {
            ("short", SHORT_TOKENS)
        };
        // 50 % to 100 % of the estimate: settlements refund, never overrun, so every limit
        // must hold strictly.
        let tokens = estimate * rng.between(50, 100) / 100;
        let usage = Usage::new()
            .input_tokens(tokens - tokens / 4)
            .output_tokens(tokens / 4)
            .requests(1);
        let run_for = Duration::from_millis(rng.between(plan.run_ms.0, plan.run_ms.1));
        let queued_minute = clock.now().as_millis() / MINUTE_MS;
        let (probe, record, running, clock) = (
            limiter.clone(),
            record.clone(),
            running.clone(),
            clock.clone(),
        );
        let request = JobRequest::new(
            format!("{}-{i}", plan.instance),
            job_type,
            move |_: JobContext<Arc<str>>| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                {
                    let mut record = record.lock().unwrap();
                    check_start(&mut record, &probe.availability(), now);
                    if clock.now().as_millis() / MINUTE_MS > queued_minute {
                        record.waited_next_minute += 1;
                    }
                }
                let (running, clock) = (running.clone(), clock.clone());
                async move {
                    clock.sleep_until(clock.now().saturating_add(run_for)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    JobResult::<(), ()>::done((), usage)
                }
            },
        );
        handles.push(limiter.queue_job(request).unwrap());
    }
    let (mut completed, mut exhausted, mut other) = (0u64, 0u64, Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    for handle in handles {
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(_)) => completed += 1,
            Ok(Err(JobError {
                cause: Cause::Exhausted { .. },
                ..
            })) => exhausted += 1,
            Ok(Err(e)) => other.push(format!("{:?}", e.cause)),
            Err(_) => other.push("hung".into()),
        }
    }
    limiter.stop(Duration::from_secs(5)).await;
    let record = record.lock().unwrap();
    let ok = record.violations == 0 && other.is_empty() && exhausted == 0;
    let summary = json!({
        "instance": plan.instance, "ok": ok, "jobs": plan.jobs, "completed": completed,
        "exhausted": exhausted, "other": other.len(), "first_other": other.first(),
        "started": record.started, "waited_next_minute": record.waited_next_minute,
        "violations": record.violations, "first_violations": record.first_violations,
        "instances_min": record.instances_min, "instances_max": record.instances_max,
        "tpm_share_min": record.tpm_share_min, "tpm_share_max": record.tpm_share_max,
        "conc_share_min": record.conc_share_min, "conc_share_max": record.conc_share_max,
        "own_tpm_max": record.own_tpm_max, "fleet_tpm_used_max": record.fleet_tpm_used_max,
        "fleet_inflight_max": record.fleet_inflight_max,
        "own_running_max": record.own_running_max,
    });
    (summary, ok)
}

/// The body of a `#[test] fn worker()`: nothing unless this process was started as a worker.
pub fn worker_main() {
    let Ok(plan) = std::env::var(WORKER_ENV) else {
        return;
    };
    let plan = Plan::from_json(&plan);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (summary, ok) = runtime.block_on(run_worker(plan));
    println!("LLMRL-SUMMARY {summary}");
    std::io::stdout().flush().unwrap();
    assert!(ok, "worker failed: {summary}");
}

/// A worker process seen from the parent.
pub struct Worker {
    pub instance: String,
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    summary: Option<Value>,
}

impl Worker {
    /// Runs this test binary's `worker` test as a worker with `plan`.
    pub fn spawn(plan: &Plan) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "worker", "--nocapture", "--test-threads", "1"])
            .env(WORKER_ENV, plan.to_json())
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err_pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        Self {
            instance: plan.instance.clone(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            summary: None,
        }
    }

    fn stderr_tail(&self) -> String {
        let text = self.stderr.lock().unwrap();
        let mut start = text.len().saturating_sub(2_000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Waits for the worker's `LLMRL-READY`.
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("LLMRL-READY") => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "{} never became ready; stderr:\n{}",
                    self.instance,
                    self.stderr_tail()
                ),
            }
        }
    }

    /// Lets the worker start its jobs.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the worker to exit; returns its exit status and summary.
    pub fn finish(&mut self, within: Duration) -> (ExitStatus, Value) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Take in what it printed last.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.take_line(&line);
                }
                let summary = self.summary.take().unwrap_or_else(|| {
                    panic!(
                        "{} exited ({status}) without a summary; stderr:\n{}",
                        self.instance,
                        self.stderr_tail()
                    )
                });
                if !status.success() {
                    eprintln!("{} stderr:\n{}", self.instance, self.stderr_tail());
                }
                return (status, summary);
            }
            while let Ok(line) = self.lines.try_recv() {
                self.take_line(&line);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not finish in {within:?}; stderr:\n{}",
                    self.instance,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn take_line(&mut self, line: &str) {
        // libtest may print "test worker ... " first on the same line.
        if let Some((_, json)) = line.split_once("LLMRL-SUMMARY ") {
            self.summary = Some(serde_json::from_str(json).unwrap());
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fleet's state read from Redis in one atomic step.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Members and each one's own in-flight units.
    pub members: BTreeMap<String, u64>,
    /// The fleet's in-flight counter.
    pub inflight: u64,
    /// Every `used` window counter: (resource, window) → value.
    pub used: BTreeMap<(u32, u64), u64>,
}

impl Snapshot {
    /// Whether the in-flight counter is the sum of the members' own in-flight units.
    pub fn consistent(&self) -> bool {
        self.inflight == self.members.values().sum::<u64>()
    }
}

// Model 0 only: the fleet hash holds its in-flight count (`u4:0`) and each member's own
// (`o4:0:<id>`); one hash per window holds its usage (`u<resource>`).
const SNAPSHOT: &str = r"
local P = '{' .. ARGV[1] .. '}'
local F = P .. ':fleet'
local out = {redis.call('HGET', F, 'u4:0') or '0'}
local members = redis.call('ZRANGE', P .. ':members', 0, -1)
table.insert(out, tostring(#members))
for _, m in ipairs(members) do
  table.insert(out, m)
  table.insert(out, redis.call('HGET', F, 'o4:0:' .. m) or '0')
end
for _, pair in ipairs({{':minute:0:*', 0, 2}, {':day:0:*', 1, 3}}) do
  for _, k in ipairs(redis.call('KEYS', P .. pair[1])) do
    local window = string.match(k, '(%d+)$')
    for i = 2, 3 do
      table.insert(out, pair[i] .. ':' .. window)
      table.insert(out, redis.call('HGET', k, 'u' .. pair[i]) or '0')
    end
  end
end
return out
";

/// Reads the fleet of `prefix` from Redis.
pub fn snapshot(connection: &mut redis::Connection, prefix: &str) -> redis::RedisResult<Snapshot> {
    let reply: Vec<String> = redis::Script::new(SNAPSHOT)
        .arg(prefix)
        .invoke(connection)?;
    let mut snapshot = Snapshot {
        inflight: reply[0].parse().unwrap(),
        ..Snapshot::default()
    };
    let members: usize = reply[1].parse().unwrap();
    let mut at = 2;
    for _ in 0..members {
        snapshot
            .members
            .insert(reply[at].clone(), reply[at + 1].parse().unwrap());
        at += 2;
    }
    while at + 1 < reply.len() {
        // <resource>:<window>
        let (resource, window) = reply[at].split_once(':').unwrap();
        snapshot.used.insert(
            (resource.parse().unwrap(), window.parse().unwrap()),
            reply[at + 1].parse().unwrap(),
        );
        at += 2;
    }
    Ok(snapshot)
}

/// Watches a fleet's counters in Redis from a thread until stopped: the highest in-flight count
/// and window counters seen, and every sample above a limit or inconsistent.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<WatchReport>>,
}

/// What a [`Watcher`] saw.
#[derive(Debug, Default, Clone)]
pub struct WatchReport {
    pub samples: u64,
    pub inflight_max: u64,
    pub tpm_max: u64,
    pub rpm_max: u64,
    pub over_limit: Vec<String>,
    pub inconsistent: u64,
    pub first_inconsistent: Vec<String>,
    pub errors: u64,
}

impl Watcher {
    pub fn start(url: &str, prefix: &str, limits: Limits) -> Self {
        let (url, prefix) = (url.to_owned(), prefix.to_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut report = WatchReport::default();
            let mut connection = None;
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
                if connection.is_none() {
                    connection = redis::Client::open(url.as_str())
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                        .ok();
                }
                let Some(c) = connection.as_mut() else {
                    report.errors += 1;
                    continue;
                };
                let Ok(s) = snapshot(c, &prefix) else {
                    report.errors += 1;
                    connection = None;
                    continue;
                };
                report.samples += 1;
                report.inflight_max = report.inflight_max.max(s.inflight);
                if s.inflight > limits.conc {
                    report
                        .over_limit
                        .push(format!("in flight {} > {}", s.inflight, limits.conc));
                }
                if !s.consistent() {
                    report.inconsistent += 1;
                    if report.first_inconsistent.len() < 5 {
                        report
                            .first_inconsistent
                            .push(format!("in flight {} vs own {:?}", s.inflight, s.members));
                    }
                }
                for (&(resource, window), &value) in &s.used {
                    let limit = match resource {
                        0 => {
                            report.tpm_max = report.tpm_max.max(value);
                            limits.tpm
                        }
                        2 => {
                            report.rpm_max = report.rpm_max.max(value);
                            limits.rpm
                        }
                        _ => u64::MAX,
                    };
                    if value > limit {
                        report.over_limit.push(format!(
                            "resource {resource} window {window}: {value} > {limit}"
                        ));
                    }
                }
            }
            report
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> WatchReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A unique key prefix for one test.
pub fn prefix(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// The JSON number `key` of `v`.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Several instances in this process (each with its own backend and connections) under one
/// load, checked at every job start like a worker, plus exactly across the whole fleet: the
/// jobs running in all of them never exceed the concurrency limit.
pub struct LocalFleet {
    pub plan: Plan,
    pub limiters: Vec<NamedLimiter>,
    pub records: Vec<Arc<Mutex<Record>>>,
    running: Vec<Arc<AtomicU64>>,
    fleet_running: Arc<AtomicU64>,
    /// Set by the test while the backend is down: starts then are counted apart.
    pub outage: Arc<AtomicBool>,
    pub outage_record: Arc<Mutex<Record>>,
    pub fleet_running_max: Arc<AtomicU64>,
}

impl LocalFleet {
    /// `n` instances of `plan`'s fleet, registered and seeing each other.
    pub async fn start(plan: Plan, n: usize) -> Self {
        let limiters: Vec<NamedLimiter> = (0..n)
            .map(|i| plan.limiter(&format!("{}-{i}", plan.instance)))
            .collect();
        for limiter in &limiters {
            limiter.ready().await;
        }
        let fleet = Self {
            records: (0..n).map(|_| Arc::default()).collect(),
            running: (0..n).map(|_| Arc::default()).collect(),
            limiters,
            plan,
            fleet_running: Arc::default(),
            outage: Arc::default(),
            outage_record: Arc::default(),
            fleet_running_max: Arc::default(),
        };
        fleet.wait_for_instances(n, Duration::from_secs(10)).await;
        fleet
    }

    /// Waits until every instance sees `n` instances.
    pub async fn wait_for_instances(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self
            .limiters
            .iter()
            .any(|l| l.availability().instances != n)
        {
            assert!(
                Instant::now() < deadline,
                "instances never all saw {n}: {:?}",
                self.limiters
                    .iter()
                    .map(|l| l.availability().instances)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Queues `plan.jobs` jobs on each instance, arriving evenly over `plan.arrival_ms`;
    /// returns when every job has ended (or `within` has passed: a hung job), with per
    /// outcome counts: (completed, exhausted, other).
    pub async fn run_load(&self, within: Duration) -> (u64, u64, Vec<String>) {
        let mut tasks = Vec::new();
        for (i, limiter) in self.limiters.iter().enumerate() {
            let (limiter, plan) = (limiter.clone(), self.plan.clone());
            let (record, running) = (self.records[i].clone(), self.running[i].clone());
            let (fleet_running, fleet_max) =
                (self.fleet_running.clone(), self.fleet_running_max.clone());
            let (outage, outage_record) = (self.outage.clone(), self.outage_record.clone());
            tasks.push(tokio::spawn(async move {
                let clock = limiter.clock().clone();
                let mut rng = Rng(plan.seed + i as u64);
                let start = clock.now();
                let mut handles = Vec::new();
                for n in 0..plan.jobs {
                    let at = start
                        .saturating_add(Duration::from_millis(plan.arrival_ms * n / plan.jobs));
                    clock.sleep_until(at).await;
                    let (job_type, estimate) = if rng.between(0, 9) < 4 {
                        ("long", LONG_TOKENS)
                    } else {
                        ("short", SHORT_TOKENS)
                    };
                    let tokens = estimate * rng.between(50, 100) / 100;
                    let usage = Usage::new().input_tokens(tokens).requests(1);
                    let run_for = Duration::from_millis(rng.between(plan.run_ms.0, plan.run_ms.1));
                    let (probe, record, running, clock) = (
                        limiter.clone(),
                        record.clone(),
                        running.clone(),
                        clock.clone(),
                    );
                    let (fleet_running, fleet_max, outage, outage_record) = (
                        fleet_running.clone(),
                        fleet_max.clone(),
                        outage.clone(),
                        outage_record.clone(),
                    );
                    let conc = plan.limits.conc;
                    let request = JobRequest::new(
                        format!("{}-{n}", probe.instance_id()),
                        job_type,
                        move |_: JobContext<Arc<str>>| {
                            let mine = running.fetch_add(1, Ordering::SeqCst) + 1;
                            let all = fleet_running.fetch_add(1, Ordering::SeqCst) + 1;
                            fleet_max.fetch_max(all, Ordering::SeqCst);
                            let availability = probe.availability();
                            {
                                let mut record = record.lock().unwrap();
                                check_start(&mut record, &availability, mine);
                                if all > conc {
                                    let c = availability.models[0].concurrent_requests.unwrap();
                                    record.violation(format!(
                                        "{all} jobs running in the fleet, above {conc} ({} \
                                         sees {} instances, its share {}, own {}, fleet {})",
                                        probe.instance_id(),
                                        availability.instances,
                                        c.share,
                                        c.own,
                                        c.used
                                    ));
                                }
                            }
                            if outage.load(Ordering::SeqCst) {
                                check_start(
                                    &mut outage_record.lock().unwrap(),
                                    &availability,
                                    mine,
                                );
                            }
                            let (running, fleet_running, clock) =
                                (running.clone(), fleet_running.clone(), clock.clone());
                            async move {
                                clock.sleep_until(clock.now().saturating_add(run_for)).await;
                                running.fetch_sub(1, Ordering::SeqCst);
                                fleet_running.fetch_sub(1, Ordering::SeqCst);
                                JobResult::<(), ()>::done((), usage)
                            }
                        },
                    );
                    handles.push(limiter.queue_job(request).unwrap());
                }
                handles
            }));
        }
        let deadline = tokio::time::Instant::now() + within;
        let (mut completed, mut exhausted, mut other) = (0, 0, Vec::new());
        for task in tasks {
            for handle in task.await.unwrap() {
                let id = handle.job_id().clone();
                match tokio::time::timeout_at(deadline, handle).await {
                    Ok(Ok(_)) => completed += 1,
                    Ok(Err(JobError {
                        cause: Cause::Exhausted { .. },
                        ..
                    })) => exhausted += 1,
                    Ok(Err(e)) => other.push(format!("{id}: {:?}", e.cause)),
                    Err(_) => other.push(format!("{id}: hung")),
                }
            }
        }
        (completed, exhausted, other)
    }

    /// Every violation any instance recorded.
    pub fn violations(&self) -> Vec<String> {
        self.records
            .iter()
            .flat_map(|r| r.lock().unwrap().first_violations.clone())
            .collect()
    }

    pub async fn stop(&self) {
        for limiter in &self.limiters {
            limiter.stop(Duration::from_secs(2)).await;
        }
    }
}
