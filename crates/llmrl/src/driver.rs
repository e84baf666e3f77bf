//! A limiter's one background task: it rolls windows at minute boundaries (so waiters are
//! admitted when a window ends even if no job finishes), adjusts ratios on their cadence
//! counted from build time, re-measures a measured memory budget, and keeps the instance in
//! sync with its fleet.

use std::sync::Weak;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{Notify, oneshot};

use crate::clock::{Clock, Timestamp};
use crate::core::Core;
use crate::window::Window;

/// When each periodic duty is due next.
pub(crate) struct Schedule {
    pub(crate) ratio_interval: Duration,
    pub(crate) memory_interval: Option<Duration>,
}

pub(crate) async fn drive(
    core: Weak<Core>,
    clock: Clock,
    schedule: Schedule,
    mut stop: oneshot::Receiver<()>,
) {
    let start = clock.now();
    let every = |interval: Duration| (!interval.is_zero()).then(|| start.saturating_add(interval));
    let mut next_ratio = every(schedule.ratio_interval);
    let mut next_memory = schedule.memory_interval.and_then(every);
    // A fleet member syncs at once (registration), then on its heartbeat, on pushed changes,
    // and when asked (pending settlements, an outage).
    let (wake_driver, mut changes) = match core.upgrade().as_ref().and_then(|c| c.fleet.as_ref()) {
        Some(link) => (Some(link.wake_driver.clone()), Some(link.backend.changes())),
        None => (None, None),
    };
    let mut next_sync: Option<Timestamp> = changes.as_ref().map(|_| start);
    loop {
        let now = clock.now();
        let next = [
            Some(Window::Minute.next_boundary(now)),
            next_ratio,
            next_memory,
            next_sync,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Window::Minute.next_boundary(now));
        let wake = async {
            match &wake_driver {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        let changed = async {
            match &mut changes {
                Some(changes) => {
                    if changes.changed().await.is_err() {
                        // The backend dropped its sender: rely on heartbeats alone.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let mut sync_now = false;
        // Only a weak reference is held while waiting: a limiter dropped without `stop()`
        // drops `stop`'s sender, which ends this task.
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = wake => sync_now = true,
            () = changed => sync_now = true,
            () = clock.sleep_until(next) => {}
        }
        let Some(strong) = core.upgrade() else { return };
        let now = clock.now();
        let adjust = next_ratio.is_some_and(|at| at <= now);
        if adjust {
            // A fixed cadence: the next tick is counted from the schedule, not from now.
            next_ratio = next_ratio.map(|at| at.saturating_add(schedule.ratio_interval));
        }
        let measure = next_memory.is_some_and(|at| at <= now);
        if let (true, Some(interval)) = (measure, schedule.memory_interval) {
            next_memory = Some(now.saturating_add(interval));
        }
        strong.tick(adjust, measure);
        if sync_now || next_sync.is_some_and(|at| at <= now) {
            strong.sync_fleet().await;
            next_sync = strong
                .fleet
                .as_ref()
                .map(|link| clock.now().saturating_add(link.next_sync_in()));
        }
    }
}

/// The task that times waiters out: it sleeps until the earliest deadline of a limiter's
/// waiters, or until told of an earlier one.
pub(crate) async fn time_out_waiters(
    core: Weak<Core>,
    clock: Clock,
    rearm: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut next: Option<Timestamp> = None;
    loop {
        let due = async {
            match next {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = rearm.notified() => {}
            () = due => {}
        }
        let Some(core) = core.upgrade() else { return };
        next = core.expire_waiters();
    }
}
