//! A conformance suite for fleet [`Backend`]s (feature `conformance`).
//!
//! Every scenario is an async function taking a [`Harness`]: a way to make a fresh fleet on the
//! backend under test, the clock its instances use, and ways to move time and let changes
//! propagate. [`conformance_suite!`](crate::conformance_suite) turns them all into tests:
//!
//! ```no_run
//! use llmrl::conformance::InProcess;
//!
//! llmrl::conformance_suite!(#[tokio::test(start_paused = true)] harness = InProcess::default());
//! # fn main() {}
//! ```
//!
//! Scenarios assert with `assert!`: this module is test support.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_docs)]

pub mod failure;
pub mod load;
pub mod membership;
pub mod propagation;
pub mod seeds;
pub mod usage;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, InProcessFleet};
use crate::{
    Availability, Clock, Config, FailureMode, JobContext, JobHandle, JobRequest, JobResult,
    JobTypeConfig, ModelConfig, NamedLimiter, Pricing, RatioAdjustmentConfig, Timestamp, Usage,
};

/// 2026-01-01T00:00:00Z: second 0 of a minute and of a UTC day.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// What a backend must provide to run the suite.
pub trait Harness: Sync {
    /// What identifies one fleet on the backend under test (the shared state itself, or where
    /// to find it).
    type Fleet: Send + Sync;
    /// The backend one instance uses.
    type Backend: Backend;

    /// A fresh, empty fleet whose instances are evicted after `stale_after` of silence.
    fn fleet(&self, stale_after: Duration) -> Self::Fleet;

    /// A backend for one more instance of `fleet` (each instance has its own, as in a real
    /// deployment: its own connections).
    fn backend(&self, fleet: &Self::Fleet) -> Self::Backend;

    /// The clock instances use; it starts at [`EPOCH_MS`] (or at a minute boundary).
    fn clock(&self) -> Clock;

    /// Moves the instances' clock forward by `by`, letting every task run on the way.
    fn advance(&self, by: Duration) -> impl Future<Output = ()> + Send;

    /// Lets pushed changes reach every instance (the backend's propagation delay, ≤ 100 ms).
    fn propagate(&self) -> impl Future<Output = ()> + Send;

    /// Makes `fleet` unreachable (or reachable again) for its instances.
    fn set_reachable(
        &self,
        fleet: &Self::Fleet,
        reachable: bool,
    ) -> impl Future<Output = ()> + Send;

    /// Makes `fleet` forget everything, as a restarted (or flushed) backend would.
    fn reset(&self, fleet: &Self::Fleet) -> impl Future<Output = ()> + Send;

    /// Awaits `future` (typically a job's handle) while keeping time moving, so that jobs that
    /// sleep on the clock end. Paused tokio time moves by itself; a manual clock is advanced.
    fn run_until<F: Future + Send>(&self, future: F) -> impl Future<Output = F::Output> + Send;

    /// Moves the clock forward by `by` across a long stretch in which nothing is due but
    /// heartbeats and window rollovers (hours, a day), faster than [`Harness::advance`] where
    /// the harness needs to: in steps of up to [`SKIP_STEP`], each timer due within a step
    /// firing at its end. Instances must belong to fleets whose stale threshold is longer than
    /// a step, or they would evict one another. By default, [`Harness::advance`].
    fn skip(&self, by: Duration) -> impl Future<Output = ()> + Send {
        self.advance(by)
    }
}

/// The longest step of [`Harness::skip`].
pub const SKIP_STEP: Duration = Duration::from_secs(600);

/// The in-process backend on tokio's paused clock: run its scenarios with
/// `#[tokio::test(start_paused = true)]`.
#[derive(Debug, Default)]
pub struct InProcess {
    /// One clock for every instance of a scenario, started on first use.
    clock: std::sync::OnceLock<Clock>,
}

impl Harness for InProcess {
    type Fleet = InProcessFleet;
    type Backend = InProcessFleet;

    fn fleet(&self, stale_after: Duration) -> InProcessFleet {
        InProcessFleet::with_stale_threshold(stale_after)
    }

    fn backend(&self, fleet: &InProcessFleet) -> InProcessFleet {
        fleet.clone()
    }

    fn clock(&self) -> Clock {
        self.clock
            .get_or_init(|| Clock::virtual_at(Timestamp::from_millis(EPOCH_MS)))
            .clone()
    }

    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
        settle_tasks().await;
    }

    async fn propagate(&self) {
        self.advance(Duration::from_millis(100)).await;
    }

    async fn set_reachable(&self, fleet: &InProcessFleet, reachable: bool) {
        fleet.set_reachable(reachable);
    }

    async fn reset(&self, fleet: &InProcessFleet) {
        fleet.reset();
    }

    async fn run_until<F: Future + Send>(&self, future: F) -> F::Output {
        future.await
    }
}

/// Lets every task that can run, run.
pub async fn settle_tasks() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Default stale threshold (SPEC §7.2).
pub const STALE: Duration = Duration::from_secs(15);

/// One model `m` with `model`'s limits and one job type `j` of `tokens` tokens (ratios static so
/// that scenarios measure the fleet, not the ratio policy).
#[must_use]
pub fn one_model(model: ModelConfig, tokens: u64) -> Config {
    Config::new()
        .model("m", model)
        .job_type(
            "j",
            JobTypeConfig::new()
                .estimated_tokens(tokens)
                .max_wait("m", Duration::ZERO),
        )
        .ratio_adjustment(static_ratios())
}

/// No ratio adjustment.
#[must_use]
pub fn static_ratios() -> RatioAdjustmentConfig {
    RatioAdjustmentConfig::new()
        .interval(Duration::ZERO)
        .releases_per_adjustment(0)
}

/// Free pricing.
#[must_use]
pub const fn free() -> Pricing {
    Pricing::new(0.0, 0.0, 0.0)
}

/// An instance of `config` named `id` in `fleet`, registered before it returns.
pub async fn instance<H: Harness>(
    h: &H,
    fleet: &H::Fleet,
    config: Config,
    id: &str,
) -> NamedLimiter {
    instance_with(h, fleet, config, id, FailureMode::LastKnownShare).await
}

/// As [`instance`], with a failure mode.
pub async fn instance_with<H: Harness>(
    h: &H,
    fleet: &H::Fleet,
    config: Config,
    id: &str,
    mode: FailureMode,
) -> NamedLimiter {
    let limiter = NamedLimiter::builder(config.instance_id(id))
        .clock(h.clock())
        .backend(h.backend(fleet))
        .failure_mode(mode)
        .build()
        .unwrap();
    limiter.ready().await;
    limiter
}

/// The handle a scenario keeps for each job.
pub type Handle = JobHandle<Arc<str>, Arc<str>, String>;

/// Queues a job of type `job_type` that runs for `run_for` on the limiter's clock (so that it
/// ends when the harness moves time), then reports `usage`.
pub fn job(
    limiter: &NamedLimiter,
    id: &str,
    job_type: &str,
    run_for: Duration,
    usage: Usage,
) -> Handle {
    let clock = limiter.clock().clone();
    let run = move |ctx: JobContext<Arc<str>>| {
        let clock = clock.clone();
        async move {
            clock.sleep_until(clock.now().saturating_add(run_for)).await;
            JobResult::done(ctx.model, usage)
        }
    };
    limiter
        .queue_job(JobRequest::new(id.to_owned(), job_type.to_owned(), run))
        .unwrap()
}

/// `n` jobs of type `j` that each hold a slot for `run_for` and report `tokens` tokens.
pub fn jobs(
    limiter: &NamedLimiter,
    prefix: &str,
    n: usize,
    run_for: Duration,
    tokens: u64,
) -> Vec<Handle> {
    (0..n)
        .map(|i| {
            let usage = Usage::new().input_tokens(tokens).requests(1);
            job(limiter, &format!("{prefix}-{i}"), "j", run_for, usage)
        })
        .collect()
}

/// Slots of job type `j` (or the instance total).
#[must_use]
pub fn slots(limiter: &NamedLimiter) -> Option<u64> {
    limiter.availability().slots
}

/// The snapshot type of a named limiter.
pub type Snapshot = Availability<Arc<str>, Arc<str>>;

/// Asserts the fleet invariant of SPEC §7.1 on every limit of every model: the instances'
/// available parts sum to at most what the fleet has left.
pub fn assert_parts_within_remaining(instances: &[&NamedLimiter]) {
    let snapshots: Vec<Snapshot> = instances.iter().map(|l| l.availability()).collect();
    let Some(first) = snapshots.first() else {
        return;
    };
    for (m, model) in first.models.iter().enumerate() {
        for resource in 0..5 {
            let pick = |s: &Snapshot| {
                let model = &s.models[m];
                match resource {
                    0 => model.tokens_per_minute,
                    1 => model.tokens_per_day,
                    2 => model.requests_per_minute,
                    3 => model.requests_per_day,
                    _ => model.concurrent_requests,
                }
            };
            let Some(_) = pick(first) else { continue };
            let parts: u64 = snapshots.iter().filter_map(pick).map(|r| r.available).sum();
            let remaining = snapshots
                .iter()
                .filter_map(pick)
                .map(|r| r.remaining)
                .min()
                .unwrap_or(0);
            assert!(
                parts <= remaining,
                "model {} resource {resource}: parts {parts} > fleet remaining {remaining}",
                model.model
            );
        }
    }
}

/// Turns every scenario of the suite into a test function.
///
/// `#[$attr]` is the test attribute (e.g. `#[tokio::test(start_paused = true)]`), and
/// `$harness` an expression making a fresh [`Harness`] for each test.
#[macro_export]
macro_rules! conformance_suite {
    (#[$attr:meta] harness = $harness:expr) => {
        $crate::conformance_suite!(@tests $attr, $harness;
            membership::one_instance_has_all_slots,
            membership::a_second_instance_halves_the_first,
            membership::a_leaving_instance_gives_its_share_back_at_once,
            membership::a_leaving_instance_s_usage_stays_counted,
            membership::a_dead_instance_is_evicted_after_the_stale_threshold,
            membership::one_two_three_two_one,
            membership::an_evicted_instance_registers_again,
            membership::a_reset_backend_recovers_the_fleet_figures,
            usage::fair_share_remainder_goes_to_the_oldest,
            usage::overage_on_one_instance_shrinks_the_others,
            usage::refunds_raise_what_is_left,
            usage::three_instances_mixed_usage,
            usage::gradual_rebalancing_when_an_instance_joins,
            propagation::an_admission_anywhere_lowers_remaining_everywhere,
            propagation::ratios_and_memory_stay_local,
            failure::closed_admits_nothing_while_down,
            failure::open_admits_on_local_limits,
            failure::last_known_share_keeps_the_fleet_within_limits,
            failure::recovery_reports_outage_usage,
            load::thousands_of_jobs_overflowing_a_minute,
            seeds::time_windows,
            seeds::request_counting,
            seeds::multi_model_tracking,
            seeds::escalation_after_two_full_minutes,
            seeds::escalation_to_the_third_model,
        );
    };
    (@tests $attr:meta, $harness:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $name() {
                $crate::conformance::$module::$name(&$harness).await;
            }
        )*
    };
}
