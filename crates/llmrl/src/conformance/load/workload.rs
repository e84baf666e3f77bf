//! What the load test runs: one model's limits, three job types, and a plan of a few thousand
//! jobs drawn from a fixed seed (the same plan on every run and every backend).

use std::time::Duration;

use crate::conformance::{free, static_ratios};
use crate::{Config, JobTypeConfig, ModelConfig, Usage, WindowLimit};

/// Instances in the fleet.
pub(super) const INSTANCES: u64 = 4;
/// The only model.
pub(super) const MODEL: &str = "m";
/// Jobs in the plan.
pub(super) const JOBS: usize = 3_000;
/// Jobs arrive during the first this many seconds, at whole seconds.
pub(super) const ARRIVAL_SECONDS: u64 = 180;
/// Every job type waits up to this long: longer than a minute, so that a job that finds the
/// minute full waits for the next one instead of failing.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(120);
/// The plan's seed.
const SEED: u64 = 0x5eed_0000_0000_0313;

/// The model's limits: every one divisible by [`INSTANCES`], so that fair shares are exact.
/// About 1.25 M tokens of estimates arrive per minute against 1 M TPM (every job type's demand
/// exceeds its part by a fifth or more): each minute of arrivals overflows, and the overflow
/// waits for the next minute.
pub(super) const TPM: u64 = 1_000_000;
const TPD: u64 = 10_000_000;
const RPM: u64 = 4_000;
const RPD: u64 = 100_000;
/// Max concurrent requests, fleet-wide.
pub(super) const CONC: u64 = 400;

/// The limit of `limit` on the model.
pub(super) const fn limit_of(limit: WindowLimit) -> u64 {
    match limit {
        WindowLimit::TokensPerMinute => TPM,
        WindowLimit::TokensPerDay => TPD,
        WindowLimit::RequestsPerMinute => RPM,
        WindowLimit::RequestsPerDay => RPD,
    }
}

/// The most any one instance's fair share of `total` can be.
pub(super) const fn share(total: u64) -> u64 {
    total.div_ceil(INSTANCES)
}

/// A job type of the load test.
#[derive(Debug)]
pub(super) struct Kind {
    pub(super) name: &'static str,
    tokens: u64,
    requests: u64,
    /// Static ratio: each type's part of an instance's 250 000 TPM is a whole number of its jobs
    /// (40 000 = 100 × 400, 105 000 = 70 × 1 500 = 21 × 5 000), so instances can fill their
    /// shares exactly.
    ratio: f64,
    /// Relative frequency among arrivals.
    weight: u64,
    /// How long a job runs, in whole seconds: `[min, max]`.
    run_seconds: (u64, u64),
}

/// Short, medium and long jobs: 55 %, 35 % and 10 % of the arrivals.
pub(super) const KINDS: [Kind; 3] = [
    Kind {
        name: "short",
        tokens: 400,
        requests: 1,
        ratio: 0.16,
        weight: 55,
        run_seconds: (1, 5),
    },
    Kind {
        name: "medium",
        tokens: 1_500,
        requests: 1,
        ratio: 0.42,
        weight: 35,
        run_seconds: (3, 12),
    },
    Kind {
        name: "long",
        tokens: 5_000,
        requests: 2,
        ratio: 0.42,
        weight: 10,
        run_seconds: (8, 24),
    },
];

impl Kind {
    /// The job type named `name`.
    pub(super) fn named(name: &str) -> Option<&'static Self> {
        KINDS.iter().find(|k| k.name == name)
    }

    /// What a job of this type reserves in `limit`.
    pub(super) const fn estimate(&self, limit: WindowLimit) -> u64 {
        if limit.counts_tokens() {
            self.tokens
        } else {
            self.requests
        }
    }
}

/// The limiter configuration every instance uses.
pub(super) fn config() -> Config {
    let model = ModelConfig::new(free())
        .tokens_per_minute(TPM)
        .tokens_per_day(TPD)
        .requests_per_minute(RPM)
        .requests_per_day(RPD)
        .max_concurrent_requests(CONC);
    KINDS
        .iter()
        .fold(Config::new().model(MODEL, model), |config, kind| {
            config.job_type(
                kind.name,
                JobTypeConfig::new()
                    .estimated_tokens(kind.tokens)
                    .estimated_requests(kind.requests)
                    .fixed_ratio(kind.ratio)
                    .max_wait(MODEL, MAX_WAIT),
            )
        })
        .ratio_adjustment(static_ratios())
}

/// One job of the plan.
#[derive(Clone, Copy, Debug)]
pub(super) struct Planned {
    /// Seconds after the start at which it is queued.
    pub(super) arrival_second: u64,
    /// The instance it is queued on.
    pub(super) instance: usize,
    /// Index in [`KINDS`].
    pub(super) kind: usize,
    /// How long it runs once started.
    pub(super) run_for: Duration,
    /// What it reports: 60 % to 130 % of the estimated tokens, and one request fewer to one
    /// more than estimated (at least one), so that settlements both refund and overrun.
    pub(super) usage: Usage,
}

impl Planned {
    pub(super) const fn kind(&self) -> &'static Kind {
        &KINDS[self.kind]
    }
}

/// The plan: [`JOBS`] jobs in arrival order.
pub(super) fn plan() -> Vec<Planned> {
    let mut rng = SplitMix64(SEED);
    let total_weight: u64 = KINDS.iter().map(|k| k.weight).sum();
    let mut jobs: Vec<Planned> = (0..JOBS)
        .map(|_| {
            let arrival_second = rng.below(ARRIVAL_SECONDS);
            let instance = usize::try_from(rng.below(INSTANCES)).unwrap();
            let mut pick = rng.below(total_weight);
            let kind = KINDS
                .iter()
                .position(|k| {
                    let hit = pick < k.weight;
                    pick = pick.saturating_sub(k.weight);
                    hit
                })
                .unwrap();
            let spec = &KINDS[kind];
            let (min, max) = spec.run_seconds;
            let run_for = Duration::from_secs(rng.between(min, max));
            let tokens = spec.tokens * rng.between(60, 130) / 100;
            let requests = (spec.requests + rng.below(3)).saturating_sub(1).max(1);
            // Split like a real call: some cached input, a quarter of output.
            let usage = Usage::new()
                .cached_tokens(tokens / 8)
                .output_tokens(tokens / 4)
                .input_tokens(tokens - tokens / 8 - tokens / 4)
                .requests(requests);
            Planned {
                arrival_second,
                instance,
                kind,
                run_for,
                usage,
            }
        })
        .collect();
    jobs.sort_by_key(|j| j.arrival_second);
    jobs
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny deterministic generator, plenty for a plan.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (the modulo bias is irrelevant at these sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[min, max]`.
    fn between(&mut self, min: u64, max: u64) -> u64 {
        min + self.below(max - min + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_fixed_and_overflows_the_first_minute() {
        let (a, b) = (plan(), plan());
        assert_eq!(a.len(), JOBS);
        assert!(a.iter().zip(&b).all(
            |(x, y)| (x.arrival_second, x.kind, x.usage) == (y.arrival_second, y.kind, y.usage)
        ));
        let first_minute: u64 = a
            .iter()
            .filter(|j| j.arrival_second < 60)
            .map(|j| j.kind().tokens)
            .sum();
        assert!(first_minute > TPM, "{first_minute}");
    }
}
