//! The end-to-end stress test: the committed dataset (`e2e/dataset.json`, written by
//! `llmrl dataset`) replayed through five `llmrl serve` processes on a real Redis, with the
//! clock scaled up, and checked against the predictor (`tests/e2e/predictor.rs`).
//!
//! By default a deterministic third of the dataset (every third job) runs at 10×, which takes
//! about a minute and a half; `LLMRL_E2E_FULL=1` replays all 15 000 jobs (at 10× in a release
//! build, 4× in a debug one). See `e2e/README.md`.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod e2e;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::checks::{self, Facts, Recorded, Verdict};
use e2e::predictor::{self, MINUTE_MS, Prediction, Scenario, window};
use e2e::replay::{Answer, DatasetJob, Log, Run, Sample, next_boundary, read_dataset};
use serde_json::json;
use support::fleet::Fleet;

/// The configuration every instance runs.
const CONFIG: &str = include_str!("../../../examples/stress.toml");
/// Instances in the fleet.
const INSTANCES: usize = 5;
/// Availability samples of every instance, every this many ms of the shared clock.
const SAMPLE_EVERY_MS: u64 = 2_000;

/// Which part of the dataset runs, and how fast.
struct Variant {
    name: &'static str,
    /// Keep every n-th job (n coprime with the fleet size keeps every instance busy).
    every: usize,
    scale: u32,
}

fn variant() -> Variant {
    let full = std::env::var("LLMRL_E2E_FULL").is_ok_and(|v| v == "1");
    let mut variant = if full {
        Variant {
            name: "full (LLMRL_E2E_FULL=1)",
            every: 1,
            // Unoptimized servers stall under the full traffic: slower in a debug build.
            scale: if cfg!(debug_assertions) { 4 } else { 10 },
        }
    } else {
        Variant {
            name: "default (every third job)",
            every: 3,
            scale: 10,
        }
    };
    if let Some(scale) = std::env::var("LLMRL_E2E_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        variant.scale = scale;
    }
    variant
}

fn scenario() -> Scenario {
    Scenario::from_config(&llmrl::Config::from_toml_str(CONFIG).unwrap(), INSTANCES)
}

fn dataset() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e/dataset.json");
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (regenerate it: see e2e/README.md)"))
}

fn prediction_jobs(jobs: &[DatasetJob]) -> Vec<predictor::Job> {
    jobs.iter()
        .map(|j| predictor::Job {
            job_type: j.job_type,
            instance: j.instance,
            arrival_ms: j.arrival_ms,
        })
        .collect()
}

/// The three job types without a ratio get 0.1 each: the configuration validates, the
/// predictor computes it, and a limiter built from the configuration reports it.
#[test]
fn job_types_without_a_ratio_share_what_is_left() {
    let config = llmrl::Config::from_toml_str(CONFIG).unwrap();
    config.validate().unwrap();
    let s = scenario();
    let expected = [
        ("summary", 0.3, true),
        ("vacation_planning", 0.4, false),
        ("image_creation", 0.1, true),
        ("budget_calculation", 0.1, true),
        ("weather_forecast", 0.1, true),
    ];
    let ratios = s.initial_ratios();
    for (t, (name, ratio, flexible)) in expected.iter().enumerate() {
        assert_eq!(s.job_types[t].name, *name);
        assert!((ratios[t] - ratio).abs() < 1e-12, "{name}: {}", ratios[t]);
        assert_eq!(s.job_types[t].flexible, *flexible);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let limiter = llmrl::NamedLimiter::builder(config).build().unwrap();
        limiter.ready().await;
        let availability = limiter.availability();
        for (name, ratio, flexible) in expected {
            let t = availability
                .job_types
                .iter()
                .find(|t| &*t.job_type == name)
                .unwrap();
            assert!((t.ratio - ratio).abs() < 1e-9, "{name}: {}", t.ratio);
            assert_eq!(t.flexible, flexible, "{name}");
        }
        limiter.stop(Duration::from_secs(1)).await;
    });
}

/// The committed dataset is what `llmrl dataset` writes: 15 000 jobs of the configured types,
/// 5–30 s long, spread over the instances, with usage within the estimates.
#[test]
fn the_committed_dataset_is_the_generated_one() {
    let text = dataset();
    let s = scenario();
    let jobs = read_dataset(&text, &s, |_| true);
    assert_eq!(jobs.len(), 15_000);
    assert!(jobs.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
    for (i, job) in jobs.iter().enumerate() {
        let t = &s.job_types[job.job_type];
        assert!((5_000..=30_000).contains(&job.duration_ms), "{}", job.id);
        assert!(
            job.tokens <= t.tokens && job.requests == t.requests,
            "{}",
            job.id
        );
        assert_eq!(job.instance, i % INSTANCES);
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_llmrl"))
        .arg("dataset")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        output.stdout == text.as_bytes(),
        "e2e/dataset.json differs from `llmrl dataset`: regenerate it (see e2e/README.md)"
    );
}

/// The soft limit on open files (`ulimit -n`), from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The most acquisitions the prediction has pending at once (each holds a socket).
fn peak_pending(p: &Prediction) -> u64 {
    (0..p.windows)
        .map(|w| p.total(None, w, |c| c.arrivals + c.waiting.iter().sum::<u64>()))
        .max()
        .unwrap_or(0)
}

#[test]
fn stress_replay_matches_the_prediction() {
    let variant = variant();
    let s = scenario();
    let text = dataset();
    let jobs = read_dataset(&text, &s, |i| i % variant.every == 0);
    let planned = predictor::predict(&s, &prediction_jobs(&jobs), &s.initial_ratios());
    let pending = peak_pending(&planned);
    if let Some(limit) = open_files_limit() {
        assert!(
            limit > pending + 1_000,
            "up to {pending} acquisitions wait at once, each on its own socket: raise the open \
             files limit (ulimit -n, now {limit})"
        );
    }
    eprintln!(
        "e2e stress, {}: {} jobs, clock ×{}, up to {pending} pending acquisitions; predicted \
         with the initial ratios: {} rejections",
        variant.name,
        jobs.len(),
        variant.scale,
        planned.rejected(None)
    );
    let started = Instant::now();
    let fleet = Fleet::start(CONFIG, INSTANCES, variant.scale);
    let longest_wait_ms = 4 * MINUTE_MS;
    let run = Arc::new(Run {
        fleet,
        scenario: s.clone(),
        jobs,
        log: Log::default(),
        patience: Duration::from_millis(longest_wait_ms / u64::from(variant.scale))
            + Duration::from_secs(60),
    });
    *run.log.events_seen.lock().unwrap() = vec![0; INSTANCES];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let probes = runtime.block_on(replay(run.clone(), &planned));
    let wall = started.elapsed();

    // The checks, from the records.
    let records = run.log.records();
    let samples = run.log.samples();
    let ratio_events = run.log.ratio_events();
    let sent: Vec<predictor::Job> = records
        .iter()
        .filter(|r| !r.requeued)
        .map(|r| predictor::Job {
            job_type: r.job_type,
            instance: r.instance,
            arrival_ms: r.sent_ms,
        })
        .collect();
    let actual = predictor::predict(&s, &sent, &s.initial_ratios());
    let recorded = Recorded {
        records: &records,
        samples: &samples,
        ratio_events: &ratio_events,
    };
    let facts = Facts::new(&s, &run.jobs, &recorded, (&planned, &actual), variant.scale);
    let mut verdict = probes.verdict;
    let late: Vec<u64> = records
        .iter()
        .filter(|r| !r.requeued)
        .map(|r| r.sent_ms.saturating_sub(r.due_ms))
        .collect();
    let slipped = records
        .iter()
        .filter(|r| !r.requeued && window(r.sent_ms) != window(r.due_ms))
        .count();
    let latencies = facts.latencies();
    let percentile = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    verdict.note(format!(
        "replay: {} acquisitions, {} samples, {} ratio events, events per instance {:?}; \
         client lateness max {} ms, {slipped} job(s) sent in a later window than planned; \
         immediate admissions' latency p50 {} ms, p99 {} ms, max {} ms (shared clock); wall \
         time {:.0?}",
        records.len(),
        samples.len(),
        ratio_events.len(),
        run.log.events_seen.lock().unwrap(),
        late.iter().max().copied().unwrap_or(0),
        percentile(50),
        percentile(99),
        latencies.last().copied().unwrap_or(0),
        wall
    ));
    // The checks compare with the instants requests really left, but a client that falls far
    // behind no longer replays the dataset's traffic.
    verdict.expect(late.iter().all(|&l| l < facts.lag_ms), "replay", || {
        format!(
            "the client fell more than {} ms (a second of wall time) behind the dataset: lower \
             the scale (LLMRL_E2E_SCALE)",
            facts.lag_ms
        )
    });
    // A machine that stalls longer than the stale threshold (15 s of the shared clock) makes
    // live instances look dead: the others' shares grow, and nothing above holds any more.
    let shrunk: Vec<(u64, usize, u64)> = samples
        .iter()
        .filter(|x| x.instances != INSTANCES as u64)
        .map(|x| (x.sent_ms, x.instance, x.instances))
        .collect();
    verdict.expect(shrunk.is_empty(), "replay", || {
        format!(
            "instances saw the fleet shrink (at ms, instance, size): {:?}: the machine stalled \
             longer than the stale threshold; lower the scale (LLMRL_E2E_SCALE)",
            &shrunk[..shrunk.len().min(10)]
        )
    });
    verdict.note("(1) capacity:");
    checks::capacity(&facts, &mut verdict);
    verdict.note("(3, 4) the fixed type against the predictor:");
    checks::fixed_types_follow_the_prediction(&facts, &mut verdict);
    verdict.note("(3, 4) escalation and rejection, every type:");
    checks::escalation_and_rejection(&facts, &mut verdict);
    verdict.note("(5) capacity at boundaries, rejected jobs queued again:");
    checks::capacity_returns_at_boundaries(&facts, &mut verdict);
    let slack = facts.ambiguity_ms + facts.lag_ms / 2;
    let drain = checks::requeued_run_at_once(&facts, slack, 0, false, &mut verdict);
    let idle =
        checks::requeued_run_at_once(&facts, slack, probes.idle_requeue_ms, true, &mut verdict);
    verdict.note(format!(
        "  re-queued after the traffic: {drain} (of which {idle} into an idle fleet)"
    ));
    verdict.expect(idle > 0, "5", || "nothing was queued again".into());
    verdict.note("(2, 7) ratios:");
    checks::ratios(&facts, probes.replay_end_ms, &mut verdict);
    verdict.note("(6) shared usage:");
    checks::fleet_usage_is_shared(&facts, &mut verdict);

    eprintln!("{}", verdict.report);
    if let Ok(path) = std::env::var("LLMRL_E2E_DUMP") {
        dump(&path, &records, &samples, &ratio_events);
    }
    if !verdict.failures.is_empty() {
        // The first failures of each check.
        let mut by_check = std::collections::BTreeMap::<&str, Vec<&String>>::new();
        for failure in &verdict.failures {
            let check = failure.split(')').next().unwrap_or_default();
            by_check.entry(check).or_default().push(failure);
        }
        let mut message = String::new();
        for (check, failures) in by_check {
            message.push_str(&format!("{check}): {} failure(s)\n", failures.len()));
            for failure in failures.iter().take(15) {
                message.push_str(&format!("    {failure}\n"));
            }
        }
        panic!("{} failure(s):\n{message}", verdict.failures.len());
    }
}

/// What the phases after the replay found.
struct Probes {
    verdict: Verdict,
    /// When the last dataset acquisition ended.
    replay_end_ms: u64,
    /// When rejected jobs were queued again into the idle fleet.
    idle_requeue_ms: u64,
}

/// Runs the dataset, the re-queues and the probes; returns the probes' findings.
async fn replay(run: Arc<Run>, planned: &Prediction) -> Probes {
    let mut verdict = Verdict::default();
    let stop = Arc::new(Mutex::new(false));
    let mut background = Vec::new();
    for i in 0..INSTANCES {
        background.push(tokio::spawn(run.clone().watch_events(i, stop.clone())));
    }
    background.push(tokio::spawn(
        run.clone()
            .sample_periodically(SAMPLE_EVERY_MS, stop.clone()),
    ));

    // Every job at its arrival, on its instance.
    let mut tasks = Vec::with_capacity(run.jobs.len());
    for (index, job) in run.jobs.iter().enumerate() {
        let (run, due) = (run.clone(), job.arrival_ms);
        tasks.push(tokio::spawn(async move {
            run.until(due).await;
            run.play(index, due, false).await;
        }));
    }
    // Check 5 while the fleet drains: after each boundary that no dataset job waits across on
    // the first model, the jobs rejected in the minute before are queued again, as many per
    // instance and type as the first model has room for.
    let last_arrival = run.jobs.iter().map(|j| j.arrival_ms).max().unwrap_or(0);
    let draining = {
        let run = run.clone();
        let boundaries: Vec<u64> = (window(last_arrival) + 2..=planned.windows)
            .map(|w| w as u64 * MINUTE_MS)
            .collect();
        tokio::spawn(async move {
            let mut plays = Vec::new();
            for boundary in boundaries {
                run.until(boundary + 1_000).await;
                plays.extend(requeue(&run, boundary - MINUTE_MS, boundary).await);
            }
            for play in plays {
                play.await.unwrap();
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    draining.await.unwrap();
    let replay_end_ms = run
        .log
        .records()
        .iter()
        .map(|r| r.answered_ms)
        .max()
        .unwrap_or(0);

    // Check 5 once more, into an idle fleet: every rejected job not queued again yet is a
    // candidate; the first model must have room for each type exactly as the predictor computes
    // it from the instance's ratio.
    let boundary = next_boundary(run.now() + 1);
    run.until(boundary + 1_000).await;
    let idle_requeue_ms = run.now();
    let before = run.sample_all().await;
    for sample in &before {
        for (t, job_type) in run.scenario.job_types.iter().enumerate() {
            let waiting: u64 = sample.waiting[t].iter().sum();
            verdict.expect(waiting == 0, "5", || {
                format!(
                    "instance {} still has {waiting} {} waiting",
                    sample.instance, job_type.name
                )
            });
            let expected = run.scenario.capacity(sample.ratio[t], t, 0);
            verdict.expect(sample.slots[t][0] == expected, "5", || {
                format!(
                    "instance {}: {} has {} slot(s) on the first model in a new window, the \
                     predictor computes {expected} from its ratio {}",
                    sample.instance, job_type.name, sample.slots[t][0], sample.ratio[t]
                )
            });
        }
    }
    let plays = requeue(&run, 0, boundary).await;
    verdict.note(format!(
        "idle fleet at {idle_requeue_ms} ms: {} rejected job(s) queued again",
        plays.len()
    ));
    for play in plays {
        play.await.unwrap();
    }

    // Check 6: one admission on instance 0 lowers what every other instance sees left.
    let boundary = next_boundary(run.now() + 1);
    run.until(boundary + 1_000).await;
    probe_shared_usage(&run, &mut verdict).await;
    // Check 7: load on instance 0 alone moves its ratios, and only its own.
    probe_local_ratios(&run, &mut verdict).await;

    *stop.lock().unwrap() = true;
    for task in background {
        let _ = task.await;
    }
    Probes {
        verdict,
        replay_end_ms,
        idle_requeue_ms,
    }
}

/// Queues again, after `boundary`, the jobs rejected from `rejected_since` on that were not
/// queued again yet: per instance and type, as many as the first model has slots for (and
/// none where jobs of the type still wait there).
async fn requeue(
    run: &Arc<Run>,
    rejected_since: u64,
    boundary: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let samples: Vec<Sample> = run.sample_all().await;
    let records = run.log.records();
    let done: std::collections::BTreeSet<usize> = records
        .iter()
        .filter(|r| r.requeued)
        .map(|r| r.job)
        .collect();
    let mut plays = Vec::new();
    for sample in &samples {
        for t in 0..run.scenario.job_types.len() {
            if sample.waiting[t][0] > 0 {
                continue;
            }
            let room = sample.slots[t][0] as usize;
            let pool = records.iter().filter(|r| {
                !r.requeued
                    && r.answer == Answer::Rejected
                    && r.instance == sample.instance
                    && r.job_type == t
                    && r.answered_ms >= rejected_since
                    && r.answered_ms < boundary
                    && !done.contains(&r.job)
            });
            for r in pool.take(room) {
                let (run, job, due) = (run.clone(), r.job, run.now());
                plays.push(tokio::spawn(async move {
                    run.play(job, due, true).await;
                }));
            }
        }
    }
    plays
}

/// Check 6: in a new window, a lease on instance 0 lowers the fleet's remaining requests and
/// tokens on the first model as every other instance sees them; its release refunds the
/// tokens it did not use, everywhere.
async fn probe_shared_usage(run: &Arc<Run>, verdict: &mut Verdict) {
    let s = &run.scenario;
    let before = run.sample_all().await;
    // The smallest job that instance 0 can start on the first model now.
    let Some(t) = (0..s.job_types.len())
        .filter(|&t| before[0].slots[t][0] > 0)
        .min_by_key(|&t| s.job_types[t].tokens)
    else {
        verdict.fail(
            "6",
            "instance 0 has no slot on the first model in a new window",
        );
        return;
    };
    let job_type = &s.job_types[t];
    let lease = run
        .server(0)
        .lease(&job_type.name, Some("probe-shared-usage"))
        .await;
    assert_eq!(lease["model"], s.models[0].name.as_str(), "{lease}");
    let expect = |x: &Sample, requests: u64, tokens: u64| {
        x.requests[0].remaining == requests && x.tokens[0].remaining == tokens
    };
    let wanted = |x: &Sample| {
        let b = &before[x.instance];
        (
            b.requests[0].remaining - job_type.requests,
            b.tokens[0].remaining - job_type.tokens,
        )
    };
    let seen = wait_for_all(run, 1.., |x| {
        let (r, k) = wanted(x);
        expect(x, r, k)
    })
    .await;
    verdict.expect(seen.is_ok(), "6", || {
        format!(
            "a {} lease on instance 0 did not lower the others' remaining {} capacity: {:?}",
            job_type.name, s.models[0].name, seen
        )
    });
    let used = job_type.tokens * 9 / 10;
    let released = run
        .server(0)
        .release(
            lease["lease_id"].as_str().unwrap(),
            &json!({"usage": {"input_tokens": used, "requests": job_type.requests}}),
        )
        .await;
    assert_eq!(released.status, 200, "{}", released.text());
    let refunded = wait_for_all(run, 1.., |x| {
        let (r, k) = wanted(x);
        expect(x, r, k + job_type.tokens - used)
    })
    .await;
    verdict.expect(refunded.is_ok(), "6", || {
        format!("the refund on instance 0 did not reach the others: {refunded:?}")
    });
    verdict.note(format!(
        "(6) probe: a {} lease on instance 0 lowered every other instance's remaining {} by {} \
         request(s) and {} tokens; its release gave back {} tokens everywhere",
        job_type.name,
        s.models[0].name,
        job_type.requests,
        job_type.tokens,
        job_type.tokens - used
    ));
}

/// Polls the instances in `which` (5 s of wall time at most) until each sample satisfies
/// `done`; the last samples that did not, if any.
async fn wait_for_all(
    run: &Arc<Run>,
    which: std::ops::RangeFrom<usize>,
    done: impl Fn(&Sample) -> bool,
) -> Result<(), Vec<Sample>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let samples = run.sample_all().await;
        let late: Vec<Sample> = samples
            .into_iter()
            .filter(|x| which.contains(&x.instance) && !done(x))
            .collect();
        if late.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(late);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Check 7: more jobs of one type than instance 0 has slots for: its ratio grows there (the
/// idle types give theirs), while the other instances, idle, keep their ratios.
async fn probe_local_ratios(run: &Arc<Run>, verdict: &mut Verdict) {
    let s = &run.scenario;
    let before = run.sample_all().await;
    let from_ms = run.now();
    let Some(t) = (0..s.job_types.len())
        .filter(|&t| s.job_types[t].flexible)
        .min_by_key(|&t| s.job_types[t].tokens)
    else {
        return;
    };
    let name = s.job_types[t].name.clone();
    let flood = before[0].slots[t].iter().sum::<u64>() + 10;
    let release = Arc::new(tokio::sync::Notify::new());
    let released = Arc::new(Mutex::new(false));
    let mut holders = Vec::new();
    for n in 0..flood {
        let (run, name, release, released) =
            (run.clone(), name.clone(), release.clone(), released.clone());
        holders.push(tokio::spawn(async move {
            let server = run.server(0);
            let body = json!({"job_type": name, "job_id": format!("probe-ratio-{n}")});
            let response = server.post("/v1/leases", &body).await;
            if response.status != 200 {
                return;
            }
            let lease = response.json();
            loop {
                let notified = release.notified();
                if *released.lock().unwrap() {
                    break;
                }
                notified.await;
            }
            let _ = server
                .release(
                    lease["lease_id"].as_str().unwrap(),
                    &json!({"usage": {"requests": 1}}),
                )
                .await;
        }));
    }
    // The ratio moves at the next adjustment (every 5 s of the shared clock).
    let deadline = run.now() + 20_000;
    let mut grown = None;
    while run.now() < deadline {
        let samples = run.sample_all().await;
        if samples[0].ratio[t] > before[0].ratio[t] + 1e-9 {
            grown = Some(samples);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match &grown {
        Some(after) => {
            for (b, a) in before.iter().zip(after).skip(1) {
                verdict.expect(a.ratio == b.ratio, "7", || {
                    format!(
                        "instance {}'s ratios moved from {:?} to {:?} while only instance 0 \
                         was loaded",
                        a.instance, b.ratio, a.ratio
                    )
                });
            }
            verdict.note(format!(
                "(7) probe: {flood} {name} jobs on instance 0: its ratio went from {:.3} to \
                 {:.3}; the other instances' ratios did not move",
                before[0].ratio[t], after[0].ratio[t]
            ));
        }
        None => verdict.fail(
            "7",
            format!("{flood} {name} jobs on instance 0 did not raise its ratio within 20 s"),
        ),
    }
    let until_ms = run.now();
    *released.lock().unwrap() = true;
    release.notify_waiters();
    // Jobs still waiting get a lease at the next boundary at the latest, then let go.
    for holder in holders {
        let _ = holder.await;
        release.notify_waiters();
    }
    let events: Vec<_> = run
        .log
        .ratio_events()
        .into_iter()
        .filter(|e| e.seen_ms >= from_ms && e.seen_ms <= until_ms)
        .collect();
    verdict.expect(
        events
            .iter()
            .any(|e| e.instance == 0 && e.job_type == name && e.to > e.from),
        "7",
        || format!("no ratio_changed event raising {name} on instance 0: {events:?}"),
    );
    verdict.expect(events.iter().all(|e| e.instance == 0), "7", || {
        format!("ratio_changed events on other instances during the probe: {events:?}")
    });
}

/// Writes what a run recorded as JSON Lines (`LLMRL_E2E_DUMP=path`), to look into a failure.
fn dump(
    path: &str,
    records: &[e2e::replay::Record],
    samples: &[Sample],
    ratio_events: &[e2e::replay::RatioEvent],
) {
    use std::fmt::Write as _;
    let mut text = String::new();
    for r in records {
        let (model, at_ms) = match r.answer {
            Answer::Lease { model, at_ms, .. } => (Some(model), Some(at_ms)),
            _ => (None, None),
        };
        let line = json!({
            "kind": "acquisition", "job": r.job, "job_type": r.job_type, "instance": r.instance,
            "due_ms": r.due_ms, "sent_ms": r.sent_ms, "answered_ms": r.answered_ms,
            "model": model, "at_ms": at_ms, "rejected": r.answer == Answer::Rejected,
            "requeued": r.requeued,
        });
        let _ = writeln!(text, "{line}");
    }
    for x in samples {
        let line = json!({
            "kind": "sample", "instance": x.instance, "sent_ms": x.sent_ms,
            "answered_ms": x.answered_ms, "ratio": x.ratio, "slots": x.slots,
            "waiting": x.waiting, "in_flight": x.in_flight,
            "requests_used": x.requests.iter().map(|l| l.used).collect::<Vec<_>>(),
            "requests_own": x.requests.iter().map(|l| l.own).collect::<Vec<_>>(),
            "tokens_used": x.tokens.iter().map(|l| l.used).collect::<Vec<_>>(),
            "instances": x.instances,
        });
        let _ = writeln!(text, "{line}");
    }
    for e in ratio_events {
        let line = json!({
            "kind": "ratio_changed", "instance": e.instance, "seen_ms": e.seen_ms,
            "job_type": e.job_type, "from": e.from, "to": e.to,
        });
        let _ = writeln!(text, "{line}");
    }
    std::fs::write(path, text).unwrap();
}
