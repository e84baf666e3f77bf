//! Workloads: jobs with their arrival, duration, usage and behaviour; read from JSON or
//! generated from a traffic shape and a seed.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::{GenerateArgs, Shape};

/// A workload file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Workload {
    pub(crate) jobs: Vec<Job>,
}

/// One job of a workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) job_type: String,
    /// When it is queued, in milliseconds from the start of the simulation.
    pub(crate) arrival_ms: u64,
    /// How long each attempt runs.
    pub(crate) duration_ms: u64,
    /// What each attempt reports.
    #[serde(default)]
    pub(crate) usage: UsageSpec,
    /// Models on which the job rejects (then, by `delegate`, tries the next model or fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) reject_on: Vec<String>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub(crate) delegate: bool,
    /// Which instance it is queued on (default: round robin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<usize>,
}

const fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
const fn is_true(value: &bool) -> bool {
    *value
}

/// Usage as written in a workload.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct UsageSpec {
    #[serde(default)]
    pub(crate) input_tokens: u64,
    #[serde(default)]
    pub(crate) cached_tokens: u64,
    #[serde(default)]
    pub(crate) output_tokens: u64,
    #[serde(default)]
    pub(crate) requests: u64,
}

impl UsageSpec {
    pub(crate) const fn usage(self) -> llmrl::Usage {
        llmrl::Usage::new()
            .input_tokens(self.input_tokens)
            .cached_tokens(self.cached_tokens)
            .output_tokens(self.output_tokens)
            .requests(self.requests)
    }
}

impl Workload {
    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the workload {}", path.display()))?;
        let mut workload: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid workload", path.display()))?;
        workload.jobs.sort_by_key(|job| job.arrival_ms);
        Ok(workload)
    }
}

/// A job type as the generator sees it: its name, estimate and share of the traffic.
pub(crate) struct Kind {
    pub(crate) name: String,
    pub(crate) tokens: u64,
    pub(crate) requests: u64,
    pub(crate) weight: f64,
}

/// The share of the traffic of each job type of the bundled stress scenario, in its order
/// (summary, vacation planning, image creation, budget calculation, weather forecast).
const STRESS_WEIGHTS: [f64; 5] = [3.0, 2.5, 1.5, 1.5, 1.5];

/// The job types of a validated configuration as the generator sees them: the bundled
/// scenario's mix leans on its first types; other configurations are uniform.
pub(crate) fn kinds(validated: &llmrl::config::Validated, bundled: bool) -> Vec<Kind> {
    validated
        .job_types()
        .enumerate()
        .map(|(i, (name, estimate))| Kind {
            name: name.to_owned(),
            tokens: estimate.tokens,
            requests: estimate.requests,
            weight: if bundled {
                STRESS_WEIGHTS.get(i).copied().unwrap_or(1.0)
            } else {
                1.0
            },
        })
        .collect()
}

/// A small deterministic generator (splitmix64): the same seed gives the same workload.
pub(crate) struct Random(u64);

impl Random {
    pub(crate) const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) const fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }

    /// Uniform in [low, high].
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// The relative arrival rate at `fraction` (0..1) of the run.
fn rate(shape: Shape, fraction: f64) -> f64 {
    match shape {
        Shape::Constant => 1.0,
        Shape::Spikes => {
            if (fraction * 10.0).fract() < 0.15 {
                5.0
            } else {
                0.6
            }
        }
        Shape::Valleys => {
            if (fraction * 5.0).fract() > 0.7 {
                0.1
            } else {
                1.4
            }
        }
        Shape::Mixed => match fraction {
            f if f < 0.1 => 0.5 + 10.0 * f,
            f if f < 0.2 => 3.5,
            f if f < 0.5 => 1.2,
            f if f < 0.7 => 0.2,
            f if f < 0.9 => 1.6,
            _ => 0.1,
        },
    }
}

/// Generates `args.jobs` jobs over `args.minutes` following `args.shape`: arrivals where the
/// integrated rate reaches each job's quantile, types by weight, durations of 5–30 s, usage
/// around each type's estimate (60–120 %), and a few jobs that reject on the first model.
pub(crate) fn generate(args: &GenerateArgs, kinds: &[Kind], first_model: &str) -> Workload {
    let mut random = Random::new(args.seed);
    let span_ms = args.minutes.max(1) * 60_000;
    const STEPS: usize = 10_000;
    #[allow(clippy::cast_precision_loss)]
    let cumulative: Vec<f64> = (0..=STEPS)
        .scan(0.0, |total, i| {
            let value = *total;
            *total += rate(args.shape, i as f64 / STEPS as f64);
            Some(value)
        })
        .collect();
    let total = cumulative[STEPS];
    let weights: f64 = kinds.iter().map(|k| k.weight).sum();
    let mut jobs = Vec::with_capacity(args.jobs);
    for i in 0..args.jobs {
        #[allow(clippy::cast_precision_loss)]
        let quantile = (i as f64 + random.unit()) / args.jobs as f64 * total;
        let step = cumulative
            .partition_point(|&c| c <= quantile)
            .saturating_sub(1);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let arrival_ms = (step as f64 / STEPS as f64 * span_ms as f64) as u64;
        let mut pick = random.unit() * weights;
        let kind = kinds
            .iter()
            .find(|k| {
                pick -= k.weight;
                pick < 0.0
            })
            .unwrap_or(&kinds[kinds.len() - 1]);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let tokens = (kind.tokens as f64 * (0.6 + 0.6 * random.unit())) as u64;
        let rejects = random.unit() < 0.02;
        jobs.push(Job {
            id: format!("job-{i:05}"),
            job_type: kind.name.clone(),
            arrival_ms,
            duration_ms: random.between(5_000, 30_000),
            usage: UsageSpec {
                input_tokens: tokens * 4 / 5,
                cached_tokens: 0,
                output_tokens: tokens - tokens * 4 / 5,
                requests: kind.requests,
            },
            reject_on: if rejects {
                vec![first_model.to_owned()]
            } else {
                Vec::new()
            },
            delegate: true,
            instance: None,
        });
    }
    jobs.sort_by_key(|job| job.arrival_ms);
    Workload { jobs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> Vec<Kind> {
        vec![
            Kind {
                name: "a".into(),
                tokens: 1_000,
                requests: 1,
                weight: 3.0,
            },
            Kind {
                name: "b".into(),
                tokens: 5_000,
                requests: 2,
                weight: 1.0,
            },
        ]
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let args = GenerateArgs {
            jobs: 500,
            ..GenerateArgs::default()
        };
        let one = serde_json::to_string(&generate(&args, &kinds(), "m")).unwrap_or_default();
        let two = serde_json::to_string(&generate(&args, &kinds(), "m")).unwrap_or_default();
        assert_eq!(one, two);
        let other = GenerateArgs { seed: 8, ..args };
        assert_ne!(
            one,
            serde_json::to_string(&generate(&other, &kinds(), "m")).unwrap_or_default()
        );
    }

    #[test]
    fn jobs_follow_the_shape_within_the_span() {
        let args = GenerateArgs {
            jobs: 2_000,
            minutes: 10,
            shape: Shape::Mixed,
            seed: 1,
        };
        let workload = generate(&args, &kinds(), "m");
        assert_eq!(workload.jobs.len(), 2_000);
        assert!(workload.jobs.iter().all(|j| j.arrival_ms < 600_000));
        assert!(
            workload
                .jobs
                .iter()
                .all(|j| (5_000..=30_000).contains(&j.duration_ms))
        );
        // The spike (second tenth) is far busier than the valley (fifth to seventh tenths).
        let count = |from: u64, to: u64| {
            workload
                .jobs
                .iter()
                .filter(|j| (from..to).contains(&j.arrival_ms))
                .count()
        };
        assert!(count(60_000, 120_000) > 5 * count(300_000, 360_000));
        let share_a = workload.jobs.iter().filter(|j| j.job_type == "a").count();
        assert!((1_300..1_700).contains(&share_a), "weights 3:1 → {share_a}");
    }
}
