//! Typed identifiers for models and job types.
//!
//! The typed face of llmrl names models and job types with fieldless enums. Deriving
//! [`ModelId`](derive@crate::ModelId) or [`JobType`](derive@crate::JobType) gives the enum a dense
//! index and a name, which is all the engine needs: generics stop at the facade.

use std::fmt::Debug;
use std::hash::Hash;

/// A closed set of identifiers backed by a fieldless enum.
///
/// Implemented by `#[derive(ModelId)]` and `#[derive(JobType)]`; implementing it by hand is
/// possible but the derives keep `ALL`, `index` and `name` consistent.
pub trait Id: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    /// Number of variants.
    const COUNT: usize;
    /// Every variant, in declaration order; `ALL[v.index()] == v`.
    const ALL: &'static [Self];
    /// Dense index of this variant, in `0..COUNT`.
    fn index(self) -> usize;
    /// The name used in logs, errors and usage reports (`#[llmrl(name = "...")]` or the variant's
    /// own name).
    fn name(self) -> &'static str;
}

/// A model identifier: one LLM endpoint with its own provider limits.
pub trait ModelId: Id {}

/// A job type identifier: a kind of job with its own estimates and ratio.
pub trait JobType: Id {}

/// Marks a model enum with exactly one variant: such a limiter needs no escalation order.
///
/// `#[derive(ModelId)]` implements it for one-variant enums only.
#[diagnostic::on_unimplemented(
    message = "model enum `{Self}` has several variants, so the limiter needs an escalation order",
    label = "this builder has no escalation order yet",
    note = "call `.escalation_order([...])` before `.build()`"
)]
pub trait SingleModel: ModelId {}
