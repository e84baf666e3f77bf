//! The Redis backend.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llmrl::Timestamp;
use llmrl::backend::{
    Admission, AdmitReply, Backend, BackendError, FleetFigures, FleetView, ModelLimits, OwnUsage,
    Settlement, Windows,
};
use redis::Cmd;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot, watch};

use crate::batch::{self, Admit, Control, Op, Settle, malformed};
use crate::config::{RedisConfig, WindowClock};
use crate::error::from_redis;
use crate::figures::{self, Registration};
use crate::library::{Entry, Runner};
use crate::propagation::{self, Propagation, Tasks};

/// A fleet backend on Redis. Give each limiter instance its own (all pointing at the same Redis
/// and prefix): it holds that instance's connections, which `stop()` closes.
///
/// The connection is opened lazily and re-opened with backoff when lost; while Redis cannot be
/// reached, calls fail fast (within the configured timeout) and the limiter's failure mode
/// applies.
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    /// The prefix as a hash tag: the library derives every key from it.
    pub(crate) key: String,
    secret: Option<String>,
    client: redis::Client,
    connection: tokio::sync::Mutex<Connection>,
    pub(crate) runner: Runner,
    /// What the instance registered with; every call needs it.
    registration: Mutex<Option<Arc<Registration>>>,
    /// Registrations so far: settlements carry the one they follow.
    generation: AtomicU64,
    /// The fleet's size in the latest reply: a registration reports it, so that a fleet that
    /// lost its state does not hand the first instance back the whole limit.
    members: AtomicU32,
    /// The latest time the instance gave a call (ms since the epoch; 0: none yet), for the one
    /// call that comes without a time, `unregister`.
    latest_now: AtomicU64,
    queue: mpsc::UnboundedSender<Op>,
    /// The batch runner's end of `queue`, until it starts.
    queued: Mutex<Option<mpsc::UnboundedReceiver<Op>>>,
    runner_started: AtomicBool,
    propagation_started: AtomicBool,
    pub(crate) propagation: Propagation,
    tasks: Tasks,
}

enum Connection {
    Idle,
    Open(ConnectionManager),
    Closed,
}

fn closed() -> BackendError {
    BackendError::Unreachable("the backend was closed".into())
}

impl Inner {
    pub(crate) fn error(&self, error: &redis::RedisError) -> BackendError {
        from_redis(error, self.secret.as_deref())
    }

    /// The connection, opened on first use.
    pub(crate) async fn connection(&self) -> Result<ConnectionManager, BackendError> {
        let mut connection = self.connection.lock().await;
        match &*connection {
            Connection::Open(manager) => return Ok(manager.clone()),
            Connection::Closed => return Err(closed()),
            Connection::Idle => {}
        }
        let timeout = self.config.timeout;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_with_config(self.client.clone(), settings)
            .await
            .map_err(|error| self.error(&error))?;
        *connection = Connection::Open(manager.clone());
        Ok(manager)
    }

    pub(crate) fn registration(&self) -> Option<Arc<Registration>> {
        self.registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn saw_members(&self, members: u32) {
        self.members.store(members, Ordering::Relaxed);
    }

    pub(crate) fn usage_changed(&self) {
        self.propagation.dirty.notify_one();
    }

    /// A settlement returning a reservation nobody received.
    pub(crate) fn give_back(
        &self,
        model: usize,
        estimates: [u64; 4],
        reserved_in: Windows,
        now: Timestamp,
    ) -> Settle {
        batch::never_started(
            model,
            estimates,
            reserved_in,
            now,
            self.generation.load(Ordering::SeqCst),
        )
    }

    fn now_arg(&self, now: Timestamp) -> String {
        self.latest_now
            .fetch_max(now.as_millis(), Ordering::Relaxed);
        match self.config.window_clock {
            WindowClock::Server => String::new(),
            WindowClock::Client => now.as_millis().to_string(),
        }
    }

    /// The time for a call made without one (`unregister`): with the client's clock, the latest
    /// it gave, so that the library works on the same windows as every other call (the
    /// server's clock may be elsewhere entirely, e.g. a test's manual clock).
    fn latest_now_arg(&self) -> String {
        match (
            self.config.window_clock,
            self.latest_now.load(Ordering::Relaxed),
        ) {
            (WindowClock::Client, latest) if latest > 0 => latest.to_string(),
            _ => String::new(),
        }
    }

    fn stale_ms(&self) -> u64 {
        u64::try_from(self.config.stale_after.as_millis()).unwrap_or(u64::MAX)
    }
}

impl RedisBackend {
    /// A backend for `config`. Nothing is connected yet: the first call connects.
    ///
    /// # Errors
    /// [`BackendError::Protocol`] if the URL is malformed (the message never holds the
    /// password).
    pub fn new(config: RedisConfig) -> Result<Self, BackendError> {
        crate::tls::install_crypto_provider(&config.url);
        let secret = config.secret();
        let client = redis::Client::open(config.url.as_str())
            .map_err(|error| from_redis(&error, secret.as_deref()))?;
        let (queue, queued) = mpsc::unbounded_channel();
        Ok(Self {
            inner: Arc::new(Inner {
                key: config.key(),
                runner: Runner::new(config.lua_mode),
                config,
                secret,
                client,
                connection: tokio::sync::Mutex::new(Connection::Idle),
                registration: Mutex::new(None),
                generation: AtomicU64::new(0),
                members: AtomicU32::new(0),
                latest_now: AtomicU64::new(0),
                queue,
                queued: Mutex::new(Some(queued)),
                runner_started: AtomicBool::new(false),
                propagation_started: AtomicBool::new(false),
                propagation: Propagation::default(),
                tasks: Tasks::default(),
            }),
        })
    }

    /// [`RedisBackend::new`], then a first round trip, so that a wrong address or password
    /// shows at once.
    ///
    /// # Errors
    /// As [`RedisBackend::new`], and [`BackendError::Unreachable`] if Redis does not answer.
    pub async fn connect(config: RedisConfig) -> Result<Self, BackendError> {
        let backend = Self::new(config)?;
        let mut connection = backend.inner.connection().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|error| backend.inner.error(&error))?;
        Ok(backend)
    }

    /// Queues `op` for the batch runner, starting it on first use.
    fn submit(&self, op: Op) -> Result<(), BackendError> {
        if !self.inner.runner_started.swap(true, Ordering::AcqRel) {
            let queued = self
                .inner
                .queued
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(queued) = queued {
                let task = tokio::spawn(batch::run(
                    Arc::downgrade(&self.inner),
                    queued,
                    self.inner.tasks.stop_signal(),
                ));
                self.inner.tasks.add(task);
            }
        }
        self.inner.queue.send(op).map_err(|_| closed())
    }

    /// Runs a membership call in its place among the instance's calls.
    async fn control(
        &self,
        entry: Entry,
        args: impl Fn(&mut Cmd) + Send + Sync + 'static,
    ) -> Result<Vec<i64>, BackendError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Op::Control(Control {
            entry,
            args: Box::new(args),
            reply,
        }))?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Starts publishing this instance's usage notices and listening to the fleet's, once.
    fn start_propagation(&self, instance: &str) {
        if self.inner.propagation_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let channel = format!("{}:changes", self.inner.key);
        let period = self.inner.config.propagation;
        let (inner, notice, publish_to) = (
            Arc::downgrade(&self.inner),
            propagation::usage_notice(instance),
            channel.clone(),
        );
        self.inner.tasks.add(tokio::spawn(publish_loop(
            inner,
            self.inner.propagation.dirty.clone(),
            publish_to,
            notice,
            period,
            self.inner.tasks.stop_signal(),
        )));
        self.inner.tasks.add(tokio::spawn(propagation::subscriber(
            self.inner.client.clone(),
            channel,
            instance.to_owned(),
            period,
            Arc::downgrade(&self.inner),
            self.inner.tasks.stop_signal(),
        )));
    }

    fn view(&self, reply: &[i64], registration: &Registration) -> Result<FleetView, BackendError> {
        let mut at = 1;
        let mut models = Vec::with_capacity(registration.models.len());
        let mut divisor = 0;
        for model in &registration.models {
            let read = figures::read(reply, &mut at, model).ok_or_else(|| malformed("view"))?;
            self.inner.saw_members(read.members);
            divisor = read.divisor;
            models.push(read.figures);
        }
        Ok(FleetView::new(divisor, models))
    }
}

/// Publishes a usage notice at most once per period while admissions and settlements happen;
/// holds the backend only while publishing.
async fn publish_loop(
    inner: std::sync::Weak<Inner>,
    dirty: Arc<tokio::sync::Notify>,
    channel: String,
    notice: String,
    period: Duration,
    stop: watch::Receiver<bool>,
) {
    propagation::publisher(&dirty, period, stop, || {
        let (inner, channel, notice) = (inner.upgrade(), channel.clone(), notice.clone());
        async move {
            let Some(inner) = inner else { return };
            if let Ok(mut connection) = inner.connection().await {
                let published: Result<i64, _> = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(&notice)
                    .query_async(&mut connection)
                    .await;
                if let Err(error) = published {
                    tracing::debug!(error = %inner.error(&error), "could not publish");
                }
            }
        }
    })
    .await;
}

impl Backend for RedisBackend {
    async fn register(
        &self,
        instance: &str,
        models: &[ModelLimits],
        own: &OwnUsage,
        now: Timestamp,
    ) -> Result<FleetView, BackendError> {
        // Settlements made from now on follow this registration.
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let registration = Arc::new(Registration::new(instance, models));
        *self
            .inner
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(registration.clone());
        let last_known = self.inner.members.load(Ordering::Relaxed);
        let (instance_arg, now_arg, stale_ms) = (
            instance.to_owned(),
            self.inner.now_arg(now),
            self.inner.stale_ms(),
        );
        let own = own.clone();
        let sent = registration.clone();
        let reply = self
            .control(Entry::Register, move |cmd| {
                cmd.arg(&instance_arg)
                    .arg(&now_arg)
                    .arg(&sent.descriptor)
                    .arg(sent.models.len());
                for model in &sent.models {
                    cmd.arg(&model.limit_args()[..]);
                }
                cmd.arg(own.windows.minute).arg(own.windows.day);
                for m in 0..sent.models.len() {
                    let usage = own.models.get(m).copied().unwrap_or_default();
                    cmd.arg(&usage[..]);
                }
                cmd.arg(last_known)
                    .arg(generation)
                    .arg(if generation == 1 { "1" } else { "0" })
                    .arg(stale_ms);
            })
            .await?;
        if reply.first() == Some(&-2) {
            return Err(BackendError::Mismatch(
                "the fleet's models or limits differ from this instance's".into(),
            ));
        }
        let view = self.view(&reply, &registration)?;
        self.start_propagation(instance);
        Ok(view)
    }

    async fn admit(
        &self,
        _instance: &str,
        admission: Admission,
    ) -> Result<AdmitReply, BackendError> {
        self.inner.now_arg(admission.now);
        let (reply, answer) = oneshot::channel();
        // If this future is dropped while the batch is on its way, the batch runner gives the
        // reservation back.
        self.submit(Op::Admit(Admit {
            model: admission.model,
            estimates: admission.estimates,
            now: admission.now,
            reply,
        }))?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    async fn settle(&self, _instance: &str, s: Settlement) -> Result<FleetFigures, BackendError> {
        // The registration this settlement follows: taken when the call is made, before any
        // later registration can count it in the usage it reports.
        let generation = self.inner.generation.load(Ordering::SeqCst);
        self.inner.now_arg(s.now);
        let (reply, answer) = oneshot::channel();
        self.submit(Op::Settle(Settle {
            settlement: s,
            generation,
            reply: Some(reply),
        }))?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    async fn sync(
        &self,
        instance: &str,
        now: Timestamp,
    ) -> Result<Option<FleetView>, BackendError> {
        let Some(registration) = self.inner.registration() else {
            return Ok(None);
        };
        let (instance_arg, now_arg, stale_ms) = (
            instance.to_owned(),
            self.inner.now_arg(now),
            self.inner.stale_ms(),
        );
        let sent = registration.clone();
        let reply = self
            .control(Entry::Sync, move |cmd| {
                cmd.arg(&instance_arg)
                    .arg(&now_arg)
                    .arg(stale_ms)
                    .arg(sent.models.len());
                for model in &sent.models {
                    cmd.arg(&model.limit_args()[..]);
                }
            })
            .await?;
        match reply.first() {
            Some(1) => self.view(&reply, &registration).map(Some),
            Some(_) => Ok(None),
            None => Err(malformed("sync")),
        }
    }

    async fn unregister(&self, instance: &str) -> Result<(), BackendError> {
        let result = match self.inner.registration() {
            Some(registration) => {
                let (instance_arg, now_arg) = (instance.to_owned(), self.inner.latest_now_arg());
                self.control(Entry::Unregister, move |cmd| {
                    cmd.arg(&instance_arg)
                        .arg(&now_arg)
                        .arg(registration.models.len());
                    for model in &registration.models {
                        cmd.arg(&model.limit_args()[..]);
                    }
                })
                .await
                .map(|_| ())
            }
            None => Ok(()),
        };
        // Whatever the answer, this instance is done with Redis: close everything.
        self.inner.tasks.stop().await;
        *self.inner.connection.lock().await = Connection::Closed;
        result
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.propagation.changes.subscribe()
    }
}
