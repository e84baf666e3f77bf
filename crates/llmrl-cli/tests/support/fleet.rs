//! A fleet of `llmrl serve` processes on one throwaway Redis, sharing a scaled clock: minutes of
//! traffic pass in seconds, and every process (and the test) reads the same time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llmrl_redis::test_support::RedisServer;
use serde_json::Value;

use super::{Options, Server, now_ms};

/// 2026-01-01T00:00:00Z: the simulated time at which every fleet starts (a minute and day
/// boundary).
pub const START_MS: u64 = 1_767_225_600_000;

/// Fleets started by this process, to name their keys apart.
static FLEETS: AtomicU64 = AtomicU64::new(0);

/// `instances` servers on one Redis, with the clock running `scale` times faster than wall time.
pub struct Fleet {
    pub redis: RedisServer,
    pub servers: Vec<Option<Server>>,
    config: String,
    prefix: String,
    /// The wall-clock instant (ms since the epoch) at which the shared clock reads `START_MS`.
    anchor: u64,
    scale: u32,
}

impl Fleet {
    /// Starts Redis and `instances` servers of `config` (TOML). The clock starts a little after
    /// every server is up, so the test begins at the start of a minute.
    pub fn start(config: &str, instances: usize, scale: u32) -> Self {
        let redis = RedisServer::start().expect(
            "redis-server must be installed (apt-get install -y redis-server) or LLMRL_REDIS_URL set",
        );
        let mut fleet = Self {
            redis,
            servers: Vec::new(),
            config: config.to_owned(),
            // The counter keeps fleets started in the same millisecond by parallel tests apart
            // when they share one Redis (LLMRL_REDIS_URL).
            prefix: format!(
                "e2e-{}-{}-{}",
                std::process::id(),
                now_ms(),
                FLEETS.fetch_add(1, Ordering::Relaxed)
            ),
            anchor: now_ms() + 2_000 + 200 * instances as u64,
            scale,
        };
        for _ in 0..instances {
            fleet.add();
        }
        fleet.sleep_until_logical(START_MS);
        fleet
    }

    /// Starts one more instance; returns its index.
    pub fn add(&mut self) -> usize {
        let index = self.servers.len();
        let (id, anchor, start, scale) = (
            format!("instance-{index}"),
            self.anchor.to_string(),
            START_MS.to_string(),
            self.scale.to_string(),
        );
        let args = [
            "--redis",
            self.redis.url(),
            "--prefix",
            &self.prefix,
            "--instance-id",
            &id,
            "--clock-scale",
            &scale,
            "--clock-anchor",
            &anchor,
            "--clock-start",
            &start,
        ];
        let server = Server::spawn(
            &self.config,
            Options {
                args: &args,
                env: &[],
            },
        );
        self.servers.push(Some(server));
        index
    }

    /// The instance at `index` (panics if it was stopped or killed).
    pub fn server(&self, index: usize) -> &Server {
        self.servers[index].as_ref().expect("instance is gone")
    }

    /// Stops an instance cleanly (SIGTERM: it leaves the fleet).
    pub fn stop(&mut self, index: usize) {
        if let Some(mut server) = self.servers[index].take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &server.pid().to_string()])
                .status();
            server.wait_exit(Duration::from_secs(15));
        }
    }

    /// Kills an instance without warning (SIGKILL: the fleet must evict it).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut server) = self.servers[index].take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &server.pid().to_string()])
                .status();
            server.wait_exit(Duration::from_secs(15));
        }
    }

    /// The shared clock's reading (ms since the epoch).
    pub fn logical_ms(&self) -> u64 {
        let wall = now_ms();
        if wall <= self.anchor {
            START_MS - (self.anchor - wall) * u64::from(self.scale)
        } else {
            START_MS + (wall - self.anchor) * u64::from(self.scale)
        }
    }

    /// Milliseconds of the shared clock since `START_MS`.
    pub fn elapsed_ms(&self) -> u64 {
        self.logical_ms().saturating_sub(START_MS)
    }

    /// Blocks the thread until the shared clock reads `at` (ms since the epoch).
    pub fn sleep_until_logical(&self, at: u64) {
        let now = self.logical_ms();
        if at > now {
            std::thread::sleep(self.wall(at - now));
        }
    }

    /// Sleeps (async) until the shared clock reads `at`.
    pub async fn sleep_until(&self, at: u64) {
        let now = self.logical_ms();
        if at > now {
            tokio::time::sleep(self.wall(at - now)).await;
        }
    }

    /// How long `logical_ms` of the shared clock takes on the wall clock.
    pub fn wall(&self, logical_ms: u64) -> Duration {
        Duration::from_millis(logical_ms.div_ceil(u64::from(self.scale)))
    }

    /// The instances still running, with their indices.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Server)> {
        self.servers
            .iter()
            .enumerate()
            .filter_map(|(index, server)| server.as_ref().map(|server| (index, server)))
    }

    /// Polls every running instance until each reports `instances` live instances; their
    /// availability snapshots, by index (`Null` for instances no longer running). Panics after
    /// `limit`.
    pub async fn settle_at(&self, instances: u64, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut snapshots = vec![Value::Null; self.servers.len()];
        for (index, server) in self.live() {
            let left = deadline.saturating_duration_since(Instant::now());
            snapshots[index] = server
                .availability_until(left, |a| a["instances"].as_u64() == Some(instances))
                .await;
        }
        snapshots
    }
}
