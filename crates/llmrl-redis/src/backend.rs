//! The Redis backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llmrl::Timestamp;
use llmrl::backend::{
    Admission, AdmitReply, Backend, BackendError, FleetFigures, FleetView, ModelLimits, OwnUsage,
    Settlement, SettlementOutcome,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{oneshot, watch};

use crate::config::{RedisConfig, WindowClock};
use crate::error::from_redis;
use crate::propagation::{self, Propagation};
use crate::script::{descriptor, limit_args, scripts, view};

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
    config: RedisConfig,
    key: String,
    secret: Option<String>,
    client: redis::Client,
    connection: tokio::sync::Mutex<Connection>,
    /// The models' limits, known from registration; every script needs them.
    limits: Mutex<Vec<ModelLimits>>,
    /// The latest time the instance gave a call (ms since the epoch; 0: none yet), for the one
    /// call that comes without a time, `unregister`.
    latest_now: AtomicU64,
    pub(crate) propagation: Propagation,
}

enum Connection {
    Idle,
    Open(ConnectionManager),
    Closed,
}

impl RedisBackend {
    /// Another handle on this backend, for its own tasks.
    fn handle(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }

    /// A backend for `config`. Nothing is connected yet: the first call connects.
    ///
    /// # Errors
    /// [`BackendError::Protocol`] if the URL is malformed (the message never holds the
    /// password).
    pub fn new(config: RedisConfig) -> Result<Self, BackendError> {
        let secret = config.secret();
        let client = redis::Client::open(config.url.as_str())
            .map_err(|error| from_redis(&error, secret.as_deref()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                key: config.key(),
                config,
                secret,
                client,
                connection: tokio::sync::Mutex::new(Connection::Idle),
                limits: Mutex::new(Vec::new()),
                latest_now: AtomicU64::new(0),
                propagation: Propagation::default(),
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
        let mut connection = backend.connection().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|error| backend.error(&error))?;
        Ok(backend)
    }

    fn error(&self, error: &redis::RedisError) -> BackendError {
        from_redis(error, self.inner.secret.as_deref())
    }

    /// The connection, opened on first use.
    async fn connection(&self) -> Result<ConnectionManager, BackendError> {
        let mut connection = self.inner.connection.lock().await;
        match &*connection {
            Connection::Open(manager) => return Ok(manager.clone()),
            Connection::Closed => {
                return Err(BackendError::Unreachable("the backend was closed".into()));
            }
            Connection::Idle => {}
        }
        let timeout = self.inner.config.timeout;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_with_config(self.inner.client.clone(), settings)
            .await
            .map_err(|error| self.error(&error))?;
        *connection = Connection::Open(manager.clone());
        Ok(manager)
    }

    fn now_arg(&self, now: Timestamp) -> String {
        self.inner
            .latest_now
            .fetch_max(now.as_millis(), Ordering::Relaxed);
        match self.inner.config.window_clock {
            WindowClock::Server => String::new(),
            WindowClock::Client => now.as_millis().to_string(),
        }
    }

    /// The time for a call made without one (`unregister`): with the client's clock, the latest
    /// it gave, so that the script works on the same windows as every other call (the server's
    /// clock may be elsewhere entirely, e.g. a test's manual clock).
    fn latest_now_arg(&self) -> String {
        match (
            self.inner.config.window_clock,
            self.inner.latest_now.load(Ordering::Relaxed),
        ) {
            (WindowClock::Client, latest) if latest > 0 => latest.to_string(),
            _ => String::new(),
        }
    }

    fn limits(&self) -> Vec<ModelLimits> {
        self.inner
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn run(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
    ) -> Result<Vec<i64>, BackendError> {
        let mut connection = self.connection().await?;
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.error(&error))
    }

    /// Starts publishing this instance's usage notices and listening to the fleet's.
    fn start_propagation(&self, instance: &str) {
        let publisher = self.handle();
        let notice = propagation::usage_notice(instance);
        let channel = format!("{}:changes", self.inner.key);
        let subscriber = (
            self.inner.client.clone(),
            channel.clone(),
            instance.to_owned(),
            Arc::downgrade(&self.inner),
        );
        self.inner.propagation.start(
            move |stop| {
                tokio::spawn(async move {
                    let period = publisher.inner.config.publish_every;
                    let inner = publisher.inner.clone();
                    propagation::publisher(&inner.propagation.dirty, period, stop, || {
                        let (backend, channel, notice) =
                            (publisher.handle(), channel.clone(), notice.clone());
                        async move {
                            if let Ok(mut connection) = backend.connection().await {
                                let published: Result<i64, _> = redis::cmd("PUBLISH")
                                    .arg(&channel)
                                    .arg(&notice)
                                    .query_async(&mut connection)
                                    .await;
                                if let Err(error) = published {
                                    tracing::debug!(error = %backend.error(&error), "could not publish");
                                }
                            }
                            // This instance syncs too: the replies to its concurrent admissions
                            // and settlements may have been taken in out of order (an older
                            // reply last), and a sync after them all leaves it with the fleet's
                            // latest figures.
                            backend.inner.propagation.changed();
                        }
                    })
                    .await;
                })
            },
            move |stop| {
                let (client, channel, instance, inner) = subscriber;
                tokio::spawn(propagation::subscriber(client, channel, instance, inner, stop))
            },
        );
    }

    async fn admit_now(
        &self,
        instance: &str,
        admission: Admission,
    ) -> Result<AdmitReply, BackendError> {
        let limits = self.limits();
        let model = limits
            .get(admission.model)
            .ok_or_else(|| BackendError::Protocol("admission before registration".into()))?;
        let mut invocation = scripts().admit.key(&self.inner.key);
        invocation
            .arg(instance)
            .arg(self.now_arg(admission.now))
            .arg(admission.model)
            .arg(&admission.estimates[..])
            .arg(&limit_args(model)[..]);
        let reply = self.run(&mut invocation).await?;
        match reply.first() {
            Some(-1) => Err(BackendError::NotRegistered),
            Some(&admitted) => {
                let view = view(&reply, 1, 1).ok_or_else(|| malformed("admit"))?;
                let figures = view.models.first().copied().unwrap_or_default();
                Ok(AdmitReply::new(admitted == 1, view.instances, figures))
            }
            None => Err(malformed("admit")),
        }
    }
}

fn malformed(script: &str) -> BackendError {
    BackendError::Protocol(format!("malformed reply from the {script} script"))
}

impl Backend for RedisBackend {
    async fn register(
        &self,
        instance: &str,
        models: &[ModelLimits],
        own: &OwnUsage,
        now: Timestamp,
    ) -> Result<FleetView, BackendError> {
        *self
            .inner
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = models.to_vec();
        let mut invocation = scripts().register.key(&self.inner.key);
        invocation
            .arg(instance)
            .arg(self.now_arg(now))
            .arg(descriptor(models))
            .arg(models.len());
        for model in models {
            invocation.arg(&limit_args(model)[..]);
        }
        invocation.arg(own.windows.minute).arg(own.windows.day);
        for m in 0..models.len() {
            let usage = own.models.get(m).copied().unwrap_or_default();
            invocation.arg(&usage[..]);
        }
        let reply = self.run(&mut invocation).await?;
        if reply.first() == Some(&-2) {
            return Err(BackendError::Mismatch(
                "the fleet's models or limits differ from this instance's".into(),
            ));
        }
        let view = view(&reply, 1, models.len()).ok_or_else(|| malformed("register"))?;
        self.start_propagation(instance);
        Ok(view)
    }

    async fn admit(
        &self,
        instance: &str,
        admission: Admission,
    ) -> Result<AdmitReply, BackendError> {
        // The script may run even if the caller gives up (a timeout, a cancelled job): the call
        // runs in its own task, and a reservation nobody received is given back.
        let (sender, receiver) = oneshot::channel();
        let backend = self.handle();
        let instance = instance.to_owned();
        tokio::spawn(async move {
            let reply = backend.admit_now(&instance, admission).await;
            if let Err(Ok(reply)) = sender.send(reply) {
                if reply.admitted {
                    let settlement = Settlement::new(
                        admission.model,
                        reply.figures.windows,
                        admission.estimates,
                        SettlementOutcome::NeverStarted,
                        admission.now,
                    );
                    let _ = backend.settle(&instance, settlement).await;
                }
            }
        });
        let reply = receiver.await.unwrap_or_else(|_| {
            Err(BackendError::Protocol("the admission task was lost".into()))
        })?;
        if reply.admitted {
            self.inner.propagation.dirty.notify_one();
        }
        Ok(reply)
    }

    async fn settle(&self, instance: &str, s: Settlement) -> Result<FleetFigures, BackendError> {
        let limits = self.limits();
        let model = limits
            .get(s.model)
            .ok_or_else(|| BackendError::Protocol("settlement before registration".into()))?;
        let (outcome, actual) = match s.outcome {
            SettlementOutcome::Used(actual) => ("u", actual),
            SettlementOutcome::NeverStarted => ("n", [0; 4]),
            _ => ("x", [0; 4]),
        };
        let mut invocation = scripts().settle.key(&self.inner.key);
        invocation
            .arg(instance)
            .arg(self.now_arg(s.now))
            .arg(s.model)
            .arg(s.reserved_in.minute)
            .arg(s.reserved_in.day)
            .arg(outcome)
            .arg(&s.estimates[..])
            .arg(&actual[..])
            .arg(&limit_args(model)[..]);
        let reply = self.run(&mut invocation).await?;
        self.inner.propagation.dirty.notify_one();
        match reply.first() {
            Some(1) => Ok(view(&reply, 1, 1)
                .and_then(|v| v.models.first().copied())
                .unwrap_or_default()),
            Some(_) => Ok(FleetFigures::default()),
            None => Err(malformed("settle")),
        }
    }

    async fn sync(
        &self,
        instance: &str,
        now: Timestamp,
    ) -> Result<Option<FleetView>, BackendError> {
        let limits = self.limits();
        let mut invocation = scripts().sync.key(&self.inner.key);
        let stale_ms = u64::try_from(self.inner.config.stale_after.as_millis()).unwrap_or(u64::MAX);
        invocation
            .arg(instance)
            .arg(self.now_arg(now))
            .arg(stale_ms)
            .arg(limits.len());
        for model in &limits {
            invocation.arg(&limit_args(model)[..]);
        }
        let reply = self.run(&mut invocation).await?;
        match reply.first() {
            Some(1) => view(&reply, 1, limits.len())
                .map(Some)
                .ok_or_else(|| malformed("sync")),
            Some(_) => Ok(None),
            None => Err(malformed("sync")),
        }
    }

    async fn unregister(&self, instance: &str) -> Result<(), BackendError> {
        let limits = self.limits();
        let mut invocation = scripts().unregister.key(&self.inner.key);
        invocation
            .arg(instance)
            .arg(self.latest_now_arg())
            .arg(limits.len());
        for model in &limits {
            invocation.arg(&limit_args(model)[..]);
        }
        let result = self.run(&mut invocation).await.map(|_| ());
        // Whatever the answer, this instance is done with Redis: close everything.
        self.inner.propagation.stop().await;
        *self.inner.connection.lock().await = Connection::Closed;
        result
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.propagation.changes.subscribe()
    }
}
