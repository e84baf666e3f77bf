//! What a dataset must do to a fleet, computed from the dataset and the configuration alone: a
//! fluid model of capacity per minute window, independent of the library's code.
//!
//! The model:
//! - Each instance owns `floor(L / n)` of every minute limit `L` of every model (the limits of
//!   the stress configuration are multiples of the fleet size, so there is no remainder), and a
//!   job type owns `ratio × share` of it. Its *capacity* on a model is the number of whole jobs
//!   that fit in that part for every limit: `min_k floor(ratio × share_k / estimate_k)`.
//! - Every job type waits with the default bound on every model: until the first minute boundary
//!   after it started waiting there, plus 5 s. A job arriving in window `w` therefore waits on the
//!   first model until `(w+1):05`, on the second until `(w+2):05`, on the third until `(w+3):05`,
//!   and is rejected then (HTTP 429).
//! - Per instance and job type, queues are first come, first served. In each window `w`: at
//!   `w:00` capacity returns; each model admits the jobs waiting on it from the previous window,
//!   up to its capacity; the jobs it could not admit move to the next model at `w:05` (or are
//!   rejected after the last one) and take what that model has left in `w`; new arrivals take
//!   what the first model has left, the others wait for `(w+1):00`.
//!
//! The model counts whole windows and jobs. It is exact for a job type whose capacity does not
//! change: a fixed ratio, bounded by requests (actual requests equal the estimate, so no refund
//! gives any back). Flexible ratios move with local load and refunded tokens return capacity
//! within a window, so for the other types its figures are nominal (with the initial ratios);
//! the e2e test only relies on them through bounds.

use serde_json::Value;

/// One minute, in milliseconds.
pub const MINUTE_MS: u64 = 60_000;
/// What every default wait adds to the next minute boundary.
pub const GRACE_MS: u64 = 5_000;

/// A model and its per-minute limits (`None`: no such limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub name: String,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

/// A job type and its estimates.
#[derive(Clone, Debug, PartialEq)]
pub struct JobType {
    pub name: String,
    pub tokens: u64,
    pub requests: u64,
    /// The configured initial ratio (`None`: an even part of what the others leave).
    pub ratio: Option<f64>,
    pub flexible: bool,
}

/// Models (in escalation order), job types and the fleet size.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub models: Vec<Model>,
    pub job_types: Vec<JobType>,
    pub instances: usize,
}

/// One job of a dataset as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    /// Index into [`Scenario::job_types`].
    pub job_type: usize,
    pub instance: usize,
    pub arrival_ms: u64,
}

/// What happens to one job type on one instance in one minute window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// Jobs queued in this window.
    pub arrivals: u64,
    /// Per model: jobs waiting on it when the window starts.
    pub waiting: Vec<u64>,
    /// Per model: jobs admitted at the window's start (capacity returning at the boundary).
    pub at_boundary: Vec<u64>,
    /// Per model: jobs admitted in the window, in all.
    pub admitted: Vec<u64>,
    /// Per model: jobs that give up on it at `w:05` (move to the next model or are rejected).
    pub escalated: Vec<u64>,
    /// Jobs rejected at `w:05` (all models were full for their whole waits).
    pub rejected: u64,
}

/// The model's answer for a dataset.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Windows covered: every job is settled (admitted or rejected) within them.
    pub windows: usize,
    /// Capacity per job type and model, in whole jobs per instance and window.
    pub capacity: Vec<Vec<u64>>,
    /// `cells[instance][job_type][window]`.
    pub cells: Vec<Vec<Vec<Cell>>>,
    /// Per model: the earliest instant (ms from the start) at which any job can run on it,
    /// whatever the capacities: the first model at the first arrival, each next one when the
    /// first job's wait on the previous one can end.
    pub earliest_use_ms: Vec<u64>,
    /// The earliest instant at which any job can be rejected.
    pub earliest_rejection_ms: u64,
    /// `arrivals[instance][job_type]`: arrival instants.
    pub arrivals: Vec<Vec<Vec<u64>>>,
}

impl Scenario {
    /// Reads a limiter configuration (through its serialized form: no private field needed).
    pub fn from_config(config: &llmrl::Config, instances: usize) -> Self {
        let value = serde_json::to_value(config).expect("a configuration serializes");
        let number = |v: &Value| v.as_f64().map(|f| f as u64);
        // `serde_json` maps are sorted by key: the configuration's own order comes from it.
        let order: Vec<String> = match value["escalation_order"].as_array() {
            Some(order) => order
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
            None => config.model_ids().map(str::to_owned).collect(),
        };
        let models = order
            .into_iter()
            .map(|name| {
                let model = &value["models"][&name];
                Model {
                    requests_per_minute: number(&model["requests_per_minute"]),
                    tokens_per_minute: number(&model["tokens_per_minute"]),
                    name,
                }
            })
            .collect();
        let job_types = config
            .job_type_names()
            .map(|name| {
                let t = &value["job_types"][name];
                assert!(
                    t.get("max_wait").is_none(),
                    "the model knows only the default waits ({name} sets max_wait)"
                );
                JobType {
                    name: name.to_owned(),
                    tokens: number(&t["estimated_tokens"]).unwrap_or(0),
                    requests: number(&t["estimated_requests"]).unwrap_or(1),
                    ratio: t["ratio"]["initial"].as_f64(),
                    flexible: t["ratio"]["flexible"].as_bool().unwrap_or(true),
                }
            })
            .collect();
        Self {
            models,
            job_types,
            instances,
        }
    }

    /// The index of a job type by name.
    pub fn job_type(&self, name: &str) -> Option<usize> {
        self.job_types.iter().position(|t| t.name == name)
    }

    /// The index of a model by name.
    pub fn model(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// Initial ratios: as configured, and what the configured ones leave split evenly between the
    /// types without one.
    pub fn initial_ratios(&self) -> Vec<f64> {
        let given: f64 = self.job_types.iter().filter_map(|t| t.ratio).sum();
        let unset = self.job_types.iter().filter(|t| t.ratio.is_none()).count();
        self.job_types
            .iter()
            .map(|t| {
                t.ratio
                    .unwrap_or_else(|| (1.0 - given).max(0.0) / unset as f64)
            })
            .collect()
    }

    /// One instance's share of a limit.
    pub fn share(&self, limit: u64) -> u64 {
        limit / self.instances.max(1) as u64
    }

    /// Whole jobs of `job_type` that one instance can start on `model` in one window, with
    /// `ratio`: exact integer arithmetic on the ratio in parts per billion.
    pub fn capacity(&self, ratio: f64, job_type: usize, model: usize) -> u64 {
        let t = &self.job_types[job_type];
        let m = &self.models[model];
        let ppb = u128::from((ratio * 1e9).round() as u64);
        [
            (m.requests_per_minute, t.requests),
            (m.tokens_per_minute, t.tokens),
        ]
        .into_iter()
        .filter_map(|(limit, estimate)| {
            let limit = limit?;
            (estimate > 0).then(|| {
                let part = ppb * u128::from(self.share(limit));
                u64::try_from(part / (u128::from(estimate) * 1_000_000_000)).unwrap_or(u64::MAX)
            })
        })
        .min()
        .unwrap_or(u64::MAX)
    }

    /// Capacities of every job type on every model with `ratios`.
    pub fn capacities(&self, ratios: &[f64]) -> Vec<Vec<u64>> {
        (0..self.job_types.len())
            .map(|t| {
                (0..self.models.len())
                    .map(|m| self.capacity(ratios[t], t, m))
                    .collect()
            })
            .collect()
    }
}

/// The minute window holding `ms`.
pub const fn window(ms: u64) -> usize {
    (ms / MINUTE_MS) as usize
}

/// When a job that starts waiting at `ms` stops waiting (the default bound): the first minute
/// boundary strictly after `ms`, plus 5 s.
pub const fn deadline(ms: u64) -> u64 {
    (ms / MINUTE_MS + 1) * MINUTE_MS + GRACE_MS
}

/// When a job arriving at `ms` would stop waiting on each model of a chain of `models`, if it
/// waits on every one of them: its last deadline is when it is rejected.
pub fn deadlines(ms: u64, models: usize) -> Vec<u64> {
    let mut at = ms;
    (0..models)
        .map(|_| {
            at = deadline(at);
            at
        })
        .collect()
}

/// Runs the model on `jobs` with fixed `ratios` (usually [`Scenario::initial_ratios`]).
pub fn predict(scenario: &Scenario, jobs: &[Job], ratios: &[f64]) -> Prediction {
    let models = scenario.models.len();
    let types = scenario.job_types.len();
    let last_arrival = jobs.iter().map(|j| j.arrival_ms).max().unwrap_or(0);
    // A job arriving in window w is settled by the end of window w + models.
    let windows = window(last_arrival) + models + 1;
    let capacity = scenario.capacities(ratios);
    let mut cells = vec![vec![vec![Cell::default(); windows]; types]; scenario.instances];
    let mut arrivals = vec![vec![Vec::new(); types]; scenario.instances];
    for job in jobs {
        cells[job.instance][job.job_type][window(job.arrival_ms)].arrivals += 1;
        arrivals[job.instance][job.job_type].push(job.arrival_ms);
    }
    for per_type in &mut cells {
        for (t, per_window) in per_type.iter_mut().enumerate() {
            let cap = &capacity[t];
            // Jobs waiting on each model at the start of the next window.
            let mut queue = vec![0u64; models];
            for cell in per_window.iter_mut() {
                cell.waiting = queue.clone();
                cell.at_boundary = vec![0; models];
                cell.admitted = vec![0; models];
                cell.escalated = vec![0; models];
                let mut left = cap.clone();
                // w:00: capacity returns; each model admits its waiters first.
                for m in 0..models {
                    let admitted = queue[m].min(left[m]);
                    cell.at_boundary[m] = admitted;
                    cell.admitted[m] = admitted;
                    left[m] -= admitted;
                    cell.escalated[m] = queue[m] - admitted;
                }
                cell.rejected = cell.escalated[models - 1];
                // w:05: who gave up on a model takes what the next one has left, or waits for it.
                let mut next = vec![0u64; models];
                for m in 1..models {
                    let moving = cell.escalated[m - 1];
                    let admitted = moving.min(left[m]);
                    cell.admitted[m] += admitted;
                    left[m] -= admitted;
                    next[m] = moving - admitted;
                }
                // New arrivals take what the first model has left.
                let admitted = cell.arrivals.min(left[0]);
                cell.admitted[0] += admitted;
                next[0] = cell.arrivals - admitted;
                queue = next;
            }
            debug_assert!(queue.iter().all(|&q| q == 0), "every job is settled");
        }
    }
    let first = jobs.iter().map(|j| j.arrival_ms).min().unwrap_or(0);
    let chain = deadlines(first, models);
    let mut earliest_use_ms = vec![first];
    earliest_use_ms.extend(chain.iter().take(models - 1));
    Prediction {
        windows,
        capacity,
        cells,
        earliest_use_ms,
        earliest_rejection_ms: chain[models - 1],
        arrivals,
    }
}

impl Prediction {
    /// Sums `f` over instances (all job types of `job_type` is `None`) in `window`.
    pub fn total(&self, job_type: Option<usize>, window: usize, f: impl Fn(&Cell) -> u64) -> u64 {
        self.cells
            .iter()
            .flat_map(|per_type| {
                per_type
                    .iter()
                    .enumerate()
                    .filter(|(t, _)| job_type.is_none_or(|wanted| wanted == *t))
                    .filter_map(|(_, per_window)| per_window.get(window))
            })
            .map(f)
            .sum()
    }

    /// Jobs rejected in all.
    pub fn rejected(&self, job_type: Option<usize>) -> u64 {
        (0..self.windows)
            .map(|w| self.total(job_type, w, |c| c.rejected))
            .sum()
    }

    /// Per window: whether `job_type` is predicted to hit its capacity on `model` on `instance`
    /// (some job had to wait past the window's end or give up on it).
    pub fn full(&self, instance: usize, job_type: usize, model: usize, window: usize) -> bool {
        let cells = &self.cells[instance][job_type];
        cells[window].escalated[model] > 0
            || cells
                .get(window + 1)
                .is_some_and(|next| next.waiting[model] > 0)
    }

    /// Per instance and window: flexible job types predicted loaded above `high` next to others
    /// below `low`, the condition under which flexible ratios move. A type's load at an instant
    /// is its jobs waiting since the window began plus those arrived since, over its capacity on
    /// all models (with the model's ratios), looked at every 5 s (the default adjustment
    /// cadence).
    pub fn imbalanced(
        &self,
        scenario: &Scenario,
        instance: usize,
        window: usize,
        low: f64,
        high: f64,
    ) -> bool {
        let start = window as u64 * MINUTE_MS;
        (1..=12).any(|step| {
            let at = start + step * 5_000;
            let loads: Vec<f64> = scenario
                .job_types
                .iter()
                .enumerate()
                .filter(|(_, t)| t.flexible)
                .map(|(t, _)| {
                    let waiting: u64 = self.cells[instance][t][window].waiting.iter().sum();
                    let arrived = self.arrivals[instance][t]
                        .iter()
                        .filter(|&&a| a >= start && a < at)
                        .count() as u64;
                    let demand = waiting + arrived;
                    let capacity: u64 = self.capacity[t].iter().sum();
                    if capacity == 0 {
                        if demand > 0 { 1.0 } else { 0.0 }
                    } else {
                        demand as f64 / capacity as f64
                    }
                })
                .collect();
            loads.iter().any(|&l| l > high) && loads.iter().any(|&l| l < low)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One model per limit kind, one instance, a chain of three.
    fn small(instances: usize) -> Scenario {
        let model = |name: &str, rpm: u64| Model {
            name: name.into(),
            requests_per_minute: Some(rpm),
            tokens_per_minute: None,
        };
        Scenario {
            // Per instance with ratio 1 and 1-request jobs: 2, 1 and 1 jobs per window.
            models: vec![
                model("a", 2 * instances as u64),
                model("b", instances as u64),
                model("c", instances as u64),
            ],
            job_types: vec![JobType {
                name: "only".into(),
                tokens: 0,
                requests: 1,
                ratio: None,
                flexible: false,
            }],
            instances,
        }
    }

    fn jobs(at: &[(u64, usize)]) -> Vec<Job> {
        at.iter()
            .map(|&(arrival_ms, instance)| Job {
                job_type: 0,
                instance,
                arrival_ms,
            })
            .collect()
    }

    fn stress() -> Scenario {
        let text = include_str!("../../../../examples/stress.toml");
        Scenario::from_config(&llmrl::Config::from_toml_str(text).unwrap(), 5)
    }

    #[test]
    fn reads_the_stress_configuration() {
        let s = stress();
        let names: Vec<&str> = s.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["model-a", "model-b", "model-c"]);
        assert_eq!(s.models[2].requests_per_minute, Some(100));
        assert_eq!(s.models[2].tokens_per_minute, Some(500_000));
        let vacation = &s.job_types[s.job_type("vacation_planning").unwrap()];
        assert_eq!((vacation.tokens, vacation.requests), (2_000, 3));
        assert_eq!(vacation.ratio, Some(0.4));
        assert!(!vacation.flexible);
        assert!(s.job_types[0].flexible);
    }

    #[test]
    fn types_without_a_ratio_share_what_is_left() {
        let ratios = stress().initial_ratios();
        let expected = [0.3, 0.4, 0.1, 0.1, 0.1];
        for (r, e) in ratios.iter().zip(expected) {
            assert!((r - e).abs() < 1e-12, "{ratios:?}");
        }
        let mut even = small(1);
        even.job_types.push(even.job_types[0].clone());
        assert_eq!(even.initial_ratios(), vec![0.5, 0.5]);
    }

    #[test]
    fn capacities_of_the_stress_configuration_by_hand() {
        // Per instance: A and B 100 requests and 200 000 tokens, C 20 requests and 100 000.
        let s = stress();
        let caps = s.capacities(&s.initial_ratios());
        // summary 0.3: tokens bind (60 000 / 10 000 = 6; C 30 000 → 3)
        assert_eq!(caps[0], [6, 6, 3]);
        // vacation 0.4: requests bind (40 / 3 = 13; C 8 / 3 = 2)
        assert_eq!(caps[1], [13, 13, 2]);
        // image 0.1: tokens (20 000 / 5 000 = 4), C both (2 requests, 10 000 / 5 000)
        assert_eq!(caps[2], [4, 4, 2]);
        // budget 0.1: requests (10 / 5 = 2; C 2 / 5 = 0)
        assert_eq!(caps[3], [2, 2, 0]);
        // weather 0.1: requests (10; C 2)
        assert_eq!(caps[4], [10, 10, 2]);
        // Exact at integer boundaries: 0.1 of 50 000 tokens in 1 000-token jobs is 5, never 4.
        let mut exact = small(1);
        exact.models[0].tokens_per_minute = Some(50_000);
        exact.models[0].requests_per_minute = None;
        exact.job_types[0].tokens = 1_000;
        assert_eq!(exact.capacity(0.1, 0, 0), 5);
    }

    #[test]
    fn deadlines_follow_the_default_wait() {
        assert_eq!(deadline(0), 65_000, "at :00 the wait is 65 s");
        assert_eq!(deadline(30_000), 65_000, "at :30, 35 s");
        assert_eq!(deadline(59_000), 65_000, "at :59, 6 s");
        assert_eq!(deadline(60_000), 125_000);
        assert_eq!(deadline(65_000), 125_000);
        assert_eq!(deadlines(10_000, 3), vec![65_000, 125_000, 185_000]);
    }

    #[test]
    fn a_burst_escalates_down_the_chain_then_is_rejected() {
        // Eight jobs at 0:10 on one instance; capacities 2 (a), 1 (b), 1 (c) per window.
        let s = small(1);
        let p = predict(&s, &jobs(&[(10_000, 0); 8]), &[1.0]);
        assert_eq!(p.capacity, vec![vec![2, 1, 1]]);
        assert_eq!(p.windows, 4);
        let c = &p.cells[0][0];
        // w0: 2 run on a at once, 6 wait for a.
        assert_eq!((c[0].arrivals, c[0].admitted.clone()), (8, vec![2, 0, 0]));
        // w1: a admits 2 of them at 1:00; 4 move to b at 1:05, b takes 1, 3 wait for b.
        assert_eq!(c[1].waiting, [6, 0, 0]);
        assert_eq!(c[1].at_boundary, [2, 0, 0]);
        assert_eq!(c[1].escalated, [4, 0, 0]);
        assert_eq!(c[1].admitted, [2, 1, 0]);
        // w2: b admits 1 at 2:00; 2 move to c at 2:05, c takes 1, 1 waits for c.
        assert_eq!(c[2].waiting, [0, 3, 0]);
        assert_eq!(c[2].at_boundary, [0, 1, 0]);
        assert_eq!(c[2].escalated, [0, 2, 0]);
        assert_eq!(c[2].admitted, [0, 1, 1]);
        // w3: c admits the last one at 3:00: nothing is rejected.
        assert_eq!(c[3].waiting, [0, 0, 1]);
        assert_eq!(c[3].admitted, [0, 0, 1]);
        assert_eq!(p.rejected(None), 0);
        assert!(p.full(0, 0, 0, 0) && p.full(0, 0, 0, 1) && !p.full(0, 0, 0, 2));
        assert_eq!(p.earliest_use_ms, vec![10_000, 65_000, 125_000]);
        assert_eq!(p.earliest_rejection_ms, 185_000);
    }

    #[test]
    fn rejections_only_when_every_model_was_full() {
        // Ten jobs: 2 + 2 (a) + 1 + 1 (b) + 1 + 1 (c) run, 2 are rejected at 3:05.
        let s = small(1);
        let p = predict(&s, &jobs(&[(0, 0); 10]), &[1.0]);
        let c = &p.cells[0][0];
        assert_eq!(c[3].waiting, [0, 0, 3]);
        assert_eq!(c[3].at_boundary, [0, 0, 1]);
        assert_eq!(c[3].rejected, 2);
        assert_eq!(p.rejected(Some(0)), 2);
        let admitted: u64 = c.iter().flat_map(|cell| cell.admitted.iter()).sum();
        assert_eq!(admitted, 8);
    }

    #[test]
    fn later_arrivals_queue_behind_the_waiters() {
        // Three jobs at 0:00: two run, one waits for 1:00. Two more at 1:30 find one place left
        // (the waiter took the other at 1:00): one waits for 2:00.
        let s = small(1);
        let p = predict(
            &s,
            &jobs(&[(0, 0), (0, 0), (0, 0), (90_000, 0), (90_000, 0)]),
            &[1.0],
        );
        let c = &p.cells[0][0];
        assert_eq!(c[1].at_boundary, [1, 0, 0]);
        assert_eq!(c[1].admitted, [2, 0, 0], "one waiter, one new arrival");
        assert_eq!(c[2].waiting, [1, 0, 0]);
        assert_eq!(c[2].admitted, [1, 0, 0], "the second new arrival at 2:00");
        assert_eq!(p.rejected(None), 0);
    }

    #[test]
    fn instances_have_their_own_shares() {
        // Two instances: the same limits per instance as above. Three jobs on instance 0 make it
        // wait; one on instance 1 runs at once.
        let s = small(2);
        let p = predict(&s, &jobs(&[(0, 0), (0, 0), (0, 0), (0, 1)]), &[1.0]);
        assert_eq!(p.cells[0][0][0].admitted, [2, 0, 0]);
        assert_eq!(p.cells[0][0][1].waiting, [1, 0, 0]);
        assert_eq!(p.cells[1][0][0].admitted, [1, 0, 0]);
        assert_eq!(p.cells[1][0][1].waiting, [0, 0, 0]);
        assert_eq!(p.total(None, 0, |c| c.admitted[0]), 3);
    }

    #[test]
    fn a_type_without_capacity_on_a_model_waits_there_in_vain() {
        // Budget calculation has no capacity on model-c (2 requests per instance, 5 per job):
        // what model-b cannot take waits on c for nothing and is rejected.
        let s = stress();
        let budget = s.job_type("budget_calculation").unwrap();
        let burst: Vec<Job> = (0..9)
            .map(|_| Job {
                job_type: budget,
                instance: 0,
                arrival_ms: 1_000,
            })
            .collect();
        let p = predict(&s, &burst, &s.initial_ratios());
        let c = &p.cells[0][budget];
        // w0: 2 on a, 7 wait; w1: 2 on a at 1:00, 5 move to b at 1:05, b takes 2.
        assert_eq!(c[0].admitted, [2, 0, 0]);
        assert_eq!(c[1].admitted, [2, 2, 0]);
        // w2: b admits 2 of its 3 waiters at 2:00; the last moves to c at 2:05.
        assert_eq!(c[2].admitted, [0, 2, 0]);
        assert_eq!(c[2].escalated, [0, 1, 0]);
        // w3: c has nothing for it: rejected at 3:05.
        assert_eq!(c[3].waiting, [0, 0, 1]);
        assert_eq!(c[3].rejected, 1);
        assert_eq!(p.rejected(None), 1);
    }

    #[test]
    fn imbalance_flags_loaded_next_to_idle_types() {
        let mut s = small(2);
        s.job_types.push(JobType {
            name: "other".into(),
            ..s.job_types[0].clone()
        });
        for t in &mut s.job_types {
            t.flexible = true;
        }
        // Capacity per type and instance with 0.5 each: 1 on a, 0 on b and c.
        let one_sided: Vec<Job> = jobs(&[(0, 0); 6]);
        let p = predict(&s, &one_sided, &[0.5, 0.5]);
        assert_eq!(p.capacity, vec![vec![1, 0, 0], vec![1, 0, 0]]);
        assert!(
            p.imbalanced(&s, 0, 0, 0.3, 0.7),
            "6 jobs on 1 slot, none of the other"
        );
        assert!(!p.imbalanced(&s, 1, 0, 0.3, 0.7), "instance 1 is idle");
        let mut both = one_sided.clone();
        both.extend(one_sided.iter().map(|j| Job { job_type: 1, ..*j }));
        let p = predict(&s, &both, &[0.5, 0.5]);
        assert!(!p.imbalanced(&s, 0, 0, 0.3, 0.7), "both are loaded");
        // Within a window: the other type's jobs arrive only at 0:50, after 45 s in which the
        // first was loaded and the other idle.
        let mut late = one_sided.clone();
        late.extend(one_sided.iter().map(|j| Job {
            job_type: 1,
            arrival_ms: 50_000,
            ..*j
        }));
        let p = predict(&s, &late, &[0.5, 0.5]);
        assert!(p.imbalanced(&s, 0, 0, 0.3, 0.7));
    }
}
