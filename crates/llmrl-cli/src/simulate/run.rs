//! Runs a workload through one or more limiter instances on a simulated clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use llmrl::backend::InProcessFleet;
use llmrl::{Cause, Clock, Config, JobContext, JobRequest, JobResult, NamedLimiter, Timestamp};
use llmrl_redis::{RedisBackend, RedisConfig, WindowClock};

use super::record::{Log, ModelLimits, Recorder, Sample};
use super::workload::Workload;

/// 2026-01-01T00:00:00Z: simulations start at a minute and day boundary.
pub(crate) const START_MS: u64 = 1_767_225_600_000;

/// Where the fleet lives.
pub(crate) enum Fleet {
    InProcess,
    Redis { url: String, prefix: String },
}

pub(crate) struct Plan {
    pub(crate) config: Config,
    pub(crate) workload: Workload,
    pub(crate) instances: usize,
    pub(crate) fleet: Fleet,
}

pub(crate) struct Outcome {
    pub(crate) log: Log,
    pub(crate) models: Vec<ModelLimits>,
    pub(crate) job_types: Vec<String>,
    pub(crate) simulated_ms: u64,
}

/// Runs `plan`: on tokio's paused clock in process (a simulated hour takes seconds), or in real
/// time with a simulated clock pumped forward 50 times faster than wall time on Redis.
pub(crate) fn run(plan: Plan, progress: &ProgressBar) -> anyhow::Result<Outcome> {
    match plan.fleet {
        Fleet::InProcess => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?
            .block_on(async {
                let clock = Clock::virtual_at(Timestamp::from_millis(START_MS));
                simulate(&plan, clock, progress).await
            }),
        Fleet::Redis { .. } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(async {
                let clock = Clock::manual_at(Timestamp::from_millis(START_MS));
                let pump = clock.clone();
                let pumping = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        pump.advance(Duration::from_millis(100));
                    }
                });
                let outcome = simulate(&plan, clock, progress).await;
                pumping.abort();
                outcome
            }),
    }
}

async fn simulate(plan: &Plan, clock: Clock, progress: &ProgressBar) -> anyhow::Result<Outcome> {
    let recorder = Recorder::new(clock.clone());
    let fleet = InProcessFleet::new();
    let mut limiters = Vec::with_capacity(plan.instances);
    for i in 0..plan.instances {
        let config = plan.config.clone().instance_id(format!("instance-{i}"));
        let mut builder = NamedLimiter::builder(config)
            .clock(clock.clone())
            .on_event(recorder.listener(i))
            .on_available_slots_change(recorder.slots_listener(i));
        builder = match &plan.fleet {
            Fleet::InProcess if plan.instances > 1 => builder.backend(fleet.clone()),
            Fleet::InProcess => builder,
            Fleet::Redis { url, prefix } => {
                let settings = RedisConfig::new(url.clone())
                    .prefix(prefix.clone())
                    .window_clock(WindowClock::Client);
                builder.backend(RedisBackend::new(settings)?)
            }
        };
        let limiter = builder.build().context("cannot build the limiter")?;
        limiter.ready().await;
        limiters.push(limiter);
    }
    let first = limiters[0].availability();
    let models: Vec<ModelLimits> = first
        .models
        .iter()
        .map(|m| ModelLimits {
            name: m.model.to_string(),
            tokens_per_minute: m.tokens_per_minute.map(|r| r.limit),
            requests_per_minute: m.requests_per_minute.map(|r| r.limit),
            concurrency: m.concurrent_requests.map(|r| r.limit),
        })
        .collect();
    let job_types: Vec<String> = first
        .job_types
        .iter()
        .map(|t| t.job_type.to_string())
        .collect();

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_every_second(
        limiters.clone(),
        clock.clone(),
        recorder.clone(),
        sampling.clone(),
    ));

    let start = Timestamp::from_millis(START_MS);
    let mut handles = Vec::with_capacity(plan.workload.jobs.len());
    for (n, job) in plan.workload.jobs.iter().enumerate() {
        clock
            .sleep_until(start.saturating_add(Duration::from_millis(job.arrival_ms)))
            .await;
        let instance = job
            .instance
            .unwrap_or(n % plan.instances)
            .min(plan.instances - 1);
        recorder.queued(&job.id, &job.job_type, instance);
        let (work_clock, duration, usage) = (
            clock.clone(),
            Duration::from_millis(job.duration_ms),
            job.usage.usage(),
        );
        let (reject_on, delegate) = (job.reject_on.clone(), job.delegate);
        let work = move |ctx: JobContext<Arc<str>>| {
            let clock = work_clock.clone();
            let reject = reject_on.iter().any(|m| **m == *ctx.model);
            async move {
                clock
                    .sleep_until(clock.now().saturating_add(duration))
                    .await;
                match (reject, delegate) {
                    (false, _) => JobResult::done((), usage),
                    (true, true) => {
                        JobResult::rejected("rejected by the workload".to_owned(), usage)
                    }
                    (true, false) => {
                        JobResult::rejected_final("rejected by the workload".to_owned(), usage)
                    }
                }
            }
        };
        // Outcomes are recorded by the callbacks, which run when each job really ends.
        let (done, failed) = (recorder.clone(), recorder.clone());
        let (done_id, failed_id) = (job.id.clone(), job.id.clone());
        let request = JobRequest::new(job.id.clone(), job.job_type.clone(), work)
            .on_complete(move |completion| {
                let usage = entries(&completion.usage);
                done.ended(
                    &done_id,
                    instance,
                    "completed",
                    usage,
                    completion.total_cost,
                );
            })
            .on_error(move |error| {
                let usage = entries(&error.usage);
                failed.ended(
                    &failed_id,
                    instance,
                    cause(&error.cause),
                    usage,
                    error.total_cost,
                );
            });
        let handle = limiters[instance]
            .queue_job(request)
            .with_context(|| format!("job {}", job.id))?;
        handles.push(handle);
    }
    for handle in handles {
        let _ = handle.await;
        progress.inc(1);
    }
    let simulated_ms = recorder.now_ms();
    sampling.store(false, Ordering::Release);
    let _ = sampler.await;
    for limiter in &limiters {
        limiter.stop(Duration::from_secs(5)).await;
    }
    let log = recorder.with(std::mem::take);
    Ok(Outcome {
        log,
        models,
        job_types,
        simulated_ms,
    })
}

type Entries = Vec<(String, u64, u64, u64, u64, f64)>;

fn entries(usage: &[llmrl::UsageEntry<Arc<str>>]) -> Entries {
    usage
        .iter()
        .map(|u| {
            (
                u.model.to_string(),
                u.input_tokens,
                u.cached_tokens,
                u.output_tokens,
                u.requests,
                u.cost,
            )
        })
        .collect()
}

fn cause(cause: &Cause<String>) -> &'static str {
    match cause {
        Cause::Exhausted { .. } => "exhausted",
        Cause::Rejected(_) => "rejected",
        Cause::RejectedOnLastModel(_) => "rejected_on_last_model",
        Cause::Panicked(_) => "panicked",
        Cause::Cancelled => "cancelled",
        _ => "shut_down",
    }
}

/// Samples the fleet's counters (seen from the first instance) and every instance's slots and
/// ratios once a simulated second.
async fn sample_every_second(
    limiters: Vec<NamedLimiter>,
    clock: Clock,
    recorder: Recorder,
    running: Arc<AtomicBool>,
) {
    let mut next = clock.now();
    while running.load(Ordering::Acquire) {
        next = next.saturating_add(Duration::from_secs(1));
        clock.sleep_until(next).await;
        let first = limiters[0].availability();
        let models = first
            .models
            .iter()
            .map(|m| {
                (
                    m.tokens_per_minute.map(|r| r.used),
                    m.requests_per_minute.map(|r| r.used),
                    m.concurrent_requests.map(|r| r.used),
                )
            })
            .collect();
        let mut slots = Vec::with_capacity(limiters.len());
        let mut ratios = Vec::with_capacity(limiters.len());
        for limiter in &limiters {
            let a = limiter.availability();
            slots.push(a.job_types.iter().map(|t| t.slots).collect());
            ratios.push(a.job_types.iter().map(|t| t.ratio).collect());
        }
        let t_ms = recorder.now_ms();
        recorder.with(|log| {
            log.samples.push(Sample {
                t_ms,
                models,
                slots,
                ratios,
            })
        });
    }
}
