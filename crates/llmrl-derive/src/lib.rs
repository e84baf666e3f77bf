//! Derive macros for llmrl's typed identifiers.
//!
//! This crate provides `#[derive(ModelId)]` and `#[derive(JobType)]`. Use them through the
//! `llmrl` crate, which re-exports them next to the traits of the same name (the same way
//! `serde::Serialize` is both a trait and a derive):
//!
//! ```
//! use llmrl::{JobType, ModelId};
//!
//! #[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, ModelId)]
//! enum Model {
//!     #[llmrl(name = "openai/gpt-5.2")]
//!     Gpt,
//!     Claude,
//! }
//!
//! #[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, JobType)]
//! enum Job {
//!     Summarize,
//!     Translate,
//! }
//! ```
//!
//! Both derives accept only fieldless, non-generic enums with at least one variant. They
//! implement `llmrl::Id` (`COUNT`, `ALL` in declaration order, a dense `index` in `0..COUNT`
//! and a `name`) plus the marker trait `llmrl::ModelId` or `llmrl::JobType`. A model enum with
//! exactly one variant also gets `llmrl::SingleModel`.
//!
//! # Names
//!
//! A variant's name is its identifier as written (`Gpt` is named `"Gpt"`; a raw identifier
//! `r#Type` is named `"Type"`). The variant attribute `#[llmrl(name = "...")]` overrides it.
//! Names must be non-empty and unique within the enum.
//!
//! # Generated paths
//!
//! The generated code names the traits by absolute path (`::llmrl::Id`, ...), so the enum must
//! live in a crate that depends on `llmrl` under that name. Code inside `llmrl` itself needs
//! `extern crate self as llmrl;` at its crate root to use the derives.

mod expand;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

use crate::expand::Kind;

/// Derives `llmrl::Id` and `llmrl::ModelId` for a fieldless enum of models.
///
/// Each variant is one model. If the enum has exactly one variant, `llmrl::SingleModel` is
/// implemented too, which lets a limiter be built without an escalation order.
///
/// The traits require `Copy + Eq + Hash + Debug`; this derive does not implement those, so the
/// enum must derive `Copy, Clone, PartialEq, Eq, Hash, Debug` itself:
///
/// ```
/// use llmrl::ModelId;
///
/// #[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, ModelId)]
/// enum Model {
///     /// Named "openai/gpt-5.2" in logs, errors and usage reports.
///     #[llmrl(name = "openai/gpt-5.2")]
///     Gpt,
///     /// Named "Claude".
///     Claude,
/// }
///
/// assert_eq!(<Model as llmrl::Id>::COUNT, 2);
/// assert_eq!(llmrl::Id::name(Model::Gpt), "openai/gpt-5.2");
/// assert_eq!(llmrl::Id::index(Model::Claude), 1);
/// ```
///
/// # Attributes
///
/// - `#[llmrl(name = "...")]` on a variant: the name reported by `Id::name` (default: the
///   variant's identifier). Must be a non-empty string, unique within the enum.
///
/// # Errors
///
/// Compilation fails, with the error pointing at the offending item, for: structs and unions,
/// enums without variants, variants with fields, generic enums, unknown keys inside
/// `#[llmrl(...)]`, a `#[llmrl(...)]` attribute on the enum itself, empty or duplicate names.
/// Explicit discriminants are allowed and ignored: `index` is the declaration position.
///
/// An enum should derive either `ModelId` or `JobType`, not both: both derives implement
/// `llmrl::Id`, so deriving both is a conflicting-implementation error.
#[proc_macro_derive(ModelId, attributes(llmrl))]
pub fn derive_model_id(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::expand(&input, Kind::ModelId)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `llmrl::Id` and `llmrl::JobType` for a fieldless enum of job types.
///
/// Each variant is one kind of job, with its own estimates and ratio.
///
/// The traits require `Copy + Eq + Hash + Debug`; this derive does not implement those, so the
/// enum must derive `Copy, Clone, PartialEq, Eq, Hash, Debug` itself:
///
/// ```
/// use llmrl::JobType;
///
/// #[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, JobType)]
/// enum Job {
///     Summarize,
///     #[llmrl(name = "translate-long")]
///     Translate,
/// }
///
/// assert_eq!(<Job as llmrl::Id>::ALL, &[Job::Summarize, Job::Translate]);
/// assert_eq!(llmrl::Id::name(Job::Translate), "translate-long");
/// ```
///
/// # Attributes
///
/// - `#[llmrl(name = "...")]` on a variant: the name reported by `Id::name` (default: the
///   variant's identifier). Must be a non-empty string, unique within the enum.
///
/// # Errors
///
/// The same inputs are rejected as for `#[derive(ModelId)]`: structs and unions, enums without
/// variants, variants with fields, generic enums, unknown keys inside `#[llmrl(...)]`, a
/// `#[llmrl(...)]` attribute on the enum itself, empty or duplicate names. Explicit
/// discriminants are allowed and ignored: `index` is the declaration position.
///
/// An enum should derive either `ModelId` or `JobType`, not both: both derives implement
/// `llmrl::Id`, so deriving both is a conflicting-implementation error.
#[proc_macro_derive(JobType, attributes(llmrl))]
pub fn derive_job_type(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::expand(&input, Kind::JobType)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
