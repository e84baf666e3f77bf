//! The checks of the stress test: recorded facts against the predictor and against the limits.
//!
//! Every check reads the records of a finished run (acquisitions with the server's admission
//! times, availability samples, ratio events), never exact instants: a scaled clock turns
//! milliseconds of wall time into seconds, so comparisons near a minute boundary allow
//! [`AMBIGUITY_MS`], and bounds on how late the fleet answers allow a second of wall time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::predictor::{self, MINUTE_MS, Prediction, Scenario, deadlines, window};
use super::replay::{Answer, DatasetJob, RatioEvent, Record, Sample};

/// What a check found: lines for the report, and failures.
#[derive(Default)]
pub struct Verdict {
    pub report: String,
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn note(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.report, "{}", line.as_ref());
    }

    pub fn fail(&mut self, check: &str, what: impl AsRef<str>) {
        self.failures.push(format!("({check}) {}", what.as_ref()));
    }

    /// Fails `check` with `what` unless `ok`.
    pub fn expect(&mut self, ok: bool, check: &str, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(check, what());
        }
    }
}

/// How long after a boundary an admission may have been dated although it happened before it
/// (the server dates a lease when its request handler resumes), and how late the server may
/// have read a request the client sent before a boundary; in ms of the shared clock.
pub const AMBIGUITY_MS: u64 = 2_000;

/// What a run recorded.
pub struct Recorded<'a> {
    pub records: &'a [Record],
    pub samples: &'a [Sample],
    pub ratio_events: &'a [RatioEvent],
}

/// Everything the checks read.
pub struct Facts<'a> {
    pub scenario: &'a Scenario,
    pub jobs: &'a [DatasetJob],
    /// Every acquisition, the re-queued ones included.
    pub all_records: &'a [Record],
    /// The acquisitions of the dataset's jobs (not the re-queued ones).
    pub records: Vec<&'a Record>,
    pub samples: &'a [Sample],
    /// Per instance, its samples by the instant they were taken.
    by_instance: Vec<Vec<&'a Sample>>,
    pub ratio_events: &'a [RatioEvent],
    /// The prediction from the dataset's arrivals.
    pub planned: &'a Prediction,
    /// The prediction from the instants the requests really left (what the fleet saw).
    pub actual: &'a Prediction,
    /// See [`AMBIGUITY_MS`].
    pub ambiguity_ms: u64,
    /// How long the fleet may take to answer a burst (all the waiters admitted at a boundary,
    /// all the rejections at `:05`): one second of wall time, in ms of the shared clock.
    pub lag_ms: u64,
}

impl<'a> Facts<'a> {
    /// `planned` and `actual`: the predictions from the dataset's arrivals and from the instants
    /// requests left; `scale`: how much faster than wall time the shared clock runs.
    pub fn new(
        scenario: &'a Scenario,
        jobs: &'a [DatasetJob],
        recorded: &Recorded<'a>,
        (planned, actual): (&'a Prediction, &'a Prediction),
        scale: u32,
    ) -> Self {
        let mut by_instance = vec![Vec::new(); scenario.instances];
        for sample in recorded.samples {
            by_instance[sample.instance].push(sample);
        }
        for samples in &mut by_instance {
            samples.sort_by_key(|s| s.sent_ms);
        }
        Self {
            scenario,
            jobs,
            all_records: recorded.records,
            records: recorded.records.iter().filter(|r| !r.requeued).collect(),
            samples: recorded.samples,
            by_instance,
            ratio_events: recorded.ratio_events,
            planned,
            actual,
            ambiguity_ms: AMBIGUITY_MS,
            lag_ms: 1_000 * u64::from(scale),
        }
    }

    /// Latencies of acquisitions that did not wait, in ms of the shared clock: leases of the
    /// fixed, request-bound types handed out in the window they were sent in (capacity for them
    /// never returns within a window, so they started when they arrived).
    pub fn latencies(&self) -> Vec<u64> {
        let fixed: Vec<usize> = (0..self.scenario.job_types.len())
            .filter(|&t| !self.scenario.job_types[t].flexible)
            .collect();
        let mut latencies: Vec<u64> = self
            .records
            .iter()
            .filter(|r| fixed.contains(&r.job_type))
            .filter_map(|r| match r.answer {
                Answer::Lease { at_ms, .. } if window(at_ms) == window(r.sent_ms) => {
                    Some(at_ms.saturating_sub(r.sent_ms))
                }
                _ => None,
            })
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// Whether the server may have seen `sent_ms` in a later window than the client.
    fn sent_near_boundary(&self, sent_ms: u64) -> bool {
        window(sent_ms) != window(sent_ms + self.ambiguity_ms)
    }

    /// The window an admission at `at_ms` of a job sent at `sent_ms` belongs to, or `None`
    /// when it may belong to the window before (an immediate admission recorded late).
    fn admission_window(&self, sent_ms: u64, at_ms: u64) -> Option<usize> {
        let boundary = at_ms / MINUTE_MS * MINUTE_MS;
        let late = at_ms - boundary < self.ambiguity_ms;
        let sent_just_before = sent_ms < boundary && sent_ms + self.ambiguity_ms >= boundary;
        (!(late && sent_just_before)).then(|| window(at_ms))
    }

    /// The instance's latest sample answered before `at_ms`, if it was taken within `within_ms`
    /// of it.
    fn sample_before(&self, instance: usize, at_ms: u64, within_ms: u64) -> Option<&Sample> {
        let samples = &self.by_instance[instance];
        let end = samples.partition_point(|s| s.sent_ms < at_ms);
        samples[..end]
            .iter()
            .rev()
            .take_while(|s| s.sent_ms + within_ms >= at_ms)
            .find(|s| s.answered_ms < at_ms)
            .copied()
    }
}

/// Check 1: no model's minute counters ever exceed their limits, fleet-wide, nor any instance's
/// own usage its fair share; per window, what the leases took fits in the limits; no model is
/// used before it can be. (The fixed type's exact usage per window is checked with 3 and 4.)
pub fn capacity(facts: &Facts<'_>, verdict: &mut Verdict) {
    let s = facts.scenario;
    // 1a. Every sample of every instance: fleet-wide used ≤ limit, remaining = limit − used,
    // own ≤ share.
    let mut peak: Vec<(u64, u64)> = vec![(0, 0); s.models.len()];
    for sample in facts.samples {
        for (m, model) in s.models.iter().enumerate() {
            for (kind, figures) in [("requests", &sample.requests), ("tokens", &sample.tokens)] {
                let Some(f) = figures.get(m) else { continue };
                verdict.expect(f.used <= f.limit, "1", || {
                    format!(
                        "instance {} saw {} {kind} used of {} on {} at {} ms",
                        sample.instance, f.used, f.limit, model.name, sample.sent_ms
                    )
                });
                verdict.expect(f.remaining == f.limit - f.used.min(f.limit), "1", || {
                    format!("remaining ≠ limit − used: {f:?}")
                });
                verdict.expect(f.own <= f.share, "1", || {
                    format!(
                        "instance {} used {} {kind} of {}, over its share {} at {} ms",
                        sample.instance, f.own, model.name, f.share, sample.sent_ms
                    )
                });
            }
            peak[m].0 = peak[m].0.max(sample.requests[m].used);
            peak[m].1 = peak[m].1.max(sample.tokens[m].used);
        }
    }
    // 1b. Per model and window, from the leases: the requests reserved and the tokens used fit
    // (usage never exceeds the estimates, so the counters only ever hold reservations and
    // refunded amounts). An admission just after a boundary may belong to the window before:
    // it is put there as far as that window has room.
    let mut definite = BTreeMap::<(usize, usize), (u64, u64)>::new();
    let mut ambiguous = BTreeMap::<(usize, usize), (u64, u64)>::new();
    for r in facts.all_records {
        let Answer::Lease { model, at_ms, .. } = r.answer else {
            continue;
        };
        let job = &facts.jobs[r.job];
        let estimate = s.job_types[r.job_type].requests;
        let target = match facts.admission_window(r.sent_ms, at_ms) {
            Some(w) => definite.entry((model, w)).or_default(),
            None => ambiguous.entry((model, window(at_ms))).or_default(),
        };
        target.0 += estimate;
        target.1 += job.tokens;
        // 1c. No model before the predictor's earliest use.
        verdict.expect(
            at_ms + facts.ambiguity_ms >= facts.actual.earliest_use_ms[model],
            "1",
            || {
                format!(
                    "{} leased {} at {at_ms} ms, before it can be used ({} ms)",
                    job.id, s.models[model].name, facts.actual.earliest_use_ms[model]
                )
            },
        );
    }
    let windows = facts
        .all_records
        .iter()
        .filter_map(|r| match r.answer {
            Answer::Lease { at_ms, .. } => Some(window(at_ms) + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    for (m, model) in s.models.iter().enumerate() {
        let limits = (
            model.requests_per_minute.unwrap_or(u64::MAX),
            model.tokens_per_minute.unwrap_or(u64::MAX),
        );
        let mut line = format!("  {:8} requests per window:", model.name);
        let mut previous_room = (0u64, 0u64);
        for w in 0..windows {
            let d = definite.get(&(m, w)).copied().unwrap_or_default();
            let a = ambiguous.get(&(m, w)).copied().unwrap_or_default();
            let requests = d.0 + a.0.saturating_sub(previous_room.0);
            let tokens = d.1 + a.1.saturating_sub(previous_room.1);
            verdict.expect(requests <= limits.0 && tokens <= limits.1, "1", || {
                format!(
                    "{} window {w}: leases took {requests} requests and {tokens} tokens \
                     (limits {} and {})",
                    model.name, limits.0, limits.1
                )
            });
            previous_room = (
                limits.0.saturating_sub(requests),
                limits.1.saturating_sub(tokens),
            );
            let _ = write!(line, " {}", d.0 + a.0);
        }
        verdict.note(format!(
            "{line}  (limit {}; sampled peaks: {} requests, {} tokens)",
            limits.0, peak[m].0, peak[m].1
        ));
    }
}

/// Per instance, job type, window and model: admitted jobs, and rejected jobs per window.
type Counts = BTreeMap<(usize, usize, usize), (Vec<u64>, u64)>;

/// Per instance, job type and window sent: jobs whose window is uncertain (sent or admitted
/// near a boundary).
type Uncertain = BTreeMap<(usize, usize, usize), u64>;

fn observed_counts(facts: &Facts<'_>) -> (Counts, Uncertain) {
    let models = facts.scenario.models.len();
    let mut counts = Counts::new();
    let mut uncertain = Uncertain::new();
    for r in &facts.records {
        let key = |w| (r.instance, r.job_type, w);
        let near = facts.sent_near_boundary(r.sent_ms);
        match r.answer {
            Answer::Lease { model, at_ms, .. } => {
                let w = facts.admission_window(r.sent_ms, at_ms);
                if near || w.is_none() {
                    *uncertain
                        .entry((r.instance, r.job_type, window(r.sent_ms)))
                        .or_default() += 1;
                }
                let w = w.unwrap_or(window(at_ms));
                counts
                    .entry(key(w))
                    .or_insert_with(|| (vec![0; models], 0))
                    .0[model] += 1;
            }
            Answer::Rejected => {
                if near {
                    *uncertain
                        .entry((r.instance, r.job_type, window(r.sent_ms)))
                        .or_default() += 1;
                }
                // Rejected at the end of its last wait (w:05), answered a little later.
                let w = window(r.answered_ms.saturating_sub(facts.ambiguity_ms));
                counts
                    .entry(key(w))
                    .or_insert_with(|| (vec![0; models], 0))
                    .1 += 1;
            }
            Answer::Broken(_) => {}
        }
    }
    (counts, uncertain)
}

/// Checks 3 and 4 for the types the predictor is exact for (fixed ratios): per instance,
/// window and model, the jobs admitted, and per window the jobs rejected, equal the prediction
/// (give or take the jobs sent or admitted so near a boundary that their window is uncertain).
pub fn fixed_types_follow_the_prediction(facts: &Facts<'_>, verdict: &mut Verdict) {
    let s = facts.scenario;
    let (counts, uncertain) = observed_counts(facts);
    let p = facts.actual;
    for (t, job_type) in s.job_types.iter().enumerate() {
        if job_type.flexible {
            continue;
        }
        let mut per_model_total = vec![(0u64, 0u64); s.models.len()];
        let mut rejected_total = (0u64, 0u64);
        for i in 0..s.instances {
            for w in 0..p.windows + 2 {
                // A job whose window is uncertain moves the cells of the windows it may wait in.
                let slack: u64 = (w.saturating_sub(s.models.len())..=w)
                    .map(|sent| uncertain.get(&(i, t, sent)).copied().unwrap_or(0))
                    .sum();
                let empty = (vec![0; s.models.len()], 0);
                let (admitted, rejected) = counts.get(&(i, t, w)).unwrap_or(&empty);
                let cell = p.cells[i][t].get(w);
                for m in 0..s.models.len() {
                    let predicted = cell.map_or(0, |c| c.admitted[m]);
                    per_model_total[m].0 += admitted[m];
                    per_model_total[m].1 += predicted;
                    verdict.expect(admitted[m].abs_diff(predicted) <= slack, "3", || {
                        format!(
                            "{} on instance {i}, window {w}, {}: {} admitted, {predicted} \
                             predicted (±{slack})",
                            job_type.name, s.models[m].name, admitted[m]
                        )
                    });
                }
                let predicted = cell.map_or(0, |c| c.rejected);
                rejected_total.0 += rejected;
                rejected_total.1 += predicted;
                verdict.expect(rejected.abs_diff(predicted) <= slack, "4", || {
                    format!(
                        "{} on instance {i}, window {w}: {rejected} rejected, {predicted} \
                         predicted (±{slack})",
                        job_type.name
                    )
                });
            }
        }
        let models: Vec<String> = s
            .models
            .iter()
            .zip(&per_model_total)
            .map(|(m, (o, p))| format!("{} {o} (predicted {p})", m.name))
            .collect();
        verdict.note(format!(
            "  {} (fixed): admitted {}; rejected {} (predicted {})",
            job_type.name,
            models.join(", "),
            rejected_total.0,
            rejected_total.1
        ));
    }
}

/// Check 3 (escalation down the chain) and 4 (rejection when all are full), for every type:
/// a job runs on a model only after it waited out its whole bound on every model before it,
/// and just before it gave up on a model, the instance's samples show that model full for its
/// type (no slot, jobs waiting). A rejected job waited out its bound on every model, each of
/// them full.
pub fn escalation_and_rejection(facts: &Facts<'_>, verdict: &mut Verdict) {
    let s = facts.scenario;
    let models = s.models.len();
    let slack = facts.ambiguity_ms;
    let (mut escalated, mut rejected, mut witnessed, mut unwitnessed) = (0, 0, 0, 0);
    let mut per_window = BTreeMap::<usize, Vec<u64>>::new();
    for r in &facts.records {
        let job = &facts.jobs[r.job];
        let name = &s.job_types[r.job_type].name;
        // The waits as the client dated the request, and as the server may have (later).
        let early = deadlines(r.sent_ms, models);
        let late = deadlines(r.sent_ms + slack, models);
        let gave_up_on = match r.answer {
            Answer::Lease { model, at_ms, .. } => {
                per_window
                    .entry(window(at_ms))
                    .or_insert_with(|| vec![0; models])[model] += 1;
                if model > 0 {
                    escalated += 1;
                    verdict.expect(at_ms >= early[model - 1], "3", || {
                        format!(
                            "{} ({name}) ran on {} at {at_ms} ms before its wait on {} ended \
                             ({} ms)",
                            job.id,
                            s.models[model].name,
                            s.models[model - 1].name,
                            early[model - 1]
                        )
                    });
                }
                verdict.expect(at_ms <= late[model] + facts.lag_ms, "3", || {
                    format!(
                        "{} ({name}) got {} at {at_ms} ms, after its wait there ended ({} ms)",
                        job.id, s.models[model].name, late[model]
                    )
                });
                model
            }
            Answer::Rejected => {
                rejected += 1;
                verdict.expect(
                    r.answered_ms + slack >= early[models - 1]
                        && r.answered_ms <= late[models - 1] + facts.lag_ms,
                    "4",
                    || {
                        format!(
                            "{} ({name}) was rejected at {} ms; its waits end at {} ms",
                            job.id,
                            r.answered_ms,
                            early[models - 1]
                        )
                    },
                );
                verdict.expect(
                    facts.actual.earliest_rejection_ms <= r.answered_ms + slack,
                    "4",
                    || format!("{} rejected before any rejection is possible", job.id),
                );
                models
            }
            Answer::Broken(ref why) => {
                verdict.fail("replay", format!("{}: {why}", job.id));
                continue;
            }
        };
        // Each model it gave up on was full for its type just before it left.
        for (m, &left_at) in early.iter().enumerate().take(gave_up_on) {
            if facts.sent_near_boundary(r.sent_ms) {
                continue;
            }
            let Some(sample) = facts.sample_before(r.instance, left_at, 3_000 + slack) else {
                unwitnessed += 1;
                continue;
            };
            witnessed += 1;
            let (slots, waiting) = (sample.slots[r.job_type][m], sample.waiting[r.job_type][m]);
            verdict.expect(
                slots == 0 && waiting >= 1,
                if gave_up_on == models { "4" } else { "3" },
                || {
                    format!(
                        "{} ({name}) left {} at {} ms, but instance {} had {slots} slot(s) and \
                     {waiting} waiting there at {} ms",
                        job.id, s.models[m].name, left_at, r.instance, sample.sent_ms
                    )
                },
            );
        }
    }
    let table: Vec<String> = per_window
        .iter()
        .map(|(w, per_model)| {
            let figures: Vec<String> = per_model.iter().map(u64::to_string).collect();
            format!("{w}:{}", figures.join("/"))
        })
        .collect();
    verdict.note(format!("  leases per window (a/b/c): {}", table.join(" ")));
    verdict.note(format!(
        "  escalated leases {escalated}, rejections {rejected} (predicted with the initial \
         ratios: {}); 'full when left' witnessed by a sample {witnessed} times, no sample \
         close enough {unwitnessed} times",
        facts.actual.rejected(None)
    ));
    verdict.expect(escalated > 0, "3", || "no job ever escalated".into());
    verdict.expect(rejected > 0, "4", || "no job was ever rejected".into());
    verdict.expect(witnessed > 0 && unwitnessed * 10 <= witnessed, "3", || {
        format!("too few samples to witness escalations ({witnessed} vs {unwitnessed})")
    });
}

/// Capacity returns at each minute boundary: where some job of an instance and type waited
/// across a boundary on a model that has capacity for that type, that model admits jobs of the
/// type right at the boundary.
pub fn capacity_returns_at_boundaries(facts: &Facts<'_>, verdict: &mut Verdict) {
    let s = facts.scenario;
    let slack = facts.lag_ms;
    // (instance, type, model, window) → whether a waiter crossed into it, admitted at its start.
    let mut crossed = BTreeMap::<(usize, usize, usize, usize), bool>::new();
    let mut at_start = BTreeMap::<(usize, usize, usize, usize), u64>::new();
    for r in &facts.records {
        let chain = deadlines(r.sent_ms, s.models.len());
        let (last, at) = match r.answer {
            Answer::Lease { model, at_ms, .. } => (model, Some(at_ms)),
            Answer::Rejected => (s.models.len() - 1, None),
            Answer::Broken(_) => continue,
        };
        // It waited on `m` across the boundary before chain[m] when it was still there then
        // (unless its waits may have ended a minute later than the client dates them).
        let certain = !facts.sent_near_boundary(r.sent_ms);
        for m in (0..=last).filter(|_| certain) {
            let boundary = chain[m] - predictor::GRACE_MS;
            let still_waiting = at.is_none_or(|at| at + 1 > boundary) || m < last;
            let started_waiting = if m == 0 { r.sent_ms } else { chain[m - 1] };
            if still_waiting && started_waiting < boundary {
                crossed.insert((r.instance, r.job_type, m, window(boundary)), true);
            }
        }
        if let Some(at) = at {
            let boundary = at / MINUTE_MS * MINUTE_MS;
            if at < boundary + slack {
                *at_start
                    .entry((r.instance, r.job_type, last, window(boundary)))
                    .or_default() += 1;
            }
        }
    }
    let (mut checked, mut skipped) = (0, 0);
    for &(i, t, m, w) in crossed.keys() {
        // The type's capacity there, with the ratio the instance had just before.
        let boundary = w as u64 * MINUTE_MS;
        let Some(sample) = facts.sample_before(i, boundary, 4_000) else {
            skipped += 1;
            continue;
        };
        if s.capacity(sample.ratio[t], t, m) == 0 {
            skipped += 1;
            continue;
        }
        checked += 1;
        let admitted = at_start.get(&(i, t, m, w)).copied().unwrap_or(0);
        verdict.expect(admitted > 0, "5", || {
            format!(
                "{} waited on {} of instance {i} across {} ms, but nothing was admitted there \
                 at the boundary",
                s.job_types[t].name, s.models[m].name, boundary
            )
        });
    }
    verdict.note(format!(
        "  boundaries crossed by waiters: {checked} checked (capacity returned at once), \
         {skipped} skipped (no sample, or no capacity for the type)"
    ));
}

/// Check 5: rejected jobs queued again after a minute boundary with room get a lease at once:
/// on the first model, within the latency slack. `strict`: no ratio moved meanwhile (else a
/// job whose type's ratio was lowered on its instance around then may wait).
pub fn requeued_run_at_once(
    facts: &Facts<'_>,
    slack_ms: u64,
    from_ms: u64,
    strict: bool,
    verdict: &mut Verdict,
) -> usize {
    let scenario = facts.scenario;
    let (jobs, records, ratio_events) = (facts.jobs, facts.all_records, facts.ratio_events);
    let mut count = 0;
    let mut excused = 0;
    for r in records.iter().filter(|r| r.requeued && r.due_ms >= from_ms) {
        count += 1;
        let job = &jobs[r.job];
        let name = &scenario.job_types[r.job_type].name;
        let at_once = matches!(
            r.answer,
            Answer::Lease { model: 0, at_ms, .. } if at_ms <= r.sent_ms + slack_ms
        );
        if at_once {
            continue;
        }
        let lowered = ratio_events.iter().any(|e| {
            e.instance == r.instance
                && e.job_type == *name
                && e.to < e.from
                && e.seen_ms + slack_ms >= r.due_ms
                && e.seen_ms <= r.answered_ms + slack_ms
        });
        if lowered && !strict {
            excused += 1;
            continue;
        }
        verdict.fail(
            "5",
            format!(
                "{} ({name}) queued again on instance {} at {} ms: {:?} answered at {} ms",
                job.id, r.instance, r.sent_ms, r.answer, r.answered_ms
            ),
        );
    }
    if excused > 0 {
        verdict.note(format!(
            "  {excused} re-queued job(s) waited after their type's ratio was lowered on their \
             instance"
        ));
    }
    count
}

/// Check 2: fixed ratios never change on any instance; flexible ones do (during the replay,
/// where the predictor sees loaded types next to idle ones); ratios always sum to 1. Check 7
/// (in part): instances' ratios differ, since each adapts to its own load.
pub fn ratios(facts: &Facts<'_>, until_ms: u64, verdict: &mut Verdict) {
    let s = facts.scenario;
    let initial = s.initial_ratios();
    let mut moved = vec![false; s.job_types.len()];
    let mut differ = 0usize;
    let mut rounds = BTreeMap::<u64, Vec<&Sample>>::new();
    for sample in facts.samples {
        let sum: f64 = sample.ratio.iter().sum();
        verdict.expect((sum - 1.0).abs() < 1e-6, "2", || {
            format!("ratios of instance {} sum to {sum}", sample.instance)
        });
        for (t, job_type) in s.job_types.iter().enumerate() {
            let r = sample.ratio[t];
            if job_type.flexible {
                moved[t] |= (r - initial[t]).abs() > 1e-6 && sample.sent_ms <= until_ms;
            } else {
                verdict.expect((r - initial[t]).abs() < 1e-9, "2", || {
                    format!(
                        "fixed {} has ratio {r} on instance {} at {} ms",
                        job_type.name, sample.instance, sample.sent_ms
                    )
                });
            }
            verdict.expect(sample.flexible[t] == job_type.flexible, "2", || {
                format!(
                    "{} reported flexible = {}",
                    job_type.name, sample.flexible[t]
                )
            });
        }
        rounds
            .entry(sample.sent_ms / 1_000)
            .or_default()
            .push(sample);
    }
    for round in rounds.values() {
        if round.iter().any(|a| {
            a.ratio
                .iter()
                .zip(&round[0].ratio)
                .any(|(x, y)| (x - y).abs() > 1e-6)
        }) {
            differ += 1;
        }
    }
    // Before any adjustment (the first round of samples), every instance has the initial
    // ratios: the three types without one have 0.1 each.
    let first = rounds.values().next().cloned().unwrap_or_default();
    verdict.expect(first.len() == s.instances, "2", || {
        format!("the first round of samples has {} instance(s)", first.len())
    });
    for sample in first {
        let initial_ok = sample
            .ratio
            .iter()
            .zip(&initial)
            .all(|(r, i)| (r - i).abs() < 1e-9);
        verdict.expect(initial_ok, "2", || {
            format!(
                "instance {} started with ratios {:?}, not {initial:?}",
                sample.instance, sample.ratio
            )
        });
    }
    for e in facts.ratio_events {
        let fixed = s
            .job_type(&e.job_type)
            .is_some_and(|t| !s.job_types[t].flexible);
        verdict.expect(!fixed, "2", || format!("a fixed ratio moved: {e:?}"));
    }
    let during: Vec<&RatioEvent> = facts
        .ratio_events
        .iter()
        .filter(|e| e.seen_ms <= until_ms)
        .collect();
    // Moves where the predictor expects pressure (this window or the one before).
    let explained = during
        .iter()
        .filter(|e| {
            let w = window(e.seen_ms);
            (w.saturating_sub(1)..=w).any(|w| {
                w < facts.planned.windows && facts.planned.imbalanced(s, e.instance, w, 0.3, 0.7)
            })
        })
        .count();
    let flagged = (0..s.instances)
        .flat_map(|i| (0..facts.planned.windows).map(move |w| (i, w)))
        .filter(|&(i, w)| facts.planned.imbalanced(s, i, w, 0.3, 0.7))
        .count();
    let names: Vec<&str> = s
        .job_types
        .iter()
        .zip(&moved)
        .filter(|(_, m)| **m)
        .map(|(t, _)| t.name.as_str())
        .collect();
    verdict.note(format!(
        "  ratio changes during the replay: {} ({} where the predictor sees loaded next to idle \
         types, which it does in {flagged} of {} instance-minutes); flexible types that moved: \
         {names:?}; sample rounds where instances' ratios differ: {differ} of {}",
        during.len(),
        explained,
        s.instances * facts.planned.windows,
        rounds.len()
    ));
    verdict.expect(!names.is_empty(), "2", || {
        "no flexible ratio moved during the replay".into()
    });
    verdict.expect(explained > 0, "2", || {
        "no ratio change where the predictor expects one".into()
    });
    verdict.expect(differ > 0, "7", || {
        "the instances' ratios never differed".into()
    });
}

/// Check 6 (in part): every instance sees the fleet's usage, not only its own: in each round of
/// samples, each instance's fleet-wide `used` is close to the sum of every instance's `own`.
pub fn fleet_usage_is_shared(facts: &Facts<'_>, verdict: &mut Verdict) {
    let s = facts.scenario;
    let mut rounds = BTreeMap::<u64, Vec<&Sample>>::new();
    for sample in facts.samples {
        rounds
            .entry(sample.sent_ms / 1_000)
            .or_default()
            .push(sample);
    }
    let (mut compared, mut close, mut others_seen) = (0u64, 0u64, 0u64);
    for round in rounds.values() {
        if round.len() != s.instances {
            continue;
        }
        // Only rounds answered within a short time (a moving fleet changes meanwhile).
        let spread = round.iter().map(|x| x.answered_ms).max().unwrap_or(0)
            - round.iter().map(|x| x.sent_ms).min().unwrap_or(0);
        if spread > 2 * facts.ambiguity_ms {
            continue;
        }
        for m in 0..s.models.len() {
            let total: u64 = round.iter().map(|x| x.requests[m].own).sum();
            if total == 0 {
                continue;
            }
            for x in round {
                compared += 1;
                let used = x.requests[m].used;
                if used.abs_diff(total) * 20 <= total.max(20) {
                    close += 1;
                }
                if total > x.requests[m].own && used > x.requests[m].own {
                    others_seen += 1;
                }
            }
        }
    }
    verdict.note(format!(
        "  fleet-wide used vs Σ own per sample round: within 5 % in {close} of {compared} \
         comparisons; others' usage visible in {others_seen}"
    ));
    verdict.expect(compared > 0 && close * 10 >= compared * 9, "6", || {
        format!("instances disagree on the fleet's usage ({close} of {compared} close)")
    });
}
