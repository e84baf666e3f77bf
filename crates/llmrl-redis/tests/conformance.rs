//! llmrl's backend conformance suite against a real redis-server (real time, manual clock).

use llmrl_redis::test_support::RedisHarness;

llmrl::conformance_suite!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    harness = RedisHarness::start()
);
