//! The load test's checker: a ledger fed by the instances' events and by the jobs themselves,
//! which checks the fleet's guarantees (SPEC §4.1, §7.1) at every job start and keeps what the
//! final checks need.
//!
//! Everything is derived from what was recorded (events, snapshots, the clock when each thing
//! happened), never from when things should have happened.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::workload::{CONC, INSTANCES, Kind, MAX_WAIT, limit_of, share};
use crate::conformance::Snapshot;
use crate::{Clock, Event, Timestamp, Window, WindowLimit};

/// Slack on wait bounds for backends that confirm an admission granted at a deadline a moment
/// later (the in-process backend on the paused clock needs none).
const WAIT_SLACK: Duration = Duration::from_secs(1);

/// Violations kept in full (the rest are only counted).
const KEPT: usize = 20;

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    Completed,
    Exhausted,
    Other(String),
}

/// One job's life, on the instances' clock.
#[derive(Clone, Debug, Default)]
struct JobRecord {
    instance: usize,
    queued: Option<Timestamp>,
    started: Option<Timestamp>,
    ended: Option<(Timestamp, Ending)>,
}

/// Per (instance or fleet, window limit, window number).
type Counters<K> = HashMap<(K, WindowLimit, u64), i64>;

#[derive(Default)]
struct State {
    jobs: Vec<JobRecord>,
    /// Each instance's own usage per window, from its events: estimates of the jobs it started
    /// in the window plus what settlements charged to the window (refunds negative).
    own: Counters<usize>,
    /// The same summed over the fleet.
    fleet: Counters<()>,
    /// Overages charged to each window, per instance and fleet-wide: the only way a counter may
    /// pass its limit.
    own_overages: Counters<usize>,
    fleet_overages: Counters<()>,
    /// Jobs running now (between their closure's start and its end), and the most ever.
    running: u64,
    max_running: u64,
    /// Estimated tokens started per minute, fleet-wide.
    started_tokens: HashMap<u64, u64>,
    snapshots: u64,
    violations: Vec<String>,
    violation_count: usize,
    ended: usize,
}

impl State {
    fn violation(&mut self, message: String) {
        self.violation_count += 1;
        if self.violations.len() < KEPT {
            self.violations.push(message);
        }
    }
}

fn get<K: std::hash::Hash + Eq>(counters: &Counters<K>, key: (K, WindowLimit, u64)) -> i64 {
    counters.get(&key).copied().unwrap_or(0)
}

fn window(limit: WindowLimit, at: Timestamp) -> u64 {
    limit.window().index_at(at)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The shared ledger. Cheap to clone.
#[derive(Clone)]
pub(super) struct Ledger {
    state: Arc<Mutex<State>>,
    clock: Clock,
}

impl Ledger {
    pub(super) fn new(jobs: usize, clock: Clock) -> Self {
        let state = State {
            jobs: vec![JobRecord::default(); jobs],
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            clock,
        }
    }

    /// The instances' clock.
    pub(super) const fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The event listener of instance `instance`.
    pub(super) fn listener(&self, instance: usize) -> impl Fn(&Event) + Send + Sync + 'static {
        let ledger = self.clone();
        move |event| ledger.on_event(instance, event)
    }

    fn on_event(&self, instance: usize, event: &Event) {
        let now = self.clock.now();
        let mut state = self.lock();
        match event {
            Event::Started { job_type, .. } => {
                let Some(kind) = Kind::named(job_type) else {
                    state.violation(format!("a job of unknown type {job_type} started"));
                    return;
                };
                *state
                    .started_tokens
                    .entry(Window::Minute.index_at(now))
                    .or_default() += kind.estimate(WindowLimit::TokensPerMinute);
                for limit in WindowLimit::ALL {
                    let w = window(limit, now);
                    let estimate = signed(kind.estimate(limit));
                    *state.own.entry((instance, limit, w)).or_default() += estimate;
                    *state.fleet.entry(((), limit, w)).or_default() += estimate;
                    check_admission(&mut state, instance, limit, w, now);
                }
            }
            Event::UsageAdjusted(a) => {
                let w = window(a.limit, now);
                *state.own.entry((instance, a.limit, w)).or_default() += a.charged;
                *state.fleet.entry(((), a.limit, w)).or_default() += a.charged;
                if a.charged > 0 {
                    *state
                        .own_overages
                        .entry((instance, a.limit, w))
                        .or_default() += a.charged;
                    *state.fleet_overages.entry(((), a.limit, w)).or_default() += a.charged;
                }
            }
            _ => {}
        }
    }

    pub(super) fn queued(&self, job: usize, instance: usize) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.jobs[job].instance = instance;
        state.jobs[job].queued = Some(now);
    }

    /// A job's closure was called: checks the fleet through every instance's eyes.
    pub(super) fn started(&self, job: usize, snapshots: &[Snapshot]) {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.jobs[job].started.replace(now).is_some() {
            state.violation(format!("job {job} started twice"));
        }
        state.running += 1;
        state.max_running = state.max_running.max(state.running);
        if state.running > CONC {
            let running = state.running;
            state.violation(format!("{running} jobs running at once > CONC {CONC}"));
        }
        for (i, snapshot) in snapshots.iter().enumerate() {
            check_snapshot(&mut state, i, snapshot, now);
        }
        state.snapshots += 1;
    }

    /// A job's closure returned.
    pub(super) fn ran(&self) {
        let mut state = self.lock();
        state.running -= 1;
    }

    pub(super) fn ended(&self, job: usize, ending: Ending) {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.jobs[job].ended.replace((now, ending)).is_some() {
            state.violation(format!("job {job} ended twice"));
            return;
        }
        state.ended += 1;
    }

    /// Jobs that ended so far.
    pub(super) fn ended_count(&self) -> usize {
        self.lock().ended
    }

    /// Checks each job's life against its wait bound and sums up the run.
    pub(super) fn finish(&self) -> Summary {
        let mut state = self.lock();
        let jobs = state.jobs.clone();
        let mut summary = Summary {
            jobs: jobs.len(),
            waited_across_a_minute: vec![0; usize::try_from(INSTANCES).unwrap()],
            ..Summary::default()
        };
        for (n, job) in jobs.iter().enumerate() {
            let Some(queued) = job.queued else {
                state.violation(format!("job {n} was never queued"));
                continue;
            };
            let Some((ended, ending)) = &job.ended else {
                state.violation(format!("job {n} never ended"));
                continue;
            };
            match (ending, job.started) {
                (Ending::Completed, Some(started)) => {
                    summary.completed += 1;
                    let waited = started.saturating_duration_since(queued);
                    summary.longest_wait = summary.longest_wait.max(waited);
                    if waited > MAX_WAIT + WAIT_SLACK {
                        state.violation(format!("job {n} waited {waited:?} > {MAX_WAIT:?}"));
                    }
                    if Window::Minute.index_at(started) > Window::Minute.index_at(queued) {
                        summary.waited_across_a_minute[job.instance] += 1;
                    }
                }
                (Ending::Exhausted, None) => {
                    summary.exhausted += 1;
                    let waited = ended.saturating_duration_since(queued);
                    if waited < MAX_WAIT || waited > MAX_WAIT + WAIT_SLACK {
                        state.violation(format!(
                            "job {n} gave up after {waited:?}, not its bound {MAX_WAIT:?}"
                        ));
                    }
                }
                (ending, started) => state.violation(format!(
                    "job {n} ended {ending:?} (started: {})",
                    started.is_some()
                )),
            }
        }
        if state.running != 0 {
            let running = state.running;
            state.violation(format!("{running} jobs still running at the end"));
        }
        summary.max_running = state.max_running;
        summary.snapshots = state.snapshots;
        summary.overages = state.fleet_overages.len();
        let mut minutes: Vec<(u64, u64)> =
            state.started_tokens.iter().map(|(&m, &t)| (m, t)).collect();
        minutes.sort_unstable();
        summary.started_tokens_per_minute = minutes.into_iter().map(|(_, t)| t).collect();
        summary.violation_count = state.violation_count;
        summary.violations = state.violations.clone();
        summary
    }
}

/// At an admission on `instance`: its own usage stays within its fair share, and the fleet's
/// within the limit, except for what overages added (SPEC §4.2, §7.1). The ledger counts a
/// reservation when its job starts (after the backend took it) and a settlement when the
/// instance reports it (before the backend hears of it), so it never runs ahead of the
/// backend's counters. It counts the reservation in the window of the start: on the paused clock
/// that is the window of the admission too.
fn check_admission(state: &mut State, instance: usize, limit: WindowLimit, w: u64, now: Timestamp) {
    let own = get(&state.own, (instance, limit, w));
    let own_bound = signed(share(limit_of(limit))) + get(&state.own_overages, (instance, limit, w));
    if own > own_bound {
        state.violation(format!(
            "instance {instance} {limit:?} at {}: own usage {own} > fair share + own overages {own_bound}",
            now.as_millis()
        ));
    }
    let fleet = get(&state.fleet, ((), limit, w));
    let fleet_bound = signed(limit_of(limit)) + get(&state.fleet_overages, ((), limit, w));
    if fleet > fleet_bound {
        state.violation(format!(
            "fleet {limit:?} at {}: usage {fleet} > limit + overages {fleet_bound}",
            now.as_millis()
        ));
    }
}

/// What instance `i` reports: the fleet's counters within the limits (plus overages), its
/// available part within its fair share, in-flight within CONC.
fn check_snapshot(state: &mut State, i: usize, snapshot: &Snapshot, now: Timestamp) {
    if snapshot.instances != usize::try_from(INSTANCES).unwrap() {
        let n = snapshot.instances;
        state.violation(format!("instance {i} sees {n} instances"));
    }
    let Some(model) = snapshot.models.first() else {
        state.violation(format!("instance {i} reports no model"));
        return;
    };
    for limit in WindowLimit::ALL {
        let Some(r) = model.window(limit) else {
            state.violation(format!("instance {i} does not report {limit:?}"));
            continue;
        };
        let w = window(limit, now);
        let bound = signed(limit_of(limit)) + get(&state.fleet_overages, ((), limit, w));
        if signed(r.used) > bound {
            state.violation(format!(
                "instance {i} sees {limit:?} used {} > limit + overages {bound} at {}",
                r.used,
                now.as_millis()
            ));
        }
        if r.available > share(limit_of(limit)) {
            state.violation(format!(
                "instance {i} offers {} of {limit:?}, more than its fair share",
                r.available
            ));
        }
    }
    match model.concurrent_requests {
        Some(c) if c.used > CONC => {
            state.violation(format!("instance {i} sees {} in flight > CONC", c.used));
        }
        Some(_) => {}
        None => state.violation(format!("instance {i} does not report concurrency")),
    }
    let own_in_flight: u64 = snapshot.job_types.iter().map(|t| t.in_flight).sum();
    if own_in_flight > share(CONC) {
        state.violation(format!(
            "instance {i} runs {own_in_flight} jobs > its share of CONC {}",
            share(CONC)
        ));
    }
}

/// What a run amounted to.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub(super) jobs: usize,
    pub(super) completed: usize,
    pub(super) exhausted: usize,
    /// Per instance: completed jobs queued in one minute and started in a later one.
    pub(super) waited_across_a_minute: Vec<usize>,
    pub(super) longest_wait: Duration,
    pub(super) max_running: u64,
    pub(super) snapshots: u64,
    /// (limit, window) pairs that saw an overage.
    pub(super) overages: usize,
    /// Estimated tokens of the jobs started in each minute with starts, in order.
    pub(super) started_tokens_per_minute: Vec<u64>,
    pub(super) violation_count: usize,
    pub(super) violations: Vec<String>,
}

impl Summary {
    pub(super) fn describe(&self) -> String {
        let mut text = format!(
            "{} jobs: {} completed, {} exhausted; waited across a minute per instance {:?}; \
             longest wait {:?}; most running {}; {} snapshots; overages in {} windows; \
             tokens started per minute {:?}",
            self.jobs,
            self.completed,
            self.exhausted,
            self.waited_across_a_minute,
            self.longest_wait,
            self.max_running,
            self.snapshots,
            self.overages,
            self.started_tokens_per_minute,
        );
        if self.violation_count > 0 {
            let _ = write!(text, "\n{} violation(s):", self.violation_count);
            for v in &self.violations {
                let _ = write!(text, "\n  {v}");
            }
        }
        text
    }
}
