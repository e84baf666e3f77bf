#![allow(missing_docs)] // criterion_group! generates undocumented items
//! Admission through the in-process fleet backend with 1, 5 and 50 instances in one process
//! (see `BENCHMARKS.md`): the cost per job must not grow with the number of instances, since
//! nothing is broadcast per job.
//!
//! Each iteration queues a batch of no-op jobs round robin over the instances and awaits them:
//! queue → local admission → backend admission → run → local settlement → backend settlement.
//!
//! Run with `cargo bench -p llmrl --bench fleet -- --warm-up-time 1 --measurement-time 3`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use llmrl::backend::InProcessFleet;
use llmrl::{
    JobRequest, JobResult, JobTypeConfig, Limiter, ModelConfig, Pricing, RatioAdjustmentConfig,
    Usage,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
enum Model {
    Only,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Task {
    Job,
}

const BATCH: usize = 1_000;

fn fleet_of(instances: usize, runtime: &tokio::runtime::Runtime) -> Vec<Limiter<Model, Task>> {
    runtime.block_on(async {
        let fleet = InProcessFleet::new();
        let mut limiters = Vec::with_capacity(instances);
        for i in 0..instances {
            let limiter = Limiter::<Model, Task>::builder(|Model::Only| {
                ModelConfig::new(Pricing::new(1.0, 0.5, 2.0))
                    .tokens_per_minute(1_000_000_000_000)
                    .requests_per_minute(1_000_000_000)
                    .max_concurrent_requests(1_000_000)
            })
            .job_types(|Task::Job| JobTypeConfig::new().estimated_tokens(100))
            .ratio_adjustment(
                RatioAdjustmentConfig::new()
                    .interval(Duration::ZERO)
                    .releases_per_adjustment(0),
            )
            .instance_id(format!("bench-{i}"))
            .backend(fleet.clone())
            .build()
            .expect("limiter");
            limiter.ready().await;
            limiters.push(limiter);
        }
        limiters
    })
}

fn admission_through_the_fleet(c: &mut Criterion) {
    let mut group = c.benchmark_group("fleet_admission");
    group.throughput(Throughput::Elements(BATCH as u64));
    for instances in [1usize, 5, 50] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let limiters = fleet_of(instances, &runtime);
        group.bench_with_input(
            BenchmarkId::from_parameter(instances),
            &instances,
            |b, _| {
                b.to_async(&runtime).iter(|| async {
                    let handles: Vec<_> = (0..BATCH)
                        .map(|i| {
                            let job = |_| async {
                                JobResult::<(), ()>::done(
                                    (),
                                    Usage::new().input_tokens(100).requests(1),
                                )
                            };
                            limiters[i % limiters.len()].queue_job(JobRequest::new(
                                "job",
                                Task::Job,
                                job,
                            ))
                        })
                        .collect();
                    for handle in handles {
                        let _ = handle.await;
                    }
                });
            },
        );
        runtime.block_on(async {
            for limiter in &limiters {
                limiter.stop(Duration::ZERO).await;
            }
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, admission_through_the_fleet);
criterion::criterion_main!(benches);
