// `#[derive(JobType)]` rejects a variant with fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, llmrl::JobType)]
enum Task {
    Summary,
    Translate { language: u8 },
}

fn main() {}
