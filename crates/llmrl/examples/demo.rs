//! A small demo of the main job: 300 jobs of two types through three models, on a simulated
//! clock (ten minutes of traffic run in well under a second). Shows where jobs ran, how many
//! escalated or failed, and what it all cost.
//!
//! Run with `cargo run --release -p llmrl --example demo`.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use llmrl::{
    Cause, Clock, Event, Id, JobContext, JobRequest, JobResult, JobType, JobTypeConfig, Limiter,
    ModelConfig, ModelId, Pricing, Timestamp, Usage,
};

const START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
enum Model {
    #[llmrl(name = "openai/gpt-5.2")]
    Gpt,
    #[llmrl(name = "anthropic/claude-sonnet-4.5")]
    Claude,
    #[llmrl(name = "local/llama")]
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
enum Task {
    Summary,
    Chat,
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Clock::virtual_at(Timestamp::from_millis(START_MS));
    let escalations = Arc::new(AtomicU32::new(0));
    let counted = escalations.clone();
    let limiter = Limiter::<Model, Task>::builder(|model| match model {
        Model::Gpt => ModelConfig::new(Pricing::new(1.75, 0.175, 14.0))
            .tokens_per_minute(200_000)
            .requests_per_minute(60),
        Model::Claude => ModelConfig::new(Pricing::new(3.0, 0.3, 15.0))
            .tokens_per_minute(100_000)
            .max_concurrent_requests(8),
        Model::Local => ModelConfig::new(Pricing::new(0.0, 0.0, 0.0)).max_concurrent_requests(4),
    })
    .job_types(|task| match task {
        Task::Summary => JobTypeConfig::new()
            .estimated_tokens(12_000)
            .ratio(0.6)
            .max_wait(Model::Gpt, Duration::from_secs(20))
            .max_wait(Model::Claude, Duration::from_secs(10)),
        Task::Chat => JobTypeConfig::new()
            .estimated_tokens(2_000)
            .max_wait(Model::Gpt, Duration::ZERO)
            .max_wait(Model::Claude, Duration::ZERO),
    })
    .escalation_order([Model::Gpt, Model::Claude, Model::Local])
    .on_event(move |event| {
        if matches!(event, Event::Escalated { .. }) {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    })
    .clock(clock.clone())
    .build()?;

    // 300 jobs over ten minutes: a burst at the start, then a steady trickle.
    let mut handles = Vec::new();
    for i in 0..300u64 {
        let arrival = if i < 120 {
            i * 100
        } else {
            12_000 + (i - 120) * 3_000
        };
        let now = clock.now().as_millis() - START_MS;
        tokio::time::sleep(Duration::from_millis(arrival.saturating_sub(now))).await;
        let task = if i % 3 == 0 {
            Task::Summary
        } else {
            Task::Chat
        };
        let seconds = 2 + i % 7;
        handles.push(limiter.queue_job(JobRequest::new(
            format!("job-{i}"),
            task,
            move |ctx: JobContext<Model>| async move {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                let (input, output) = match task {
                    Task::Summary => (9_000 + i * 13 % 3_000, 800),
                    Task::Chat => (1_200, 400 + i * 7 % 300),
                };
                let usage = Usage::new()
                    .input_tokens(input)
                    .output_tokens(output)
                    .requests(1);
                JobResult::<Model, String>::done(ctx.model, usage)
            },
        )));
    }

    let mut per_model: BTreeMap<&str, (u32, f64)> = BTreeMap::new();
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    let mut total = 0.0;
    for handle in handles {
        match handle.await {
            Ok(done) => {
                let entry = per_model.entry(done.model.name()).or_default();
                entry.0 += 1;
                entry.1 += done.total_cost;
                total += done.total_cost;
            }
            Err(failed) => {
                let cause = match failed.cause {
                    Cause::Exhausted { .. } => "all models exhausted".to_owned(),
                    other => format!("{other:?}"),
                };
                *failures.entry(cause).or_default() += 1;
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let minutes = (clock.now().as_millis() - START_MS) as f64 / 60_000.0;
    println!("llmrl demo: 300 jobs over {minutes:.1} simulated minutes");
    for (model, (jobs, cost)) in &per_model {
        println!("  {model:<30} {jobs:>4} jobs  ${cost:.4}");
    }
    for (cause, n) in &failures {
        println!("  failed ({cause}): {n}");
    }
    println!("  escalations: {}", escalations.load(Ordering::Relaxed));
    println!("  total cost: ${total:.4}");
    limiter.stop(Duration::from_secs(1)).await;
    Ok(())
}
