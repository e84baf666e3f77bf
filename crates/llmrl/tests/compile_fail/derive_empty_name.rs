// `#[llmrl(name = "")]` is rejected: a model needs a non-empty name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
enum Model {
    #[llmrl(name = "")]
    Gpt,
}

fn main() {}
