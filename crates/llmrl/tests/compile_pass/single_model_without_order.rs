// A limiter over a one-variant model enum builds without `.escalation_order(...)`.
use llmrl::{JobRequest, JobResult, JobType, Limiter, ModelConfig, ModelId, Pricing, Usage};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
enum Model {
    Gpt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
enum Task {
    Summary,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let limiter = Limiter::<Model, Task>::builder(|m| match m {
        Model::Gpt => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).tokens_per_minute(100_000),
    })
    .build()
    .expect("valid settings");
    let _handle = limiter.queue_job(JobRequest::new("job-1", Task::Summary, |_ctx| async move {
        JobResult::<_, String>::done(1, Usage::new().input_tokens(10))
    }));
}
