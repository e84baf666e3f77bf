//! Durations as written in a config: milliseconds or a string with a unit.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration as written: a number of milliseconds (`5000`) or a string with a unit (`"5s"`,
/// `"500ms"`, `"1.5m"`, `"2h"`, `"1d"`). The string `"default"` asks for the default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    /// Milliseconds.
    Millis(f64),
    /// A number with a unit, or `"default"`.
    Text(String),
}

impl From<Duration> for DurationValue {
    fn from(d: Duration) -> Self {
        Self::Millis(d.as_secs_f64() * 1000.0)
    }
}

impl fmt::Display for DurationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Millis(ms) => write!(f, "{ms}"),
            Self::Text(text) => write!(f, "{text:?}"),
        }
    }
}

impl DurationValue {
    /// The duration, `Ok(None)` for `"default"`, or why it is not one. Huge values saturate
    /// instead of overflowing.
    pub(crate) fn resolve(&self) -> Result<Option<Duration>, &'static str> {
        match self {
            Self::Millis(ms) => millis(*ms).map(Some),
            Self::Text(text) => {
                let text = text.trim();
                if text.eq_ignore_ascii_case("default") {
                    return Ok(None);
                }
                let split = text
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(text.len());
                let (number, unit) = text.split_at(split);
                let number: f64 = number
                    .parse()
                    .map_err(|_| "is not a duration (use milliseconds or e.g. \"5s\")")?;
                let scale = match unit.trim() {
                    "" | "ms" => 1.0,
                    "s" => 1e3,
                    "m" | "min" => 60e3,
                    "h" => 3_600e3,
                    "d" => 86_400e3,
                    _ => return Err("has an unknown unit (use ms, s, m, h or d)"),
                };
                millis(number * scale).map(Some)
            }
        }
    }
}

fn millis(ms: f64) -> Result<Duration, &'static str> {
    if ms.is_nan() {
        return Err("is not a number");
    }
    if ms < 0.0 {
        return Err("must not be negative");
    }
    Ok(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_saturation() {
        let text = |s: &str| DurationValue::Text(s.into()).resolve();
        assert_eq!(text("5s"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(text("250ms"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(text("1.5m"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(text("default"), Ok(None));
        assert!(text("5 parsecs").is_err());
        assert!(text("-1s").is_err());
        assert_eq!(
            DurationValue::Millis(1e300).resolve(),
            Ok(Some(Duration::MAX))
        );
        assert_eq!(
            DurationValue::Millis(0.0).resolve(),
            Ok(Some(Duration::ZERO))
        );
        assert!(DurationValue::Millis(f64::NAN).resolve().is_err());
    }
}
