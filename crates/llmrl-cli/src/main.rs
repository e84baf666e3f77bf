//! The `llmrl` command (in progress: see the project's issues).

fn main() {}
