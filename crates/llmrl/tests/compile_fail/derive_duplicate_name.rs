// Two variants sharing a name (here through `#[llmrl(name = ...)]`) are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
enum Model {
    #[llmrl(name = "openai/gpt")]
    Gpt,
    #[llmrl(name = "openai/gpt")]
    GptMini,
}

fn main() {}
