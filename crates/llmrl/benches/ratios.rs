//! Flexible-ratio benchmarks for issue 3 (see `BENCHMARKS.md` at the workspace root).
//!
//! - `five_types/<variant>/<batch>`: the hot path of `hot_path.rs` (queue → admit → run a no-op
//!   job → settle → `on_complete`, on one model whose limits are never reached), with five job
//!   types queued round-robin instead of one:
//!   - `fixed`: fixed ratios (0.2 each), no adjustment;
//!   - `flexible`: flexible ratios (0.2 each) with the default `RatioAdjustmentConfig` (an
//!     adjustment every 10 settlements and every 5 s);
//!   - `flexible_callback`: the same plus an `on_available_slots_change` callback that only
//!     increments a counter. With a callback, every operation computes every slot to find out
//!     whether any changed, and builds an availability snapshot when one did.
//! - `ratio_adjustment/<variant>`: 50 flexible job types on one model; each iteration is one
//!   phase in which 10 of the types (a different 10 each phase) get a staggered backlog of jobs
//!   and the other 40 are idle, so that loaded types receive ratio and idle ones give it. Timed
//!   per settled job:
//!   - `never`: `releases_per_adjustment(0)`, no adjustment at all;
//!   - `every_settlement`: `releases_per_adjustment(1)`, an adjustment after each settlement.
//!
//!   The difference per settlement is the cost of one adjustment. The model's `max_capacity` of
//!   4 jobs per type keeps every type's slots independent of its ratio, so that both variants
//!   admit, queue and grant exactly the same jobs at the same moments and differ only by the
//!   adjustments.
//!
//! Run with `cargo bench -p llmrl --bench ratios -- --warm-up-time 1 --measurement-time 3`.
//! Figures are only comparable when each benchmark runs in a process of its own (append a filter
//! such as `'^five_types/fixed/1000$'`): glibc stops trimming the heap once a large block
//! has been freed, so a benchmark that runs after a batch of 10 000 gets faster. See "Allocator
//! state" in `BENCHMARKS.md`.
//!
//! `LLMRL_BENCH_CALLGRIND` selects an instruction-count scenario instead (see [`callgrind`]).
// The counts that show a scenario did what it claims are printed next to criterion's output.
#![allow(clippy::print_stderr)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use llmrl::{
    Completion, Event, Id, JobHandle, JobRequest, JobResult, JobType, JobTypeConfig, Limiter,
    ModelConfig, Pricing, RatioAdjustmentConfig, Usage,
};
use tokio::runtime::{Builder, Runtime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
enum Model {
    Only,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Five {
    A,
    B,
    C,
    D,
    E,
}

#[rustfmt::skip]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Fifty {
    T00, T01, T02, T03, T04, T05, T06, T07, T08, T09,
    T10, T11, T12, T13, T14, T15, T16, T17, T18, T19,
    T20, T21, T22, T23, T24, T25, T26, T27, T28, T29,
    T30, T31, T32, T33, T34, T35, T36, T37, T38, T39,
    T40, T41, T42, T43, T44, T45, T46, T47, T48, T49,
}

/// Limits no `five_types` benchmark ever reaches (as in `hot_path.rs`).
const HUGE_TPM: u64 = 1_000_000_000_000_000;
const HUGE_RPM: u64 = 1_000_000_000_000;
const HUGE_CONC: u64 = 1_000_000_000;
/// Waiting jobs must not time out during a run.
const LONG_WAIT: Duration = Duration::from_secs(86_400);
/// What a job reports: exactly its type's estimate, so settlement moves no counter.
const TOKENS: u64 = 100;

/// Counts `on_complete` calls, so the callback does real (if tiny) work.
static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// Counts `on_available_slots_change` calls.
static SLOT_CHANGES: AtomicU64 = AtomicU64::new(0);

type Handle = JobHandle<Model, (), ()>;

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn usage() -> Usage {
    Usage::new().input_tokens(TOKENS).requests(1)
}

fn on_complete(_: &Completion<Model, ()>) {
    COMPLETED.fetch_add(1, Ordering::Relaxed);
}

/// Queues a job of `job_type` that returns at once.
fn queue_no_op<J: JobType>(limiter: &Limiter<Model, J>, job_type: J) -> Handle {
    limiter.queue_job(
        JobRequest::new("bench", job_type, |_| async {
            JobResult::<(), ()>::done((), usage())
        })
        .on_complete(on_complete),
    )
}

/// Queues a job of `job_type` that yields to the scheduler once before returning, so that it
/// holds its concurrency unit while the other runnable jobs are polled.
fn queue_yielding<J: JobType>(limiter: &Limiter<Model, J>, job_type: J) -> Handle {
    limiter.queue_job(
        JobRequest::new("bench", job_type, |_| async {
            tokio::task::yield_now().await;
            JobResult::<(), ()>::done((), usage())
        })
        .on_complete(on_complete),
    )
}

async fn await_all(handles: Vec<Handle>) {
    for handle in handles {
        let outcome = handle.await;
        debug_assert!(outcome.is_ok());
        black_box(outcome).ok();
    }
}

#[derive(Clone, Copy, Debug)]
enum FiveTypes {
    Fixed,
    Flexible,
    FlexibleCallback,
}

impl FiveTypes {
    const ALL: [Self; 3] = [Self::Fixed, Self::Flexible, Self::FlexibleCallback];

    const fn name(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Flexible => "flexible",
            Self::FlexibleCallback => "flexible_callback",
        }
    }

    fn parse(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .unwrap_or_else(|| panic!("unknown five_types variant {name}"))
    }
}

/// One model with huge limits and five job types of 100 tokens with even ratios.
fn five_limiter(variant: FiveTypes) -> Limiter<Model, Five> {
    let builder = Limiter::<Model, Five>::builder(|m| match m {
        Model::Only => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0))
            .tokens_per_minute(HUGE_TPM)
            .requests_per_minute(HUGE_RPM)
            .max_concurrent_requests(HUGE_CONC),
    })
    .job_types(|_| {
        let config = JobTypeConfig::new()
            .estimated_tokens(TOKENS)
            .max_wait(Model::Only, LONG_WAIT);
        match variant {
            FiveTypes::Fixed => config.flexible(false),
            FiveTypes::Flexible | FiveTypes::FlexibleCallback => config,
        }
    })
    .ratio_adjustment(RatioAdjustmentConfig::new());
    match variant {
        FiveTypes::Fixed | FiveTypes::Flexible => builder,
        FiveTypes::FlexibleCallback => builder.on_available_slots_change(|_, _, _| {
            SLOT_CHANGES.fetch_add(1, Ordering::Relaxed);
        }),
    }
    .build()
    .expect("limiter")
}

/// Queues `n` no-op jobs, the five types in turn, then awaits every handle.
async fn five_batch(limiter: &Limiter<Model, Five>, n: usize) {
    let handles = (0..n)
        .map(|i| queue_no_op(limiter, Five::ALL[i % Five::COUNT]))
        .collect();
    await_all(handles).await;
}

fn five_types(c: &mut Criterion) {
    let mut group = c.benchmark_group("five_types");
    let runtime = current_thread();
    for variant in FiveTypes::ALL {
        let limiter = runtime.block_on(async { five_limiter(variant) });
        for n in [1_000_usize, 10_000] {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(variant.name(), n), &n, |b, &n| {
                b.iter(|| runtime.block_on(five_batch(&limiter, n)));
            });
        }
        runtime.block_on(limiter.stop(Duration::from_secs(1)));
    }
    group.finish();
}

/// Jobs of the most loaded type in a `ratio_adjustment` phase; the others get fewer.
const PHASE_BACKLOG: usize = 40;
/// Types with jobs in a phase; the other 40 are idle.
const BUSY_TYPES: usize = 10;
/// Jobs queued (and settled) per phase.
const PHASE_JOBS: usize = phase_jobs();

const fn phase_jobs() -> usize {
    let mut total = 0;
    let mut k = 0;
    while k < BUSY_TYPES {
        total += jobs_of(k);
        k += 1;
    }
    total
}

/// Jobs of the `k`-th busy type of a phase: 4, 8, ..., 40, so that busy types run dry one
/// after another and turn from receivers into donors.
const fn jobs_of(k: usize) -> usize {
    PHASE_BACKLOG * (k + 1) / BUSY_TYPES
}

/// 50 flexible types (0.02 each) on one model of 1 000 concurrent requests whose
/// `max_capacity` caps every type at 4 jobs in flight whatever its ratio (the smallest ratio,
/// 0.01, still gives 10), with an adjustment after every `releases_per_adjustment` settlements
/// (0: never) and no timer.
fn fifty_limiter(releases_per_adjustment: u64) -> llmrl::LimiterBuilder<Model, Fifty> {
    Limiter::<Model, Fifty>::builder(|m| match m {
        Model::Only => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0))
            .max_concurrent_requests(1_000)
            .max_capacity(4),
    })
    .job_types(|_| {
        JobTypeConfig::new()
            .estimated_tokens(TOKENS)
            .max_wait(Model::Only, LONG_WAIT)
    })
    .ratio_adjustment(
        RatioAdjustmentConfig::new()
            .interval(Duration::ZERO)
            .releases_per_adjustment(releases_per_adjustment),
    )
}

/// Phase number `index`: the `index`-th group of [`BUSY_TYPES`] types (cycling through all 50)
/// each queue a backlog of yielding jobs, one job per type in turn (4 of a type run at a time,
/// the rest wait); then every job is awaited.
async fn phase(limiter: &Limiter<Model, Fifty>, index: usize) {
    let first = (index * BUSY_TYPES) % Fifty::COUNT;
    let mut handles = Vec::with_capacity(PHASE_JOBS);
    for round in 0..jobs_of(BUSY_TYPES - 1) {
        for k in 0..BUSY_TYPES {
            if round < jobs_of(k) {
                let job_type = Fifty::ALL[(first + k) % Fifty::COUNT];
                handles.push(queue_yielding(limiter, job_type));
            }
        }
    }
    await_all(handles).await;
}

#[derive(Clone, Copy, Debug)]
enum Adjusting {
    Never,
    EverySettlement,
}

impl Adjusting {
    const ALL: [Self; 2] = [Self::Never, Self::EverySettlement];

    const fn name(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::EverySettlement => "every_settlement",
        }
    }

    const fn releases_per_adjustment(self) -> u64 {
        match self {
            Self::Never => 0,
            Self::EverySettlement => 1,
        }
    }

    fn parse(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .unwrap_or_else(|| panic!("unknown ratio_adjustment variant {name}"))
    }
}

/// How often ratios move in the `every_settlement` workload, over `phases` phases: returns
/// (settlements, settlements whose adjustment changed a ratio, ratio changes). Uses an event
/// listener, which the timed runs do not have (it would add an event per job).
fn count_ratio_changes(runtime: &Runtime, phases: usize) -> (u64, u64, u64) {
    // The last `COMPLETED` value seen with a change: `on_complete` runs after its job's
    // settlement, so every `RatioChanged` of one settlement sees the same value.
    let seen = Arc::new(Mutex::new((None::<u64>, 0_u64, 0_u64)));
    let record = seen.clone();
    let limiter = runtime.block_on(async {
        fifty_limiter(1)
            .on_event(move |event| {
                if matches!(event, Event::RatioChanged { .. }) {
                    let settled = COMPLETED.load(Ordering::Relaxed);
                    let mut seen = record.lock().expect("counter lock");
                    if seen.0 != Some(settled) {
                        *seen = (Some(settled), seen.1 + 1, seen.2);
                    }
                    seen.2 += 1;
                }
            })
            .build()
            .expect("limiter")
    });
    let before = COMPLETED.load(Ordering::Relaxed);
    runtime.block_on(async {
        for p in 0..phases {
            phase(&limiter, p).await;
        }
        limiter.stop(Duration::from_secs(1)).await;
    });
    let settlements = COMPLETED.load(Ordering::Relaxed) - before;
    let (_, adjustments, changes) = *seen.lock().expect("counter lock");
    (settlements, adjustments, changes)
}

fn ratio_adjustment(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratio_adjustment");
    group.throughput(Throughput::Elements(PHASE_JOBS as u64));
    let runtime = current_thread();
    let (settlements, moved, changes) = count_ratio_changes(&runtime, 10);
    eprintln!(
        "ratio_adjustment: {PHASE_JOBS} settlements per phase; with an adjustment after each, \
         {moved} of {settlements} adjustments changed ratios ({changes} type ratio changes)"
    );
    for variant in Adjusting::ALL {
        let limiter = runtime.block_on(async {
            fifty_limiter(variant.releases_per_adjustment())
                .build()
                .expect("limiter")
        });
        let mut next = 0;
        group.bench_function(variant.name(), |b| {
            b.iter(|| {
                runtime.block_on(phase(&limiter, next));
                next += 1;
            });
        });
        runtime.block_on(limiter.stop(Duration::from_secs(1)));
    }
    group.finish();
}

/// Instruction counts under callgrind (see `hot_path.rs`). `LLMRL_BENCH_CALLGRIND` is one of
///
/// - `five:<fixed|flexible|flexible_callback>:<jobs>`: one batch of `<jobs>` five-type jobs;
/// - `adjust:<never|every_settlement>:<phases>`: `<phases>` `ratio_adjustment` phases
///   ([`PHASE_JOBS`] settlements each);
///
/// each after one unmeasured warm-up batch or phase. Only [`callgrind_section`] is meant to be
/// collected:
///
/// ```text
/// valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*callgrind_section*' \
///     target/release/deps/ratios-<hash>   # with LLMRL_BENCH_CALLGRIND set
/// ```
fn callgrind(scenario: &str) {
    let fields: Vec<&str> = scenario.split(':').collect();
    let [kind, variant, count] = fields[..] else {
        panic!("expected <kind>:<variant>:<count>, got {scenario}");
    };
    let count: usize = count.parse().expect("a number");
    let runtime = current_thread();
    match kind {
        "five" => {
            let limiter = runtime.block_on(async { five_limiter(FiveTypes::parse(variant)) });
            runtime.block_on(five_batch(&limiter, count));
            let before = SLOT_CHANGES.load(Ordering::Relaxed);
            callgrind_section(|| runtime.block_on(five_batch(&limiter, count)));
            let calls = SLOT_CHANGES.load(Ordering::Relaxed) - before;
            eprintln!("{count} jobs, {calls} on_available_slots_change calls");
            runtime.block_on(limiter.stop(Duration::ZERO));
        }
        "adjust" => {
            let releases = Adjusting::parse(variant).releases_per_adjustment();
            let limiter =
                runtime.block_on(async { fifty_limiter(releases).build().expect("limiter") });
            runtime.block_on(phase(&limiter, 0));
            callgrind_section(|| {
                runtime.block_on(async {
                    for p in 1..=count {
                        phase(&limiter, p).await;
                    }
                });
            });
            eprintln!("{} settlements", count * PHASE_JOBS);
            runtime.block_on(limiter.stop(Duration::ZERO));
        }
        other => panic!("unknown scenario {other}: expected five or adjust"),
    }
}

#[inline(never)]
fn callgrind_section<R>(f: impl FnOnce() -> R) -> R {
    black_box(f())
}

fn main() {
    if let Ok(scenario) = std::env::var("LLMRL_BENCH_CALLGRIND") {
        callgrind(&scenario);
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    five_types(&mut criterion);
    ratio_adjustment(&mut criterion);
    criterion.final_summary();
    black_box(COMPLETED.load(Ordering::Relaxed));
}
