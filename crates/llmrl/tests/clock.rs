//! Time (SPEC §8): every `now` and every sleep goes through a `Clock` — wall time, tokio's
//! (virtual) time, a manual clock moved by hand, or a scaled clock — and `Timestamp` arithmetic
//! saturates instead of overflowing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::EPOCH_MS;
use llmrl::{Clock, Timestamp};

fn wall_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[test]
fn timestamps_count_milliseconds_and_saturate() {
    let t = Timestamp::from_millis(EPOCH_MS);
    assert_eq!(t.as_millis(), EPOCH_MS);
    assert_eq!(Timestamp::default(), Timestamp::from_millis(0));
    assert_eq!(
        t.saturating_add(Duration::from_millis(1_500)).as_millis(),
        EPOCH_MS + 1_500
    );
    assert_eq!(
        t.saturating_add(Duration::MAX),
        Timestamp::from_millis(u64::MAX),
        "no overflow past the end of representable time"
    );
    assert_eq!(
        Timestamp::from_millis(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
        Timestamp::from_millis(u64::MAX)
    );
    let later = Timestamp::from_millis(EPOCH_MS + 2_000);
    assert_eq!(later.saturating_duration_since(t), Duration::from_secs(2));
    assert_eq!(
        t.saturating_duration_since(later),
        Duration::ZERO,
        "an earlier time is zero away, not negative"
    );
    assert!(t < later);
    assert_eq!(t.max(later), later);
}

#[test]
fn the_system_clock_reads_wall_time() {
    let before = wall_ms();
    let now = Clock::system().now().as_millis();
    let after = wall_ms();
    assert!(
        before <= now && now <= after,
        "{before} <= {now} <= {after}"
    );
}

#[test]
fn a_manual_clock_moves_only_when_advanced_and_clones_share_its_time() {
    let clock = Clock::manual_at(Timestamp::from_millis(EPOCH_MS));
    let clone = clock.clone();
    assert_eq!(clock.now().as_millis(), EPOCH_MS);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        clock.now().as_millis(),
        EPOCH_MS,
        "wall time does not move it"
    );
    clone.advance(Duration::from_secs(90));
    assert_eq!(clock.now().as_millis(), EPOCH_MS + 90_000);
    assert_eq!(clone.now(), clock.now());
    clock.advance(Duration::MAX);
    assert_eq!(clock.now(), Timestamp::from_millis(u64::MAX), "saturates");
}

#[tokio::test(start_paused = true)]
async fn advancing_a_non_manual_clock_does_nothing() {
    let clock = Clock::virtual_at(Timestamp::from_millis(EPOCH_MS));
    clock.advance(Duration::from_secs(60));
    assert_eq!(clock.now().as_millis(), EPOCH_MS);
    let scaled = Clock::scaled(
        Timestamp::from_millis(u64::MAX),
        Timestamp::from_millis(EPOCH_MS),
        60,
    );
    scaled.advance(Duration::from_secs(60));
    assert_eq!(scaled.now().as_millis(), EPOCH_MS);
}

#[tokio::test]
async fn a_manual_sleep_wakes_when_the_clock_is_advanced_to_its_time() {
    let clock = Clock::manual_at(Timestamp::from_millis(EPOCH_MS));
    let woke = Arc::new(AtomicBool::new(false));
    let sleeper = {
        let woke = woke.clone();
        let sleep = clock.sleep_until(Timestamp::from_millis(EPOCH_MS + 60_000));
        tokio::spawn(async move {
            sleep.await;
            woke.store(true, Ordering::SeqCst);
        })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!woke.load(Ordering::SeqCst), "not before its time");
    clock.advance(Duration::from_secs(59));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!woke.load(Ordering::SeqCst), "59 s is not enough");
    clock.advance(Duration::from_secs(1));
    sleeper.await.unwrap();
    assert!(woke.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_manual_sleep_until_a_past_time_returns_at_once() {
    let clock = Clock::manual_at(Timestamp::from_millis(EPOCH_MS));
    // No advance is ever made: this only finishes because the time has already come.
    clock.sleep_until(Timestamp::from_millis(EPOCH_MS)).await;
    clock.sleep_until(Timestamp::from_millis(0)).await;
    assert_eq!(clock.now().as_millis(), EPOCH_MS);
}

#[tokio::test(start_paused = true)]
async fn a_scaled_clock_reads_its_start_until_its_anchor_and_sleeps_scaled_down() {
    // The anchor is in the future: the clock reads `start` until then.
    let start = Timestamp::from_millis(EPOCH_MS);
    let clock = Clock::scaled(Timestamp::from_millis(u64::MAX), start, 60);
    assert_eq!(clock.now(), start);
    // A minute of this clock is one second of tokio's (plus the millisecond rounded up).
    let before = tokio::time::Instant::now();
    clock
        .sleep_until(start.saturating_add(Duration::from_secs(60)))
        .await;
    assert_eq!(before.elapsed(), Duration::from_millis(1_001));
}

#[test]
fn a_scaled_clock_runs_factor_times_faster_than_wall_time() {
    let anchor = Timestamp::from_millis(wall_ms() - 10_000);
    let start = Timestamp::from_millis(EPOCH_MS);
    // At least ten wall seconds have passed since the anchor: at least ten minutes at x60.
    let read = Clock::scaled(anchor, start, 60).now();
    assert!(read.saturating_duration_since(start) >= Duration::from_secs(600));
    // A zero factor is taken as 1 (real time), never as a stopped clock.
    let read = Clock::scaled(anchor, start, 0).now();
    let since = read.saturating_duration_since(start);
    assert!(since >= Duration::from_secs(10) && since < Duration::from_secs(600));
}

#[tokio::test(start_paused = true)]
async fn a_system_clock_sleeps_on_tokio_time() {
    let clock = Clock::system();
    let target = clock.now().saturating_add(Duration::from_secs(5));
    let before = tokio::time::Instant::now();
    clock.sleep_until(target).await;
    let slept = before.elapsed();
    // Paused tokio time jumps straight to the timer; wall time may have moved a few ms since
    // `target` was computed, which only shortens the sleep.
    assert!(
        slept <= Duration::from_secs(5) && slept >= Duration::from_secs(4),
        "{slept:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_virtual_sleep_to_the_end_of_time_never_fires() {
    let clock = Clock::virtual_at(Timestamp::from_millis(EPOCH_MS));
    let far = clock.sleep_until(Timestamp::from_millis(u64::MAX));
    let result = tokio::time::timeout(Duration::from_secs(365 * 86_400), far).await;
    assert!(
        result.is_err(),
        "a huge deadline must not overflow into an instant wake-up"
    );
    assert_eq!(
        clock.now().as_millis(),
        EPOCH_MS + 365 * 86_400_000,
        "the clock follows tokio's"
    );
}
