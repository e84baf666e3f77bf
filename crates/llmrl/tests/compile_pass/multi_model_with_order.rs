// The baseline the compile_fail cases break: every model and job type configured, an order given.
use std::time::Duration;

use llmrl::{
    JobRequest, JobResult, JobType, JobTypeConfig, Limiter, ModelConfig, ModelId, Pricing, Usage,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
enum Model {
    Gpt,
    Claude,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
enum Task {
    Summary,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let limiter = Limiter::<Model, Task>::builder(|m| match m {
        Model::Gpt => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).tokens_per_minute(100_000),
        Model::Claude => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).requests_per_minute(50),
    })
    .job_types(|t| match t {
        Task::Summary => JobTypeConfig::new()
            .estimated_tokens(10_000)
            .max_wait(Model::Gpt, Duration::from_secs(5)),
    })
    .escalation_order([Model::Gpt, Model::Claude])
    .build()
    .expect("valid settings");
    let _handle = limiter.queue_job(JobRequest::new("job-1", Task::Summary, |_ctx| async move {
        JobResult::<_, String>::done(1, Usage::new().input_tokens(10))
    }));
}
