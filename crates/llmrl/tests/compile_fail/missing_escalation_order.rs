// A limiter with several models cannot be built without an escalation order.
use llmrl::{JobType, Limiter, ModelConfig, ModelId, Pricing};

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
    let _limiter = Limiter::<Model, Task>::builder(model).build();
}
