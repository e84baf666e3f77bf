//! Property: random workloads on the virtual clock never let a window counter exceed its limit
//! through admissions (only through overages jobs report afterwards), never run more than
//! max-concurrent jobs, and every job ends exactly once with nothing left reserved.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmrl::{
    Config, Event, JobContext, JobRequest, JobResult, JobTypeConfig, ModelConfig, NamedLimiter,
    Pricing, Usage, Window, WindowLimit,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Model {
    tpm: Option<u64>,
    tpd: Option<u64>,
    rpm: Option<u64>,
    conc: Option<u64>,
}

#[derive(Clone, Debug)]
struct JobType {
    tokens: u64,
    requests: u64,
    /// Per model: None = default wait, Some(ms).
    waits: Vec<Option<u64>>,
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Done,
    Delegate,
    Reject,
}

#[derive(Clone, Debug)]
struct Job {
    arrival_ms: u64,
    duration_ms: u64,
    job_type: usize,
    /// Actual usage as a percentage of the estimate.
    usage_pct: u64,
    ending: Ending,
}

#[derive(Clone, Debug)]
struct Workload {
    models: Vec<Model>,
    job_types: Vec<JobType>,
    jobs: Vec<Job>,
}

fn model() -> impl Strategy<Value = Model> {
    (
        proptest::option::of(5_000..40_000u64),
        proptest::option::of(40_000..200_000u64),
        proptest::option::of(3..40u64),
        proptest::option::of(1..6u64),
    )
        .prop_map(|(tpm, tpd, rpm, conc)| Model {
            tpm,
            tpd,
            rpm,
            conc,
        })
}

fn workload(max_usage_pct: u64) -> impl Strategy<Value = Workload> {
    (1..=3usize, 1..=3usize).prop_flat_map(move |(models, types)| {
        let job_type = (0..5_000u64, 0..3u64, proptest::collection::vec(proptest::option::of(0..90_000u64), models))
            .prop_map(|(tokens, requests, waits)| JobType { tokens, requests, waits });
        let ending = prop_oneof![6 => Just(Ending::Done), 2 => Just(Ending::Delegate), 1 => Just(Ending::Reject)];
        let job = (0..240_000u64, 0..90_000u64, 0..types, 0..=max_usage_pct, ending).prop_map(
            |(arrival_ms, duration_ms, job_type, usage_pct, ending)| Job {
                arrival_ms,
                duration_ms,
                job_type,
                usage_pct,
                ending,
            },
        );
        (
            proptest::collection::vec(model(), models),
            proptest::collection::vec(job_type, types),
            proptest::collection::vec(job, 1..60),
        )
            .prop_map(|(models, job_types, jobs)| Workload { models, job_types, jobs })
    })
}

fn config(w: &Workload) -> Config {
    let mut config = Config::new();
    for (m, model) in w.models.iter().enumerate() {
        let mut c = ModelConfig::new(Pricing::new(1.0, 0.5, 2.0));
        if let Some(n) = model.tpm {
            c = c.tokens_per_minute(n);
        }
        if let Some(n) = model.tpd {
            c = c.tokens_per_day(n);
        }
        if let Some(n) = model.rpm {
            c = c.requests_per_minute(n);
        }
        if let Some(n) = model.conc {
            c = c.max_concurrent_requests(n);
        }
        config = config.model(format!("m{m}"), c);
    }
    for (t, job_type) in w.job_types.iter().enumerate() {
        let mut c = JobTypeConfig::new()
            .estimated_tokens(job_type.tokens)
            .estimated_requests(job_type.requests);
        for (m, wait) in job_type.waits.iter().enumerate() {
            if let Some(ms) = wait {
                c = c.max_wait(format!("m{m}"), Duration::from_millis(*ms));
            }
        }
        config = config.job_type(format!("t{t}"), c);
    }
    config.escalation_order((0..w.models.len()).map(|m| format!("m{m}")))
}

/// Overages charged per (model, limit, window number): the only way a counter may pass its limit.
type Overages = Arc<Mutex<HashMap<(String, WindowLimit, u64), u64>>>;

fn check(limiter: &NamedLimiter, overages: &Overages, now: llmrl::Timestamp) -> Result<(), String> {
    let overages = overages.lock().unwrap();
    for model in limiter.availability().models {
        for limit in WindowLimit::ALL {
            let Some(r) = model.window(limit) else {
                continue;
            };
            let window = limit.window().index_at(now);
            let over = overages
                .get(&(model.model.to_string(), limit, window))
                .copied()
                .unwrap_or(0);
            if r.used > r.limit + over {
                return Err(format!(
                    "{} {limit:?}: used {} > limit {} + overages {over}",
                    model.model, r.used, r.limit
                ));
            }
        }
        if let Some(c) = model.concurrent_requests {
            if c.used > c.limit {
                return Err(format!(
                    "{}: {} in flight > {}",
                    model.model, c.used, c.limit
                ));
            }
        }
    }
    Ok(())
}

async fn run(w: Workload) -> Result<(), String> {
    let clock = common::clock();
    let overages = Overages::default();
    let seen = overages.clone();
    let at = clock.clone();
    let limiter = NamedLimiter::builder(config(&w))
        .clock(clock.clone())
        .on_event(move |event| {
            if let Event::UsageAdjusted(a) = event {
                if a.charged > 0 {
                    let window = a.limit.window().index_at(at.now());
                    *seen
                        .lock()
                        .unwrap()
                        .entry((a.model.to_string(), a.limit, window))
                        .or_default() += a.charged.unsigned_abs();
                }
            }
        })
        .build()
        .map_err(|e| e.to_string())?;
    let violations = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = w.jobs.clone();
    jobs.sort_by_key(|j| j.arrival_ms);
    let mut handles = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let now = common::elapsed_ms(&clock);
        tokio::time::sleep(Duration::from_millis(job.arrival_ms.saturating_sub(now))).await;
        let spec = &w.job_types[job.job_type];
        let usage = Usage::new()
            .input_tokens(spec.tokens * job.usage_pct / 100)
            .requests(spec.requests * job.usage_pct / 100);
        let (probe, overages, violations, clock) = (
            limiter.clone(),
            overages.clone(),
            violations.clone(),
            clock.clone(),
        );
        let request = JobRequest::new(
            format!("job-{i}"),
            format!("t{}", job.job_type),
            move |_: JobContext<Arc<str>>| {
                if let Err(v) = check(&probe, &overages, clock.now()) {
                    violations.lock().unwrap().push(v);
                }
                async move {
                    tokio::time::sleep(Duration::from_millis(job.duration_ms)).await;
                    match job.ending {
                        Ending::Done => JobResult::done((), usage),
                        Ending::Delegate => JobResult::rejected((), usage),
                        Ending::Reject => JobResult::rejected_final((), usage),
                    }
                }
            },
        );
        handles.push(limiter.queue_job(request).map_err(|e| e.to_string())?);
    }
    for handle in handles {
        let _ = handle.await; // every job ends, one way or another
    }
    check(&limiter, &overages, clock.now())?;
    let idle = limiter.availability();
    for model in &idle.models {
        if let Some(c) = model.concurrent_requests {
            if c.used != 0 {
                return Err(format!(
                    "{} still has {} in flight after every job ended",
                    model.model, c.used
                ));
            }
        }
    }
    if idle
        .job_types
        .iter()
        .any(|t| t.in_flight != 0 || t.models.iter().any(|m| m.waiting != 0))
    {
        return Err("a job type still has jobs in flight or waiting".into());
    }
    limiter.stop(Duration::ZERO).await;
    let violations = violations.lock().unwrap();
    match violations.first() {
        Some(v) => Err(format!("{} violation(s), first: {v}", violations.len())),
        None => Ok(()),
    }
}

fn run_paused(w: Workload) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(run(w)).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Jobs never use more than estimated: no counter may ever pass its limit.
    #[test]
    fn admissions_stay_within_every_limit(w in workload(100)) {
        run_paused(w)?;
    }

    /// Jobs may use up to three times their estimate: counters pass limits only by overages.
    #[test]
    fn only_overages_pass_a_limit(w in workload(300)) {
        run_paused(w)?;
    }
}

#[test]
fn window_numbers_match_the_engine() {
    // The checker above relies on the public window arithmetic.
    let t = llmrl::Timestamp::from_millis(common::EPOCH_MS + 61_000);
    assert_eq!(Window::Minute.index_at(t), common::EPOCH_MS / 60_000 + 1);
}
