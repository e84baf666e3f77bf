//! The typed API's compile-time guarantees, pinned with trybuild, and a single-model limiter
//! that runs without an escalation order.
//!
//! Regenerate the expected compiler output with
//! `TRYBUILD=overwrite cargo test -p llmrl --test typed_api`, then read every `.stderr` diff:
//! each must show the error its case is about, not an unrelated one.

use llmrl::{JobRequest, JobResult, JobType, Limiter, ModelConfig, ModelId, Pricing, Usage};

#[test]
fn compile_time_guarantees() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
    t.pass("tests/compile_pass/*.rs");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
enum OnlyModel {
    #[llmrl(name = "openai/gpt")]
    Gpt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
enum Task {
    Summary,
}

#[tokio::test(start_paused = true)]
async fn single_model_runs_without_escalation_order() {
    let limiter = Limiter::<OnlyModel, Task>::builder(|model| match model {
        OnlyModel::Gpt => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).tokens_per_minute(100_000),
    })
    .clock(llmrl::Clock::virtual_at(llmrl::Timestamp::from_millis(0)))
    .build()
    .expect("a single model needs no escalation order");

    let completion = limiter
        .queue_job(JobRequest::new("job-1", Task::Summary, |ctx| async move {
            // The closure sees the model it must call and which attempt this is.
            JobResult::<_, String>::done((ctx.model, ctx.attempt), Usage::new().input_tokens(10))
        }))
        .await
        .expect("the job completes");

    assert_eq!(completion.model, OnlyModel::Gpt);
    assert_eq!(completion.value, (OnlyModel::Gpt, 1));
    assert_eq!(completion.job_id, "job-1");
    limiter.stop(std::time::Duration::from_secs(1)).await;
}
