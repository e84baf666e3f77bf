//! `llmrl`: simulate LLM workloads through a limiter, or serve one over HTTP.
//!
//! A thin binary over the `llmrl` library: see `llmrl --help`.

mod cli;
mod dataset;
mod serve;
mod simulate;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LLMRL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or_default() {
        cli::Command::Simulate(args) => simulate::main(args),
        cli::Command::Serve(args) => serve::main(args),
        cli::Command::Dataset(args) => dataset::main(args),
    }
}
