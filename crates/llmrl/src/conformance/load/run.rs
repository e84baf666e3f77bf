//! The load test's run: a fleet of instances, the plan's jobs queued at their arrival times,
//! time moved on until every job has ended.

use std::sync::Arc;
use std::time::Duration;

use super::checker::{Ending, Ledger};
use super::workload::{ARRIVAL_SECONDS, INSTANCES, MAX_WAIT, Planned, config};
use crate::conformance::{Harness, STALE, Snapshot};
use crate::{Cause, Completion, JobContext, JobError, JobRequest, JobResult, NamedLimiter};

/// Time moved at once while waiting for the last jobs (small: a harness whose clock jumps
/// fires every timer inside a step at its end).
const DRAIN_STEP: Duration = Duration::from_secs(1);

/// Runs `plan` on a fresh fleet; returns the ledger, with every job ended.
pub(super) async fn run<H: Harness>(h: &H, plan: &[Planned]) -> Ledger {
    let fleet = h.fleet(STALE);
    let clock = h.clock();
    let ledger = Ledger::new(plan.len(), clock.clone());
    let mut instances = Vec::new();
    for i in 0..usize::try_from(INSTANCES).unwrap() {
        let limiter = NamedLimiter::builder(config().instance_id(format!("load-{i}")))
            .clock(clock.clone())
            .backend(h.backend(&fleet))
            .on_event(ledger.listener(i))
            .build()
            .unwrap();
        limiter.ready().await;
        instances.push(limiter);
    }
    h.propagate().await;
    for limiter in &instances {
        assert_eq!(
            limiter.availability().instances,
            instances.len(),
            "every instance sees the whole fleet before the load starts"
        );
    }
    let instances: Arc<[NamedLimiter]> = instances.into();

    // Arrivals, second by second.
    let mut handles = Vec::with_capacity(plan.len());
    let mut next = plan.iter().enumerate().peekable();
    for second in 0..ARRIVAL_SECONDS {
        while let Some((n, job)) = next.next_if(|(_, j)| j.arrival_second == second) {
            handles.push(queue(&instances, &ledger, n, job));
        }
        h.advance(Duration::from_secs(1)).await;
    }
    assert!(
        next.peek().is_none(),
        "every job arrives in the arrival span"
    );

    // Every job ends within its wait bound plus its run: allow that, and a little more.
    let longest_run = plan.iter().map(|j| j.run_for).max().unwrap_or_default();
    let mut budget = MAX_WAIT + longest_run + Duration::from_secs(60);
    while ledger.ended_count() < plan.len() {
        assert!(
            !budget.is_zero(),
            "only {} of {} jobs ended within their bounds",
            ledger.ended_count(),
            plan.len()
        );
        h.advance(DRAIN_STEP).await;
        budget = budget.saturating_sub(DRAIN_STEP);
    }
    for handle in handles {
        // The callbacks recorded the outcome; the handle must agree.
        let id = handle.job_id().clone();
        match h.run_until(handle).await {
            Ok(_)
            | Err(JobError {
                cause: Cause::Exhausted { .. },
                ..
            }) => {}
            Err(e) => panic!("{id}: {:?}", e.cause),
        }
    }
    h.propagate().await;
    for (i, limiter) in instances.iter().enumerate() {
        let idle = limiter.availability();
        let model = &idle.models[0];
        assert_eq!(
            model.concurrent_requests.map(|c| c.used),
            Some(0),
            "instance {i}: nothing in flight at the end"
        );
        for t in &idle.job_types {
            assert_eq!(t.in_flight, 0, "instance {i}: {} in flight", t.job_type);
            assert!(
                t.models.iter().all(|m| m.waiting == 0),
                "instance {i}: {} still waiting",
                t.job_type
            );
        }
    }
    for limiter in instances.iter() {
        limiter.stop(Duration::ZERO).await;
    }
    ledger
}

type LoadHandle = crate::JobHandle<Arc<str>, (), ()>;

/// Queues job `n` of the plan on its instance. Its closure records a snapshot of every instance
/// when it starts, sleeps for its run time on the instances' clock, and reports its usage.
fn queue(instances: &Arc<[NamedLimiter]>, ledger: &Ledger, n: usize, job: &Planned) -> LoadHandle {
    let on = &instances[job.instance];
    let (probe, started, completed, failed) = (
        instances.clone(),
        ledger.clone(),
        ledger.clone(),
        ledger.clone(),
    );
    let clock = ledger.clock().clone();
    let (run_for, usage) = (job.run_for, job.usage);
    let request = JobRequest::new(
        format!("job-{n}"),
        job.kind().name,
        move |_: JobContext<Arc<str>>| {
            let snapshots: Vec<Snapshot> = probe.iter().map(NamedLimiter::availability).collect();
            started.started(n, &snapshots);
            let (ledger, clock) = (started.clone(), clock.clone());
            async move {
                clock.sleep_until(clock.now().saturating_add(run_for)).await;
                ledger.ran();
                JobResult::<(), ()>::done((), usage)
            }
        },
    )
    .on_complete(move |_: &Completion<Arc<str>, ()>| completed.ended(n, Ending::Completed))
    .on_error(move |e: &JobError<Arc<str>, ()>| {
        let ending = match &e.cause {
            Cause::Exhausted { .. } => Ending::Exhausted,
            other => Ending::Other(format!("{other:?}")),
        };
        failed.ended(n, ending);
    });
    ledger.queued(n, job.instance);
    on.queue_job(request).unwrap()
}
