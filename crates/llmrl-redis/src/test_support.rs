//! Test support (feature `test-support`): throwaway `redis-server` processes on loopback, and
//! the [`Harness`] that runs llmrl's conformance suite on them.
//!
//! A server is started from `LLMRL_REDIS_BIN` or `redis-server` on the `PATH`, on a free
//! loopback port, without persistence. When `LLMRL_REDIS_URL` is set, that server is used
//! instead (it must be a disposable one: tests flush it); scenarios that stop or restart the
//! server then need a local binary anyway.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, missing_docs)]

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use llmrl::backend::{
    Admission, AdmitReply, Backend, BackendError, FleetFigures, FleetView, ModelLimits, OwnUsage,
    Settlement,
};
use llmrl::conformance::{EPOCH_MS, Harness, SKIP_STEP};
use llmrl::{Clock, Timestamp};
use tokio::sync::watch;

use crate::{LuaMode, RedisBackend, RedisConfig, WindowClock};

/// A `redis-server` this process started (or an external one from `LLMRL_REDIS_URL`).
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    url: String,
    /// Extra command-line arguments (see [`RedisServer::start_with`]).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a fresh server on a free loopback port (or uses `LLMRL_REDIS_URL`).
    ///
    /// # Errors
    /// If the binary cannot be started or does not answer within 10 s.
    pub fn start() -> io::Result<Self> {
        if let Ok(url) = std::env::var("LLMRL_REDIS_URL") {
            return Ok(Self {
                child: None,
                port: 0,
                url,
                args: Vec::new(),
            });
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            child: None,
            port,
            url: format!("redis://127.0.0.1:{port}"),
            args: Vec::new(),
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts a fresh server like [`RedisServer::start`] (never an external one), with extra
    /// command-line `args` after the defaults (a later option overrides an earlier one, e.g.
    /// `--port 0 --tls-port {port}`), reached at `url`. `{port}` in either stands for the free
    /// loopback port chosen.
    ///
    /// # Errors
    /// If the binary cannot be started, exits, or does not answer within 10 s.
    pub fn start_with(args: &[&str], url: &str) -> io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let fill = |s: &str| s.replace("{port}", &port.to_string());
        let mut server = Self {
            child: None,
            port,
            url: fill(url),
            args: args.iter().map(|a| fill(a)).collect(),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let binary = std::env::var("LLMRL_REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
            ])
            .args(["--loglevel", "warning"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.ping() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not answer",
        ))
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
            .is_ok()
    }

    /// The server's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The loopback port of a server started here (0 for one given by `LLMRL_REDIS_URL`).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server and starts a new, empty one on the same port.
    ///
    /// # Errors
    /// If it cannot be started again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Kills the server, keeping its port for [`RedisServer::start_again`]: an outage that
    /// lasts as long as the caller wants.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a new, empty server on the port of a [stopped](RedisServer::stop) one.
    ///
    /// # Errors
    /// If it cannot be started again.
    pub fn start_again(&mut self) -> io::Result<()> {
        self.spawn()
    }

    /// Forgets every key and every loaded script, as a restarted server would.
    pub fn flush(&self) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut connection)
            .unwrap();
    }

    /// A synchronous connection, for inspecting keys.
    #[must_use]
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.resume();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One fleet: where its keys live.
pub struct RedisFleet {
    pub config: RedisConfig,
}

/// Backend calls in flight across a harness's instances, and how many ever started: what the
/// harness watches to move its clock only when the instances wait on time, not on Redis.
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
}

/// Counts one call while it is in flight (until it returns or is dropped, e.g. timed out).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::SeqCst);
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A [`RedisBackend`] whose calls the harness sees in flight.
#[derive(Debug)]
pub struct ObservedBackend {
    backend: RedisBackend,
    activity: Arc<Activity>,
}

impl ObservedBackend {
    async fn observe<T>(&self, call: impl Future<Output = T>) -> T {
        let _in_flight = InFlight::enter(&self.activity);
        call.await
    }
}

impl Backend for ObservedBackend {
    async fn register(
        &self,
        instance: &str,
        models: &[ModelLimits],
        own: &OwnUsage,
        now: Timestamp,
    ) -> Result<FleetView, BackendError> {
        self.observe(self.backend.register(instance, models, own, now))
            .await
    }

    async fn admit(
        &self,
        instance: &str,
        admission: Admission,
    ) -> Result<AdmitReply, BackendError> {
        self.observe(self.backend.admit(instance, admission)).await
    }

    async fn settle(
        &self,
        instance: &str,
        settlement: Settlement,
    ) -> Result<FleetFigures, BackendError> {
        self.observe(self.backend.settle(instance, settlement))
            .await
    }

    async fn sync(
        &self,
        instance: &str,
        now: Timestamp,
    ) -> Result<Option<FleetView>, BackendError> {
        self.observe(self.backend.sync(instance, now)).await
    }

    async fn unregister(&self, instance: &str) -> Result<(), BackendError> {
        self.observe(self.backend.unregister(instance)).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.backend.changes()
    }
}

/// Runs the conformance suite on a throwaway Redis, with a manual clock for the windows (client
/// window clock) while tokio and the network run in real time.
///
/// Like tokio's paused clock, which moves only when every task is idle, the harness moves its
/// clock only when no backend call is in flight: time spent on Redis (round trips, and the
/// backend timeout while Redis is unreachable) takes no time on the instances' clock.
pub struct RedisHarness {
    pub server: RedisServer,
    clock: Clock,
    fleets: AtomicU64,
    activity: Arc<Activity>,
    lua_mode: LuaMode,
}

impl RedisHarness {
    /// A harness on a fresh server, running the library the default way.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(LuaMode::default())
    }

    /// A harness on a fresh server whose backends run the library as `lua_mode` says.
    #[must_use]
    pub fn start_with(lua_mode: LuaMode) -> Self {
        Self {
            lua_mode,
            server: RedisServer::start().expect("redis-server must be installed (apt-get install -y redis-server) or LLMRL_REDIS_URL set"),
            clock: Clock::manual_at(Timestamp::from_millis(EPOCH_MS)),
            fleets: AtomicU64::new(0),
            activity: Arc::default(),
        }
    }

    /// Lets tasks react to the clock: waits at least [`STEP_PAUSE`], then until no backend call
    /// has been in flight or started for a whole pause (bounded, in case something never rests).
    async fn quiet(&self) {
        let give_up = Instant::now() + QUIET_AT_MOST;
        loop {
            let started = self.activity.started.load(Ordering::SeqCst);
            tokio::time::sleep(STEP_PAUSE).await;
            let idle = self.activity.in_flight.load(Ordering::SeqCst) == 0
                && self.activity.started.load(Ordering::SeqCst) == started;
            if idle || Instant::now() >= give_up {
                return;
            }
        }
    }
}

/// How long tasks get to react to a step of the manual clock (network round trips included).
const STEP_PAUSE: Duration = Duration::from_millis(15);

/// The backends' call timeout: scenarios with the server paused step through minutes of
/// outage, each step waiting for it. Far above a loopback round trip (well under 1 ms, a few
/// ms under load), a third of the production default.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);

/// The most [`RedisHarness::quiet`] waits for the backend calls to rest.
const QUIET_AT_MOST: Duration = Duration::from_secs(10);

impl Harness for RedisHarness {
    type Fleet = RedisFleet;
    type Backend = ObservedBackend;

    fn fleet(&self, stale_after: Duration) -> RedisFleet {
        let n = self.fleets.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("conformance-{}-{n}", std::process::id());
        RedisFleet {
            config: RedisConfig::new(self.server.url())
                .prefix(prefix)
                .stale_after(stale_after)
                .window_clock(WindowClock::Client)
                .lua_mode(self.lua_mode)
                .timeout(CALL_TIMEOUT),
        }
    }

    fn backend(&self, fleet: &RedisFleet) -> ObservedBackend {
        ObservedBackend {
            backend: RedisBackend::new(fleet.config.clone()).unwrap(),
            activity: self.activity.clone(),
        }
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    async fn advance(&self, by: Duration) {
        // What the scenario just did (queued jobs, say) happens before time moves; then steps of
        // at most a second, so that timers fire in order as they would in real time.
        self.quiet().await;
        let mut left = by;
        while !left.is_zero() {
            let step = left.min(Duration::from_secs(1));
            self.clock.advance(step);
            left -= step;
            self.quiet().await;
        }
        tokio::time::sleep(STEP_PAUSE * 3).await;
        self.quiet().await;
    }

    async fn propagate(&self) {
        self.quiet().await;
        self.clock.advance(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.quiet().await;
    }

    async fn set_reachable(&self, _fleet: &RedisFleet, reachable: bool) {
        if reachable {
            self.server.resume();
        } else {
            self.server.pause();
        }
    }

    async fn reset(&self, _fleet: &RedisFleet) {
        self.server.flush();
    }

    async fn run_until<F: Future + Send>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                biased;
                output = &mut future => return output,
                () = self.quiet() => self.clock.advance(Duration::from_secs(1)),
            }
        }
    }

    async fn skip(&self, by: Duration) {
        let mut left = by;
        while !left.is_zero() {
            let step = left.min(SKIP_STEP);
            self.clock.advance(step);
            left -= step;
            self.quiet().await;
        }
        self.quiet().await;
    }
}
