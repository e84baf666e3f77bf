//! Changes made elsewhere reach each instance by pub/sub, without a message per job: an
//! instance publishes at most one "usage changed" notice per period, whatever its job rate,
//! and the library publishes membership changes at once. A receiver syncs at once on a
//! membership notice, and at most once per period on usage notices, however many instances
//! send them: syncs grow with the fleet, not with its square.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::Inner;

/// The channel's payload for usage notices: `usage:<instance>` (an instance ignores its own).
const USAGE: &str = "usage:";

pub(crate) struct Propagation {
    /// Moves whenever another instance changed something; instances watch it.
    pub(crate) changes: watch::Sender<u64>,
    /// Set by admissions and settlements; the publisher sends one notice per period for all.
    pub(crate) dirty: Arc<Notify>,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            changes: watch::Sender::new(0),
            dirty: Arc::new(Notify::new()),
        }
    }
}

impl Propagation {
    /// A change was seen: instances sync.
    pub(crate) fn changed(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }
}

/// The background tasks of one backend (the batch runner, the publisher and the subscriber)
/// and what stops them.
#[derive(Default)]
pub(crate) struct Tasks {
    stop: watch::Sender<bool>,
    running: Mutex<Vec<JoinHandle<()>>>,
}

impl Tasks {
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub(crate) fn add(&self, task: JoinHandle<()>) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Stops every task and waits for them, so that no connection stays open.
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// The notice an instance publishes.
pub(crate) fn usage_notice(instance: &str) -> String {
    format!("{USAGE}{instance}")
}

/// What a message on the channel means for this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// Its own usage notice.
    Own,
    /// Another instance's usage moved.
    Usage,
    /// Membership changed (or anything else): sync now.
    Membership,
}

pub(crate) fn notice(payload: &str, instance: &str) -> Notice {
    match payload.strip_prefix(USAGE) {
        Some(sender) if sender == instance => Notice::Own,
        Some(_) => Notice::Usage,
        None => Notice::Membership,
    }
}

/// Runs `publish` at most every `period` while there is something to announce.
pub(crate) async fn publisher<F, Fut>(
    dirty: &Notify,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    mut publish: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = dirty.notified() => {}
        }
        publish().await;
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// Lets usage notices through at most once per period (the last one late rather than never);
/// membership notices at once.
#[derive(Debug)]
pub(crate) struct Gate {
    period: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl Gate {
    pub(crate) const fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            pending: false,
        }
    }

    /// Whether a notice received at `now` lets the instance sync now.
    pub(crate) fn admit(&mut self, notice: Notice, now: Instant) -> bool {
        let open = match notice {
            Notice::Own => return false,
            Notice::Membership => true,
            Notice::Usage => self.last.is_none_or(|last| now >= last + self.period),
        };
        if open {
            self.last = Some(now);
            self.pending = false;
        } else {
            self.pending = true;
        }
        open
    }

    /// When a held-back usage notice is due, if any.
    pub(crate) fn due(&self) -> Option<Instant> {
        match (self.pending, self.last) {
            (true, Some(last)) => Some(last + self.period),
            _ => None,
        }
    }

    /// The held-back notice went through at `now`.
    pub(crate) fn fire(&mut self, now: Instant) {
        self.pending = false;
        self.last = Some(now);
    }
}

/// Listens to the channel (reconnecting with backoff) and tells the instance to sync, as the
/// [`Gate`] allows.
pub(crate) async fn subscriber(
    client: redis::Client,
    channel: String,
    instance: String,
    period: Duration,
    inner: Weak<Inner>,
    mut stop: watch::Receiver<bool>,
) {
    let changed = || match inner.upgrade() {
        Some(inner) => {
            inner.propagation.changed();
            true
        }
        None => false,
    };
    let mut backoff = Duration::from_millis(100);
    let mut gate = Gate::new(period);
    loop {
        if *stop.borrow() {
            return;
        }
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            pubsub = tokio::time::timeout(Duration::from_secs(2), subscribed) => pubsub,
        };
        match pubsub {
            Ok(Ok(mut pubsub)) => {
                backoff = Duration::from_millis(100);
                // Notices may have been missed while disconnected.
                if !changed() {
                    return;
                }
                let mut messages = pubsub.on_message();
                loop {
                    let due = gate.due();
                    tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => return,
                        () = sleep_until(due) => {
                            gate.fire(Instant::now());
                            if !changed() {
                                return;
                            }
                        }
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let payload: String = message.get_payload().unwrap_or_default();
                            if gate.admit(notice(&payload, &instance), Instant::now()) && !changed() {
                                return;
                            }
                        }
                    }
                }
            }
            Ok(Err(error)) => tracing::debug!(%error, "pub/sub connection failed; retrying"),
            Err(_) => tracing::debug!("pub/sub connection timed out; retrying"),
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices() {
        assert_eq!(notice(&usage_notice("a"), "a"), Notice::Own);
        assert_eq!(notice(&usage_notice("b"), "a"), Notice::Usage);
        assert_eq!(notice("membership", "a"), Notice::Membership);
    }

    #[test]
    fn usage_notices_pass_once_per_period_and_membership_at_once() {
        let period = Duration::from_millis(50);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut gate = Gate::new(period);
        assert!(gate.admit(Notice::Usage, at(0)));
        // A burst from many instances: held back, one sync when the period is over.
        for ms in [1, 2, 10, 30] {
            assert!(!gate.admit(Notice::Usage, at(ms)));
        }
        assert_eq!(gate.due(), Some(at(50)));
        gate.fire(at(50));
        assert_eq!(gate.due(), None);
        assert!(!gate.admit(Notice::Own, at(120)));
        assert!(gate.admit(Notice::Usage, at(120)));
        // Membership is never held back, and a held usage notice is covered by its sync.
        assert!(!gate.admit(Notice::Usage, at(121)));
        assert!(gate.admit(Notice::Membership, at(122)));
        assert_eq!(gate.due(), None);
    }
}
