//! The in-process backend through the public `Backend` trait (SPEC §7): registration divides
//! the limits, reported usage and settlements move the fleet's counters, stale instances are
//! evicted, and a fleet of other limits or a switched-off fleet says so.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::EPOCH_MS;
use llmrl::backend::{
    Backend, BackendError, CONCURRENCY, FleetFigures, FleetView, InProcessFleet, ModelLimits,
    OwnUsage, RESOURCES, Settlement, SettlementOutcome, Windows,
};
use llmrl::{AcquireError, Config, JobTypeConfig, ModelConfig, NamedLimiter, Timestamp};

const T0: Timestamp = Timestamp::from_millis(EPOCH_MS);

/// TPM 100 000, RPM 100, CONC 2; no day limits.
fn limits() -> Vec<ModelLimits> {
    vec![ModelLimits::new(
        Arc::from("m"),
        [Some(100_000), None, Some(100), None, Some(2)],
    )]
}

fn at(secs: u64) -> Timestamp {
    T0.saturating_add(Duration::from_secs(secs))
}

fn figures(
    windows: Windows,
    share: [u64; RESOURCES],
    used: [u64; RESOURCES],
    own: [u64; RESOURCES],
    others_unused: [u64; RESOURCES],
) -> FleetFigures {
    FleetFigures::new(windows, share, used, own, others_unused)
}

/// The figures of a view without the backend's state version (checked on its own).
fn unversioned(view: FleetView) -> FleetView {
    let models = view.models.iter().map(|f| f.with_version(0)).collect();
    FleetView::new(view.instances, models)
}

#[test]
fn windows_number_minutes_and_days_and_concurrency_has_none() {
    let w = Windows::at(at(90));
    assert_eq!(w.minute, (EPOCH_MS + 90_000) / 60_000);
    assert_eq!(w.day, EPOCH_MS / 86_400_000);
    assert_eq!(w.of(0), w.minute, "tokens per minute");
    assert_eq!(w.of(1), w.day, "tokens per day");
    assert_eq!(w.of(2), w.minute, "requests per minute");
    assert_eq!(w.of(3), w.day, "requests per day");
    assert_eq!(w.of(CONCURRENCY), 0, "concurrency has no window");
}

#[tokio::test(start_paused = true)]
async fn registration_divides_every_limit_among_the_live_instances() {
    let fleet = InProcessFleet::default();
    assert_eq!(fleet.instances(), 0);
    assert_eq!(format!("{fleet:?}"), "InProcessFleet { .. }");
    let w = Windows::at(T0);
    let none = OwnUsage::default();

    let a = fleet.register("a", &limits(), &none, T0).await.unwrap();
    let first_version = a.models[0].version;
    assert!(
        first_version > 0,
        "the in-process fleet versions its figures"
    );
    assert_eq!(
        unversioned(a),
        FleetView::new(
            1,
            vec![figures(w, [100_000, 0, 100, 0, 2], [0; 5], [0; 5], [0; 5])]
        ),
        "alone, the instance's share is the whole limit"
    );
    let b = fleet.register("b", &limits(), &none, T0).await.unwrap();
    assert!(
        b.models[0].version > first_version,
        "a registration moves the version"
    );
    assert_eq!(
        unversioned(b),
        FleetView::new(
            2,
            vec![figures(
                w,
                [50_000, 0, 50, 0, 1],
                [0; 5],
                [0; 5],
                [50_000, 0, 50, 0, 1]
            )]
        ),
        "two halves; the other's half is unused"
    );
    assert_eq!(fleet.instances(), 2);
    // A third instance: 100 000 / 3 leaves one token for the oldest, CONC 2 / 3 gives 1, 1, 0.
    let c = fleet.register("c", &limits(), &none, T0).await.unwrap();
    assert_eq!(c.models[0].share, [33_333, 0, 33, 0, 0]);
    let a = fleet.sync("a", T0).await.unwrap().unwrap();
    assert_eq!(a.instances, 3);
    assert_eq!(a.models[0].share, [33_334, 0, 34, 0, 1]);
    fleet.unregister("c").await.unwrap();
    let a = fleet.sync("a", T0).await.unwrap().unwrap();
    assert_eq!(
        (a.instances, a.models[0].share),
        (2, [50_000, 0, 50, 0, 1]),
        "the others grow at once when one leaves"
    );
    fleet.unregister("a").await.unwrap();
    fleet.unregister("b").await.unwrap();
    assert_eq!(fleet.instances(), 0);
}

#[tokio::test(start_paused = true)]
async fn reported_usage_and_settlements_move_the_fleet_counters() {
    let fleet = InProcessFleet::new();
    let w = Windows::at(T0);
    fleet
        .register("b", &limits(), &OwnUsage::default(), T0)
        .await
        .unwrap();
    // "a" joins with two jobs in flight that reserved 10 000 tokens and 1 request each, and
    // 10 000 more tokens already settled this minute.
    let own = OwnUsage::new(w, vec![[30_000, 0, 3, 0, 2]]);
    let a = fleet.register("a", &limits(), &own, T0).await.unwrap();
    assert_eq!(
        a.models[0].with_version(0),
        figures(
            w,
            [50_000, 0, 50, 0, 1],
            [30_000, 0, 3, 0, 2],
            [30_000, 0, 3, 0, 2],
            [50_000, 0, 50, 0, 1]
        )
    );
    assert_eq!(fleet.used(0, T0), [30_000, 0, 3, 0, 2]);

    // One job used 4 000 tokens: 6 000 come back, and its concurrency unit.
    let used = Settlement::new(
        0,
        w,
        [10_000, 0, 1, 0],
        SettlementOutcome::Used([4_000, 0, 1, 0]),
        at(10),
    );
    let after = fleet.settle("a", used).await.unwrap();
    assert_eq!(after.used, [24_000, 0, 3, 0, 1]);
    assert_eq!(after.own, [24_000, 0, 3, 0, 1]);
    // The other never started: its whole reservation comes back.
    let never = Settlement::new(
        0,
        w,
        [10_000, 0, 1, 0],
        SettlementOutcome::NeverStarted,
        at(20),
    );
    let after = fleet.settle("a", never).await.unwrap();
    assert_eq!(after.used, [14_000, 0, 2, 0, 0]);
    assert_eq!(fleet.used(0, at(20)), [14_000, 0, 2, 0, 0]);
    // A job of unknown usage keeps its estimate counted and frees its unit.
    let own = OwnUsage::new(w, vec![[24_000, 0, 3, 0, 1]]);
    fleet.register("a", &limits(), &own, at(25)).await.unwrap();
    let unknown = Settlement::new(0, w, [10_000, 0, 1, 0], SettlementOutcome::Unknown, at(30));
    let after = fleet.settle("a", unknown).await.unwrap();
    assert_eq!(after.used, [24_000, 0, 3, 0, 0]);

    // A minute later the window counters restart; a job reserved in the old minute that used
    // more than its estimate is charged only its overage, in the new minute.
    assert_eq!(fleet.used(0, at(60)), [0, 0, 0, 0, 0]);
    let own = OwnUsage::new(w, vec![[10_000, 0, 1, 0, 1]]);
    fleet.register("a", &limits(), &own, at(61)).await.unwrap();
    assert_eq!(
        fleet.used(0, at(61)),
        [0, 0, 0, 0, 1],
        "usage reported for an ended window is not counted in the new one"
    );
    let late = Settlement::new(
        0,
        w,
        [10_000, 0, 1, 0],
        SettlementOutcome::Used([15_000, 0, 1, 0]),
        at(62),
    );
    let after = fleet.settle("a", late).await.unwrap();
    assert_eq!(after.windows, Windows::at(at(62)));
    assert_eq!(after.used, [5_000, 0, 0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_instance_is_evicted_and_its_usage_remembered_when_it_returns() {
    let fleet = InProcessFleet::with_stale_threshold(Duration::from_secs(15));
    let w = Windows::at(T0);
    fleet
        .register("a", &limits(), &OwnUsage::default(), T0)
        .await
        .unwrap();
    let own = OwnUsage::new(w, vec![[20_000, 0, 2, 0, 1]]);
    fleet.register("b", &limits(), &own, T0).await.unwrap();
    // Within the threshold both stay.
    let a = fleet.sync("a", at(15)).await.unwrap().unwrap();
    assert_eq!(a.instances, 2);
    // "b" has been silent for 16 s: "a"'s heartbeat evicts it; its in-flight unit returns,
    // its tokens stay counted.
    let a = fleet.sync("a", at(16)).await.unwrap().unwrap();
    assert_eq!(a.instances, 1);
    assert_eq!(a.models[0].share, [100_000, 0, 100, 0, 2]);
    assert_eq!(a.models[0].used, [20_000, 0, 2, 0, 0]);
    assert_eq!(
        fleet.sync("b", at(17)).await.unwrap(),
        None,
        "b must register again"
    );
    // Its job in flight ends meanwhile: the backend counts it but tells b to register.
    let ended = Settlement::new(0, w, [10_000, 0, 1, 0], SettlementOutcome::Unknown, at(17));
    assert_eq!(
        fleet.settle("b", ended).await.unwrap_err(),
        BackendError::NotRegistered
    );
    assert_eq!(fleet.used(0, at(17)), [20_000, 0, 2, 0, 0]);
    // "b" comes back reporting nothing: the fleet still counts what it used this minute.
    let b = fleet
        .register(
            "b",
            &limits(),
            &OwnUsage::new(w, vec![[20_000, 0, 2, 0, 0]]),
            at(18),
        )
        .await
        .unwrap();
    assert_eq!(b.instances, 2);
    assert_eq!(b.models[0].own, [20_000, 0, 2, 0, 0]);
    assert_eq!(b.models[0].used, [20_000, 0, 2, 0, 0], "not counted twice");
}

#[tokio::test(start_paused = true)]
async fn an_instance_evicted_in_an_earlier_minute_is_not_counted_twice_for_the_day() {
    // Tokens per minute and per day.
    let limits = vec![ModelLimits::new(
        Arc::from("m"),
        [Some(100_000), Some(1_000_000), None, None, None],
    )];
    let fleet = InProcessFleet::with_stale_threshold(Duration::from_secs(15));
    fleet
        .register("a", &limits, &OwnUsage::default(), T0)
        .await
        .unwrap();
    let own = OwnUsage::new(Windows::at(T0), vec![[20_000, 20_000, 0, 0, 0]]);
    fleet.register("b", &limits, &own, T0).await.unwrap();
    // "b" falls silent and is evicted; its usage stays counted.
    fleet.sync("a", at(16)).await.unwrap().unwrap();
    assert_eq!(fleet.instances(), 1);
    assert_eq!(fleet.used(0, at(16))[1], 20_000);
    // A minute later, the same day, "b" comes back reporting its own day usage.
    let later = at(70);
    let own = OwnUsage::new(Windows::at(later), vec![[0, 20_000, 0, 0, 0]]);
    let b = fleet.register("b", &limits, &own, later).await.unwrap();
    assert_eq!(b.models[0].own[1], 20_000);
    assert_eq!(
        fleet.used(0, later)[1],
        20_000,
        "the day's 20 000 tokens are counted once"
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_evicted_yesterday_returns_with_nothing_counted() {
    let fleet = InProcessFleet::with_stale_threshold(Duration::from_secs(15));
    fleet
        .register("a", &limits(), &OwnUsage::default(), T0)
        .await
        .unwrap();
    let own = OwnUsage::new(Windows::at(T0), vec![[20_000, 0, 2, 0, 0]]);
    fleet.register("b", &limits(), &own, T0).await.unwrap();
    fleet.sync("a", at(16)).await.unwrap().unwrap();
    let tomorrow = at(86_400 + 10);
    fleet.sync("a", tomorrow).await.unwrap().unwrap();
    let fresh = OwnUsage::new(Windows::at(tomorrow), vec![[0; RESOURCES]]);
    let b = fleet
        .register("b", &limits(), &fresh, tomorrow)
        .await
        .unwrap();
    assert_eq!(b.models[0].own, [0; RESOURCES]);
    assert_eq!(fleet.used(0, tomorrow), [0; RESOURCES]);
}

#[tokio::test(start_paused = true)]
async fn the_fleet_refuses_what_an_instance_with_a_stale_view_admits() {
    let fleet = InProcessFleet::new();
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(common::pricing()).max_concurrent_requests(2),
        )
        .job_type("j", JobTypeConfig::new().max_wait("m", Duration::ZERO))
        .instance_id("a");
    let limiter = NamedLimiter::builder(config)
        .clock(common::clock())
        .backend(fleet.clone())
        .build()
        .unwrap();
    limiter.ready().await;
    let first = limiter.acquire("one", "j").await.unwrap().unwrap();
    // Another instance joins; "a" has not heard of it yet and still sees both units as its
    // own share, one of them free.
    let conc = vec![ModelLimits::new(
        Arc::from("m"),
        [None, None, None, None, Some(2)],
    )];
    let now = limiter.clock().now();
    fleet
        .register("other", &conc, &OwnUsage::default(), now)
        .await
        .unwrap();
    let second = limiter.acquire("two", "j").await.unwrap();
    assert_eq!(
        second.unwrap_err(),
        AcquireError::Exhausted,
        "its share is now one unit, in use"
    );
    let availability = limiter.availability();
    assert_eq!(
        availability.instances, 2,
        "the refusal brought the fleet's figures"
    );
    let conc = availability.models[0].concurrent_requests.unwrap();
    assert_eq!((conc.share, conc.used, conc.available), (1, 1, 0));
    assert_eq!(
        fleet.used(0, now)[CONCURRENCY],
        1,
        "nothing was reserved for the refused job"
    );
    drop(first);
    fleet.unregister("other").await.unwrap();
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_with_other_limits_cannot_join() {
    let fleet = InProcessFleet::new();
    fleet
        .register("a", &limits(), &OwnUsage::default(), T0)
        .await
        .unwrap();
    let other = vec![ModelLimits::new(
        Arc::from("m"),
        [Some(50_000), None, Some(100), None, Some(2)],
    )];
    let error = fleet
        .register("b", &other, &OwnUsage::default(), T0)
        .await
        .unwrap_err();
    assert!(matches!(error, BackendError::Mismatch(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("fleet configuration mismatch: "),
        "{error}"
    );
    assert_eq!(fleet.instances(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_switched_off_fleet_answers_every_call_with_unreachable() {
    let fleet = InProcessFleet::new();
    fleet
        .register("a", &limits(), &OwnUsage::default(), T0)
        .await
        .unwrap();
    fleet.set_reachable(false);
    let unreachable = |e: BackendError| {
        assert!(matches!(e, BackendError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().starts_with("backend unreachable: "), "{e}");
    };
    unreachable(
        fleet
            .register("b", &limits(), &OwnUsage::default(), T0)
            .await
            .unwrap_err(),
    );
    unreachable(fleet.sync("a", T0).await.unwrap_err());
    let s = Settlement::new(
        0,
        Windows::at(T0),
        [0; 4],
        SettlementOutcome::NeverStarted,
        T0,
    );
    unreachable(fleet.settle("a", s).await.unwrap_err());
    unreachable(fleet.unregister("a").await.unwrap_err());
    fleet.set_reachable(true);
    assert_eq!(fleet.instances(), 1, "nothing changed while it was off");
    // A restarted backend forgets everyone.
    fleet.reset();
    assert_eq!(fleet.instances(), 0);
    assert_eq!(fleet.sync("a", T0).await.unwrap(), None);
}

#[test]
fn backend_errors_print_what_failed() {
    assert_eq!(
        BackendError::Timeout(Duration::from_secs(1)).to_string(),
        "backend call timed out after 1s"
    );
    assert_eq!(
        BackendError::NotRegistered.to_string(),
        "instance not registered with the fleet"
    );
    assert_eq!(
        BackendError::Protocol("bad reply".into()).to_string(),
        "backend protocol error: bad reply"
    );
}
