//! Configuration as written: the TOML/JSON file format, also usable from code.
//!
//! This is the raw stage: values are kept as written (numbers as `f64`, durations as numbers of
//! milliseconds or strings like `"65s"`), so that [validation](Config::validate) can report every
//! problem at once with its path and value instead of stopping at the first. The typed builder
//! ([`Limiter::builder`](crate::Limiter::builder)) fills the same structures and goes through the
//! same validation.
//!
//! ```
//! let config = llmrl::Config::from_toml_str(r#"
//!     escalation_order = ["gpt", "claude"]
//!
//!     [models.gpt]
//!     tokens_per_minute = 100000
//!     pricing = { input = 1.0, cached = 0.1, output = 4.0 }
//!
//!     [models.claude]
//!     requests_per_minute = 50
//!     pricing = { input = 3.0, cached = 0.3, output = 15.0 }
//!
//!     [job_types.summary]
//!     estimated_tokens = 10000
//!     max_wait = { gpt = "30s", claude = 0 }
//! "#).unwrap();
//! assert!(config.validate().is_ok());
//! ```

mod duration;
mod problem;
mod validate;

use std::hash::Hash;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::usage::Pricing;

pub use duration::DurationValue;
pub use problem::{ConfigError, Problem};
pub(crate) use validate::{MemorySpec, RATIO_ONE, RatioAdjustmentSpec, Spec, WaitBound};

/// Keys nobody recognised, kept so validation can name them all.
type Unknown = IndexMap<String, serde_json::Value>;

/// A whole limiter configuration as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub(crate) models: IndexMap<String, ModelConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) escalation_order: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) job_types: IndexMap<String, JobTypeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) memory: Option<MemoryConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ratio_adjustment: Option<RatioAdjustmentConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) backend: Option<BackendConfig>,
    #[serde(flatten, skip_serializing)]
    pub(crate) unknown: Unknown,
}

impl Config {
    /// An empty configuration, to be filled with the builder methods.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses TOML.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the path of the first value that has the wrong shape (a string
    /// where a number belongs, ...). Values of the right shape but wrong content are reported,
    /// all together, by [`Config::validate`].
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::parse(&e))
    }

    /// Parses JSON.
    ///
    /// # Errors
    /// As [`Config::from_toml_str`].
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError::parse(&e))
    }

    /// Reads a `.toml` or `.json` file (by extension; anything else is read as TOML).
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or parsed.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        }
    }

    /// Adds (or replaces) a model.
    #[must_use]
    pub fn model(mut self, id: impl Into<String>, model: ModelConfig) -> Self {
        self.models.insert(id.into(), model);
        self
    }

    /// Adds (or replaces) a job type.
    #[must_use]
    pub fn job_type(mut self, name: impl Into<String>, job_type: JobTypeConfig) -> Self {
        self.job_types.insert(name.into(), job_type);
        self
    }

    /// Sets the escalation order (required with several models).
    #[must_use]
    pub fn escalation_order<S: Into<String>>(mut self, order: impl IntoIterator<Item = S>) -> Self {
        self.escalation_order = Some(order.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the process memory budget settings.
    #[must_use]
    pub fn memory(mut self, memory: MemoryConfig) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Sets the flexible ratio adjustment settings.
    #[must_use]
    pub fn ratio_adjustment(mut self, settings: RatioAdjustmentConfig) -> Self {
        self.ratio_adjustment = Some(settings);
        self
    }

    /// Sets this instance's id (default: generated, unique).
    #[must_use]
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets the fleet backend settings.
    #[must_use]
    pub fn backend(mut self, backend: BackendConfig) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The fleet backend settings, if any.
    #[must_use]
    pub const fn backend_settings(&self) -> Option<&BackendConfig> {
        self.backend.as_ref()
    }

    /// The model ids, in the order they were written.
    pub fn model_ids(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The job type names, in the order they were written.
    pub fn job_type_names(&self) -> impl Iterator<Item = &str> {
        self.job_types.keys().map(String::as_str)
    }

    /// Checks everything and reports every problem at once.
    ///
    /// # Errors
    /// A [`ConfigError`] listing each problem with its path (`models."gpt-4o".tokens_per_minute`)
    /// and the value at fault.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        validate::validate(self).map(|spec| Validated { spec })
    }
}

/// A configuration that passed [`Config::validate`], with any warnings it produced.
#[derive(Clone, Debug)]
pub struct Validated {
    pub(crate) spec: Spec,
}

impl Validated {
    /// Warnings: settings that are valid but can never admit some job type on some model.
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        &self.spec.warnings
    }

    /// Each job type's name and estimate, in configuration order.
    pub fn job_types(&self) -> impl Iterator<Item = (&str, Estimate)> {
        self.spec.job_types.iter().map(|t| {
            let estimate = Estimate {
                tokens: t.tokens,
                requests: t.requests,
                memory_kb: t.memory_kb,
            };
            (&*t.name, estimate)
        })
    }

    /// The model ids in escalation order.
    pub fn escalation_order(&self) -> impl Iterator<Item = &str> {
        self.spec.order.iter().map(|&m| &*self.spec.models[m].name)
    }
}

/// What a job of a type is expected to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Estimate {
    /// Tokens (input + cached + output).
    pub tokens: u64,
    /// Requests.
    pub requests: u64,
    /// Memory held while running, in KB.
    pub memory_kb: u64,
}

/// One model: its provider limits (all optional), prices and slot bounds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) requests_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) requests_per_day: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokens_per_minute: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tokens_per_day: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_concurrent_requests: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pricing: Option<Pricing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min_capacity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_capacity: Option<f64>,
    #[serde(flatten, skip_serializing)]
    pub(crate) unknown: Unknown,
}

#[allow(clippy::cast_precision_loss)] // validation rejects counts above 2^53
const fn count(n: u64) -> Option<f64> {
    Some(n as f64)
}

impl ModelConfig {
    /// A model with these prices and no limits yet.
    #[must_use]
    pub fn new(pricing: Pricing) -> Self {
        Self {
            pricing: Some(pricing),
            ..Self::default()
        }
    }

    /// Requests per minute (RPM).
    #[must_use]
    pub fn requests_per_minute(mut self, n: u64) -> Self {
        self.requests_per_minute = count(n);
        self
    }

    /// Requests per UTC day (RPD).
    #[must_use]
    pub fn requests_per_day(mut self, n: u64) -> Self {
        self.requests_per_day = count(n);
        self
    }

    /// Tokens per minute (TPM).
    #[must_use]
    pub fn tokens_per_minute(mut self, n: u64) -> Self {
        self.tokens_per_minute = count(n);
        self
    }

    /// Tokens per UTC day (TPD).
    #[must_use]
    pub fn tokens_per_day(mut self, n: u64) -> Self {
        self.tokens_per_day = count(n);
        self
    }

    /// Maximum concurrent requests (CONC).
    #[must_use]
    pub fn max_concurrent_requests(mut self, n: u64) -> Self {
        self.max_concurrent_requests = count(n);
        self
    }

    /// Lower bound of every job type's slots on this model, as far as ratios and memory go.
    #[must_use]
    pub fn min_capacity(mut self, n: u64) -> Self {
        self.min_capacity = count(n);
        self
    }

    /// Upper bound of every job type's slots on this model.
    #[must_use]
    pub fn max_capacity(mut self, n: u64) -> Self {
        self.max_capacity = count(n);
        self
    }
}

/// A job type: estimates, ratio and per-model wait bounds.
///
/// `K` is how models are named in `max_wait`: strings in files and in the string-keyed API, the
/// model enum in the typed API (so a model that does not exist cannot be named).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Eq + Hash",
    deserialize = "K: Deserialize<'de> + Eq + Hash"
))]
pub struct JobTypeConfig<K = String> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) estimated_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) estimated_requests: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) estimated_memory_kb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ratio: Option<RatioConfig>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub(crate) max_wait: IndexMap<K, DurationValue>,
    #[serde(flatten, skip_serializing)]
    pub(crate) unknown: Unknown,
}

impl<K> Default for JobTypeConfig<K> {
    fn default() -> Self {
        Self {
            estimated_tokens: None,
            estimated_requests: None,
            estimated_memory_kb: None,
            ratio: None,
            max_wait: IndexMap::new(),
            unknown: Unknown::new(),
        }
    }
}

impl<K: Eq + Hash> JobTypeConfig<K> {
    /// A job type with the default estimates (0 tokens, 1 request, 0 KB) and an even share of
    /// the ratio left by the others.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens a job of this type is expected to use (input + cached + output).
    #[must_use]
    pub fn estimated_tokens(mut self, n: u64) -> Self {
        self.estimated_tokens = count(n);
        self
    }

    /// Requests a job of this type is expected to make.
    #[must_use]
    pub fn estimated_requests(mut self, n: u64) -> Self {
        self.estimated_requests = count(n);
        self
    }

    /// Memory a job of this type is expected to hold while it runs, in KB.
    #[must_use]
    pub fn estimated_memory_kb(mut self, n: u64) -> Self {
        self.estimated_memory_kb = count(n);
        self
    }

    /// Initial ratio, flexible (adapted to load).
    #[must_use]
    pub fn ratio(mut self, initial: f64) -> Self {
        self.ratio = Some(RatioConfig {
            initial: Some(initial),
            flexible: None,
        });
        self
    }

    /// Ratio that never changes.
    #[must_use]
    pub fn fixed_ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(RatioConfig {
            initial: Some(ratio),
            flexible: Some(false),
        });
        self
    }

    /// Whether the ratio adapts to load (default `true`), keeping any initial value.
    #[must_use]
    pub fn flexible(mut self, flexible: bool) -> Self {
        let ratio = self.ratio.get_or_insert_with(RatioConfig::default);
        ratio.flexible = Some(flexible);
        self
    }

    /// How long a job of this type waits for capacity on `model` before moving on.
    /// `Duration::ZERO` means never wait; without a call the default applies: until the next
    /// minute boundary plus 5 s.
    #[must_use]
    pub fn max_wait(mut self, model: impl Into<K>, wait: Duration) -> Self {
        self.max_wait
            .insert(model.into(), DurationValue::from(wait));
        self
    }
}

impl<K: Id> JobTypeConfig<K> {
    /// The same settings with models named by their string ids.
    pub(crate) fn into_named(self) -> JobTypeConfig {
        JobTypeConfig {
            estimated_tokens: self.estimated_tokens,
            estimated_requests: self.estimated_requests,
            estimated_memory_kb: self.estimated_memory_kb,
            ratio: self.ratio,
            max_wait: self
                .max_wait
                .into_iter()
                .map(|(model, wait)| (model.name().to_owned(), wait))
                .collect(),
            unknown: self.unknown,
        }
    }
}

/// Ratio settings of a job type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioConfig {
    /// Share of every model's capacity in (0, 1]; absent: an even part of what is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<f64>,
    /// Whether the ratio adapts to load (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flexible: Option<bool>,
}

/// The process memory budget shared by every limiter in the process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_memory_kb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) free_memory_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) recalculation_interval: Option<DurationValue>,
    #[serde(flatten, skip_serializing)]
    pub(crate) unknown: Unknown,
}

impl MemoryConfig {
    /// A fixed budget of `kb` kilobytes.
    #[must_use]
    pub fn fixed_kb(kb: u64) -> Self {
        Self {
            max_memory_kb: count(kb),
            ..Self::default()
        }
    }

    /// A budget measured from the system (cgroup limit or available memory) times `ratio`.
    #[must_use]
    pub fn measured(free_memory_ratio: f64) -> Self {
        Self {
            free_memory_ratio: Some(free_memory_ratio),
            ..Self::default()
        }
    }

    /// How often a measured budget is measured again (default 1 s).
    #[must_use]
    pub fn recalculation_interval(mut self, every: Duration) -> Self {
        self.recalculation_interval = Some(DurationValue::from(every));
        self
    }
}

/// When and how flexible ratios move toward loaded job types (SPEC §6.2).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RatioAdjustmentConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) interval: Option<DurationValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) releases_per_adjustment: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) high_load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) low_load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_adjustment: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min_ratio: Option<f64>,
    #[serde(flatten, skip_serializing)]
    pub(crate) unknown: Unknown,
}

impl RatioAdjustmentConfig {
    /// The defaults: every 5 s and every 10 settlements, thresholds 0.3 / 0.7, at most 0.2 moved
    /// per type per cycle, ratios never below 0.01.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adjust every `every` (zero disables the timer).
    #[must_use]
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = Some(DurationValue::from(every));
        self
    }

    /// Adjust after every `n` settlements (zero disables).
    #[must_use]
    pub fn releases_per_adjustment(mut self, n: u64) -> Self {
        self.releases_per_adjustment = count(n);
        self
    }

    /// Types loaded above this receive (default 0.7).
    #[must_use]
    pub fn high_load(mut self, load: f64) -> Self {
        self.high_load = Some(load);
        self
    }

    /// Types loaded below this donate (default 0.3).
    #[must_use]
    pub fn low_load(mut self, load: f64) -> Self {
        self.low_load = Some(load);
        self
    }

    /// Most a donor gives per cycle (default 0.2).
    #[must_use]
    pub fn max_adjustment(mut self, ratio: f64) -> Self {
        self.max_adjustment = Some(ratio);
        self
    }

    /// No flexible ratio goes below this (default 0.01).
    #[must_use]
    pub fn min_ratio(mut self, ratio: f64) -> Self {
        self.min_ratio = Some(ratio);
        self
    }
}

/// Which fleet backend a limiter uses, and how (SPEC §7). The default is `in_process`: a limiter
/// alone, or a fleet shared in code through [`InProcessFleet`](crate::backend::InProcessFleet).
/// The `redis` backend lives in the `llmrl-redis` crate; programs that offer it (the `llmrl`
/// command) build it from `url` and `prefix`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackendConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failure_mode: Option<crate::backend::FailureMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) heartbeat_interval: Option<DurationValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stale_after: Option<DurationValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<DurationValue>,
    #[serde(flatten, skip_serializing)]
    pub(crate) unknown: Unknown,
}

impl BackendConfig {
    /// The in-process backend.
    #[must_use]
    pub fn in_process() -> Self {
        Self {
            kind: Some("in_process".into()),
            ..Self::default()
        }
    }

    /// A Redis backend at `url` (`redis://` or `rediss://`).
    #[must_use]
    pub fn redis(url: impl Into<String>) -> Self {
        Self {
            kind: Some("redis".into()),
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// `in_process` (the default) or `redis`.
    #[must_use]
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("in_process")
    }

    /// The Redis URL, for the `redis` kind.
    #[must_use]
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The key prefix isolating this limiter's keys on a shared Redis (default `llmrl`).
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("llmrl")
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long an instance may stay silent before the fleet evicts it (default 15 s), for the
    /// programs that build the backend.
    #[must_use]
    pub fn stale_after(&self) -> Duration {
        self.stale_after
            .as_ref()
            .and_then(|d| d.resolve().ok().flatten())
            .unwrap_or(Duration::from_secs(15))
    }

    /// Sets the failure mode.
    #[must_use]
    pub fn with_failure_mode(mut self, mode: crate::backend::FailureMode) -> Self {
        self.failure_mode = Some(mode);
        self
    }
}
