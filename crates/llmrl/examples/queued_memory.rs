//! Memory held per queued job (see `BENCHMARKS.md` at the workspace root).
//!
//! One model with a single concurrency unit, held by a job that never ends; then `N` more jobs
//! are queued (their wait bound is a day, so none times out) and the process's anonymous
//! resident memory (`RssAnon` in `/proc/self/status`) is read before and after. The difference
//! divided by `N` is the memory one waiting job costs, including its `JobHandle` kept by the
//! caller.
//!
//! The workspace forbids `unsafe` code, so a counting `#[global_allocator]` is not an option;
//! RSS deltas of a fresh process are used instead, one child process per `N` so that memory freed
//! by an earlier measurement cannot be reused by a later one.
//!
//! ```text
//! cargo run --release -p llmrl --example queued_memory            # 10 000, 100 000, 1 000 000
//! cargo run --release -p llmrl --example queued_memory -- 250000  # one measurement
//! ```
#![allow(clippy::print_stdout)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use llmrl::{
    JobHandle, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Pricing, Usage,
};
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
enum Model {
    Only,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Task {
    Call,
}

type Handle = JobHandle<Model, (), ()>;

const DEFAULT_COUNTS: [usize; 3] = [10_000, 100_000, 1_000_000];

/// A field of `/proc/self/status`, in KB.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn queue(limiter: &Limiter<Model, Task>, gate: Option<Arc<Notify>>) -> Handle {
    limiter.queue_job(
        JobRequest::with_args("queued", Task::Call, gate, |ctx| async move {
            if let Some(gate) = ctx.args {
                gate.notified().await;
            }
            JobResult::<(), ()>::done((), Usage::new().input_tokens(100).requests(1))
        })
        .on_complete(|_| {}),
    )
}

/// Returns once every task spawned before the call has been polled (FIFO scheduler), i.e. every
/// queued job has reached its wait queue.
async fn all_polled() {
    tokio::spawn(async {}).await.expect("probe task");
}

/// Measures `n` queued jobs in this process; prints `n bytes_per_job rss_anon_delta_kb`.
fn measure(n: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let limiter = Limiter::<Model, Task>::builder(|m| match m {
            Model::Only => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0))
                .tokens_per_minute(1_000_000_000_000_000)
                .requests_per_minute(1_000_000_000_000)
                .max_concurrent_requests(1),
        })
        .job_types(|t| match t {
            Task::Call => JobTypeConfig::new()
                .estimated_tokens(100)
                .max_wait(Model::Only, Duration::from_secs(86_400)),
        })
        .build()
        .expect("limiter");
        // The job holding the only concurrency unit, and a first waiter so that every lazily
        // allocated structure (queues, timer wheel levels) exists before the baseline.
        let gate = Arc::new(Notify::new());
        let holder = queue(&limiter, Some(gate.clone()));
        let warm = queue(&limiter, None);
        all_polled().await;

        let before = status_kb("RssAnon");
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            handles.push(queue(&limiter, None));
        }
        all_polled().await;
        let after = status_kb("RssAnon");

        // Everything is still waiting: the holder has not been released.
        let delta_kb = after.saturating_sub(before);
        #[allow(clippy::cast_precision_loss)]
        let per_job = (delta_kb * 1024) as f64 / n as f64;
        println!("{n} {per_job:.1} {delta_kb}");

        // Drain everything to check the jobs really were waiting and all complete.
        gate.notify_one();
        assert!(holder.await.is_ok());
        assert!(warm.await.is_ok());
        for handle in handles {
            assert!(handle.await.is_ok(), "queued job failed");
        }
        limiter.stop(Duration::from_secs(1)).await;
    });
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.replace('_', "").parse().expect("a job count"))
        .collect();
    if let [n] = args[..] {
        measure(n);
        return;
    }
    let counts = if args.is_empty() {
        DEFAULT_COUNTS.to_vec()
    } else {
        args
    };
    let exe = std::env::current_exe().expect("current exe");
    println!(
        "JobHandle<Model, (), ()> kept by the caller: {} bytes per job (included below)",
        std::mem::size_of::<Handle>()
    );
    println!(
        "{:>12} {:>16} {:>16}",
        "queued jobs", "RssAnon delta", "bytes per job"
    );
    for n in counts {
        let output = Command::new(&exe)
            .arg(n.to_string())
            .output()
            .expect("run a measurement");
        assert!(output.status.success(), "measurement for {n} failed");
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, per_job, delta_kb] = fields[..] else {
            panic!("unexpected output: {line}");
        };
        println!("{n:>12} {:>13} KB {per_job:>16}", delta_kb);
    }
}
