// A model added to the enum but left out of the `builder` match is an error (E0004).
use llmrl::{JobType, Limiter, ModelConfig, ModelId, Pricing};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ModelId)]
enum Model {
    Gpt,
    Claude,
    Gemini,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, JobType)]
enum Task {
    Summary,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _limiter = Limiter::<Model, Task>::builder(|m| match m {
        Model::Gpt => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).tokens_per_minute(100_000),
        Model::Claude => ModelConfig::new(Pricing::new(1.0, 0.5, 2.0)).requests_per_minute(50),
    })
    .escalation_order([Model::Gpt, Model::Claude, Model::Gemini])
    .build();
}
