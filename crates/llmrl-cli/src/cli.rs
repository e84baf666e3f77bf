//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Rate limiting for LLM API calls: simulate a workload, or serve a limiter to other programs.
#[derive(Debug, Parser)]
#[command(name = "llmrl", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Runs a workload through a limiter on a simulated clock and reports what would happen
    /// (the default command).
    Simulate(SimulateArgs),
    /// Serves one limiter instance over HTTP, for services not written in Rust.
    Serve(ServeArgs),
    /// Writes a fixed workload (JSON) for a configuration: the end-to-end stress test's dataset.
    Dataset(DatasetArgs),
}

impl Default for Command {
    fn default() -> Self {
        Self::Simulate(SimulateArgs::default())
    }
}

#[derive(Debug, Default, Args)]
pub(crate) struct SimulateArgs {
    /// Limiter configuration (TOML or JSON); default: the bundled stress scenario's.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Workload (JSON: jobs with id, job type, arrival, duration, usage, optional rejection).
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    pub(crate) workload: Option<PathBuf>,
    /// Generate the workload instead of reading one.
    #[arg(long)]
    pub(crate) generate: bool,
    #[command(flatten)]
    pub(crate) generator: GenerateArgs,
    /// Instances sharing the models' limits (an in-process fleet, or Redis with --redis).
    #[arg(long, value_name = "N")]
    pub(crate) instances: Option<usize>,
    /// Run the fleet on this Redis instead of in process (real network, simulated clock).
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Print a machine-readable summary (JSON) instead of the text report.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write every event as JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "FILE.html")]
    pub(crate) report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DatasetArgs {
    /// Limiter configuration (TOML or JSON); default: the bundled stress scenario's.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) generator: GenerateArgs,
    /// Instances the jobs are spread over (job i goes to instance i mod N).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) instances: usize,
    /// Where to write it (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

/// Options of the workload generator.
#[derive(Debug, Clone, Args)]
pub(crate) struct GenerateArgs {
    /// Number of jobs.
    #[arg(long, default_value_t = 15_000)]
    pub(crate) jobs: usize,
    /// Minutes over which they arrive.
    #[arg(long, default_value_t = 10)]
    pub(crate) minutes: u64,
    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Shape::Mixed)]
    pub(crate) shape: Shape,
    /// Seed: the same seed gives the same workload.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
}

impl Default for GenerateArgs {
    fn default() -> Self {
        Self {
            jobs: 15_000,
            minutes: 10,
            shape: Shape::Mixed,
            seed: 7,
        }
    }
}

/// How arrivals are spread over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shape {
    /// The same rate throughout.
    Constant,
    /// Short bursts over a low base rate.
    Spikes,
    /// A high rate with quiet stretches.
    Valleys,
    /// A ramp up, a spike, a plateau, a valley and a drop.
    Mixed,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Limiter configuration (TOML or JSON).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub(crate) listen: SocketAddr,
    /// Join a fleet on this Redis (overrides the configuration's backend section).
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Key prefix on Redis (default: the configuration's, else "llmrl").
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,
    /// Require `Authorization: Bearer <token>` (also from LLMRL_TOKEN).
    #[arg(
        long,
        env = "LLMRL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// Seconds after which a lease that was never released expires.
    #[arg(long, default_value_t = 600)]
    pub(crate) lease_ttl: u64,
    /// This instance's id (default: generated).
    #[arg(long)]
    pub(crate) instance_id: Option<String>,
    /// Run the clock this many times faster than wall time (for tests and demos), starting at
    /// --clock-start at the wall-clock instant --clock-anchor (milliseconds since the epoch).
    #[arg(long, value_name = "FACTOR")]
    pub(crate) clock_scale: Option<u32>,
    #[arg(long, value_name = "MS", requires = "clock_scale")]
    pub(crate) clock_anchor: Option<u64>,
    #[arg(long, value_name = "MS", requires = "clock_scale")]
    pub(crate) clock_start: Option<u64>,
}
