//! # llmrl-redis: a fleet of llmrl limiters on Redis
//!
//! [`RedisBackend`] implements llmrl's [`Backend`](llmrl::backend::Backend): every instance of a
//! service that shares providers' limits connects to the same Redis (and key prefix), and
//! together they stay inside the global limits (SPEC §7).
//!
//! - **One round trip per admission, one per settlement**: a Lua library checks every limit of
//!   the model, concurrency and the instance's fair share, and reserves, atomically. It runs as
//!   a Redis Functions library (`FCALL`; Redis 7, Valkey) or, where functions are not
//!   available, as `EVALSHA` scripts ([`LuaMode`]), and is loaded again whenever the server
//!   lost it. An instance's admissions and settlements that arrive while one of its calls is
//!   in flight go together in its next call, so Redis reads and writes each hash once for all
//!   of them.
//! - **Keys** share one hash tag (`{prefix}:…`), so they live in one slot of a Redis Cluster
//!   (and work on Valkey); window counters are hashes named by window, set to expire after it
//!   when created.
//! - **Time**: window numbers come from the Redis server's clock by default, so instances with
//!   skewed clocks agree; [`WindowClock::Client`] lets tests drive windows from their own clock.
//! - **Propagation without per-job broadcast**: replies carry fresh figures, with a state
//!   version so that the instance ignores figures older than those it has; usage changes are
//!   published at most once per period per instance and make others sync at most once per
//!   period; membership changes go at once.
//! - **Liveness**: heartbeats, eviction of stale instances (their in-flight units return),
//!   re-registration with a report of the instance's own usage (settlements already in that
//!   report are not counted twice), reconnection with backoff, and a timeout on every call.
//!   After Redis lost its state, shares stay divided by the fleet's last known size until the
//!   others are back or the stale threshold has passed. Credentials never appear in errors or
//!   logs.
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
mod batch;
mod config;
mod error;
mod figures;
mod library;
mod propagation;
#[cfg(feature = "test-support")]
pub mod test_support;
mod tls;

pub use backend::RedisBackend;
pub use config::{RedisConfig, WindowClock};
pub use library::LuaMode;
