//! Changes made elsewhere reach each instance by pub/sub, without a message per job: an
//! instance publishes at most one "usage changed" notice per period, whatever its job rate, and
//! the scripts publish membership changes at once. Receivers then sync.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The channel's payload for usage notices: `usage:<instance>` (an instance ignores its own).
const USAGE: &str = "usage:";

pub(crate) struct Propagation {
    /// Moves whenever another instance changed something; instances watch it.
    pub(crate) changes: watch::Sender<u64>,
    /// Set by admissions and settlements; the publisher sends one notice per period for all.
    pub(crate) dirty: Notify,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            changes: watch::Sender::new(0),
            dirty: Notify::new(),
            stop: watch::Sender::new(false),
            tasks: Mutex::new(Vec::new()),
        }
    }
}

impl Propagation {
    /// Starts the publisher and the subscriber, once.
    pub(crate) fn start(
        &self,
        start_publisher: impl FnOnce(watch::Receiver<bool>) -> JoinHandle<()>,
        start_subscriber: impl FnOnce(watch::Receiver<bool>) -> JoinHandle<()>,
    ) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if !tasks.is_empty() {
            return;
        }
        self.stop.send_replace(false);
        tasks.push(start_publisher(self.stop.subscribe()));
        tasks.push(start_subscriber(self.stop.subscribe()));
    }

    /// Stops both tasks and waits for them, so that no connection stays open.
    pub(crate) async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// A change was seen: instances sync.
    pub(crate) fn changed(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }
}

/// The notice an instance publishes.
pub(crate) fn usage_notice(instance: &str) -> String {
    format!("{USAGE}{instance}")
}

/// Whether a message on the channel concerns this instance (not its own notice).
pub(crate) fn concerns(payload: &str, instance: &str) -> bool {
    payload.strip_prefix(USAGE) != Some(instance)
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

/// Listens to the channel (reconnecting with backoff) and reports every notice that concerns
/// this instance.
pub(crate) async fn subscriber(
    client: redis::Client,
    channel: String,
    instance: String,
    propagation: std::sync::Weak<crate::backend::Inner>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
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
                if let Some(inner) = propagation.upgrade() {
                    inner.propagation.changed();
                }
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => return,
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let payload: String = message.get_payload().unwrap_or_default();
                            if !concerns(&payload, &instance) {
                                continue;
                            }
                            let Some(inner) = propagation.upgrade() else { return };
                            inner.propagation.changed();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_notices_are_ignored() {
        assert!(!concerns(&usage_notice("a"), "a"));
        assert!(concerns(&usage_notice("b"), "a"));
        assert!(concerns("membership", "a"));
    }
}
