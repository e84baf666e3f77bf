//! Logs (SPEC §3.1, §4.4, §7.4): what a limiter tells `tracing` — each job's span, its start,
//! settlement and end with the cause of a failure, overages and refunds, ratio moves, panics in
//! user callbacks, configuration warnings and fleet trouble.
//!
//! A small subscriber records everything on the test's thread (each test runs on a
//! current-thread runtime, so the limiter's tasks log there too).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Five, Work, clock, pricing, sleeper};
use llmrl::backend::InProcessFleet;
use llmrl::{
    Cause, Config, JobContext, JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig,
    NamedLimiter, RatioAdjustmentConfig, Usage,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};

type Fields = BTreeMap<String, String>;

#[derive(Clone, Debug)]
struct Logged {
    level: Level,
    fields: Fields,
}

impl Logged {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Logged>>>,
    spans: Arc<Mutex<Vec<Fields>>>,
    next_id: Arc<AtomicU64>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        fields.insert("span".to_owned(), span.metadata().name().to_owned());
        self.spans.lock().unwrap().push(fields);
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        self.events.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

impl Capture {
    /// Records this thread's logs until the guard is dropped.
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let guard = tracing::subscriber::set_default(capture.clone());
        (capture, guard)
    }

    fn with_message(&self, message: &str) -> Vec<Logged> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.message() == message)
            .cloned()
            .collect()
    }

    fn messages(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.message().to_owned())
            .collect()
    }
}

/// A and B with 100 000 TPM, one job at a time; jobs estimate 1 000 tokens and never wait.
fn limiter() -> Limiter<Five, Work> {
    Limiter::<Five, Work>::builder(|_| {
        ModelConfig::new(pricing())
            .tokens_per_minute(100_000)
            .max_concurrent_requests(1)
    })
    .job_types(|Work::Job| {
        JobTypeConfig::new()
            .estimated_tokens(1_000)
            .max_wait(Five::A, Duration::ZERO)
            .max_wait(Five::B, Duration::ZERO)
    })
    .escalation_order([Five::A, Five::B])
    .instance_id("logged")
    .clock(clock())
    .build()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_job_logs_its_start_settlement_and_completion_in_its_span() {
    let (logs, _guard) = Capture::install();
    let limiter = limiter();
    limiter
        .queue_job(JobRequest::new(
            "j1",
            Work::Job,
            sleeper(Duration::from_secs(1), Usage::new().input_tokens(400)),
        ))
        .await
        .unwrap();
    let spans = logs.spans.lock().unwrap().clone();
    let span = spans
        .iter()
        .find(|s| s["span"] == "llmrl.job")
        .expect("a span per job");
    assert_eq!(span["job_id"], "j1");
    assert_eq!(span["job_type"], "Job");
    assert_eq!(span["instance"], "logged");

    let started = &logs.with_message("job started")[0];
    assert_eq!(started.level, Level::DEBUG);
    assert_eq!(
        (started.field("model"), started.field("attempt")),
        (Some("A"), Some("1"))
    );
    let settled = &logs.with_message("settled")[0];
    assert_eq!(settled.level, Level::TRACE);
    assert_eq!(settled.field("job_id"), Some("j1"));
    assert_eq!(settled.field("known_usage"), Some("true"));
    let refund = &logs.with_message("refund")[0];
    assert_eq!(refund.field("limit"), Some("tokens_per_minute"));
    assert_eq!(
        (
            refund.field("estimated"),
            refund.field("actual"),
            refund.field("charged"),
            refund.field("cross_window")
        ),
        (Some("1000"), Some("400"), Some("-600"), Some("false"))
    );
    let completed = &logs.with_message("job completed")[0];
    assert_eq!(completed.field("model"), Some("A"));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn delegations_escalations_and_overages_are_logged() {
    let (logs, _guard) = Capture::install();
    let limiter = limiter();
    let done = limiter
        .queue_job(JobRequest::new(
            "d",
            Work::Job,
            |ctx: JobContext<Five>| async move {
                if ctx.model == Five::A {
                    JobResult::rejected("try B", Usage::new().input_tokens(1_000))
                } else {
                    JobResult::done((), Usage::new().input_tokens(1_000))
                }
            },
        ))
        .await
        .unwrap();
    assert_eq!(done.model, Five::B);
    let delegated = logs.with_message("job delegated to the next model");
    assert_eq!(delegated.len(), 1);
    assert_eq!(delegated[0].field("model"), Some("A"));
    let _filler = limiter.queue_job(JobRequest::new(
        "filler",
        Work::Job,
        sleeper(Duration::from_secs(60), Usage::new().input_tokens(1_000)),
    ));
    common::settle_tasks().await;
    // A is full: escalate to B, which rejects with 1 500 tokens used and delegates.
    let failed = limiter
        .queue_job(JobRequest::new(
            "j2",
            Work::Job,
            |_: JobContext<Five>| async move {
                JobResult::<(), _>::rejected("busy", Usage::new().input_tokens(1_500))
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.cause, Cause::RejectedOnLastModel("busy"));
    let escalated =
        logs.with_message("wait bound reached without capacity; escalating to the next model");
    assert_eq!(escalated.len(), 1, "{:?}", logs.messages());
    assert_eq!(escalated[0].field("model"), Some("A"));
    let overage = &logs.with_message("overage")[0];
    assert_eq!(overage.field("job_id"), Some("j2"));
    assert_eq!(overage.field("model"), Some("B"));
    assert_eq!(overage.field("charged"), Some("500"));
    let failure = &logs.with_message("job failed")[0];
    assert_eq!(failure.field("cause"), Some("rejected on last model"));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn every_failure_is_logged_with_its_cause() {
    let (logs, _guard) = Capture::install();
    let limiter = limiter();
    let reject = |delegate: bool| {
        move |_: JobContext<Five>| async move {
            if delegate {
                JobResult::<(), _>::rejected("no", Usage::new())
            } else {
                JobResult::rejected_final("no", Usage::new())
            }
        }
    };
    let _ = limiter
        .queue_job(JobRequest::new("final", Work::Job, reject(false)))
        .await;
    let _ = limiter
        .queue_job(JobRequest::new(
            "panics",
            Work::Job,
            |_: JobContext<Five>| async move {
                std::panic::panic_any(42_u32);
                #[allow(unreachable_code)]
                JobResult::<(), &str>::done((), Usage::new())
            },
        ))
        .await;
    // Two long jobs fill A and B; a third is exhausted; then one is cancelled while it runs.
    let long = || sleeper::<Five>(Duration::from_secs(600), Usage::new());
    let a = limiter.queue_job(JobRequest::new("long-a", Work::Job, long()));
    let _b = limiter.queue_job(JobRequest::new("long-b", Work::Job, long()));
    common::settle_tasks().await;
    let _ = limiter
        .queue_job(JobRequest::new("exhausted", Work::Job, long()))
        .await;
    a.cancel();
    let cancelled = a.await.unwrap_err();
    assert_eq!(cancelled.cause, Cause::Cancelled);
    limiter.stop(Duration::ZERO).await;

    let causes: Vec<String> = logs
        .with_message("job failed")
        .iter()
        .map(|e| e.field("cause").unwrap().to_owned())
        .collect();
    assert_eq!(
        causes,
        [
            "rejected",
            "panicked",
            "exhausted",
            "cancelled",
            "shut down"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_or_callback_is_reported_whatever_its_payload() {
    let (logs, _guard) = Capture::install();
    let limiter = limiter();
    let failed = limiter
        .queue_job(JobRequest::new(
            "payload",
            Work::Job,
            |_: JobContext<Five>| async move {
                std::panic::panic_any(42_u32);
                #[allow(unreachable_code)]
                JobResult::<(), String>::done((), Usage::new())
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        failed.cause,
        Cause::Panicked("non-string panic payload".to_owned())
    );
    let ok = || sleeper::<Five>(Duration::from_secs(1), Usage::new().input_tokens(1_000));
    let done = limiter
        .queue_job(
            JobRequest::new("str", Work::Job, ok()).on_complete(|_| panic!("static message")),
        )
        .await;
    assert!(
        done.is_ok(),
        "a callback's panic does not change the outcome"
    );
    let done = limiter
        .queue_job(
            JobRequest::new("string", Work::Job, ok())
                .on_complete(|c| panic!("formatted for {}", c.job_id)),
        )
        .await;
    assert!(done.is_ok());
    let panics: Vec<(Level, String, String)> = logs
        .with_message("a job callback panicked")
        .iter()
        .map(|e| {
            (
                e.level,
                e.field("job_id").unwrap().to_owned(),
                e.field("panic").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        panics,
        [
            (Level::ERROR, "str".into(), "static message".into()),
            (Level::ERROR, "string".into(), "formatted for string".into()),
        ]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_slots_callback_is_logged_as_an_error() {
    let (logs, _guard) = Capture::install();
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()).max_concurrent_requests(1))
        .job_type("j", JobTypeConfig::new());
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .on_available_slots_change(|_, _, _| panic!("callback bug"))
        .build()
        .unwrap();
    let done = limiter
        .queue_job(JobRequest::new(
            "j",
            "j",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap()
        .await;
    assert!(done.is_ok());
    let errors = logs.with_message("on_available_slots_change panicked");
    assert_eq!(errors.len(), 2, "the start and the end of the job");
    assert!(errors.iter().all(|e| e.level == Level::ERROR));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn configuration_warnings_and_ratio_moves_are_logged() {
    let (logs, _guard) = Capture::install();
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
    enum Kind {
        Busy,
        Idle,
    }
    let limiter = Limiter::<common::Solo, Kind>::builder(|common::Solo::Only| {
        ModelConfig::new(pricing())
            .max_concurrent_requests(10)
            .tokens_per_minute(10_000)
    })
    .job_types(|kind| match kind {
        Kind::Busy => JobTypeConfig::new().ratio(0.5),
        // Half of 10 000 TPM is below one 6 000-token job: a warning.
        Kind::Idle => JobTypeConfig::new().estimated_tokens(6_000),
    })
    .ratio_adjustment(RatioAdjustmentConfig::new().interval(Duration::from_secs(1)))
    .instance_id("warned")
    .clock(clock())
    .build()
    .unwrap();
    let warnings: Vec<Logged> = logs
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.level == Level::WARN)
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].message(), limiter.warnings()[0]);
    assert_eq!(warnings[0].field("instance"), Some("warned"));

    let _busy: Vec<_> = (0..5)
        .map(|i| {
            limiter.queue_job(JobRequest::new(
                format!("busy-{i}"),
                Kind::Busy,
                sleeper(Duration::from_secs(600), Usage::new()),
            ))
        })
        .collect();
    common::advance(Duration::from_millis(1_500)).await;
    let moves: Vec<(String, String, String)> = logs
        .with_message("ratio adjusted")
        .iter()
        .map(|e| {
            (
                e.field("job_type").unwrap().to_owned(),
                e.field("from").unwrap().to_owned(),
                e.field("to").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("Busy".into(), "0.5".into(), "0.7".into()),
            ("Idle".into(), "0.5".into(), "0.3".into()),
        ]
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn fleet_trouble_is_logged_as_warnings() {
    let (logs, _guard) = Capture::install();
    let fleet = InProcessFleet::new();
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
        .backend(fleet.clone())
        .build()
        .unwrap();
    limiter.ready().await;
    // A restarted backend forgets the instance: it registers again, saying why.
    fleet.reset();
    common::advance(Duration::from_secs(6)).await;
    assert_eq!(fleet.instances(), 1);
    assert!(
        logs.messages()
            .contains(&"evicted by the fleet; registering again".to_owned()),
        "{:?}",
        logs.messages()
    );
    // Unreachable while admitting, while syncing and while leaving.
    fleet.set_reachable(false);
    let done = limiter
        .queue_job(JobRequest::new(
            "j",
            "j",
            sleeper(Duration::from_secs(1), Usage::new().input_tokens(1_000)),
        ))
        .unwrap()
        .await;
    assert!(done.is_ok(), "the last known share admits it");
    common::advance(Duration::from_secs(6)).await;
    limiter.stop(Duration::ZERO).await;
    let warnings: Vec<String> = logs
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.level == Level::WARN)
        .map(|e| e.message().to_owned())
        .collect();
    for expected in [
        "fleet backend unreachable; applying the failure mode",
        "fleet backend unreachable",
        "could not unregister from the fleet backend",
    ] {
        assert!(
            warnings.iter().any(|w| w == expected),
            "{expected:?} in {warnings:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_that_can_never_fit_the_memory_budget_is_logged_as_a_warning() {
    let (logs, _guard) = Capture::install();
    // The only test of this file that uses the process memory pool.
    let config = Config::new()
        .model("m", ModelConfig::new(pricing()))
        .job_type(
            "huge",
            JobTypeConfig::new()
                .estimated_memory_kb(1 << 40)
                .max_wait("m", Duration::from_secs(600)),
        )
        .memory(llmrl::MemoryConfig::measured(0.8));
    let limiter = NamedLimiter::builder(config)
        .clock(clock())
        .build()
        .unwrap();
    let failed = limiter
        .queue_job(JobRequest::new(
            "huge",
            "huge",
            sleeper(Duration::from_secs(1), Usage::new()),
        ))
        .unwrap()
        .await
        .unwrap_err();
    assert!(matches!(failed.cause, Cause::Exhausted { .. }));
    let warned =
        logs.with_message("a job's memory estimate exceeds the whole process budget; not waiting");
    assert_eq!(warned.len(), 1, "{:?}", logs.messages());
    assert_eq!(warned[0].level, Level::WARN);
    assert_eq!(warned[0].field("job_type"), Some("huge"));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_job_id_is_reported_in_the_logs() {
    let (logs, _guard) = Capture::install();
    let limiter = limiter();
    let first = limiter.queue_job(JobRequest::new(
        "twice",
        Work::Job,
        sleeper(Duration::from_secs(10), Usage::new()),
    ));
    let second = limiter.queue_job(JobRequest::new(
        "twice",
        Work::Job,
        sleeper(Duration::from_secs(10), Usage::new()),
    ));
    assert!(
        first.await.is_ok() && second.await.is_ok(),
        "duplicates are allowed"
    );
    let reported = logs.events.lock().unwrap().iter().any(|e| {
        e.level <= Level::INFO
            && e.message().contains("duplicate")
            && e.fields.values().any(|v| v.contains("twice"))
    });
    assert!(reported, "{:?}", logs.messages());
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_type_stranded_by_the_fleet_size_is_warned_about_once() {
    let (logs, _guard) = Capture::install();
    let fleet = InProcessFleet::new();
    let instance = |id: &str| {
        // CONC 2 among three instances: the third's share is 0 units.
        let config = Config::new()
            .model("m", ModelConfig::new(pricing()).max_concurrent_requests(2))
            .job_type("j", JobTypeConfig::new().max_wait("m", Duration::ZERO))
            .instance_id(id);
        NamedLimiter::builder(config)
            .clock(clock())
            .backend(fleet.clone())
            .build()
            .unwrap()
    };
    let limiters = [instance("a"), instance("b"), instance("c")];
    for limiter in &limiters {
        limiter.ready().await;
    }
    common::advance(Duration::from_secs(6)).await;
    let warned = logs.with_message(
        "the fair share of a limit of this model is smaller than one job of this type: it \
         cannot start on this model at the current fleet size",
    );
    assert_eq!(warned.len(), 1, "{:?}", logs.messages());
    assert_eq!(warned[0].level, Level::WARN);
    assert_eq!(warned[0].field("model"), Some("m"));
    assert_eq!(warned[0].field("job_type"), Some("j"));
    assert_eq!(warned[0].field("instances"), Some("3"));
    for limiter in &limiters {
        limiter.stop(Duration::ZERO).await;
    }
}
