// `#[derive(ModelId)]` rejects an enum without variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::ModelId)]
enum Model {}

fn main() {}
