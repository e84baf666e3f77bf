//! What a simulation records (events, per-job outcomes, samples of the fleet's counters and of
//! the slots) and the summary computed from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use llmrl::{Availability, Clock, Event, RelativeAdjustment, SlotsChangeReason};
use serde::Serialize;
use serde_json::{Value, json};

/// What a named limiter's availability looks like.
type Snapshot = Availability<Arc<str>, Arc<str>>;

/// Shared by the limiters' callbacks and the runner.
#[derive(Clone)]
pub(crate) struct Recorder {
    log: Arc<Mutex<Log>>,
    clock: Clock,
    start_ms: u64,
}

#[derive(Default)]
pub(crate) struct Log {
    /// Every event, as JSON lines.
    pub(crate) events: Vec<Value>,
    pub(crate) jobs: BTreeMap<String, JobRecord>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) ratio_changes: usize,
    pub(crate) slot_changes: usize,
}

/// One job's story.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct JobRecord {
    pub(crate) job_type: String,
    pub(crate) instance: usize,
    pub(crate) arrival_ms: u64,
    pub(crate) first_start_ms: Option<u64>,
    pub(crate) end_ms: Option<u64>,
    pub(crate) model: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) escalations: u32,
    pub(crate) delegations: u32,
    pub(crate) outcome: Option<String>,
    pub(crate) cost: f64,
    /// (model, input, cached, output, requests, cost) per attempt that ran.
    pub(crate) usage: Vec<(String, u64, u64, u64, u64, f64)>,
}

/// The fleet's counters and one instance's slots at one instant.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) t_ms: u64,
    /// Per model: (tokens per minute used, requests per minute used, in flight).
    pub(crate) models: Vec<(Option<u64>, Option<u64>, Option<u64>)>,
    /// Per instance, per job type: slots (None: unbounded).
    pub(crate) slots: Vec<Vec<Option<u64>>>,
    /// Per instance, per job type: ratio.
    pub(crate) ratios: Vec<Vec<f64>>,
}

impl Recorder {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            start_ms: clock.now().as_millis(),
            clock,
            log: Arc::default(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now().as_millis().saturating_sub(self.start_ms)
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        f(&mut self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn push(&self, log: &mut Log, instance: usize, mut value: Value) {
        if let Value::Object(map) = &mut value {
            map.insert("t_ms".into(), json!(self.now_ms()));
            map.insert("instance".into(), json!(instance));
        }
        log.events.push(value);
    }

    /// A listener for one instance's events.
    pub(crate) fn listener(&self, instance: usize) -> impl Fn(&Event) + Send + Sync + 'static {
        let recorder = self.clone();
        move |event| {
            let now = recorder.now_ms();
            recorder.with(|log| {
                match event {
                    Event::Started {
                        job_id,
                        model,
                        attempt,
                        ..
                    } => {
                        let job = log.jobs.entry(job_id.to_string()).or_default();
                        job.first_start_ms.get_or_insert(now);
                        job.attempts = *attempt;
                        job.model = Some(model.to_string());
                    }
                    Event::Escalated { job_id, .. } => {
                        log.jobs.entry(job_id.to_string()).or_default().escalations += 1;
                    }
                    Event::Delegated { job_id, .. } => {
                        log.jobs.entry(job_id.to_string()).or_default().delegations += 1;
                    }
                    Event::RatioChanged { .. } => log.ratio_changes += 1,
                    _ => {}
                }
                let value = serde_json::to_value(event).unwrap_or(Value::Null);
                recorder.push(log, instance, value);
            });
        }
    }

    /// An `on_available_slots_change` callback for one instance.
    pub(crate) fn slots_listener(
        &self,
        instance: usize,
    ) -> impl Fn(&Snapshot, SlotsChangeReason, Option<&RelativeAdjustment>) + Send + Sync + 'static
    {
        let recorder = self.clone();
        move |availability, reason, adjustment| {
            let by_type: BTreeMap<String, Option<u64>> = availability
                .job_types
                .iter()
                .map(|t| (t.job_type.to_string(), t.slots))
                .collect();
            recorder.with(|log| {
                log.slot_changes += 1;
                let value = json!({
                    "event": "slots_changed",
                    "reason": reason,
                    "slots": availability.slots,
                    "job_types": by_type,
                    "adjustment": adjustment,
                });
                recorder.push(log, instance, value);
            });
        }
    }

    pub(crate) fn queued(&self, id: &str, job_type: &str, instance: usize) {
        let now = self.now_ms();
        self.with(|log| {
            let job = log.jobs.entry(id.to_owned()).or_default();
            job.job_type = job_type.to_owned();
            job.instance = instance;
            job.arrival_ms = now;
            let value = json!({"event": "queued", "job_id": id, "job_type": job_type});
            self.push(log, instance, value);
        });
    }

    pub(crate) fn ended(
        &self,
        id: &str,
        instance: usize,
        outcome: &str,
        usage: Vec<(String, u64, u64, u64, u64, f64)>,
        cost: f64,
    ) {
        let now = self.now_ms();
        self.with(|log| {
            let job = log.jobs.entry(id.to_owned()).or_default();
            job.end_ms = Some(now);
            job.outcome = Some(outcome.to_owned());
            job.cost = cost;
            job.usage = usage;
            let event = if outcome == "completed" {
                "completed"
            } else {
                "failed"
            };
            let value = json!({"event": event, "job_id": id, "outcome": outcome, "cost": cost});
            self.push(log, instance, value);
        });
    }
}

/// The summary of a run (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) instances: usize,
    pub(crate) backend: String,
    pub(crate) jobs: usize,
    pub(crate) completed: usize,
    pub(crate) failed: BTreeMap<String, usize>,
    pub(crate) simulated_ms: u64,
    pub(crate) wall_ms: u64,
    pub(crate) models: Vec<ModelSummary>,
    pub(crate) waits_ms: Percentiles,
    pub(crate) escalations: u64,
    pub(crate) delegations: u64,
    pub(crate) ratio_changes: usize,
    pub(crate) slot_changes: usize,
    pub(crate) total_cost: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelSummary {
    pub(crate) model: String,
    pub(crate) completed: usize,
    pub(crate) attempts: usize,
    pub(crate) tokens: u64,
    pub(crate) requests: u64,
    pub(crate) cost: f64,
    pub(crate) tokens_per_minute: Option<u64>,
    pub(crate) requests_per_minute: Option<u64>,
    pub(crate) max_concurrent_requests: Option<u64>,
    /// The highest fleet-wide counters seen (sampled every second).
    pub(crate) peak_tokens_per_minute: u64,
    pub(crate) peak_requests_per_minute: u64,
    pub(crate) peak_in_flight: u64,
    /// Tokens and requests the jobs reported, by the minute they ended in.
    pub(crate) minutes: Vec<(u64, u64, u64)>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: u64,
    pub(crate) p95: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
}

impl Percentiles {
    pub(crate) fn of(mut values: Vec<u64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let at = |q: usize| values[(values.len() - 1) * q / 100];
        Self {
            p50: at(50),
            p95: at(95),
            p99: at(99),
            max: values[values.len() - 1],
        }
    }
}

/// The limits of each model, as the report shows them.
pub(crate) struct ModelLimits {
    pub(crate) name: String,
    pub(crate) tokens_per_minute: Option<u64>,
    pub(crate) requests_per_minute: Option<u64>,
    pub(crate) concurrency: Option<u64>,
}

pub(crate) fn summarize(
    log: &Log,
    models: &[ModelLimits],
    instances: usize,
    backend: &str,
    simulated_ms: u64,
    wall_ms: u64,
) -> Summary {
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut completed = 0;
    let mut waits = Vec::new();
    let (mut escalations, mut delegations) = (0u64, 0u64);
    let mut per_model: HashMap<&str, ModelSummary> = HashMap::new();
    for model in models {
        per_model.insert(
            &model.name,
            ModelSummary {
                model: model.name.clone(),
                completed: 0,
                attempts: 0,
                tokens: 0,
                requests: 0,
                cost: 0.0,
                tokens_per_minute: model.tokens_per_minute,
                requests_per_minute: model.requests_per_minute,
                max_concurrent_requests: model.concurrency,
                peak_tokens_per_minute: 0,
                peak_requests_per_minute: 0,
                peak_in_flight: 0,
                minutes: Vec::new(),
            },
        );
    }
    let mut minutes: HashMap<(&str, u64), (u64, u64)> = HashMap::new();
    for job in log.jobs.values() {
        escalations += u64::from(job.escalations);
        delegations += u64::from(job.delegations);
        match job.outcome.as_deref() {
            Some("completed") => {
                completed += 1;
                if let Some(summary) = job.model.as_deref().and_then(|m| per_model.get_mut(m)) {
                    summary.completed += 1;
                }
            }
            Some(cause) => *failed.entry(cause.to_owned()).or_default() += 1,
            None => *failed.entry("unfinished".into()).or_default() += 1,
        }
        if let Some(start) = job.first_start_ms {
            waits.push(start.saturating_sub(job.arrival_ms));
        }
        for (model, input, cached, output, requests, cost) in &job.usage {
            let Some(summary) = per_model.get_mut(model.as_str()) else {
                continue;
            };
            summary.attempts += 1;
            summary.tokens += input + cached + output;
            summary.requests += requests;
            summary.cost += cost;
            let minute = job.end_ms.unwrap_or(0) / 60_000;
            let cell = minutes
                .entry((summary_key(models, model), minute))
                .or_default();
            cell.0 += input + cached + output;
            cell.1 += requests;
        }
    }
    for sample in &log.samples {
        for (model, (tpm, rpm, conc)) in models.iter().zip(&sample.models) {
            if let Some(summary) = per_model.get_mut(model.name.as_str()) {
                summary.peak_tokens_per_minute =
                    summary.peak_tokens_per_minute.max(tpm.unwrap_or(0));
                summary.peak_requests_per_minute =
                    summary.peak_requests_per_minute.max(rpm.unwrap_or(0));
                summary.peak_in_flight = summary.peak_in_flight.max(conc.unwrap_or(0));
            }
        }
    }
    for ((model, minute), (tokens, requests)) in minutes {
        if let Some(summary) = per_model.get_mut(model) {
            summary.minutes.push((minute, tokens, requests));
        }
    }
    let mut model_summaries: Vec<ModelSummary> = models
        .iter()
        .filter_map(|m| per_model.remove(m.name.as_str()))
        .collect();
    for summary in &mut model_summaries {
        summary.minutes.sort_unstable();
    }
    let total_cost = model_summaries.iter().map(|m| m.cost).sum();
    Summary {
        instances,
        backend: backend.to_owned(),
        jobs: log.jobs.len(),
        completed,
        failed,
        simulated_ms,
        wall_ms,
        models: model_summaries,
        waits_ms: Percentiles::of(waits),
        escalations,
        delegations,
        ratio_changes: log.ratio_changes,
        slot_changes: log.slot_changes,
        total_cost,
    }
}

fn summary_key<'a>(models: &'a [ModelLimits], name: &str) -> &'a str {
    models
        .iter()
        .find(|m| m.name == name)
        .map_or("", |m| m.name.as_str())
}

/// The text report.
pub(crate) fn render(summary: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    #[allow(clippy::cast_precision_loss)]
    let minutes = summary.simulated_ms as f64 / 60_000.0;
    let _ = writeln!(
        out,
        "llmrl simulate: {} jobs on {} instance(s) ({} backend), {minutes:.1} simulated minutes in {} ms",
        summary.jobs, summary.instances, summary.backend, summary.wall_ms
    );
    let _ = writeln!(out, "  completed: {}", summary.completed);
    for (cause, n) in &summary.failed {
        let _ = writeln!(out, "  failed ({cause}): {n}");
    }
    let _ = writeln!(
        out,
        "  waits: p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
        summary.waits_ms.p50, summary.waits_ms.p95, summary.waits_ms.p99, summary.waits_ms.max
    );
    let _ = writeln!(
        out,
        "  escalations: {}, delegations: {}, ratio changes: {}, slot changes: {}",
        summary.escalations, summary.delegations, summary.ratio_changes, summary.slot_changes
    );
    let _ = writeln!(out, "  per model:");
    for m in &summary.models {
        let limit = |l: Option<u64>| l.map_or_else(|| "∞".to_owned(), |l| l.to_string());
        let _ = writeln!(
            out,
            "    {:<14} {:>6} jobs  {:>11} tokens  {:>7} requests  ${:>10.4}  peak TPM {}/{}  RPM {}/{}",
            m.model,
            m.completed,
            m.tokens,
            m.requests,
            m.cost,
            m.peak_tokens_per_minute,
            limit(m.tokens_per_minute),
            m.peak_requests_per_minute,
            limit(m.requests_per_minute),
        );
    }
    let _ = writeln!(out, "  total cost: ${:.4}", summary.total_cost);
    out
}
