//! Fixed windows: epoch-aligned minutes and UTC days, reservation of whole estimates, and
//! settlement within and across windows — all on the virtual clock.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Recorder, Solo, Work, clock, elapsed_ms, pricing, sleeper};
use llmrl::{Clock, JobRequest, JobTypeConfig, Limiter, ModelConfig, Usage};

fn limiter(
    model: ModelConfig,
    job: JobTypeConfig<Solo>,
    clock: Clock,
    recorder: &Recorder,
) -> Limiter<Solo, Work> {
    Limiter::<Solo, Work>::builder(|Solo::Only| model.clone())
        .job_types(|Work::Job| job.clone())
        .on_event(recorder.listener(clock.clone()))
        .clock(clock)
        .build()
        .unwrap()
}

fn tokens(n: u64) -> Usage {
    Usage::new().input_tokens(n).requests(1)
}

/// Waits (virtual time) until `at_ms` after the epoch.
async fn at(clock: &Clock, at_ms: u64) {
    let now = elapsed_ms(clock);
    assert!(at_ms >= now, "scenario goes back in time: {at_ms} < {now}");
    common::advance(Duration::from_millis(at_ms - now)).await;
}

/// The user's scenario (seeds, "is the rate limiter being reset after 1 minute and/or 1 day?"):
/// 1 000 TPM and 10 000 TPD. Requests report their tokens as they finish (instantly), so the
/// counters hold actual usage; the job type reserves 100 tokens.
#[tokio::test(start_paused = true)]
async fn minute_and_day_windows_reset_independently() {
    let clock = clock();
    let recorder = Recorder::default();
    let limiter = limiter(
        ModelConfig::new(pricing())
            .tokens_per_minute(1_000)
            .tokens_per_day(10_000),
        // Long enough to wait for the next day.
        JobTypeConfig::new()
            .estimated_tokens(100)
            .max_wait(Solo::Only, Duration::from_secs(2 * 86_400)),
        clock.clone(),
        &recorder,
    );
    let request = |id: &str, n: u64| {
        limiter.queue_job(JobRequest::new(
            id.to_string(),
            Work::Job,
            sleeper(Duration::ZERO, tokens(n)),
        ))
    };
    let starts = |id: &str| {
        recorder
            .starts(id)
            .into_iter()
            .map(|(_, at)| at)
            .collect::<Vec<_>>()
    };

    let _r1 = request("r1", 100); // second 0
    at(&clock, 10_000).await;
    let _r2 = request("r2", 100);
    at(&clock, 20_000).await;
    let _r3 = request("r3", 800); // minute now full: 1 000
    at(&clock, 30_000).await;
    let r4 = request("r4", 100);
    common::settle_tasks().await;
    assert!(starts("r4").is_empty(), "1 000 TPM used: request 4 waits");
    r4.await.unwrap();
    // The window resets at second 60; the seeds' "second 61" is the first second of the new
    // minute. The retry happens at the boundary, without any job finishing to trigger it.
    assert_eq!(starts("r4"), vec![60_000]);
    at(&clock, 62_000).await;
    let _r5 = request("r5", 900); // 100 + 900 = 1 000 in minute 1
    common::settle_tasks().await;
    assert_eq!(starts("r5"), vec![62_000]);
    at(&clock, 121_000).await;
    let _r6 = request("r6", 1_000); // minute 2 is fresh
    common::settle_tasks().await;
    assert_eq!(starts("r6"), vec![121_000]);
    // 3 000 tokens so far today; six more full minutes and 999 bring the day to 9 999.
    for (i, minute) in (3..9).enumerate() {
        at(&clock, minute * 60_000 + 1_000).await;
        let _filled = request(&format!("fill-{i}"), 1_000);
    }
    at(&clock, 9 * 60_000 + 1_000).await;
    let _filled = request("fill-last", 999);
    common::settle_tasks().await;
    let day = limiter.availability().models[0].tokens_per_day.unwrap();
    assert_eq!(day.used, 9_999);

    at(&clock, 12_000_000).await;
    let rn = request("rn", 100);
    common::settle_tasks().await;
    let minute = limiter.availability().models[0].tokens_per_minute.unwrap();
    assert_eq!(minute.used, 0, "the minute is free...");
    assert!(
        starts("rn").is_empty(),
        "...but the day is not: 9 999 + 100 > 10 000"
    );
    rn.await.unwrap();
    assert_eq!(
        starts("rn"),
        vec![86_400_000],
        "runs when the UTC day rolls over"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn the_whole_estimate_must_fit_not_one_unit() {
    let clock = clock();
    let recorder = Recorder::default();
    let limiter = limiter(
        ModelConfig::new(pricing()).tokens_per_minute(1_000),
        JobTypeConfig::new().estimated_tokens(600),
        clock.clone(),
        &recorder,
    );
    let _first = limiter.queue_job(JobRequest::new(
        "first",
        Work::Job,
        sleeper(Duration::from_secs(5), tokens(600)),
    ));
    let second = limiter.queue_job(JobRequest::new(
        "second",
        Work::Job,
        sleeper(Duration::from_secs(5), tokens(600)),
    ));
    common::settle_tasks().await;
    assert!(
        recorder.starts("second").is_empty(),
        "400 tokens left, 600 estimated: waits"
    );
    second.await.unwrap();
    assert_eq!(recorder.starts("second"), vec![("Only".into(), 60_000)]);
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn refunds_count_only_within_the_reservation_window() {
    let clock = clock();
    let recorder = Recorder::default();
    let limiter = limiter(
        ModelConfig::new(pricing())
            .tokens_per_minute(1_000)
            .tokens_per_day(100_000),
        JobTypeConfig::new().estimated_tokens(500),
        clock.clone(),
        &recorder,
    );
    let tpm = |l: &Limiter<Solo, Work>| l.availability().models[0].tokens_per_minute.unwrap().used;
    let tpd = |l: &Limiter<Solo, Work>| l.availability().models[0].tokens_per_day.unwrap().used;
    // Same window: 500 reserved, 200 used ⇒ 300 refunded at once.
    limiter
        .queue_job(JobRequest::new(
            "same",
            Work::Job,
            sleeper(Duration::from_secs(5), tokens(200)),
        ))
        .await
        .unwrap();
    assert_eq!((tpm(&limiter), tpd(&limiter)), (200, 200));
    // Reserved at 50 s, settled at 70 s with 200: minute 0 is over and is not touched, and minute
    // 1 is not refunded for it; the day (same window) is.
    at(&clock, 50_000).await;
    limiter
        .queue_job(JobRequest::new(
            "across",
            Work::Job,
            sleeper(Duration::from_secs(20), tokens(200)),
        ))
        .await
        .unwrap();
    assert_eq!((tpm(&limiter), tpd(&limiter)), (0, 400));
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn an_overage_is_charged_to_the_current_window_and_blocks_until_it_ends() {
    let clock = clock();
    let recorder = Recorder::default();
    let limiter = limiter(
        ModelConfig::new(pricing()).tokens_per_minute(1_000),
        JobTypeConfig::new().estimated_tokens(500),
        clock.clone(),
        &recorder,
    );
    let tpm = |l: &Limiter<Solo, Work>| l.availability().models[0].tokens_per_minute.unwrap();
    // Reserved at 50 s, used 1 300 and settled at 70 s: the 800 overage lands in minute 1,
    // where a 500-token job no longer fits.
    at(&clock, 50_000).await;
    limiter
        .queue_job(JobRequest::new(
            "across",
            Work::Job,
            sleeper(Duration::from_secs(20), tokens(1_300)),
        ))
        .await
        .unwrap();
    assert_eq!(tpm(&limiter).used, 800);
    let next = limiter.queue_job(JobRequest::new(
        "next",
        Work::Job,
        sleeper(Duration::ZERO, tokens(1_700)),
    ));
    next.await.unwrap();
    assert_eq!(recorder.starts("next"), vec![("Only".into(), 120_000)]);
    // Within its own window, that job's overage pushed the counter past the limit.
    let after = tpm(&limiter);
    assert_eq!((after.used, after.remaining), (1_700, 0));
    let blocked = limiter.queue_job(JobRequest::new(
        "blocked",
        Work::Job,
        sleeper(Duration::ZERO, tokens(10)),
    ));
    blocked.await.unwrap();
    assert_eq!(
        recorder.starts("blocked"),
        vec![("Only".into(), 180_000)],
        "nothing starts until the window ends"
    );
    limiter.stop(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_estimate_is_unbounded_until_an_overage_pushes_the_counter_over() {
    let clock = clock();
    let recorder = Recorder::default();
    let limiter = limiter(
        ModelConfig::new(pricing()).tokens_per_minute(1_000),
        JobTypeConfig::new(),
        clock.clone(),
        &recorder,
    );
    assert_eq!(
        limiter.availability().slots,
        None,
        "nothing bounds a 0-token job type"
    );
    limiter
        .queue_job(JobRequest::new(
            "big",
            Work::Job,
            sleeper(Duration::ZERO, tokens(1_200)),
        ))
        .await
        .unwrap();
    assert_eq!(limiter.availability().slots, Some(0));
    limiter
        .queue_job(JobRequest::new(
            "next",
            Work::Job,
            sleeper(Duration::ZERO, tokens(1)),
        ))
        .await
        .unwrap();
    assert_eq!(recorder.starts("next"), vec![("Only".into(), 60_000)]);
    limiter.stop(Duration::ZERO).await;
}
