//! `llmrl dataset`: writes a fixed workload (the end-to-end stress test's committed
//! `e2e/dataset.json`) with the seeded generator of `llmrl simulate`.
//!
//! The generator gives arrivals that follow a traffic shape (ramp, spike, plateau, valley, drop),
//! job types by weight and durations of 5–30 s, queued without regard to capacity. This command
//! then fixes what each job reports so that the dataset makes exact predictions possible: every
//! job uses its type's estimated requests and 80–100 % of its estimated tokens (never more: no
//! overage can push a counter past a limit), no job rejects, and job `i` (in arrival order) is
//! queued on instance `i mod instances`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use llmrl::Config;
use serde::Serialize;

use crate::cli::DatasetArgs;
use crate::simulate::STRESS_CONFIG;

use crate::simulate::workload::{self, Kind, Random};

/// Salt of the usage draws, so that they do not repeat the generator's sequence.
const USAGE_SALT: u64 = 0x0E2E_5EED;

/// One job as written: the workload format of `llmrl simulate --workload`.
#[derive(Serialize)]
struct Job<'a> {
    id: &'a str,
    job_type: &'a str,
    arrival_ms: u64,
    duration_ms: u64,
    usage: Usage,
    instance: usize,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    cached_tokens: u64,
    output_tokens: u64,
    requests: u64,
}

pub(crate) fn main(args: DatasetArgs) -> anyhow::Result<()> {
    let bundled = args.config.is_none();
    let config = match &args.config {
        Some(path) => Config::from_path(path)?,
        None => Config::from_toml_str(STRESS_CONFIG)?,
    };
    let validated = config.validate()?;
    let kinds = workload::kinds(&validated, bundled);
    let text = render(&args, &kinds);
    match &args.output {
        Some(path) => write(path, &text),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The dataset as compact JSON: `{"jobs": [...]}` with one job per line.
fn render(args: &DatasetArgs, kinds: &[Kind]) -> String {
    let generated = workload::generate(&args.generator, kinds, "");
    let instances = args.instances.max(1);
    let mut random = Random::new(args.generator.seed ^ USAGE_SALT);
    let mut text = String::from("{\"jobs\": [\n");
    for (i, job) in generated.jobs.iter().enumerate() {
        let kind = kinds
            .iter()
            .find(|k| k.name == job.job_type)
            .unwrap_or(&kinds[0]);
        // 80–100 % of the estimate: refunds happen, overages never do.
        let tokens = kind.tokens - kind.tokens * random.between(0, 20) / 100;
        let cached = tokens / 10;
        let output = tokens / 5;
        let line = Job {
            id: &job.id,
            job_type: &job.job_type,
            arrival_ms: job.arrival_ms,
            duration_ms: job.duration_ms,
            usage: Usage {
                input_tokens: tokens - cached - output,
                cached_tokens: cached,
                output_tokens: output,
                requests: kind.requests,
            },
            instance: i % instances,
        };
        if i > 0 {
            text.push_str(",\n");
        }
        text.push_str(&serde_json::to_string(&line).unwrap_or_default());
    }
    text.push_str("\n]}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::GenerateArgs;

    fn args(jobs: usize) -> DatasetArgs {
        DatasetArgs {
            config: None,
            generator: GenerateArgs {
                jobs,
                ..GenerateArgs::default()
            },
            instances: 5,
            output: None,
        }
    }

    fn kinds() -> Vec<Kind> {
        let config = Config::from_toml_str(STRESS_CONFIG).unwrap_or_default();
        config
            .validate()
            .map(|validated| workload::kinds(&validated, true))
            .unwrap_or_default()
    }

    #[test]
    fn the_dataset_is_deterministic_and_within_the_estimates() {
        let kinds = kinds();
        assert_eq!(kinds.len(), 5);
        let text = render(&args(1_000), &kinds);
        assert_eq!(text, render(&args(1_000), &kinds));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let jobs = value["jobs"].as_array().cloned().unwrap_or_default();
        assert_eq!(jobs.len(), 1_000);
        let mut last = 0;
        for (i, job) in jobs.iter().enumerate() {
            let kind = kinds
                .iter()
                .find(|k| job["job_type"] == k.name.as_str())
                .unwrap_or_else(|| panic!("unknown type in {job}"));
            let usage = &job["usage"];
            let tokens: u64 = ["input_tokens", "cached_tokens", "output_tokens"]
                .iter()
                .map(|k| usage[k].as_u64().unwrap_or(u64::MAX / 4))
                .sum();
            assert!(
                tokens <= kind.tokens && tokens * 10 >= kind.tokens * 8,
                "{job}"
            );
            assert_eq!(usage["requests"].as_u64(), Some(kind.requests));
            assert_eq!(job["instance"].as_u64(), Some(i as u64 % 5));
            let arrival = job["arrival_ms"].as_u64().unwrap_or(0);
            assert!(arrival >= last, "arrivals are sorted");
            last = arrival;
            let duration = job["duration_ms"].as_u64().unwrap_or(0);
            assert!((5_000..=30_000).contains(&duration));
        }
    }
}
