//! How to reach Redis and how to use it.

use std::fmt;
use std::time::Duration;

use llmrl::BackendConfig;
use llmrl::backend::BackendError;

use crate::library::LuaMode;

/// Whose clock numbers the minute and day windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowClock {
    /// The Redis server's `TIME` (the default): one clock for the whole fleet.
    #[default]
    Server,
    /// Each instance's own [`Clock`](llmrl::Clock): for tests that control time.
    Client,
}

/// Settings of a [`RedisBackend`](crate::RedisBackend).
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) stale_after: Duration,
    pub(crate) window_clock: WindowClock,
    pub(crate) timeout: Duration,
    pub(crate) propagation: Duration,
    pub(crate) lua_mode: LuaMode,
}

impl RedisConfig {
    /// Redis at `url`: `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS (add
    /// `#insecure` to skip certificate verification, for tests only).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "llmrl".to_owned(),
            stale_after: Duration::from_secs(15),
            window_clock: WindowClock::Server,
            timeout: Duration::from_secs(1),
            propagation: Duration::from_millis(50),
            lua_mode: LuaMode::Function,
        }
    }

    /// The settings of a `[backend]` section of kind `redis`.
    ///
    /// # Errors
    /// [`BackendError::Protocol`] if the section has no URL.
    pub fn from_backend_config(config: &BackendConfig) -> Result<Self, BackendError> {
        let url = config
            .url()
            .ok_or_else(|| BackendError::Protocol("the redis backend needs a url".into()))?;
        Ok(Self::new(url)
            .prefix(config.prefix())
            .stale_after(config.stale_after()))
    }

    /// The key prefix, also the hash tag of every key (default `llmrl`). Limiters with
    /// different prefixes on one Redis never see each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long an instance may stay silent before the fleet evicts it (default 15 s).
    pub fn stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// Whose clock numbers the windows (default: the server's).
    pub fn window_clock(mut self, clock: WindowClock) -> Self {
        self.window_clock = clock;
        self
    }

    /// How long a connection attempt or a command may take (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The propagation period (default 50 ms): an instance publishes at most one "usage
    /// changed" notice per period, and such notices make an instance sync at most once per
    /// period, so usage changes reach every instance within about two periods while the
    /// messages and syncs per second stay bounded whatever the job rate. Membership changes
    /// reach every instance at once.
    pub fn propagation(mut self, period: Duration) -> Self {
        self.propagation = period;
        self
    }

    /// How the Lua library runs (default: as a Redis Functions library, falling back to
    /// scripts on servers without functions).
    pub fn lua_mode(mut self, mode: LuaMode) -> Self {
        self.lua_mode = mode;
        self
    }

    /// The key of everything this limiter stores: the prefix as a hash tag.
    pub(crate) fn key(&self) -> String {
        format!("{{{}}}", self.prefix)
    }

    /// The password in the URL, to be scrubbed from any message.
    pub(crate) fn secret(&self) -> Option<String> {
        let rest = self.url.split_once("://")?.1;
        let credentials = rest.split_once('@')?.0;
        let password = credentials.split_once(':').map_or(credentials, |(_, p)| p);
        (!password.is_empty()).then(|| password.to_owned())
    }

    /// The URL with its password replaced, for messages.
    pub(crate) fn redacted_url(&self) -> String {
        match self.secret() {
            Some(secret) => self.url.replace(&secret, "***"),
            None => self.url.clone(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("stale_after", &self.stale_after)
            .field("window_clock", &self.window_clock)
            .field("timeout", &self.timeout)
            .field("propagation", &self.propagation)
            .field("lua_mode", &self.lua_mode)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let config = RedisConfig::new("rediss://app:hunter2@cache.internal:6380/3");
        assert_eq!(config.secret().as_deref(), Some("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            config.redacted_url(),
            "rediss://app:***@cache.internal:6380/3"
        );
        assert_eq!(
            RedisConfig::new("redis://:pw@h").secret().as_deref(),
            Some("pw")
        );
        assert_eq!(RedisConfig::new("redis://h:6379").secret(), None);
        assert_eq!(RedisConfig::new("redis://h").prefix("svc").key(), "{svc}");
    }
}
