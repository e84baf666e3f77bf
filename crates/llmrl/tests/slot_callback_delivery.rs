//! Delivery of `on_available_slots_change` (SPEC §6.5): calls are made outside the limiter's
//! locks, one at a time and in order, so a callback may use the limiter — read its availability,
//! release capacity — and the changes it causes are delivered after it returns; a callback that
//! panics loses nothing that follows.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{clock, pricing, sleeper};
use llmrl::{
    Config, JobRequest, JobTypeConfig, Lease, ModelConfig, NamedLimiter, SlotsChangeReason, Usage,
};

fn config() -> Config {
    Config::new()
        .model("m", ModelConfig::new(pricing()).max_concurrent_requests(2))
        .job_type("j", JobTypeConfig::new().max_wait("m", Duration::ZERO))
}

#[tokio::test(start_paused = true)]
async fn a_callback_that_reads_availability_and_releases_a_lease_gets_every_change_in_order() {
    let limiter_cell: Arc<OnceLock<NamedLimiter>> = Arc::default();
    let held: Arc<Mutex<Option<Lease<Arc<str>>>>> = Arc::default();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (cell, lease, seen) = (limiter_cell.clone(), held.clone(), calls.clone());
    let limiter = NamedLimiter::builder(config())
        .clock(clock())
        .on_available_slots_change(move |availability, reason, _| {
            // Re-enter the limiter: read what it offers now.
            let read = cell.get().map(|l| l.availability().slots);
            seen.lock()
                .unwrap()
                .push((availability.slots, read, reason));
            // When the job ends, release the lease too: that change is delivered next.
            if availability.slots == Some(1) && seen.lock().unwrap().len() == 3 {
                drop(lease.lock().unwrap().take());
            }
        })
        .build()
        .unwrap();
    limiter_cell.set(limiter.clone()).unwrap();

    let l = limiter.acquire("lease", "j").await.unwrap().unwrap();
    *held.lock().unwrap() = Some(l);
    let job = limiter
        .queue_job(JobRequest::new(
            "job",
            "j",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap();
    job.await.unwrap();
    assert!(
        held.lock().unwrap().is_none(),
        "the callback released the lease"
    );
    let concurrency = SlotsChangeReason::ConcurrentRequests;
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            (Some(1), Some(Some(1)), concurrency), // the lease
            (Some(0), Some(Some(0)), concurrency), // the job starts
            (Some(1), Some(Some(1)), concurrency), // the job ends
            (Some(2), Some(Some(2)), concurrency), // the lease, released by the callback
        ]
    );
    assert_eq!(limiter.availability().slots, Some(2));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_callback_does_not_stop_later_deliveries_or_the_limiter() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let limiter = NamedLimiter::builder(config())
        .clock(clock())
        .on_available_slots_change(move |availability, _, _| {
            let mut calls = seen.lock().unwrap();
            calls.push(availability.slots);
            if calls.len() == 1 {
                drop(calls);
                panic!("a bug in the user's callback");
            }
        })
        .build()
        .unwrap();
    let done = limiter
        .queue_job(JobRequest::new(
            "job",
            "j",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(&*done.model, "m", "the job ran despite the panic");
    assert_eq!(*calls.lock().unwrap(), vec![Some(1), Some(2)]);
    let again = limiter
        .queue_job(JobRequest::new(
            "again",
            "j",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap()
        .await;
    assert!(again.is_ok());
    assert_eq!(
        *calls.lock().unwrap(),
        vec![Some(1), Some(2), Some(1), Some(2)]
    );
    limiter.stop(Duration::ZERO).await;
}
