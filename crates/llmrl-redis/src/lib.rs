//! # llmrl-redis: a fleet of llmrl limiters on Redis
//!
//! [`RedisBackend`] implements llmrl's [`Backend`](llmrl::backend::Backend): every instance of a
//! service that shares providers' limits connects to the same Redis (and key prefix), and
//! together they stay inside the global limits (SPEC §7).
//!
//! - **One round trip per admission**: a Lua script (EVALSHA, reloaded on NOSCRIPT) checks every
//!   limit of the model, concurrency and the instance's fair share, and reserves, atomically.
//!   Settlement is the second and last round trip of a job.
//! - **Keys** share one hash tag (`{prefix}:…`), so they live in one slot of a Redis Cluster
//!   (and work on Valkey); window counters are named by window and expire after it.
//! - **Time**: window numbers come from the Redis server's clock by default, so instances with
//!   skewed clocks agree; [`WindowClock::Client`] lets tests drive windows from their own clock.
//! - **Propagation without per-job broadcast**: replies carry fresh figures; usage changes are
//!   published at most every 50 ms per instance, membership changes at once. After publishing,
//!   an instance also re-reads the fleet's figures itself: replies to its concurrent calls may
//!   arrive out of order, and the last one taken in need not be the latest.
//! - **Liveness**: heartbeats, eviction of stale instances (their in-flight units return),
//!   re-registration with a report of the instance's own usage, reconnection with backoff, and a
//!   timeout on every call. Credentials never appear in errors or logs.
//!
//! ```no_run
//! use llmrl_redis::{RedisBackend, RedisConfig};
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379").prefix("svc")).await?;
//! let limiter = llmrl::NamedLimiter::builder(llmrl::Config::from_path("llmrl.toml")?)
//!     .backend(backend)
//!     .build()?;
//! # Ok(())
//! # }
//! ```

mod backend;
mod config;
mod error;
mod propagation;
mod script;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use backend::RedisBackend;
pub use config::{RedisConfig, WindowClock};
