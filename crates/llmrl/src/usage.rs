//! What a job used, what it cost.

/// Prices of a model in USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Uncached input tokens.
    pub input: f64,
    /// Cached input tokens.
    pub cached: f64,
    /// Output tokens.
    pub output: f64,
}

impl Pricing {
    /// Prices in USD per million input, cached and output tokens.
    #[must_use]
    pub const fn new(input: f64, cached: f64, output: f64) -> Self {
        Self {
            input,
            cached,
            output,
        }
    }

    /// Cost in USD of `usage` at these prices.
    ///
    /// ```
    /// use llmrl::{Pricing, Usage};
    /// let usage = Usage::new().input_tokens(3000).cached_tokens(500).output_tokens(1000);
    /// let cost = Pricing::new(1.0, 0.5, 2.0).cost(&usage);
    /// assert!((cost - 0.00525).abs() < 1e-12);
    /// ```
    #[must_use]
    pub fn cost(&self, usage: &Usage) -> f64 {
        #[allow(clippy::cast_precision_loss)] // token counts are far below 2^53
        let dollars = usage.input_tokens as f64 * self.input
            + usage.cached_tokens as f64 * self.cached
            + usage.output_tokens as f64 * self.output;
        dollars / 1_000_000.0
    }
}

/// What one attempt of a job actually used, as the job reports it.
///
/// `input_tokens` excludes cached tokens. Every job must report usage when it finishes, whether it
/// succeeded or was rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Cached input tokens.
    pub cached_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Requests made to the provider.
    pub requests: u64,
}

impl Usage {
    /// No usage at all; add to it with the builder methods.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            input_tokens: 0,
            cached_tokens: 0,
            output_tokens: 0,
            requests: 0,
        }
    }

    /// Sets the uncached input tokens.
    #[must_use]
    pub const fn input_tokens(mut self, n: u64) -> Self {
        self.input_tokens = n;
        self
    }

    /// Sets the cached input tokens.
    #[must_use]
    pub const fn cached_tokens(mut self, n: u64) -> Self {
        self.cached_tokens = n;
        self
    }

    /// Sets the output tokens.
    #[must_use]
    pub const fn output_tokens(mut self, n: u64) -> Self {
        self.output_tokens = n;
        self
    }

    /// Sets the number of requests.
    #[must_use]
    pub const fn requests(mut self, n: u64) -> Self {
        self.requests = n;
        self
    }

    /// Input + cached + output: what token limits count.
    #[must_use]
    pub const fn total_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cached_tokens)
            .saturating_add(self.output_tokens)
    }
}

/// Usage of one attempt on one model, with its cost.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct UsageEntry<M> {
    /// The model the attempt ran on.
    pub model: M,
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Cached input tokens.
    pub cached_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Requests made.
    pub requests: u64,
    /// Cost in USD at the model's pricing.
    pub cost: f64,
}

impl<M> UsageEntry<M> {
    pub(crate) fn new(model: M, usage: &Usage, pricing: &Pricing) -> Self {
        Self {
            model,
            input_tokens: usage.input_tokens,
            cached_tokens: usage.cached_tokens,
            output_tokens: usage.output_tokens,
            requests: usage.requests,
            cost: pricing.cost(usage),
        }
    }
}
