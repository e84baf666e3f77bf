//! The conformance suite again with the library run as `EVALSHA` scripts, as on servers
//! without Redis Functions (or users not allowed to load them).

use llmrl_redis::LuaMode;
use llmrl_redis::test_support::RedisHarness;

llmrl::conformance_suite!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    harness = RedisHarness::start_with(LuaMode::Eval)
);
