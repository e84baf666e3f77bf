//! A backend written outside the crate (SPEC §7): the limiter follows what the `Backend` trait
//! answers — refusals, an instance the backend forgot, failed settlements, silence — and syncs
//! on its heartbeat.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Five, Work, clock, elapsed_ms, pricing, sleeper};
use llmrl::backend::{
    Admission, AdmitReply, Backend, BackendError, FleetFigures, FleetView, InProcessFleet,
    ModelLimits, OwnUsage, Settlement, SettlementOutcome,
};
use llmrl::{
    Cause, Config, Event, FailureMode, JobRequest, JobTypeConfig, Limiter, ModelConfig,
    NamedLimiter, Timestamp, Usage,
};
use tokio::sync::watch;

/// An in-process fleet behind a script: it logs every call and can refuse admissions, forget
/// the instance, fail settlements or stop answering.
#[derive(Clone, Default)]
struct Scripted {
    fleet: InProcessFleet,
    script: Arc<Script>,
}

#[derive(Default)]
struct Script {
    calls: Mutex<Vec<(&'static str, Timestamp)>>,
    registrations: Mutex<Vec<OwnUsage>>,
    refuse: AtomicUsize,
    forget: AtomicUsize,
    fail_settlements: AtomicUsize,
    silent: AtomicBool,
    /// Push no changes: the channel's sender is gone from the start.
    no_push: AtomicBool,
}

/// Takes one from `counter` if it is not zero.
fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Scripted {
    async fn call(&self, name: &'static str, now: Timestamp) {
        if self.script.silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.script.calls.lock().unwrap().push((name, now));
    }

    fn calls(&self, name: &str) -> Vec<Timestamp> {
        let calls = self.script.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|&(_, at)| at)
            .collect()
    }

    fn registrations(&self) -> Vec<OwnUsage> {
        self.script.registrations.lock().unwrap().clone()
    }
}

impl Backend for Scripted {
    async fn register(
        &self,
        instance: &str,
        models: &[ModelLimits],
        own: &OwnUsage,
        now: Timestamp,
    ) -> Result<FleetView, BackendError> {
        self.call("register", now).await;
        self.script.registrations.lock().unwrap().push(own.clone());
        self.fleet.register(instance, models, own, now).await
    }

    async fn admit(
        &self,
        instance: &str,
        admission: Admission,
    ) -> Result<AdmitReply, BackendError> {
        self.call("admit", admission.now).await;
        if take(&self.script.forget) {
            return Err(BackendError::NotRegistered);
        }
        let reply = self.fleet.admit(instance, admission).await?;
        if reply.admitted && take(&self.script.refuse) {
            // As if another instance had taken the room first: give the reservation back.
            let undo = Settlement::new(
                admission.model,
                reply.figures.windows,
                admission.estimates,
                SettlementOutcome::NeverStarted,
                admission.now,
            );
            let figures = self.fleet.settle(instance, undo).await?;
            return Ok(AdmitReply::new(false, reply.instances, figures));
        }
        Ok(reply)
    }

    async fn settle(
        &self,
        instance: &str,
        settlement: Settlement,
    ) -> Result<FleetFigures, BackendError> {
        self.call("settle", settlement.now).await;
        if take(&self.script.fail_settlements) {
            return Err(BackendError::Unreachable("scripted failure".into()));
        }
        self.fleet.settle(instance, settlement).await
    }

    async fn sync(
        &self,
        instance: &str,
        now: Timestamp,
    ) -> Result<Option<FleetView>, BackendError> {
        self.call("sync", now).await;
        self.fleet.sync(instance, now).await
    }

    async fn unregister(&self, instance: &str) -> Result<(), BackendError> {
        if self.script.silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.fleet.unregister(instance).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        if self.script.no_push.load(Ordering::SeqCst) {
            return watch::channel(0).1;
        }
        self.fleet.changes()
    }
}

/// A and B with 100 000 TPM each; jobs estimate 10 000 tokens and wait `wait` on A.
fn typed(backend: &Scripted, wait: Duration) -> Limiter<Five, Work> {
    typed_observed(backend, wait, |_| {})
}

/// [`typed`], with `listener` hearing the limiter's events.
fn typed_observed(
    backend: &Scripted,
    wait: Duration,
    listener: impl Fn(&Event) + Send + Sync + 'static,
) -> Limiter<Five, Work> {
    Limiter::<Five, Work>::builder(|_| ModelConfig::new(pricing()).tokens_per_minute(100_000))
        .job_types(|Work::Job| {
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .max_wait(Five::A, wait)
                .max_wait(Five::B, Duration::ZERO)
        })
        .escalation_order([Five::A, Five::B])
        .clock(clock())
        .backend(backend.clone())
        .on_event(listener)
        .build()
        .unwrap()
}

fn ms(backend_times: &[Timestamp]) -> Vec<u64> {
    backend_times
        .iter()
        .map(|t| t.as_millis() - common::EPOCH_MS)
        .collect()
}

fn used_tpm(limiter: &Limiter<Five, Work>, model: usize) -> u64 {
    limiter.availability().models[model]
        .tokens_per_minute
        .unwrap()
        .used
}

#[tokio::test(start_paused = true)]
async fn a_refused_admission_is_undone_and_retried_while_the_job_may_wait() {
    let backend = Scripted::default();
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let heard = refusals.clone();
    let limiter = typed_observed(&backend, Duration::from_secs(30), move |event| {
        if let Event::AdmissionRefused { job_type, model } = event {
            heard
                .lock()
                .unwrap()
                .push((job_type.to_string(), model.to_string()));
        }
    });
    limiter.ready().await;
    backend.script.refuse.store(1, Ordering::SeqCst);
    let handle = limiter.queue_job(JobRequest::new(
        "job",
        Work::Job,
        sleeper(Duration::from_secs(1), Usage::new().input_tokens(4_000)),
    ));
    common::settle_tasks().await;
    assert_eq!(
        backend.calls("admit").len(),
        2,
        "refused once, then admitted"
    );
    let a = limiter.availability();
    assert_eq!(
        a.job_types[0].in_flight, 1,
        "the refused reservation was undone"
    );
    assert_eq!(used_tpm(&limiter, 0), 10_000, "one estimate, not two");
    assert_eq!(
        *refusals.lock().unwrap(),
        [("Job".to_owned(), "A".to_owned())],
        "the refusal was reported"
    );
    let done = handle.await.unwrap();
    assert_eq!(done.model, Five::A);
    assert_eq!(backend.fleet.used(0, limiter.clock().now())[0], 4_000);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_admission_that_may_not_wait_moves_to_the_next_model() {
    let backend = Scripted::default();
    let limiter = typed(&backend, Duration::ZERO);
    limiter.ready().await;
    backend.script.refuse.store(1, Ordering::SeqCst);
    let done = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new().input_tokens(4_000)),
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::B);
    assert_eq!(done.usage.len(), 1, "nothing ran on A");
    assert_eq!(used_tpm(&limiter, 0), 0, "A's reservation was given back");
    assert_eq!(used_tpm(&limiter, 1), 4_000);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_the_backend_forgot_registers_again_and_its_job_runs() {
    let backend = Scripted::default();
    let limiter = typed(&backend, Duration::from_secs(30));
    limiter.ready().await;
    assert_eq!(backend.registrations().len(), 1);
    backend.script.forget.store(1, Ordering::SeqCst);
    let done = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new().input_tokens(4_000)),
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::A);
    assert_eq!(
        backend.registrations().len(),
        2,
        "it registered again by itself"
    );
    assert_eq!(backend.fleet.instances(), 1);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_settlement_the_backend_missed_is_reported_by_the_next_registration() {
    let backend = Scripted::default();
    let limiter = typed(&backend, Duration::from_secs(30));
    limiter.ready().await;
    backend.script.fail_settlements.store(1, Ordering::SeqCst);
    let done = limiter
        .queue_job(JobRequest::new(
            "job",
            Work::Job,
            sleeper(
                Duration::from_secs(1),
                Usage::new().input_tokens(7_000).requests(1),
            ),
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::A);
    common::advance(Duration::from_secs(2)).await;
    let registrations = backend.registrations();
    assert_eq!(
        registrations.len(),
        2,
        "the failed settlement led to a re-registration"
    );
    assert_eq!(
        registrations[1].models[0],
        [7_000, 7_000, 1, 1, 0],
        "reporting what the instance used: tokens and requests per minute and day, none in flight"
    );
    assert_eq!(
        backend.fleet.used(0, limiter.clock().now())[0],
        7_000,
        "the fleet counts the actual usage, not the estimate"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_interval_sets_how_often_the_instance_syncs() {
    for (heartbeat, expected) in [
        (
            Some(Duration::from_secs(2)),
            vec![2_000, 4_000, 6_000, 8_000, 10_000],
        ),
        (None, vec![5_000, 10_000]),
    ] {
        let backend = Scripted::default();
        let builder = Limiter::<Five, Work>::builder(|_| {
            ModelConfig::new(pricing()).tokens_per_minute(1_000)
        })
        .escalation_order([Five::A])
        .clock(clock())
        .backend(backend.clone());
        let builder = match heartbeat {
            Some(every) => builder.heartbeat_interval(every),
            None => builder,
        };
        let limiter = builder.build().unwrap();
        limiter.ready().await;
        common::advance(Duration::from_millis(10_500)).await;
        let syncs: Vec<u64> = ms(&backend.calls("sync"))
            .into_iter()
            .filter(|&at| at > 0)
            .collect();
        assert_eq!(syncs, expected, "heartbeat {heartbeat:?}");
        assert_eq!(elapsed_ms(limiter.clock()), 10_500);
        limiter.stop(Duration::ZERO).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_pushes_nothing_is_synced_on_the_heartbeat_alone() {
    let backend = Scripted::default();
    backend.script.no_push.store(true, Ordering::SeqCst);
    let limiter =
        Limiter::<Five, Work>::builder(|_| ModelConfig::new(pricing()).tokens_per_minute(1_000))
            .escalation_order([Five::A])
            .clock(clock())
            .backend(backend.clone())
            .heartbeat_interval(Duration::from_secs(2))
            .build()
            .unwrap();
    limiter.ready().await;
    common::advance(Duration::from_millis(6_500)).await;
    assert_eq!(
        ms(&backend.calls("sync")),
        [2_000, 4_000, 6_000],
        "a closed change channel neither spins nor stops the heartbeat"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_settles_with_the_backend_like_a_job() {
    let backend = Scripted::default();
    let limiter = typed(&backend, Duration::ZERO);
    limiter.ready().await;
    let lease = limiter.acquire("lease", Work::Job).await.unwrap();
    assert_eq!(*lease.model(), Five::A);
    assert_eq!(backend.calls("admit").len(), 1);
    let entry = lease.release(Usage::new().input_tokens(2_500)).await;
    assert_eq!(entry.input_tokens, 2_500);
    assert_eq!(backend.calls("settle").len(), 1);
    assert_eq!(
        backend.fleet.used(0, limiter.clock().now())[0],
        2_500,
        "the fleet holds the lease's actual usage"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_never_answers_times_out_and_the_failure_mode_applies() {
    // Typed: open after 300 ms, so the job runs on local limits.
    let backend = Scripted::default();
    backend.script.silent.store(true, Ordering::SeqCst);
    let limiter = Limiter::<Five, Work>::builder(|_| ModelConfig::new(pricing()))
        .escalation_order([Five::A])
        .clock(clock())
        .backend(backend.clone())
        .backend_timeout(Duration::from_millis(300))
        .failure_mode(FailureMode::Open)
        .build()
        .unwrap();
    limiter.ready().await;
    assert_eq!(
        elapsed_ms(limiter.clock()),
        300,
        "ready once the registration timed out"
    );
    let done = limiter
        .queue_job(JobRequest::new(
            "open",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::A);
    let before = elapsed_ms(limiter.clock());
    limiter.stop(Duration::ZERO).await;
    assert_eq!(
        elapsed_ms(limiter.clock()) - before,
        300,
        "stop gives up on the silent backend after one timeout"
    );

    // Named: closed after 2 s, so the job is refused.
    let backend = Scripted::default();
    backend.script.silent.store(true, Ordering::SeqCst);
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()).tokens_per_minute(100_000))
        .job_type(
            "j",
            JobTypeConfig::new()
                .estimated_tokens(1_000)
                .max_wait("m", Duration::ZERO),
        );
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .backend(backend.clone())
        .backend_timeout(Duration::from_secs(2))
        .failure_mode(FailureMode::Closed)
        .build()
        .unwrap();
    limiter.ready().await;
    assert_eq!(elapsed_ms(limiter.clock()), 2_000);
    let failed = limiter
        .queue_job(JobRequest::new(
            "closed",
            "j",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::Exhausted {
            last_rejection: None
        }
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn closed_admits_nothing_even_on_a_model_without_limits() {
    let backend = Scripted::default();
    backend.script.silent.store(true, Ordering::SeqCst);
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type("j", JobTypeConfig::new().max_wait("m", Duration::ZERO));
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .backend(backend.clone())
        .backend_timeout(Duration::from_millis(100))
        .failure_mode(FailureMode::Closed)
        .build()
        .unwrap();
    limiter.ready().await;
    let outcome = limiter
        .queue_job(JobRequest::new(
            "closed",
            "j",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap()
        .await;
    assert!(
        matches!(&outcome, Err(e) if matches!(e.cause, Cause::Exhausted { .. })),
        "{outcome:?}"
    );
    limiter.stop(Duration::ZERO).await;
}
