//! `llmrl serve`: one limiter instance over HTTP (in progress).

use crate::cli::ServeArgs;

pub(crate) fn main(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("`llmrl serve` is not implemented yet")
}
