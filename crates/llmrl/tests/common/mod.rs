//! Fixtures shared by the integration tests: ids, a virtual clock anchored at a UTC midnight,
//! and a recorder of what jobs did and when.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmrl::{Clock, Event, JobContext, JobResult, Pricing, Timestamp, Usage};

/// 2026-01-01T00:00:00Z: second 0 of a minute and of a UTC day.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// Five models, for escalation chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
pub enum Five {
    A,
    B,
    C,
    D,
    E,
}

/// One model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
pub enum Solo {
    Only,
}

/// One job type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
pub enum Work {
    Job,
}

/// The clock every test uses: virtual, starting at [`EPOCH_MS`].
pub fn clock() -> Clock {
    Clock::virtual_at(Timestamp::from_millis(EPOCH_MS))
}

/// Milliseconds since [`EPOCH_MS`] on `clock`.
pub fn elapsed_ms(clock: &Clock) -> u64 {
    clock.now().as_millis() - EPOCH_MS
}

/// $1 / $0.5 / $2 per million input / cached / output tokens.
pub const fn pricing() -> Pricing {
    Pricing::new(1.0, 0.5, 2.0)
}

/// Something that happened, with the virtual time (ms since [`EPOCH_MS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Started {
        job: String,
        model: String,
        at: u64,
        attempt: u32,
    },
    Escalated {
        job: String,
        from: String,
        at: u64,
    },
    Delegated {
        job: String,
        from: String,
        at: u64,
    },
}

/// Records the limiter's job events in order.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    /// A listener for `on_event` that records into this recorder.
    pub fn listener(&self, clock: Clock) -> impl Fn(&Event) + Send + Sync + 'static {
        let seen = self.0.clone();
        move |event| {
            let at = elapsed_ms(&clock);
            let entry = match event {
                Event::Started {
                    job_id,
                    model,
                    attempt,
                    ..
                } => Seen::Started {
                    job: job_id.to_string(),
                    model: model.to_string(),
                    at,
                    attempt: *attempt,
                },
                Event::Escalated { job_id, from, .. } => Seen::Escalated {
                    job: job_id.to_string(),
                    from: from.to_string(),
                    at,
                },
                Event::Delegated { job_id, from, .. } => Seen::Delegated {
                    job: job_id.to_string(),
                    from: from.to_string(),
                    at,
                },
                _ => return,
            };
            seen.lock().unwrap().push(entry);
        }
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// Where and when `job` started (its attempts in order).
    pub fn starts(&self, job: &str) -> Vec<(String, u64)> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Started {
                    job: j, model, at, ..
                } if j == job => Some((model, at)),
                _ => None,
            })
            .collect()
    }

    /// When `job` gave up on each model it escalated from.
    pub fn escalations(&self, job: &str) -> Vec<(String, u64)> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Escalated { job: j, from, at } if j == job => Some((from, at)),
                _ => None,
            })
            .collect()
    }
}

pub type BoxedResult<M> = Pin<Box<dyn Future<Output = JobResult<M, String>> + Send>>;

/// A job that runs for `run_for` (virtual time), then succeeds with the model it ran on as its
/// value, reporting `usage`.
pub fn sleeper<M>(
    run_for: Duration,
    usage: Usage,
) -> impl Fn(JobContext<M>) -> BoxedResult<M> + Send + 'static
where
    M: Send + 'static,
{
    move |ctx| {
        Box::pin(async move {
            tokio::time::sleep(run_for).await;
            JobResult::done(ctx.model, usage)
        })
    }
}

/// Lets every task that can run, run, without advancing virtual time.
pub async fn settle_tasks() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Advances virtual time by `d` (tokio's paused clock), letting tasks run on the way.
pub async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
    settle_tasks().await;
}
