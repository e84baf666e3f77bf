//! The end-to-end stress test's parts: the predictor (with its own unit tests), the replay
//! client and the checks. See `e2e/README.md` at the root of the repository.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    missing_docs
)]

pub mod checks;
pub mod predictor;
pub mod replay;
