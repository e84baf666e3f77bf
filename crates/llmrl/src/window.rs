//! Fixed windows: epoch-aligned minutes and UTC days.

use crate::clock::Timestamp;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

/// A kind of fixed window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Epoch-aligned minute: `[k·60 s, (k+1)·60 s)`.
    Minute,
    /// UTC day: `[k·86 400 s, (k+1)·86 400 s)`.
    Day,
}

impl Window {
    /// Length of the window in milliseconds.
    #[must_use]
    pub const fn len_ms(self) -> u64 {
        match self {
            Self::Minute => MINUTE_MS,
            Self::Day => DAY_MS,
        }
    }

    /// Number of the window that contains `t` (windows since the epoch).
    #[must_use]
    pub const fn index_at(self, t: Timestamp) -> u64 {
        t.as_millis() / self.len_ms()
    }

    /// The first boundary strictly after `t`.
    #[must_use]
    pub const fn next_boundary(self, t: Timestamp) -> Timestamp {
        Timestamp::from_millis((self.index_at(t) + 1).saturating_mul(self.len_ms()))
    }
}

/// One of the four window limits a model may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
#[serde(rename_all = "snake_case")]
pub enum WindowLimit {
    /// Tokens per minute (TPM).
    TokensPerMinute,
    /// Tokens per UTC day (TPD).
    TokensPerDay,
    /// Requests per minute (RPM).
    RequestsPerMinute,
    /// Requests per UTC day (RPD).
    RequestsPerDay,
}

impl WindowLimit {
    /// All four, in the order the engine stores them (also the reason priority of SPEC §6.5).
    pub const ALL: [Self; 4] = [
        Self::TokensPerMinute,
        Self::TokensPerDay,
        Self::RequestsPerMinute,
        Self::RequestsPerDay,
    ];

    /// Position in [`WindowLimit::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::TokensPerMinute => 0,
            Self::TokensPerDay => 1,
            Self::RequestsPerMinute => 2,
            Self::RequestsPerDay => 3,
        }
    }

    /// The window this limit counts in.
    #[must_use]
    pub const fn window(self) -> Window {
        match self {
            Self::TokensPerMinute | Self::RequestsPerMinute => Window::Minute,
            Self::TokensPerDay | Self::RequestsPerDay => Window::Day,
        }
    }

    /// Whether the limit counts tokens (else requests).
    #[must_use]
    pub const fn counts_tokens(self) -> bool {
        matches!(self, Self::TokensPerMinute | Self::TokensPerDay)
    }

    /// The config key of this limit (`tokens_per_minute`, ...).
    #[must_use]
    pub const fn key(self) -> &'static str {
        match self {
            Self::TokensPerMinute => "tokens_per_minute",
            Self::TokensPerDay => "tokens_per_day",
            Self::RequestsPerMinute => "requests_per_minute",
            Self::RequestsPerDay => "requests_per_day",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_epoch_aligned_and_strictly_after() {
        let t = Timestamp::from_millis(59_999);
        assert_eq!(Window::Minute.index_at(t), 0);
        assert_eq!(Window::Minute.next_boundary(t).as_millis(), 60_000);
        let on = Timestamp::from_millis(60_000);
        assert_eq!(Window::Minute.index_at(on), 1);
        assert_eq!(Window::Minute.next_boundary(on).as_millis(), 120_000);
        assert_eq!(Window::Day.next_boundary(on).as_millis(), 86_400_000);
    }
}
