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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llmrl::conformance::{EPOCH_MS, Harness};
use llmrl::{Clock, Timestamp};

use crate::{RedisBackend, RedisConfig, WindowClock};

/// A `redis-server` this process started (or an external one from `LLMRL_REDIS_URL`).
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    url: String,
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
            });
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            child: None,
            port,
            url: format!("redis://127.0.0.1:{port}"),
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.ping() {
                return Ok(());
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

/// Runs the conformance suite on a throwaway Redis, with a manual clock for the windows (client
/// window clock) while tokio and the network run in real time.
pub struct RedisHarness {
    pub server: RedisServer,
    clock: Clock,
    fleets: AtomicU64,
}

impl RedisHarness {
    /// A harness on a fresh server.
    #[must_use]
    pub fn start() -> Self {
        Self {
            server: RedisServer::start().expect("redis-server must be installed (apt-get install -y redis-server) or LLMRL_REDIS_URL set"),
            clock: Clock::manual_at(Timestamp::from_millis(EPOCH_MS)),
            fleets: AtomicU64::new(0),
        }
    }
}

/// How long tasks get to react to a step of the manual clock (network round trips included).
const STEP_PAUSE: Duration = Duration::from_millis(15);

impl Harness for RedisHarness {
    type Fleet = RedisFleet;
    type Backend = RedisBackend;

    fn fleet(&self, stale_after: Duration) -> RedisFleet {
        let n = self.fleets.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("conformance-{}-{n}", std::process::id());
        RedisFleet {
            config: RedisConfig::new(self.server.url())
                .prefix(prefix)
                .stale_after(stale_after)
                .window_clock(WindowClock::Client),
        }
    }

    fn backend(&self, fleet: &RedisFleet) -> RedisBackend {
        RedisBackend::new(fleet.config.clone()).unwrap()
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    async fn advance(&self, by: Duration) {
        // In steps of at most a second, so that timers fire in order as they would in real time.
        let mut left = by;
        while !left.is_zero() {
            let step = left.min(Duration::from_secs(1));
            self.clock.advance(step);
            left -= step;
            tokio::time::sleep(STEP_PAUSE).await;
        }
        tokio::time::sleep(STEP_PAUSE * 4).await;
    }

    async fn propagate(&self) {
        self.clock.advance(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(300)).await;
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
                output = &mut future => return output,
                () = tokio::time::sleep(STEP_PAUSE) => self.clock.advance(Duration::from_secs(1)),
            }
        }
    }
}
