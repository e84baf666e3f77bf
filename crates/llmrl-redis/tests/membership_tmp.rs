//! Membership scenarios on Redis (until the whole suite compiles).
use llmrl::conformance::membership;
use llmrl_redis::test_support::RedisHarness;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a() {
    membership::one_instance_has_all_slots(&RedisHarness::start()).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b() {
    membership::a_second_instance_halves_the_first(&RedisHarness::start()).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c() {
    membership::a_leaving_instance_gives_its_share_back_at_once(&RedisHarness::start()).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d() {
    membership::a_dead_instance_is_evicted_after_the_stale_threshold(&RedisHarness::start()).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e() {
    membership::one_two_three_two_one(&RedisHarness::start()).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f() {
    membership::an_evicted_instance_registers_again(&RedisHarness::start()).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g() {
    membership::a_reset_backend_recovers_the_fleet_figures(&RedisHarness::start()).await
}
