//! The user's fleet scenarios of seeds 002: time windows (§33), request counting (§34), several
//! models (§35), and escalation over full minutes (§48, §49, scaled down). Each runs on two
//! instances, `x` and `y`, of one fleet. The figures are the seeds' wherever SPEC §6–7 agree;
//! where SPEC differs, a comment says how and why.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Handle, Harness, SKIP_STEP, STALE, free, one_model, slots, static_ratios};
use crate::{
    Clock, Config, Event, JobContext, JobRequest, JobResult, JobTypeConfig, ModelConfig,
    NamedLimiter, Timestamp, Usage, UsageAdjustment, Window, WindowLimit,
};

const TPM: WindowLimit = WindowLimit::TokensPerMinute;
const TPD: WindowLimit = WindowLimit::TokensPerDay;
const RPM: WindowLimit = WindowLimit::RequestsPerMinute;
const RPD: WindowLimit = WindowLimit::RequestsPerDay;

const MINUTE: u64 = 60_000;

/// What a scene's instances reported, with the time in ms since the scene started.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(u64, Event)>>>);

impl Log {
    fn lock(&self) -> MutexGuard<'_, Vec<(u64, Event)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where and when each attempt of `job` started.
    fn starts(&self, job: &str) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Started { job_id, model, .. } if job_id == job => {
                    Some((model.to_string(), *at))
                }
                _ => None,
            })
            .collect()
    }

    /// The models `job` gave up waiting for, and when.
    fn escalations(&self, job: &str) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Escalated { job_id, from, .. } if job_id == job => {
                    Some((from.to_string(), *at))
                }
                _ => None,
            })
            .collect()
    }

    /// Every settlement that moved a counter, in order.
    fn adjustments(&self) -> Vec<UsageAdjustment> {
        self.lock()
            .iter()
            .filter_map(|(_, e)| match e {
                Event::UsageAdjusted(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Stale threshold of the fleets of scenes that may wait for a UTC day to end: longer than a
/// step of [`Harness::skip`], so that no instance is evicted while the day goes by.
const DAY_STALE: Duration = Duration::from_secs(3_600);

/// One scenario's fleet, clock and log. Times are ms since the scene's start, a minute boundary.
struct Scene<'h, H: Harness> {
    h: &'h H,
    fleet: H::Fleet,
    /// The fleet's stale threshold.
    stale: Duration,
    clock: Clock,
    start: Timestamp,
    log: Log,
}

impl<'h, H: Harness> Scene<'h, H> {
    /// A fresh fleet, starting at a minute boundary (now, if the clock is on one).
    async fn new(h: &'h H) -> Self {
        Self::with_stale(h, STALE).await
    }

    /// As [`Scene::new`], with a fleet evicting instances after `stale` of silence.
    async fn with_stale(h: &'h H, stale: Duration) -> Self {
        let clock = h.clock();
        let now = clock.now();
        let start = if now.as_millis() % MINUTE == 0 {
            now
        } else {
            Window::Minute.next_boundary(now)
        };
        if start > now {
            h.advance(start.saturating_duration_since(now)).await;
        }
        Self {
            h,
            fleet: h.fleet(stale),
            stale,
            clock,
            start,
            log: Log::default(),
        }
    }

    /// As [`Scene::new`], with at least ten minutes left in the UTC day, and a fleet whose
    /// instances can wait for its end ([`DAY_STALE`]).
    async fn early_in_a_day(h: &'h H) -> Self {
        let scene = Self::with_stale(h, DAY_STALE).await;
        let day = scene.next_day();
        if day < 10 * MINUTE {
            scene.at(day).await;
            return Self::with_stale(h, DAY_STALE).await;
        }
        scene
    }

    /// Now, in ms since the start.
    fn ms(&self) -> u64 {
        self.clock
            .now()
            .as_millis()
            .saturating_sub(self.start.as_millis())
    }

    /// The next UTC midnight, in ms since the start.
    fn next_day(&self) -> u64 {
        Window::Day.next_boundary(self.clock.now()).as_millis() - self.start.as_millis()
    }

    /// Moves time on to `ms` since the start. A long stretch (to the end of a UTC day, where
    /// nothing is due meanwhile) goes by with [`Harness::skip`] if the fleet allows it, but for
    /// its last minute.
    async fn at(&self, ms: u64) {
        let now = self.ms();
        assert!(ms >= now, "the scene goes back in time: {ms} < {now}");
        if self.stale > SKIP_STEP && ms - now > 2 * MINUTE {
            self.h.skip(Duration::from_millis(ms - now - MINUTE)).await;
        }
        let now = self.ms();
        if ms > now {
            self.h.advance(Duration::from_millis(ms - now)).await;
        }
    }

    /// Two instances of `config`, `x` then `y`, each seeing the other.
    async fn pair(&self, config: &Config) -> (NamedLimiter, NamedLimiter) {
        let x = self.instance(config.clone(), "x").await;
        let y = self.instance(config.clone(), "y").await;
        self.h.propagate().await;
        assert_eq!(
            (x.availability().instances, y.availability().instances),
            (2, 2)
        );
        (x, y)
    }

    async fn instance(&self, config: Config, id: &str) -> NamedLimiter {
        let (log, clock, start) = (self.log.clone(), self.clock.clone(), self.start);
        let limiter = NamedLimiter::builder(config.instance_id(id))
            .clock(self.clock.clone())
            .backend(self.h.backend(&self.fleet))
            .on_event(move |event| {
                let at = clock.now().as_millis().saturating_sub(start.as_millis());
                log.lock().push((at, event.clone()));
            })
            .build()
            .unwrap();
        limiter.ready().await;
        limiter
    }

    /// Queues a job of type `j` on `on` that runs for `run_for` (on the scene's clock), then
    /// reports `usage`; its value is the model it ran on.
    fn job(&self, on: &NamedLimiter, id: &str, run_for: Duration, usage: Usage) -> Handle {
        let clock = self.clock.clone();
        let request = JobRequest::new(
            id.to_owned(),
            "j".to_owned(),
            move |ctx: JobContext<Arc<str>>| {
                let clock = clock.clone();
                async move {
                    clock.sleep_until(clock.now().saturating_add(run_for)).await;
                    JobResult::<Arc<str>, String>::done(ctx.model, usage)
                }
            },
        );
        on.queue_job(request).unwrap()
    }

    /// `n` jobs named `{prefix}-{i}` of `tokens` tokens and one request, running `run_for`.
    fn jobs(
        &self,
        on: &NamedLimiter,
        prefix: &str,
        n: usize,
        run_for: Duration,
        tokens: u64,
    ) -> Vec<Handle> {
        (0..n)
            .map(|i| self.job(on, &format!("{prefix}-{i}"), run_for, used(tokens)))
            .collect()
    }

    /// Every job succeeded (time moving meanwhile); the instances stop.
    async fn finish(&self, handles: Vec<Handle>, instances: [&NamedLimiter; 2]) {
        for handle in handles {
            let id = handle.job_id().to_string();
            assert!(self.h.run_until(handle).await.is_ok(), "{id} succeeds");
        }
        for limiter in instances {
            limiter.stop(Duration::ZERO).await;
        }
    }
}

/// `tokens` input tokens in one request.
const fn used(tokens: u64) -> Usage {
    Usage::new().input_tokens(tokens).requests(1)
}

/// `(used, remaining, available)` of `limit` on model `model`, as `on` sees them.
fn figures(on: &NamedLimiter, model: usize, limit: WindowLimit) -> (u64, u64, u64) {
    let snapshot = on.availability();
    let r = snapshot.models[model].window(limit).copied().unwrap();
    (r.used, r.remaining, r.available)
}

/// The minute (since the scene's start) that `at` falls in.
const fn minute(at: u64) -> u64 {
    at / MINUTE
}

// §33 -----------------------------------------------------------------------------------------

/// §33: a new minute clears the fleet's minute counters and restores whole shares; the day
/// counters carry across minutes and clear at UTC midnight.
pub async fn time_windows<H: Harness>(h: &H) {
    a_new_minute_clears_the_fleet_counters(h).await;
    a_new_minute_restores_whole_shares(h).await;
    the_day_counts_across_minutes(h).await;
    the_day_resets_at_midnight(h).await;
}

/// §33.1: TPM 50 000 and 10 000-token jobs: each instance's share is 25 000, two jobs. Two jobs
/// on each use 40 000 of minute N; minute N+1 starts at 0 with 25 000 for each instance.
async fn a_new_minute_clears_the_fleet_counters<H: Harness>(h: &H) {
    let scene = Scene::new(h).await;
    let config = one_model(ModelConfig::new(free()).tokens_per_minute(50_000), 10_000);
    let (x, y) = scene.pair(&config).await;
    assert_eq!((slots(&x), slots(&y)), (Some(2), Some(2)));
    let mut handles = scene.jobs(&x, "x", 2, Duration::from_secs(10), 10_000);
    handles.extend(scene.jobs(&y, "y", 2, Duration::from_secs(10), 10_000));
    scene.at(20_000).await;
    for l in [&x, &y] {
        // 10 000 left: each instance has 5 000 of its share, less than a job.
        assert_eq!(figures(l, 0, TPM), (40_000, 10_000, 5_000));
        assert_eq!(slots(l), Some(0));
    }
    scene.at(MINUTE).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPM), (0, 50_000, 25_000), "a fresh minute");
        assert_eq!(slots(l), Some(2));
    }
    scene.finish(handles, [&x, &y]).await;
}

/// §33.2: TPM 100 000: each instance uses 25 000 of its 50 000; the next minute gives each
/// its 50 000 back.
async fn a_new_minute_restores_whole_shares<H: Harness>(h: &H) {
    let scene = Scene::new(h).await;
    let config = one_model(ModelConfig::new(free()).tokens_per_minute(100_000), 25_000);
    let (x, y) = scene.pair(&config).await;
    let mut handles = scene.jobs(&x, "x", 1, Duration::from_secs(10), 25_000);
    handles.extend(scene.jobs(&y, "y", 1, Duration::from_secs(10), 25_000));
    scene.at(20_000).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPM), (50_000, 50_000, 25_000));
    }
    scene.at(MINUTE).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPM), (0, 100_000, 50_000));
        assert_eq!(slots(l), Some(2));
    }
    scene.finish(handles, [&x, &y]).await;
}

/// §33.3: TPM 100 000, TPD 200 000, 10 000-token jobs. 80 000 tokens in minute M and 80 000
/// in minute M+1 leave 40 000 for the day: in minute M+2 each instance has 20 000 of it (its
/// unused share of the day, SPEC §7.1), so of the 50 000 asked for, 40 000 run and the last
/// job waits for the next day although the minute has room.
async fn the_day_counts_across_minutes<H: Harness>(h: &H) {
    let scene = Scene::early_in_a_day(h).await;
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(free())
                .tokens_per_minute(100_000)
                .tokens_per_day(200_000),
        )
        .job_type(
            "j",
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .max_wait("m", Duration::from_secs(2 * 86_400)),
        )
        .ratio_adjustment(static_ratios());
    let (x, y) = scene.pair(&config).await;
    let run = Duration::from_secs(10);
    let mut handles = Vec::new();
    // Minute M.
    handles.extend(scene.jobs(&x, "m0-x", 4, run, 10_000));
    handles.extend(scene.jobs(&y, "m0-y", 4, run, 10_000));
    scene.at(20_000).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPM), (80_000, 20_000, 10_000));
        assert_eq!(figures(l, 0, TPD), (80_000, 120_000, 60_000));
    }
    // Minute M+1.
    scene.at(MINUTE).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPM), (0, 100_000, 50_000));
        assert_eq!(
            figures(l, 0, TPD),
            (80_000, 120_000, 60_000),
            "the day goes on"
        );
    }
    handles.extend(scene.jobs(&x, "m1-x", 4, run, 10_000));
    handles.extend(scene.jobs(&y, "m1-y", 4, run, 10_000));
    scene.at(MINUTE + 20_000).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPD), (160_000, 40_000, 20_000));
    }
    // Minute M+2: 40 000 left for the day, 20 000 for each instance.
    scene.at(2 * MINUTE).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPM), (0, 100_000, 50_000));
        assert_eq!(figures(l, 0, TPD), (160_000, 40_000, 20_000));
        assert_eq!(
            slots(l),
            Some(2),
            "the day, not the minute, bounds the slots"
        );
    }
    handles.extend(scene.jobs(&x, "m2-x", 3, run, 10_000));
    handles.extend(scene.jobs(&y, "m2-y", 2, run, 10_000));
    scene.at(2 * MINUTE + 20_000).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPD), (200_000, 0, 0));
    }
    assert!(
        scene.log.starts("m2-x-2").is_empty(),
        "the day is spent: the fifth job waits"
    );
    assert_eq!(x.availability().job_types[0].models[0].waiting, 1);
    // It runs when the UTC day rolls over.
    let midnight = scene.next_day();
    scene.at(midnight).await;
    scene.at(midnight + 1_000).await;
    assert_eq!(scene.log.starts("m2-x-2"), vec![("m".to_owned(), midnight)]);
    assert_eq!(figures(&x, 0, TPD), (10_000, 190_000, 90_000));
    assert_eq!(figures(&y, 0, TPD), (10_000, 190_000, 100_000));
    scene.at(midnight + 20_000).await;
    scene.finish(handles, [&x, &y]).await;
}

/// §33.4: TPD 100 000, 10 000-token jobs: 80 000 used on day N; day N+1 starts at 0 with each
/// instance's whole share of 50 000 (five jobs).
async fn the_day_resets_at_midnight<H: Harness>(h: &H) {
    let scene = Scene::early_in_a_day(h).await;
    let config = one_model(ModelConfig::new(free()).tokens_per_day(100_000), 10_000);
    let (x, y) = scene.pair(&config).await;
    let mut handles = scene.jobs(&x, "x", 4, Duration::from_secs(10), 10_000);
    handles.extend(scene.jobs(&y, "y", 4, Duration::from_secs(10), 10_000));
    scene.at(20_000).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPD), (80_000, 20_000, 10_000));
        assert_eq!(slots(l), Some(1));
    }
    let midnight = scene.next_day();
    scene.at(midnight).await;
    for l in [&x, &y] {
        assert_eq!(figures(l, 0, TPD), (0, 100_000, 50_000), "a fresh day");
        assert_eq!(slots(l), Some(5));
    }
    scene.finish(handles, [&x, &y]).await;
}

// §34 -----------------------------------------------------------------------------------------

/// §34: requests are counted apart from tokens, by what jobs report (a job of three requests
/// adds three to RPM and RPD).
pub async fn request_counting<H: Harness>(h: &H) {
    requests_are_counted_apart_from_tokens(h).await;
    all_four_counters_move_independently(h).await;
}

/// §34.1: TPM 100 000, RPM 50; jobs estimate 10 000 tokens and 2 requests, and report 8 000
/// tokens and 3 requests. Ten jobs (five per instance, each instance's TPM share): TPM 80 000,
/// RPM 30, 20 000 and 20 left.
async fn requests_are_counted_apart_from_tokens<H: Harness>(h: &H) {
    let scene = Scene::new(h).await;
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(free())
                .tokens_per_minute(100_000)
                .requests_per_minute(50),
        )
        .job_type(
            "j",
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .estimated_requests(2)
                .max_wait("m", Duration::ZERO),
        )
        .ratio_adjustment(static_ratios());
    let (x, y) = scene.pair(&config).await;
    let usage = Usage::new()
        .input_tokens(6_000)
        .output_tokens(2_000)
        .requests(3);
    let run = Duration::from_secs(5);
    let handles: Vec<Handle> = (0..10)
        .map(|i| {
            let on = if i % 2 == 0 { &x } else { &y };
            scene.job(on, &format!("job-{i}"), run, usage)
        })
        .collect();
    scene.at(10_000).await;
    scene.h.propagate().await;
    for l in [&x, &y] {
        // Each instance used 40 000 and 15 of its 50 000 and 25.
        assert_eq!(figures(l, 0, TPM), (80_000, 20_000, 10_000));
        assert_eq!(figures(l, 0, RPM), (30, 20, 10));
    }
    let adjustments = scene.log.adjustments();
    let moves = |limit: WindowLimit| {
        adjustments
            .iter()
            .filter(|a| a.limit == limit)
            .map(|a| (a.estimated, a.actual, a.charged))
            .collect::<Vec<_>>()
    };
    assert_eq!(moves(TPM), vec![(10_000, 8_000, -2_000); 10], "refunds");
    assert_eq!(moves(RPM), vec![(2, 3, 1); 10], "overages");
    assert_eq!(adjustments.len(), 20);
    scene.finish(handles, [&x, &y]).await;
}

/// §34.2–34.4: TPM 1 000 000, RPM 100, TPD 10 000 000, RPD 1 000; 1 000-token, one-request
/// jobs.
///
/// The seed sends 80 jobs from instance A within one minute and expects 80 on every counter.
/// SPEC §7.1 caps an instance at its fair share, ⌊100 / 2⌋ = 50 requests a minute, however idle
/// the other instance is: 50 run in minute 0 and 30 wait for minute 1. The day counters reach
/// the seed's 80 000 tokens and 80 requests, while the minute counters show each minute alone.
/// Then one job that reports 15 000 tokens and 3 requests raises TPM and TPD by 15 000 and RPM
/// and RPD by 3 (§34.3, §34.4).
async fn all_four_counters_move_independently<H: Harness>(h: &H) {
    let scene = Scene::early_in_a_day(h).await;
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(free())
                .tokens_per_minute(1_000_000)
                .requests_per_minute(100)
                .tokens_per_day(10_000_000)
                .requests_per_day(1_000),
        )
        // The default wait: until the next minute plus 5 s.
        .job_type("j", JobTypeConfig::new().estimated_tokens(1_000))
        .ratio_adjustment(static_ratios());
    let (x, y) = scene.pair(&config).await;
    let mut handles = scene.jobs(&x, "a", 80, Duration::from_secs(1), 1_000);
    let counters = |l: &NamedLimiter| [TPM, RPM, TPD, RPD].map(|k| figures(l, 0, k).0);
    scene.at(10_000).await;
    scene.h.propagate().await;
    for l in [&x, &y] {
        assert_eq!(counters(l), [50_000, 50, 50_000, 50]);
    }
    assert_eq!(figures(&x, 0, RPM).2, 0, "x used its 50 requests");
    assert_eq!(figures(&y, 0, RPM).2, 50, "y's share is untouched");
    assert_eq!(x.availability().job_types[0].models[0].waiting, 30);
    scene.at(MINUTE).await;
    scene.at(MINUTE + 10_000).await;
    scene.h.propagate().await;
    let by_minute = (0..80).fold([0; 2], |mut count, i| {
        let starts = scene.log.starts(&format!("a-{i}"));
        assert_eq!(starts.len(), 1, "a-{i} ran once");
        count[usize::from(minute(starts[0].1) > 0)] += 1;
        count
    });
    assert_eq!(by_minute, [50, 30]);
    for l in [&x, &y] {
        assert_eq!(counters(l), [30_000, 30, 80_000, 80]);
    }
    // §34.3, §34.4: a job of 15 000 tokens in 3 requests, on y.
    let multi = Usage::new()
        .input_tokens(10_000)
        .output_tokens(5_000)
        .requests(3);
    handles.push(scene.job(&y, "multi", Duration::from_secs(1), multi));
    scene.at(MINUTE + 20_000).await;
    scene.h.propagate().await;
    for l in [&x, &y] {
        assert_eq!(counters(l), [45_000, 33, 95_000, 83]);
    }
    let charged: Vec<(WindowLimit, i64)> = scene
        .log
        .adjustments()
        .into_iter()
        .filter(|a| a.job_id == "multi")
        .map(|a| (a.limit, a.charged))
        .collect();
    assert_eq!(
        charged,
        vec![(TPM, 14_000), (TPD, 14_000), (RPM, 2), (RPD, 2)],
        "the estimate (1 000 tokens, 1 request) was reserved; the rest is an overage"
    );
    scene.finish(handles, [&x, &y]).await;
}

// §35 -----------------------------------------------------------------------------------------

/// §35.1: alpha (TPM 100 000) and beta (TPM 50 000), 10 000-token jobs. Instance x uses 80 000
/// tokens on alpha and 20 000 on beta; both instances see each model's own figures.
///
/// x can only admit its share of alpha (50 000): its five jobs report 16 000 tokens each, 30 000
/// of overage. Its next jobs find no alpha left for it and take beta (no wait on alpha).
///
/// The seed expects what is left split evenly: (100 000 − 80 000) / 2 = 10 000 and
/// (50 000 − 20 000) / 2 = 15 000 per instance. SPEC §7.1 gives each instance its unused fair
/// share instead, scaled down only if the fleet has less left: on alpha x has none (0) and y
/// all 20 000 that is left; on beta x has 25 000 − 20 000 = 5 000 and y 25 000.
pub async fn multi_model_tracking<H: Harness>(h: &H) {
    let scene = Scene::new(h).await;
    let config = Config::new()
        .model("alpha", ModelConfig::new(free()).tokens_per_minute(100_000))
        .model("beta", ModelConfig::new(free()).tokens_per_minute(50_000))
        .escalation_order(["alpha", "beta"])
        .job_type(
            "j",
            JobTypeConfig::new()
                .estimated_tokens(10_000)
                .max_wait("alpha", Duration::ZERO)
                .max_wait("beta", Duration::ZERO),
        )
        .ratio_adjustment(static_ratios());
    let (x, y) = scene.pair(&config).await;
    let (alpha, beta) = (0, 1);
    let run = Duration::from_secs(1);
    let mut handles: Vec<Handle> = (0..5)
        .map(|i| scene.job(&x, &format!("alpha-{i}"), run, used(16_000)))
        .collect();
    scene.at(5_000).await;
    scene.h.propagate().await;
    for l in [&x, &y] {
        assert_eq!(figures(l, alpha, TPM).0, 80_000);
        assert_eq!(
            figures(l, beta, TPM),
            (0, 50_000, 25_000),
            "alpha's usage leaves beta alone"
        );
    }
    handles.extend((0..2).map(|i| scene.job(&x, &format!("beta-{i}"), run, used(10_000))));
    scene.at(10_000).await;
    scene.h.propagate().await;
    for i in 0..5 {
        assert_eq!(scene.log.starts(&format!("alpha-{i}"))[0].0, "alpha");
    }
    for i in 0..2 {
        let id = format!("beta-{i}");
        assert_eq!(scene.log.escalations(&id)[0].0, "alpha");
        assert_eq!(scene.log.starts(&id)[0].0, "beta");
    }
    // Instance y's view (the seed's query), then x's.
    assert_eq!(figures(&y, alpha, TPM), (80_000, 20_000, 20_000));
    assert_eq!(figures(&y, beta, TPM), (20_000, 30_000, 25_000));
    assert_eq!(figures(&x, alpha, TPM), (80_000, 20_000, 0));
    assert_eq!(figures(&x, beta, TPM), (20_000, 30_000, 5_000));
    scene.finish(handles, [&x, &y]).await;
}

// §48, §49 ------------------------------------------------------------------------------------

/// Three models in order a, b, c; one job type of 10 000 tokens with the default wait on each
/// (until the next minute plus 5 s). Model a takes two jobs a minute per instance, b one job at a
/// time per instance, c plenty.
fn escalation_config() -> Config {
    let roomy = || ModelConfig::new(free()).tokens_per_minute(1_000_000);
    Config::new()
        .model("a", ModelConfig::new(free()).tokens_per_minute(40_000))
        .model("b", roomy().max_concurrent_requests(2))
        .model("c", roomy())
        .escalation_order(["a", "b", "c"])
        .job_type("j", JobTypeConfig::new().estimated_tokens(10_000))
        .ratio_adjustment(static_ratios())
}

/// The model each job succeeded on (time moving meanwhile).
async fn models<H: Harness>(h: &H, handles: Vec<Handle>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for handle in handles {
        let id = handle.job_id().to_string();
        match h.run_until(handle).await {
            Ok(done) => out.push((id, done.model.to_string())),
            Err(e) => panic!("{id} failed: {e}"),
        }
    }
    out
}

/// §48, scaled down from 100 capacity jobs of 60 s to 8: each instance's two jobs a minute on a
/// are taken by two jobs in minute 0 and two that wait for minute 1. A further job, queued in
/// minute 0, gets the default wait on a: until 65 s. Minute 1 goes to the jobs queued before it,
/// minute 2 comes too late: at 65 s it moves to b and runs there.
pub async fn escalation_after_two_full_minutes<H: Harness>(h: &H) {
    let scene = Scene::new(h).await;
    let (x, y) = scene.pair(&escalation_config()).await;
    let long = Duration::from_secs(60);
    let mut handles = scene.jobs(&x, "fill-x", 4, long, 10_000);
    handles.extend(scene.jobs(&y, "fill-y", 4, long, 10_000));
    scene.at(1_000).await;
    let probe = scene.job(&x, "probe", Duration::from_secs(1), used(10_000));
    scene.at(MINUTE).await;
    scene.at(MINUTE + 1_000).await;
    assert!(scene.log.starts("probe").is_empty(), "minute 1 is taken");
    scene.at(65_000).await;
    scene.at(66_000).await;
    let escalated = scene.log.escalations("probe");
    assert_eq!(escalated.len(), 1, "{escalated:?}");
    assert_eq!(escalated[0].0, "a");
    assert!(
        (65_000..2 * MINUTE).contains(&escalated[0].1),
        "gave up on a after its default wait, before minute 2: {escalated:?}"
    );
    scene.at(2 * MINUTE + 10_000).await;
    for prefix in ["fill-x", "fill-y"] {
        let minutes: Vec<(String, u64)> = (0..4)
            .map(|i| {
                let starts = scene.log.starts(&format!("{prefix}-{i}"));
                assert_eq!(starts.len(), 1);
                (starts[0].0.clone(), minute(starts[0].1))
            })
            .collect();
        let expected = [0, 0, 1, 1].map(|m| ("a".to_owned(), m));
        assert_eq!(
            minutes, expected,
            "{prefix}: two in minute 0, two in minute 1"
        );
    }
    let done = h.run_until(probe).await.unwrap();
    assert_eq!(&*done.model, "b");
    assert_eq!(done.usage.len(), 1, "a was skipped: no usage entry");
    assert!(models(h, handles).await.iter().all(|(_, m)| m == "a"));
    x.stop(Duration::ZERO).await;
    y.stop(Duration::ZERO).await;
}

/// §49, scaled down from 900 capacity jobs: a full for minutes 0–2, b's concurrency held by a
/// long job, and a job that waits out its default bound on both ends on c.
///
/// Each instance: two jobs on a in minute 0, two waiting for minute 1, and a fifth that gives up
/// on a at 65 s and holds b (one job at a time per instance) for 200 s; in minute 1, two more
/// that wait for minute 2. The probe, queued on x at 62 s, waits on a until 125 s (minute 2 goes
/// to the two queued before it), then on b until 185 s, then runs on c.
///
/// The seed fills b with tokens for two minutes. With default waits every deadline falls at
/// five seconds past a minute, so a job meant to fill b after the probe arrives there would
/// give up on a at the very instant the probe does, and SPEC §10 leaves the order of deadlines
/// at one instant open. Holding b's concurrency fills it without that tie.
pub async fn escalation_to_the_third_model<H: Harness>(h: &H) {
    let scene = Scene::new(h).await;
    let (x, y) = scene.pair(&escalation_config()).await;
    let long = Duration::from_secs(200);
    let mut handles = scene.jobs(&x, "fill-x", 5, long, 10_000);
    handles.extend(scene.jobs(&y, "fill-y", 5, long, 10_000));
    scene.at(61_000).await;
    handles.extend(scene.jobs(&x, "late-x", 2, long, 10_000));
    handles.extend(scene.jobs(&y, "late-y", 2, long, 10_000));
    scene.at(62_000).await;
    let probe = scene.job(&x, "probe", Duration::from_secs(1), used(10_000));
    scene.at(65_000).await;
    scene.at(66_000).await;
    for id in ["fill-x-4", "fill-y-4"] {
        let starts = scene.log.starts(id);
        assert_eq!(starts.len(), 1, "{id}: {starts:?}");
        assert_eq!(starts[0].0, "b", "{id} gave up on a and holds b");
    }
    scene.at(2 * MINUTE).await;
    scene.at(2 * MINUTE + 1_000).await;
    for id in ["late-x-0", "late-x-1", "late-y-0", "late-y-1"] {
        let starts = scene.log.starts(id);
        assert_eq!(starts.len(), 1, "{id}: {starts:?}");
        assert_eq!((starts[0].0.as_str(), minute(starts[0].1)), ("a", 2));
    }
    assert!(scene.log.starts("probe").is_empty());
    scene.at(125_000).await;
    scene.at(126_000).await;
    scene.at(185_000).await;
    scene.at(186_000).await;
    let escalated = scene.log.escalations("probe");
    assert_eq!(escalated.len(), 2, "{escalated:?}");
    assert_eq!(escalated[0].0, "a");
    assert!(
        (125_000..3 * MINUTE).contains(&escalated[0].1),
        "gave up on a after its default wait (minute 2 + 5 s): {escalated:?}"
    );
    assert_eq!(escalated[1].0, "b");
    assert!(
        (185_000..4 * MINUTE).contains(&escalated[1].1),
        "gave up on b after its default wait (minute 3 + 5 s): {escalated:?}"
    );
    assert_eq!(scene.log.starts("probe")[0].0, "c");
    scene.at(330_000).await;
    let done = h.run_until(probe).await.unwrap();
    assert_eq!(&*done.model, "c");
    assert_eq!(
        done.usage.len(),
        1,
        "a and b were skipped: no usage entries"
    );
    let models = models(h, handles).await;
    let on = |model: &str| models.iter().filter(|(_, m)| m == model).count();
    assert_eq!((on("a"), on("b")), (12, 2), "{models:?}");
    x.stop(Duration::ZERO).await;
    y.stop(Duration::ZERO).await;
}
