//! `llmrl simulate`: what a workload would do to a limiter (or a fleet), minute by minute.

mod record;
mod report;
mod run;
pub(crate) mod workload;

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use llmrl::Config;

use crate::cli::SimulateArgs;
use record::summarize;
use run::{Fleet, Plan};
use workload::Workload;

/// The bundled stress scenario's configuration.
pub(crate) const STRESS_CONFIG: &str = include_str!("../../../../examples/stress.toml");
/// Instances of the bundled scenario.
const STRESS_INSTANCES: usize = 5;

pub(crate) fn main(args: SimulateArgs) -> anyhow::Result<()> {
    let bundled = args.config.is_none();
    let config = match &args.config {
        Some(path) => Config::from_path(path)?,
        None => Config::from_toml_str(STRESS_CONFIG)?,
    };
    let validated = config.validate()?;
    let workload = match &args.workload {
        Some(path) => Workload::read(path)?,
        None => {
            let kinds = workload::kinds(&validated, bundled);
            let first_model = validated
                .escalation_order()
                .next()
                .unwrap_or_default()
                .to_owned();
            workload::generate(&args.generator, &kinds, &first_model)
        }
    };
    let instances = args
        .instances
        .unwrap_or(if bundled { STRESS_INSTANCES } else { 1 })
        .max(1);
    let fleet = match &args.redis {
        Some(url) => Fleet::Redis {
            url: url.clone(),
            prefix: format!("simulate-{}", std::process::id()),
        },
        None => Fleet::InProcess,
    };
    let backend = if args.redis.is_some() {
        "redis"
    } else {
        "in_process"
    };
    let progress = ProgressBar::new(workload.jobs.len() as u64);
    progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} jobs ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let jobs = workload.jobs.len();
    let outcome = run::run(
        Plan {
            config,
            workload,
            instances,
            fleet,
        },
        &progress,
    )?;
    progress.finish_and_clear();
    let wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let summary = summarize(
        &outcome.log,
        &outcome.models,
        instances,
        backend,
        outcome.simulated_ms,
        wall_ms,
    );
    debug_assert_eq!(summary.jobs, jobs);

    if let Some(path) = &args.events {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        for event in &outcome.log.events {
            serde_json::to_writer(&mut file, event)?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
    }
    if let Some(path) = &args.report {
        let html = report::html(&summary, &outcome.log, &outcome.models, &outcome.job_types);
        std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &summary)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", record::render(&summary))?;
    }
    Ok(())
}
