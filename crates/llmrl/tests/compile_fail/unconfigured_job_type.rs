// A job type added to the enum but left out of the `job_types` match is an error (E0004).
use llmrl::{JobType, JobTypeConfig, Limiter, ModelConfig, ModelId, Pricing};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
enum Model {
    Gpt,
    Claude,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
enum Task {
    Summary,
    Translate,
}

fn model(m: Model) -> ModelConfig {
    match m {
        Model::Gpt => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).tokens_per_minute(100_000),
        Model::Claude => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).requests_per_minute(50),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _limiter = Limiter::<Model, Task>::builder(model)
        .job_types(|t| match t {
            Task::Summary => JobTypeConfig::new().estimated_tokens(10_000),
        })
        .escalation_order([Model::Gpt, Model::Claude])
        .build();
}
