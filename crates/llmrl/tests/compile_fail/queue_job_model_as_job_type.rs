// Queueing a value of another id enum (a model) as the job type is an error.
use llmrl::{JobRequest, JobResult, JobType, Limiter, ModelConfig, ModelId, Pricing, Usage};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
enum Model {
    Gpt,
    Claude,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
enum Task {
    Summary,
}

fn model(m: Model) -> ModelConfig {
    match m {
        Model::Gpt => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).tokens_per_minute(100_000),
        Model::Claude => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).requests_per_minute(50),
    }
}
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let limiter = Limiter::<Model, Task>::builder(model)
        .escalation_order([Model::Gpt, Model::Claude])
        .build()
        .expect("valid settings");
    let _handle = limiter.queue_job(JobRequest::new("job-1", Model::Gpt, |_ctx| async move {
        JobResult::<_, String>::done(1, Usage::new())
    }));
}
