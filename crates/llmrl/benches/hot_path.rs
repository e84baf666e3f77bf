//! Hot-path benchmarks (see `BENCHMARKS.md` at the workspace root).
//!
//! - `hot_path/{current_thread,multi_thread_2}/<batch>`: queue → admit → run a no-op job →
//!   settle → `on_complete`, on one model whose limits are never reached.
//! - `admission_with_waiters/<n>`: the same hot path for job type `A` while `n` jobs of job type
//!   `B` wait on the same model (B's part of the concurrency is held by one job that never ends).
//! - `grant_path/<n>`: with about `n` jobs waiting in one FIFO queue of a model with one
//!   concurrency unit, free the unit and let the head be admitted, run and settle (which frees the
//!   unit for the next head); timed per granted job.
//!
//! Run with `cargo bench -p llmrl --bench hot_path -- --warm-up-time 1 --measurement-time 3`.
//! Figures are only comparable when each benchmark runs in a process of its own (append a filter
//! such as `'^hot_path/current_thread/1000$'`): glibc stops trimming the heap once a large block
//! has been freed, so a benchmark that runs after a batch of 10 000 gets faster. See "Allocator
//! state" in `BENCHMARKS.md`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use llmrl::{
    Completion, JobHandle, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Pricing,
    Usage,
};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
enum Model {
    Only,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Task {
    A,
    B,
}

/// Limits no benchmark ever reaches.
const HUGE_TPM: u64 = 1_000_000_000_000_000;
const HUGE_RPM: u64 = 1_000_000_000_000;
const HUGE_CONC: u64 = 1_000_000_000;
/// Waiting jobs must not time out during a run.
const LONG_WAIT: Duration = Duration::from_secs(86_400);
/// What a no-op job reports: exactly its type's estimate, so settlement moves no counter.
const TOKENS: u64 = 100;

/// Counts `on_complete` calls, so the callback does real (if tiny) work.
static COMPLETED: AtomicU64 = AtomicU64::new(0);

type Handle = JobHandle<Model, (), ()>;

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn no_op_usage() -> Usage {
    Usage::new().input_tokens(TOKENS).requests(1)
}

fn on_complete(_: &Completion<Model, ()>) {
    COMPLETED.fetch_add(1, Ordering::Relaxed);
}

/// Queues one no-op job of `task`.
fn queue_no_op(limiter: &Limiter<Model, Task>, task: Task) -> Handle {
    limiter.queue_job(
        JobRequest::new("bench", task, |_| async {
            JobResult::<(), ()>::done((), no_op_usage())
        })
        .on_complete(on_complete),
    )
}

/// Queues a job of `task` that runs until `gate` is notified (forever without a gate).
fn queue_gated(limiter: &Limiter<Model, Task>, task: Task, gate: Option<Arc<Notify>>) -> Handle {
    limiter.queue_job(
        JobRequest::with_args("gated", task, gate, |ctx| async move {
            match ctx.args {
                Some(gate) => gate.notified().await,
                None => std::future::pending().await,
            }
            JobResult::<(), ()>::done((), no_op_usage())
        })
        .on_complete(on_complete),
    )
}

/// Queues `n` no-op jobs, then awaits every handle.
async fn batch(limiter: &Limiter<Model, Task>, task: Task, n: usize) {
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        handles.push(queue_no_op(limiter, task));
    }
    for handle in handles {
        let outcome = handle.await;
        debug_assert!(outcome.is_ok());
        black_box(outcome).ok();
    }
}

/// Returns once every task spawned before this call has been polled at least once: the
/// current-thread scheduler runs spawned tasks in FIFO order.
async fn settle_spawned() {
    tokio::spawn(async {}).await.expect("probe task");
}

/// One model with huge token and request limits and `conc` concurrent requests; `A` and `B`
/// have the fixed ratios `ratio_a` and `ratio_b`.
fn limiter(conc: u64, ratio_a: f64, ratio_b: f64) -> Limiter<Model, Task> {
    let job_type = |ratio| {
        JobTypeConfig::new()
            .estimated_tokens(TOKENS)
            .fixed_ratio(ratio)
            .max_wait(Model::Only, LONG_WAIT)
    };
    Limiter::<Model, Task>::builder(|m| match m {
        Model::Only => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0))
            .tokens_per_minute(HUGE_TPM)
            .requests_per_minute(HUGE_RPM)
            .max_concurrent_requests(conc),
    })
    .job_types(|t| match t {
        Task::A => job_type(ratio_a),
        Task::B => job_type(ratio_b),
    })
    .build()
    .expect("limiter")
}

/// Huge limits, split evenly between `A` and `B`.
fn open_limiter() -> Limiter<Model, Task> {
    limiter(HUGE_CONC, 0.5, 0.5)
}

/// Like [`open_limiter`] but `B` may hold exactly one job in flight (CONC 10^6, ratio 10^-6),
/// so B jobs queue up behind one that never ends while `A` keeps 999 999 concurrency units.
fn split_limiter() -> Limiter<Model, Task> {
    limiter(1_000_000, 0.999_999, 0.000_001)
}

/// One concurrency unit per type: every job but the running one waits, FIFO.
fn single_unit_limiter() -> Limiter<Model, Task> {
    limiter(2, 0.5, 0.5)
}

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path");
    for (name, runtime) in [
        ("current_thread", current_thread()),
        ("multi_thread_2", multi_thread(2)),
    ] {
        let limiter = runtime.block_on(async { open_limiter() });
        for n in [1_000_usize, 10_000] {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                // The batch runs inside a task so that on the multi-thread runtime it is queued
                // from a worker thread, like an application's own tasks.
                b.iter(|| {
                    runtime.block_on(async {
                        let limiter = limiter.clone();
                        tokio::spawn(async move { batch(&limiter, Task::A, n).await })
                            .await
                            .expect("batch task");
                    });
                });
            });
        }
        runtime.block_on(limiter.stop(Duration::from_secs(1)));
    }
    group.finish();
}

/// With [`split_limiter`]: one B job holding B's only unit forever, then `waiting` B jobs queued
/// behind it. Returns their handles (dropping them does not cancel the jobs).
async fn park_b_jobs(limiter: &Limiter<Model, Task>, waiting: usize) -> Vec<Handle> {
    let mut parked = Vec::with_capacity(waiting + 1);
    if waiting > 0 {
        for _ in 0..=waiting {
            parked.push(queue_gated(limiter, Task::B, None));
        }
    }
    settle_spawned().await;
    parked
}

fn admission_with_waiters(c: &mut Criterion) {
    const BATCH: usize = 1_000;
    let mut group = c.benchmark_group("admission_with_waiters");
    group.throughput(Throughput::Elements(BATCH as u64));
    for waiting in [0_usize, 1_000, 100_000] {
        let runtime = current_thread();
        let limiter = runtime.block_on(async { split_limiter() });
        let parked = runtime.block_on(park_b_jobs(&limiter, waiting));
        group.bench_with_input(BenchmarkId::from_parameter(waiting), &waiting, |b, _| {
            b.iter(|| runtime.block_on(batch(&limiter, Task::A, BATCH)));
        });
        runtime.block_on(limiter.stop(Duration::ZERO));
        drop(parked);
    }
    group.finish();
}

/// A FIFO queue of about `waiting` jobs on a model with one concurrency unit, made of segments:
/// a gate job (runs until notified) followed by `GRANTS` no-op jobs. Freeing the running gate
/// admits the segment's no-op jobs one after another (each one's settlement grants the next),
/// then the next gate, which holds the unit again.
struct Pipeline {
    limiter: Limiter<Model, Task>,
    /// The gate holding the unit now.
    running: Arc<Notify>,
    /// Queued segments, oldest first: the no-op jobs, then the gate after them.
    segments: VecDeque<(Vec<Handle>, Arc<Notify>)>,
}

/// Grants timed per `grant_path` iteration.
const GRANTS: usize = 100;

impl Pipeline {
    async fn new(waiting: usize) -> Self {
        let limiter = single_unit_limiter();
        let running = Arc::new(Notify::new());
        drop(queue_gated(&limiter, Task::A, Some(running.clone())));
        let mut pipeline = Self {
            limiter,
            running,
            segments: VecDeque::new(),
        };
        for _ in 0..waiting.div_ceil(GRANTS + 1) {
            pipeline.push_segment();
        }
        settle_spawned().await;
        pipeline
    }

    fn push_segment(&mut self) {
        let jobs = (0..GRANTS)
            .map(|_| queue_no_op(&self.limiter, Task::A))
            .collect();
        let gate = Arc::new(Notify::new());
        // The gate's handle is not needed: dropping it does not cancel the job.
        drop(queue_gated(&self.limiter, Task::A, Some(gate.clone())));
        self.segments.push_back((jobs, gate));
    }

    /// The measured part: frees the unit and waits until the oldest segment's `GRANTS` jobs
    /// were granted, ran and settled, in FIFO order; the next gate then holds the unit.
    async fn release(&mut self) {
        let (jobs, gate) = self.segments.pop_front().expect("a segment");
        self.running.notify_one();
        for job in jobs {
            let outcome = job.await;
            assert!(outcome.is_ok(), "granted job failed");
        }
        self.running = gate;
    }

    /// Not measured: queues a new segment at the back and lets its jobs reach the queue.
    async fn refill(&mut self) {
        self.push_segment();
        settle_spawned().await;
    }
}

fn grant_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("grant_path");
    group.throughput(Throughput::Elements(GRANTS as u64));
    for waiting in [1_000_usize, 100_000] {
        let runtime = current_thread();
        let mut pipeline = runtime.block_on(Pipeline::new(waiting));
        group.bench_with_input(BenchmarkId::from_parameter(waiting), &waiting, |b, _| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        pipeline.release().await;
                        total += start.elapsed();
                        pipeline.refill().await;
                    }
                    total
                })
            });
        });
        runtime.block_on(pipeline.limiter.stop(Duration::ZERO));
    }
    group.finish();
}

/// Instruction counts under callgrind (machine-independent, and blind to cache misses):
/// `LLMRL_BENCH_CALLGRIND=hot:<waiting>[:<jobs>]` runs one batch of `<jobs>` (default
/// [`CALLGRIND_JOBS`]) A jobs while `<waiting>` B jobs wait; `grant:<waiting>` runs [`CALLGRIND_STEPS`] `grant_path` steps
/// ([`GRANTS`] grants each). Only [`callgrind_section`] is meant to be collected:
///
/// ```text
/// valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*callgrind_section*' \
///     target/release/deps/hot_path-<hash>   # with LLMRL_BENCH_CALLGRIND set
/// ```
const CALLGRIND_JOBS: usize = 10_000;
const CALLGRIND_STEPS: usize = 10;

#[inline(never)]
fn callgrind_section<R>(f: impl FnOnce() -> R) -> R {
    black_box(f())
}

fn callgrind(scenario: &str) {
    let mut fields = scenario.split(':');
    let kind = fields.next().unwrap_or_default();
    let mut number = |default: usize| {
        fields
            .next()
            .map_or(default, |n| n.parse().expect("a number"))
    };
    let waiting = number(0);
    let jobs = number(CALLGRIND_JOBS);
    let runtime = current_thread();
    match kind {
        "hot" => {
            let limiter = runtime.block_on(async { split_limiter() });
            let parked = runtime.block_on(park_b_jobs(&limiter, waiting));
            // Warm up: first-use allocations, then the measured batch.
            runtime.block_on(batch(&limiter, Task::A, jobs));
            callgrind_section(|| runtime.block_on(batch(&limiter, Task::A, jobs)));
            runtime.block_on(limiter.stop(Duration::ZERO));
            drop(parked);
        }
        "grant" => {
            let mut pipeline = runtime.block_on(Pipeline::new(waiting));
            runtime.block_on(async {
                pipeline.release().await;
                pipeline.refill().await;
            });
            for _ in 0..CALLGRIND_STEPS {
                callgrind_section(|| runtime.block_on(pipeline.release()));
                runtime.block_on(pipeline.refill());
            }
            runtime.block_on(pipeline.limiter.stop(Duration::ZERO));
        }
        other => panic!("unknown scenario {other}: expected hot:<n> or grant:<n>"),
    }
}

fn main() {
    if let Ok(scenario) = std::env::var("LLMRL_BENCH_CALLGRIND") {
        callgrind(&scenario);
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    hot_path(&mut criterion);
    admission_with_waiters(&mut criterion);
    grant_path(&mut criterion);
    criterion.final_summary();
    black_box(COMPLETED.load(Ordering::Relaxed));
}
