//! Time: every `now` and every sleep of a limiter goes through a [`Clock`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A point in time: milliseconds since the UNIX epoch (UTC).
///
/// Windows are aligned to the epoch minute and the UTC day, so a plain integer is all the
/// window arithmetic needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the UNIX epoch.
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the UNIX epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the end of representable time instead of overflowing.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// The source of `now` and of sleeps for a limiter.
///
/// - [`Clock::system`] reads wall time (production).
/// - [`Clock::virtual_at`] follows tokio's clock from a chosen epoch time, so with
///   `#[tokio::test(start_paused = true)]` a simulated day of traffic runs in milliseconds and
///   repeats exactly.
/// - [`Clock::manual_at`] moves only when told to ([`Clock::advance`]), while tokio runs in real
///   time: for tests that talk to real servers (a Redis backend) yet control the windows.
///
/// ```
/// use llmrl::{Clock, Timestamp};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = Clock::virtual_at(Timestamp::from_millis(0));
/// clock.sleep_until(Timestamp::from_millis(90_000)).await; // instant under paused time
/// assert_eq!(clock.now(), Timestamp::from_millis(90_000));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    System,
    Virtual {
        epoch: Timestamp,
        origin: tokio::time::Instant,
    },
    Manual(Arc<watch::Sender<Timestamp>>),
    Scaled {
        anchor: Timestamp,
        start: Timestamp,
        factor: u32,
    },
}

impl Clock {
    /// Wall time: `now` is the system's UTC time, sleeps use tokio's timer.
    #[must_use]
    pub fn system() -> Self {
        Self { kind: Kind::System }
    }

    /// A clock that reads `epoch` now and then advances with tokio's clock.
    ///
    /// Under tokio's paused time (`start_paused = true` or `tokio::time::pause()`) it only moves
    /// when the runtime advances it, which makes time-dependent behaviour deterministic.
    #[must_use]
    pub fn virtual_at(epoch: Timestamp) -> Self {
        Self {
            kind: Kind::Virtual {
                epoch,
                origin: tokio::time::Instant::now(),
            },
        }
    }

    /// A clock that reads `start` until [`Clock::advance`] moves it. Clones share the time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use llmrl::{Clock, Timestamp};
    /// let clock = Clock::manual_at(Timestamp::from_millis(1_000));
    /// clock.advance(Duration::from_secs(60));
    /// assert_eq!(clock.now(), Timestamp::from_millis(61_000));
    /// ```
    #[must_use]
    pub fn manual_at(start: Timestamp) -> Self {
        Self {
            kind: Kind::Manual(Arc::new(watch::Sender::new(start))),
        }
    }

    /// A clock that reads `start` at the wall-clock instant `anchor` and then runs `factor`
    /// times faster than wall time: a minute passes in `60 / factor` seconds.
    ///
    /// Separate processes given the same `anchor`, `start` and `factor` read the same time, so
    /// a fleet can be run through minutes of traffic quickly (end-to-end tests, demos). Sleeps
    /// are real, scaled down.
    #[must_use]
    pub fn scaled(anchor: Timestamp, start: Timestamp, factor: u32) -> Self {
        Self {
            kind: Kind::Scaled {
                anchor,
                start,
                factor: factor.max(1),
            },
        }
    }

    /// Moves a [manual](Clock::manual_at) clock forward, waking its sleepers; does nothing to
    /// other clocks.
    pub fn advance(&self, by: Duration) {
        if let Kind::Manual(time) = &self.kind {
            time.send_modify(|now| *now = now.saturating_add(by));
        }
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        match &self.kind {
            Kind::System => {
                let since = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO);
                Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            }
            Kind::Virtual { epoch, origin } => epoch.saturating_add(origin.elapsed()),
            Kind::Manual(time) => *time.borrow(),
            Kind::Scaled {
                anchor,
                start,
                factor,
            } => {
                let real = Self::system().now().saturating_duration_since(*anchor);
                start.saturating_add(real.saturating_mul(*factor))
            }
        }
    }

    /// The tokio instant at which this clock reads `t` (capped far in the future, so a huge `t`
    /// never overflows into an instant timeout).
    fn instant_at(&self, t: Timestamp) -> tokio::time::Instant {
        // About thirty years: far enough to mean "never" for a limiter, small enough for tokio.
        const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
        let (base, now) = match &self.kind {
            Kind::Virtual { epoch, origin } => (*origin, *epoch),
            Kind::System | Kind::Manual(_) | Kind::Scaled { .. } => {
                (tokio::time::Instant::now(), self.now())
            }
        };
        let mut ahead = t.saturating_duration_since(now).min(FAR);
        if let Kind::Scaled { factor, .. } = &self.kind {
            // Round up so that the clock reads `t` when the sleep ends.
            ahead = ahead.div_f64(f64::from(*factor)) + Duration::from_millis(1);
        }
        base.checked_add(ahead).unwrap_or(base + FAR / 2)
    }

    /// Sleeps until the clock reads `t` (returns at once if it already does).
    pub fn sleep_until(&self, t: Timestamp) -> Sleep {
        let inner = match &self.kind {
            Kind::Manual(time) => {
                let mut time = time.subscribe();
                SleepInner::Manual {
                    wait: Box::pin(async move {
                        let _ = time.wait_for(|now| *now >= t).await;
                    }),
                }
            }
            Kind::System | Kind::Virtual { .. } | Kind::Scaled { .. } => SleepInner::Timer {
                timer: tokio::time::sleep_until(self.instant_at(t)),
            },
        };
        Sleep { inner }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Clock::sleep_until`]: tokio's timer, or a manual clock's wait.
    #[must_use = "a sleep does nothing unless awaited"]
    pub struct Sleep {
        #[pin]
        inner: SleepInner,
    }
}

pin_project_lite::pin_project! {
    #[project = SleepProjection]
    enum SleepInner {
        Timer { #[pin] timer: tokio::time::Sleep },
        // Boxed: rare (tests), and it keeps the common timer case small.
        Manual { wait: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> },
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match self.project().inner.project() {
            SleepProjection::Timer { timer } => timer.poll(cx),
            SleepProjection::Manual { wait } => wait.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep").finish_non_exhaustive()
    }
}
