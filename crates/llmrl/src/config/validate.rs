//! The validated stage: every value checked, names resolved to dense indices.

use std::sync::Arc;
use std::time::Duration;

use super::problem::{Problem, path_of};
use super::{Config, ConfigError, DurationValue, Unknown};
use crate::backend::FailureMode;
use crate::usage::Pricing;
use crate::window::WindowLimit;

/// `1.0` as a ratio in parts per billion: ratios are integers so that slot counts are exact.
pub(crate) const RATIO_ONE: u64 = 1_000_000_000;
/// Largest count accepted: every integer up to here is exact in the `f64` the raw stage holds.
const MAX_COUNT: f64 = 9_007_199_254_740_992.0;
/// Tolerance when checking that ratios sum to 1.
const RATIO_TOLERANCE: f64 = 1e-6;

/// A validated configuration on dense indices.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) models: Vec<ModelSpec>,
    pub(crate) job_types: Vec<JobTypeSpec>,
    /// Model indices in escalation order.
    pub(crate) order: Vec<usize>,
    pub(crate) memory: MemorySpec,
    pub(crate) ratio_adjustment: RatioAdjustmentSpec,
    pub(crate) instance_id: Option<String>,
    pub(crate) backend: BackendSpec,
    pub(crate) warnings: Vec<String>,
}

/// Validated backend settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BackendSpec {
    pub(crate) failure_mode: FailureMode,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) stale_after: Duration,
    pub(crate) timeout: Duration,
}

#[derive(Clone, Debug)]
pub(crate) struct ModelSpec {
    pub(crate) name: Arc<str>,
    /// Indexed like [`WindowLimit::ALL`].
    pub(crate) limits: [Option<u64>; 4],
    pub(crate) concurrency: Option<u64>,
    pub(crate) pricing: Pricing,
    pub(crate) min_capacity: Option<u64>,
    pub(crate) max_capacity: Option<u64>,
}

#[derive(Clone, Debug)]
pub(crate) struct JobTypeSpec {
    pub(crate) name: Arc<str>,
    pub(crate) tokens: u64,
    pub(crate) requests: u64,
    pub(crate) memory_kb: u64,
    /// Initial ratio in parts per billion.
    pub(crate) ratio: u64,
    pub(crate) flexible: bool,
    /// Per model index.
    pub(crate) max_wait: Vec<WaitBound>,
}

impl JobTypeSpec {
    /// The estimate this type reserves against `limit`.
    pub(crate) const fn estimate(&self, limit: WindowLimit) -> u64 {
        if limit.counts_tokens() {
            self.tokens
        } else {
            self.requests
        }
    }
}

/// How long a job waits on one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitBound {
    /// Until the first minute boundary after it starts waiting, plus 5 s.
    NextMinute,
    /// A fixed bound; zero means never wait.
    For(Duration),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MemorySpec {
    pub(crate) max_memory_kb: Option<u64>,
    pub(crate) free_memory_ratio: f64,
    pub(crate) recalculation_interval: Duration,
}

impl MemorySpec {
    /// The settings as a person would write them, for errors.
    pub(crate) fn describe(&self) -> String {
        match self.max_memory_kb {
            Some(kb) => format!("max_memory_kb = {kb}"),
            None => format!(
                "measured, free_memory_ratio = {}, recalculation_interval = {:?}",
                self.free_memory_ratio, self.recalculation_interval
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RatioAdjustmentSpec {
    pub(crate) interval: Duration,
    pub(crate) releases_per_adjustment: u64,
    pub(crate) high_load: f64,
    pub(crate) low_load: f64,
    pub(crate) max_adjustment: f64,
    pub(crate) min_ratio: f64,
}

/// A number as a person would write it: `1e300`, not three hundred digits.
fn number(n: f64) -> String {
    if n.is_finite() && n.abs() >= 1e16 {
        format!("{n:e}")
    } else {
        n.to_string()
    }
}

struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, keys: &[&str], value: impl ToString, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path_of(keys),
            value: value.to_string(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, keys: &[&str], unknown: &Unknown) {
        for (key, value) in unknown {
            let mut path = keys.to_vec();
            path.push(key);
            self.problem(&path, value, "is not a known setting");
        }
    }

    /// A whole, finite, non-negative count (positive unless `zero_ok`).
    fn count(&mut self, keys: &[&str], value: Option<f64>, zero_ok: bool) -> Option<u64> {
        let n = value?;
        let message = if n.is_nan() {
            "is not a number"
        } else if n.is_infinite() {
            "must be finite"
        } else if n < 0.0 {
            "must not be negative"
        } else if n.fract() != 0.0 {
            "must be a whole number"
        } else if n == 0.0 && !zero_ok {
            "must be greater than 0 (leave it out for no limit)"
        } else if n > MAX_COUNT {
            "is too large (at most 2^53)"
        } else {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
            return Some(n as u64);
        };
        self.problem(keys, number(n), message);
        None
    }

    /// A finite number in `[low, high]` (with `low` excluded when `open_low`).
    fn fraction(&mut self, keys: &[&str], n: f64, low: f64, open_low: bool, high: f64) -> bool {
        let below = if open_low { n <= low } else { n < low };
        if n.is_finite() && !below && n <= high {
            return true;
        }
        let bracket = if open_low { '(' } else { '[' };
        self.problem(
            keys,
            n,
            format!("must be a number in {bracket}{low}, {high}]"),
        );
        false
    }

    fn duration(&mut self, keys: &[&str], value: Option<&DurationValue>) -> Option<Duration> {
        match value?.resolve() {
            Ok(d) => d,
            Err(message) => {
                self.problem(
                    keys,
                    value.map_or(String::new(), ToString::to_string),
                    message,
                );
                None
            }
        }
    }
}

#[allow(clippy::too_many_lines)] // one pass over the config, in file order
pub(crate) fn validate(config: &Config) -> Result<Spec, ConfigError> {
    let mut v = Validator {
        problems: Vec::new(),
    };
    v.unknown(&[], &config.unknown);

    if config.models.is_empty() {
        v.problem(&["models"], "", "at least one model is required");
    }
    let mut models = Vec::with_capacity(config.models.len());
    for (name, model) in &config.models {
        let at = |key: &'static str| ["models", name.as_str(), key];
        if name.trim().is_empty() {
            v.problem(&["models", name], "", "model ids must not be empty");
        }
        let raw = [
            model.tokens_per_minute,
            model.tokens_per_day,
            model.requests_per_minute,
            model.requests_per_day,
        ];
        let mut limits = [None; 4];
        for (limit, value) in WindowLimit::ALL.iter().zip(raw) {
            limits[limit.index()] = v.count(&at(limit.key()), value, false);
        }
        let concurrency = v.count(
            &at("max_concurrent_requests"),
            model.max_concurrent_requests,
            false,
        );
        let pricing = match model.pricing {
            None => {
                v.problem(
                    &at("pricing"),
                    "",
                    "is required: { input, cached, output } in USD per million tokens (0 for free)",
                );
                Pricing::default()
            }
            Some(p) => {
                for (key, price) in [
                    ("input", p.input),
                    ("cached", p.cached),
                    ("output", p.output),
                ] {
                    if !(price.is_finite() && price >= 0.0) {
                        v.problem(
                            &["models", name, "pricing", key],
                            price,
                            "must be finite and >= 0",
                        );
                    }
                }
                p
            }
        };
        let min_capacity = v.count(&at("min_capacity"), model.min_capacity, true);
        let max_capacity = v.count(&at("max_capacity"), model.max_capacity, false);
        if let (Some(min), Some(max)) = (min_capacity, max_capacity) {
            if min > max {
                v.problem(
                    &at("min_capacity"),
                    min,
                    format!("is above max_capacity ({max})"),
                );
            }
        }
        v.unknown(&["models", name], &model.unknown);
        models.push(ModelSpec {
            name: Arc::from(name.as_str()),
            limits,
            concurrency,
            pricing,
            min_capacity,
            max_capacity,
        });
    }

    let index_of = |id: &str| config.models.get_index_of(id);
    let mut order = Vec::new();
    match &config.escalation_order {
        None if config.models.len() > 1 => v.problem(
            &["escalation_order"],
            "",
            "is required when there are several models",
        ),
        None => order.extend(0..config.models.len()),
        Some(list) => {
            if list.is_empty() {
                v.problem(&["escalation_order"], "[]", "must name at least one model");
            }
            for (position, id) in list.iter().enumerate() {
                let path = format!("escalation_order[{position}]");
                match index_of(id) {
                    None => v.problems.push(Problem {
                        path,
                        value: format!("{id:?}"),
                        message: "is not a configured model".into(),
                    }),
                    Some(m) if order.contains(&m) => v.problems.push(Problem {
                        path,
                        value: format!("{id:?}"),
                        message: "appears twice in the escalation order".into(),
                    }),
                    Some(m) => order.push(m),
                }
            }
        }
    }

    let memory = validate_memory(&mut v, config);
    let backend = validate_backend(&mut v, config);
    let ratio_adjustment = validate_ratio_adjustment(&mut v, config);

    if config.job_types.is_empty() {
        v.problem(&["job_types"], "", "at least one job type is required");
    }
    let mut job_types = Vec::with_capacity(config.job_types.len());
    let mut given = Vec::with_capacity(config.job_types.len());
    let mut ratios_valid = true;
    for (name, job) in &config.job_types {
        let at = |key: &'static str| ["job_types", name.as_str(), key];
        if name.trim().is_empty() {
            v.problem(&["job_types", name], "", "job type names must not be empty");
        }
        let tokens = v
            .count(&at("estimated_tokens"), job.estimated_tokens, true)
            .unwrap_or(0);
        let requests = v
            .count(&at("estimated_requests"), job.estimated_requests, true)
            .unwrap_or(1);
        let memory_kb = v
            .count(&at("estimated_memory_kb"), job.estimated_memory_kb, true)
            .unwrap_or(0);
        let initial = job.ratio.and_then(|r| r.initial);
        if let Some(r) = initial {
            ratios_valid &= v.fraction(&["job_types", name, "ratio", "initial"], r, 0.0, true, 1.0);
        }
        given.push(initial);
        let mut max_wait = vec![WaitBound::NextMinute; models.len()];
        for (model, value) in &job.max_wait {
            let keys = ["job_types", name.as_str(), "max_wait", model.as_str()];
            let wait = v.duration(&keys, Some(value));
            match index_of(model) {
                None => v.problem(&keys, value, "is not a configured model"),
                Some(m) => {
                    if let Some(d) = wait {
                        max_wait[m] = WaitBound::For(d);
                    }
                }
            }
        }
        if let Some(max) = memory.max_memory_kb {
            if memory_kb > max {
                v.problem(
                    &at("estimated_memory_kb"),
                    memory_kb,
                    format!("is above memory.max_memory_kb ({max})"),
                );
            }
        }
        for &m in &order {
            let model = &models[m];
            for limit in WindowLimit::ALL {
                let (estimate, key) = if limit.counts_tokens() {
                    (tokens, "estimated_tokens")
                } else {
                    (requests, "estimated_requests")
                };
                if let Some(cap) = model.limits[limit.index()] {
                    if estimate > cap {
                        v.problem(
                            &at(key),
                            estimate,
                            format!(
                                "can never fit {} ({cap}): a job must fit whole",
                                path_of(&["models", &model.name, limit.key()])
                            ),
                        );
                    }
                }
            }
        }
        v.unknown(&["job_types", name], &job.unknown);
        job_types.push(JobTypeSpec {
            name: Arc::from(name.as_str()),
            tokens,
            requests,
            memory_kb,
            ratio: 0,
            flexible: job.ratio.and_then(|r| r.flexible).unwrap_or(true),
            max_wait,
        });
    }
    if ratios_valid && !given.is_empty() {
        match split_ratios(&given) {
            Ok(ratios) => {
                for (job, ratio) in job_types.iter_mut().zip(ratios) {
                    job.ratio = ratio;
                }
            }
            Err((value, message)) => v.problem(&["job_types"], value, message),
        }
    }
    if let Some(id) = &config.instance_id {
        if id.trim().is_empty() {
            v.problem(&["instance_id"], format!("{id:?}"), "must not be empty");
        }
    }

    if !v.problems.is_empty() {
        return Err(ConfigError::new(v.problems));
    }
    let mut spec = Spec {
        models,
        job_types,
        order,
        memory,
        ratio_adjustment,
        instance_id: config.instance_id.clone(),
        backend,
        warnings: Vec::new(),
    };
    spec.warnings = warnings(&spec);
    Ok(spec)
}

fn validate_memory(v: &mut Validator, config: &Config) -> MemorySpec {
    let mut spec = MemorySpec {
        max_memory_kb: None,
        free_memory_ratio: 0.8,
        recalculation_interval: Duration::from_secs(1),
    };
    let Some(memory) = &config.memory else {
        return spec;
    };
    spec.max_memory_kb = v.count(&["memory", "max_memory_kb"], memory.max_memory_kb, false);
    if let Some(ratio) = memory.free_memory_ratio {
        if v.fraction(&["memory", "free_memory_ratio"], ratio, 0.0, true, 1.0) {
            spec.free_memory_ratio = ratio;
        }
    }
    let keys = ["memory", "recalculation_interval"];
    match v.duration(&keys, memory.recalculation_interval.as_ref()) {
        Some(d) if d.is_zero() => v.problem(&keys, 0, "must be greater than 0"),
        Some(d) => spec.recalculation_interval = d,
        None => {}
    }
    v.unknown(&["memory"], &memory.unknown);
    spec
}

fn validate_backend(v: &mut Validator, config: &Config) -> BackendSpec {
    let mut spec = BackendSpec {
        failure_mode: FailureMode::default(),
        heartbeat_interval: Duration::from_secs(5),
        stale_after: Duration::from_secs(15),
        timeout: Duration::from_secs(1),
    };
    let Some(backend) = &config.backend else {
        return spec;
    };
    let at = |key: &'static str| ["backend", key];
    match backend.kind() {
        "in_process" => {}
        "redis" => match backend.url.as_deref() {
            None => v.problem(&at("url"), "", "is required for the redis backend"),
            Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => v
                .problem(
                    &at("url"),
                    // The URL may hold a password: show only its scheme.
                    format!("{:?}", url.split("://").next().unwrap_or("")),
                    "must start with redis:// or rediss://",
                ),
            Some(_) => {}
        },
        other => v.problem(
            &at("kind"),
            format!("{other:?}"),
            "must be \"in_process\" or \"redis\"",
        ),
    }
    if let Some(prefix) = &backend.prefix {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            v.problem(
                &at("prefix"),
                format!("{prefix:?}"),
                "must be non-empty and free of braces",
            );
        }
    }
    if let Some(mode) = backend.failure_mode {
        spec.failure_mode = mode;
    }
    for (key, value, slot) in [
        (
            "heartbeat_interval",
            &backend.heartbeat_interval,
            &mut spec.heartbeat_interval,
        ),
        ("stale_after", &backend.stale_after, &mut spec.stale_after),
        ("timeout", &backend.timeout, &mut spec.timeout),
    ] {
        match v.duration(&at(key), value.as_ref()) {
            Some(d) if d.is_zero() => v.problem(&at(key), 0, "must be greater than 0"),
            Some(d) => *slot = d,
            None => {}
        }
    }
    if spec.stale_after <= spec.heartbeat_interval {
        v.problem(
            &at("stale_after"),
            format!("{:?}", spec.stale_after),
            format!(
                "must be longer than heartbeat_interval ({:?})",
                spec.heartbeat_interval
            ),
        );
    }
    v.unknown(&["backend"], &backend.unknown);
    spec
}

fn validate_ratio_adjustment(v: &mut Validator, config: &Config) -> RatioAdjustmentSpec {
    let mut spec = RatioAdjustmentSpec {
        interval: Duration::from_secs(5),
        releases_per_adjustment: 10,
        high_load: 0.7,
        low_load: 0.3,
        max_adjustment: 0.2,
        min_ratio: 0.01,
    };
    let Some(ra) = &config.ratio_adjustment else {
        return spec;
    };
    let at = |key: &'static str| ["ratio_adjustment", key];
    if let Some(d) = v.duration(&at("interval"), ra.interval.as_ref()) {
        spec.interval = d;
    }
    if let Some(n) = v.count(
        &at("releases_per_adjustment"),
        ra.releases_per_adjustment,
        true,
    ) {
        spec.releases_per_adjustment = n;
    }
    let fields = [
        ("high_load", ra.high_load, &mut spec.high_load, 0.0, false),
        ("low_load", ra.low_load, &mut spec.low_load, 0.0, false),
        (
            "max_adjustment",
            ra.max_adjustment,
            &mut spec.max_adjustment,
            0.0,
            true,
        ),
        ("min_ratio", ra.min_ratio, &mut spec.min_ratio, 0.0, false),
    ];
    for (key, value, slot, low, open_low) in fields {
        if let Some(n) = value {
            if v.fraction(&at(key), n, low, open_low, 1.0) {
                *slot = n;
            }
        }
    }
    if spec.low_load >= spec.high_load {
        v.problem(
            &at("low_load"),
            spec.low_load,
            format!("must be below high_load ({})", spec.high_load),
        );
    }
    v.unknown(&["ratio_adjustment"], &ra.unknown);
    spec
}

/// Resolves initial ratios to parts per billion summing exactly to [`RATIO_ONE`]: types without a
/// ratio share what the others leave, evenly.
fn split_ratios(given: &[Option<f64>]) -> Result<Vec<u64>, (String, String)> {
    let sum: f64 = given.iter().flatten().sum();
    let missing = given.iter().filter(|r| r.is_none()).count();
    if sum > 1.0 + RATIO_TOLERANCE {
        return Err((
            format!("{sum}"),
            "the job types' ratios sum to more than 1".into(),
        ));
    }
    if missing == 0 && sum < 1.0 - RATIO_TOLERANCE {
        return Err((
            format!("{sum}"),
            "the job types' ratios sum to less than 1: the rest of every model would be stranded"
                .into(),
        ));
    }
    if missing > 0 && sum >= 1.0 - RATIO_TOLERANCE {
        return Err((
            format!("{sum}"),
            "the given ratios already sum to 1, so job types without a ratio would get nothing"
                .into(),
        ));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // ratios are in (0, 1]
    let mut ppb: Vec<u64> = given
        .iter()
        .map(|r| r.map_or(0, |r| (r * 1e9).round() as u64))
        .collect();
    let assigned: u64 = ppb.iter().sum();
    if missing == 0 {
        // Within tolerance of 1: the largest absorbs the rounding so the sum is exact.
        let largest = (0..ppb.len()).max_by_key(|&i| ppb[i]).unwrap_or(0);
        ppb[largest] = (ppb[largest] + RATIO_ONE).saturating_sub(assigned);
    } else {
        let rest = RATIO_ONE.saturating_sub(assigned);
        let missing = missing as u64;
        let (each, mut extra) = (rest / missing, rest % missing);
        for (r, g) in ppb.iter_mut().zip(given) {
            if g.is_none() {
                *r = each + u64::from(extra > 0);
                extra = extra.saturating_sub(1);
            }
        }
    }
    Ok(ppb)
}

/// Settings that are valid but mean some job type can never start somewhere.
fn warnings(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    for (m, model) in spec.models.iter().enumerate() {
        if !spec.order.contains(&m) {
            out.push(format!(
                "model {:?} is not in the escalation order and is never used",
                model.name
            ));
        }
    }
    for job in &spec.job_types {
        let nature = if job.flexible {
            "it is flexible, so it can once its ratio grows"
        } else {
            "its ratio is fixed, so it never will"
        };
        for &m in &spec.order {
            let model = &spec.models[m];
            if let Some(cap) = model.concurrency {
                let part = crate::slots::entitlement(
                    job.ratio,
                    cap,
                    1,
                    model.min_capacity,
                    model.max_capacity,
                );
                if part < u128::from(RATIO_ONE) {
                    out.push(format!(
                        "job type {:?} cannot start on model {:?} with one instance: its part of max_concurrent_requests ({cap}) is below one job; {nature}",
                        job.name, model.name
                    ));
                }
            }
            for limit in WindowLimit::ALL {
                let (Some(cap), estimate) = (model.limits[limit.index()], job.estimate(limit))
                else {
                    continue;
                };
                if estimate == 0 {
                    continue;
                }
                let part = crate::slots::entitlement(
                    job.ratio,
                    cap,
                    estimate,
                    model.min_capacity,
                    model.max_capacity,
                );
                if part < u128::from(estimate) * u128::from(RATIO_ONE) {
                    out.push(format!(
                        "job type {:?} cannot start on model {:?} with one instance: its part of {} ({cap}) is below one job ({estimate}); {nature}",
                        job.name, model.name, limit.key()
                    ));
                }
            }
        }
        if let (Some(total), true) = (spec.memory.max_memory_kb, job.memory_kb > 0) {
            let part = u128::from(total) * u128::from(job.ratio);
            if part < u128::from(job.memory_kb) * u128::from(RATIO_ONE) {
                out.push(format!(
                    "job type {:?} cannot start: its part of memory.max_memory_kb ({total}) is below one job ({} KB); {nature}",
                    job.name, job.memory_kb
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ratios_share_the_rest_evenly() {
        let r = split_ratios(&[Some(0.3), Some(0.4), None, None, None]).ok();
        assert_eq!(
            r,
            Some(vec![
                300_000_000,
                400_000_000,
                100_000_000,
                100_000_000,
                100_000_000
            ])
        );
        let thirds = split_ratios(&[None, None, None]).ok().unwrap_or_default();
        assert_eq!(thirds.iter().sum::<u64>(), RATIO_ONE);
    }

    #[test]
    fn ratio_sums_are_checked() {
        assert!(split_ratios(&[Some(0.7), Some(0.4)]).is_err());
        assert!(split_ratios(&[Some(0.5), Some(0.4)]).is_err());
        assert!(split_ratios(&[Some(0.5), Some(0.5), None]).is_err());
        assert_eq!(
            split_ratios(&[Some(0.33), Some(0.33), Some(0.34)]).ok(),
            Some(vec![330_000_000, 330_000_000, 340_000_000])
        );
    }
}
