//! The backend conformance suite on the in-process backend, on tokio's paused clock.

use llmrl::conformance::InProcess;

llmrl::conformance_suite!(
    #[tokio::test(start_paused = true)]
    harness = InProcess::default()
);
