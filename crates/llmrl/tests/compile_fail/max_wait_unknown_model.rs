// A `max_wait` naming a model the enum does not have is an error.
use std::time::Duration;

use llmrl::{JobType, JobTypeConfig, Limiter, ModelConfig, ModelId, Pricing};

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
    let _limiter = Limiter::<Model, Task>::builder(model)
        .job_types(|t| match t {
            Task::Summary => JobTypeConfig::new().max_wait(Model::Gemini, Duration::from_secs(5)),
        })
        .escalation_order([Model::Gpt, Model::Claude])
        .build();
}
