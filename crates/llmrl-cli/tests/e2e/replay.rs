//! Replays a dataset through a fleet of `llmrl serve` processes and records what happened: every
//! acquisition's answer (with the server's admission time), availability samples of every
//! instance on a fixed grid of the shared clock, and each instance's `ratio_changed` events.
//!
//! All times are milliseconds of the shared clock since `START_MS`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::predictor::{MINUTE_MS, Scenario};
use crate::support::Server;
use crate::support::fleet::{Fleet, START_MS};

/// The servers' default lease time to live (`--lease-ttl`), which dates admissions:
/// `expires_at_ms − TTL` is the server's clock when it handed the lease out.
pub const LEASE_TTL_MS: u64 = 600_000;

/// One job of the dataset.
#[derive(Clone, Debug)]
pub struct DatasetJob {
    pub id: String,
    pub job_type: usize,
    pub instance: usize,
    pub arrival_ms: u64,
    pub duration_ms: u64,
    pub usage: Value,
    /// Tokens it reports (input + cached + output).
    pub tokens: u64,
    pub requests: u64,
}

/// Reads the dataset's jobs (`{"jobs": [...]}`), keeping those whose position `keep` accepts.
pub fn read_dataset(
    text: &str,
    scenario: &Scenario,
    keep: impl Fn(usize) -> bool,
) -> Vec<DatasetJob> {
    let value: Value = serde_json::from_str(text).expect("the dataset is JSON");
    let jobs = value["jobs"].as_array().expect("a `jobs` array");
    jobs.iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, job)| {
            let name = job["job_type"].as_str().expect("job_type");
            let usage = job["usage"].clone();
            let count = |key: &str| usage[key].as_u64().unwrap_or(0);
            DatasetJob {
                id: job["id"].as_str().expect("id").to_owned(),
                job_type: scenario
                    .job_type(name)
                    .unwrap_or_else(|| panic!("job type {name} is not configured")),
                instance: job["instance"].as_u64().expect("instance") as usize,
                arrival_ms: job["arrival_ms"].as_u64().expect("arrival_ms"),
                duration_ms: job["duration_ms"].as_u64().expect("duration_ms"),
                tokens: count("input_tokens") + count("cached_tokens") + count("output_tokens"),
                requests: count("requests"),
                usage,
            }
        })
        .collect()
}

/// How an acquisition ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// A lease on `model`, handed out at `at_ms` (the server's clock).
    Lease {
        model: usize,
        attempt: u64,
        at_ms: u64,
    },
    /// 429: every model was exhausted.
    Rejected,
    /// Anything else (an unexpected status, no answer in time).
    Broken(String),
}

/// One acquisition (a dataset job, or a rejected one queued again).
#[derive(Clone, Debug)]
pub struct Record {
    /// Index into the replayed jobs.
    pub job: usize,
    pub job_type: usize,
    pub instance: usize,
    /// When it was due (the dataset's arrival, or the re-queue instant).
    pub due_ms: u64,
    /// When the request left the client.
    pub sent_ms: u64,
    /// When the answer came back.
    pub answered_ms: u64,
    pub answer: Answer,
    /// Whether this is a rejected job queued again (check 5).
    pub requeued: bool,
}

/// A compact availability snapshot of one instance.
#[derive(Clone, Debug)]
pub struct Sample {
    pub instance: usize,
    /// When the request left the client, and when the answer came back.
    pub sent_ms: u64,
    pub answered_ms: u64,
    /// Per model: requests and tokens per minute.
    pub requests: Vec<Limit>,
    pub tokens: Vec<Limit>,
    /// Per job type.
    pub ratio: Vec<f64>,
    pub flexible: Vec<bool>,
    /// Per job type and model.
    pub slots: Vec<Vec<u64>>,
    pub waiting: Vec<Vec<u64>>,
    pub in_flight: Vec<Vec<u64>>,
    pub instances: u64,
}

/// One limit of one model as an instance sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    pub available: u64,
    pub share: u64,
    pub own: u64,
}

impl Sample {
    /// Parses `/v1/availability` (models and job types in configuration order, which the
    /// scenario follows).
    pub fn parse(instance: usize, sent_ms: u64, answered_ms: u64, value: &Value) -> Self {
        let limit = |v: &Value| Limit {
            limit: v["limit"].as_u64().unwrap_or(0),
            used: v["used"].as_u64().unwrap_or(0),
            remaining: v["remaining"].as_u64().unwrap_or(0),
            available: v["available"].as_u64().unwrap_or(0),
            share: v["share"].as_u64().unwrap_or(0),
            own: v["own"].as_u64().unwrap_or(0),
        };
        let models = value["models"].as_array().cloned().unwrap_or_default();
        let types = value["job_types"].as_array().cloned().unwrap_or_default();
        let per_model = |t: &Value, key: &str| -> Vec<u64> {
            t["models"]
                .as_array()
                .map(|ms| ms.iter().map(|m| m[key].as_u64().unwrap_or(0)).collect())
                .unwrap_or_default()
        };
        Self {
            instance,
            sent_ms,
            answered_ms,
            requests: models
                .iter()
                .map(|m| limit(&m["requests_per_minute"]))
                .collect(),
            tokens: models
                .iter()
                .map(|m| limit(&m["tokens_per_minute"]))
                .collect(),
            ratio: types
                .iter()
                .map(|t| t["ratio"].as_f64().unwrap_or(f64::NAN))
                .collect(),
            flexible: types
                .iter()
                .map(|t| t["flexible"].as_bool().unwrap_or(true))
                .collect(),
            slots: types.iter().map(|t| per_model(t, "slots")).collect(),
            waiting: types.iter().map(|t| per_model(t, "waiting")).collect(),
            in_flight: types.iter().map(|t| per_model(t, "in_flight")).collect(),
            instances: value["instances"].as_u64().unwrap_or(0),
        }
    }
}

/// A `ratio_changed` event as one instance streamed it.
#[derive(Clone, Debug)]
pub struct RatioEvent {
    pub instance: usize,
    /// When the client read it.
    pub seen_ms: u64,
    pub job_type: String,
    pub from: f64,
    pub to: f64,
}

/// Everything recorded during a run.
#[derive(Default)]
pub struct Log {
    pub records: Mutex<Vec<Record>>,
    pub samples: Mutex<Vec<Sample>>,
    pub ratio_events: Mutex<Vec<RatioEvent>>,
    /// Events per instance, of any kind (a stream that lags loses some).
    pub events_seen: Mutex<Vec<u64>>,
}

impl Log {
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    pub fn ratio_events(&self) -> Vec<RatioEvent> {
        self.ratio_events.lock().unwrap().clone()
    }
}

/// The fleet, the scenario and the log, shared by every task of a run.
pub struct Run {
    pub fleet: Fleet,
    pub scenario: Scenario,
    pub jobs: Vec<DatasetJob>,
    pub log: Log,
    /// How long any one acquisition may take on the wall clock before it counts as broken.
    pub patience: Duration,
}

impl Run {
    /// Milliseconds of the shared clock since the start.
    pub fn now(&self) -> u64 {
        self.fleet.elapsed_ms()
    }

    /// Sleeps until `at` (ms since the start) on the shared clock.
    pub async fn until(&self, at: u64) {
        self.fleet.sleep_until(START_MS + at).await;
    }

    pub fn server(&self, instance: usize) -> &Server {
        self.fleet.server(instance)
    }

    /// Acquires a lease for `job` now on its instance and, if one comes, holds it for the job's
    /// duration and releases it with the job's usage. Records the acquisition.
    pub async fn play(self: Arc<Self>, job: usize, due_ms: u64, requeued: bool) -> Record {
        let spec = &self.jobs[job];
        let server = self.server(spec.instance);
        let body = json!({
            "job_type": self.scenario.job_types[spec.job_type].name,
            "job_id": spec.id,
        })
        .to_string();
        let request = format!(
            "POST /v1/leases HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\n\r\n{body}",
            server.addr(),
            body.len()
        );
        let sent_ms = self.now();
        let response = server.raw(request.as_bytes(), self.patience).await;
        let answered_ms = self.now();
        let mut lease_id = String::new();
        let answer = match response {
            None => Answer::Broken(format!("no answer within {:?}", self.patience)),
            Some(r) if r.status == 429 => Answer::Rejected,
            Some(r) if r.status == 200 => {
                let lease = r.json();
                lease_id = lease["lease_id"].as_str().expect("lease_id").to_owned();
                let model = lease["model"]
                    .as_str()
                    .and_then(|m| self.scenario.model(m))
                    .expect("a configured model");
                let at_ms = lease["expires_at_ms"].as_u64().expect("expires_at_ms")
                    - LEASE_TTL_MS
                    - START_MS;
                Answer::Lease {
                    model,
                    attempt: lease["attempt"].as_u64().unwrap_or(0),
                    at_ms,
                }
            }
            Some(r) => Answer::Broken(format!("status {}: {}", r.status, r.text())),
        };
        let record = Record {
            job,
            job_type: spec.job_type,
            instance: spec.instance,
            due_ms,
            sent_ms,
            answered_ms,
            answer: answer.clone(),
            requeued,
        };
        self.log.records.lock().unwrap().push(record.clone());
        if let Answer::Lease { at_ms, .. } = answer {
            self.until(at_ms + spec.duration_ms).await;
            let released = server
                .release(&lease_id, &json!({"usage": spec.usage, "outcome": "done"}))
                .await;
            assert_eq!(released.status, 200, "release: {}", released.text());
        }
        record
    }

    /// Samples every instance's availability at once; returns the samples (also logged).
    pub async fn sample_all(self: &Arc<Self>) -> Vec<Sample> {
        let tasks: Vec<_> = (0..self.fleet.servers.len())
            .filter(|&i| self.fleet.servers[i].is_some())
            .map(|i| {
                let run = self.clone();
                tokio::spawn(async move {
                    let sent = run.now();
                    let value = run.server(i).availability().await;
                    Sample::parse(i, sent, run.now(), &value)
                })
            })
            .collect();
        let mut samples = Vec::with_capacity(tasks.len());
        for task in tasks {
            samples.push(task.await.expect("availability"));
        }
        self.log
            .samples
            .lock()
            .unwrap()
            .extend(samples.iter().cloned());
        samples
    }

    /// Samples every instance every `every_ms` of the shared clock until `stop` is set.
    pub async fn sample_periodically(self: Arc<Self>, every_ms: u64, stop: Arc<Mutex<bool>>) {
        let mut at = 0;
        while !*stop.lock().unwrap() {
            self.until(at).await;
            self.sample_all().await;
            at += every_ms;
            // Never fall behind: skip the grid points that have passed.
            let now = self.now();
            if at < now {
                at = now.div_ceil(every_ms) * every_ms;
            }
        }
    }

    /// Reads instance `i`'s event stream until `stop` is set, keeping `ratio_changed` events.
    pub async fn watch_events(self: Arc<Self>, i: usize, stop: Arc<Mutex<bool>>) {
        let mut events = self.server(i).events().await;
        assert_eq!(events.status, 200);
        while !*stop.lock().unwrap() {
            let Some(data) = events.next_data(Duration::from_millis(200)).await else {
                continue;
            };
            self.log.events_seen.lock().unwrap()[i] += 1;
            let Ok(event) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if event["event"] == "ratio_changed" {
                self.log.ratio_events.lock().unwrap().push(RatioEvent {
                    instance: i,
                    seen_ms: self.now(),
                    job_type: event["job_type"].as_str().unwrap_or_default().to_owned(),
                    from: event["from"].as_f64().unwrap_or(f64::NAN),
                    to: event["to"].as_f64().unwrap_or(f64::NAN),
                });
            }
        }
    }
}

/// The minute boundary at or after `ms`.
pub const fn next_boundary(ms: u64) -> u64 {
    ms.div_ceil(MINUTE_MS) * MINUTE_MS
}
