//! A load test (seeds 000, "load test"): several instances on one fleet, thousands of jobs of
//! three types, more than the fleet's tokens per minute allow. No instance may take more than its
//! fair share and the fleet never passes a global limit through admissions, however the load is
//! spread; jobs that find a minute full wait for the next and then run.
//!
//! - [`workload`]: the limits, job types and the plan of jobs (fixed seed);
//! - [`checker`]: the ledger that checks every admission and sums up the run;
//! - [`run`]: the fleet, the arrivals, and the drain.

mod checker;
mod run;
mod workload;

use super::Harness;
use workload::{INSTANCES, JOBS, TPM};

/// 3 000 jobs on 4 instances over three minutes, about 30 % more estimated tokens per minute
/// than TPM allows (more for some instances: arrivals are random), actual usage from 60 % to 130 % of the estimates. Checked at every start, through
/// every instance's `availability()` and the events: each instance's own usage within its fair
/// share, the fleet's within every limit (overages aside), in-flight within CONC. At the end:
/// every job completed or gave up after exactly its wait bound, and on every instance some jobs
/// waited for a later minute and then completed.
pub async fn thousands_of_jobs_overflowing_a_minute<H: Harness>(h: &H) {
    let plan = workload::plan();
    let first_minute: u64 = plan
        .iter()
        .filter(|j| j.arrival_second < 60)
        .map(|j| j.kind().estimate(crate::WindowLimit::TokensPerMinute))
        .sum();
    assert!(
        first_minute > TPM,
        "the plan must overflow a minute: {first_minute} estimated tokens arrive in the first"
    );
    let ledger = run::run(h, &plan).await;
    let summary = ledger.finish();
    let report = summary.describe();
    assert_eq!(summary.violation_count, 0, "{report}");
    assert_eq!(summary.jobs, JOBS, "{report}");
    assert_eq!(summary.completed + summary.exhausted, JOBS, "{report}");
    assert_eq!(
        summary.waited_across_a_minute.len(),
        usize::try_from(INSTANCES).unwrap(),
        "{report}"
    );
    assert!(
        summary.waited_across_a_minute.iter().all(|&n| n > 0),
        "on every instance, some jobs waited for a later minute and completed: {report}"
    );
}
