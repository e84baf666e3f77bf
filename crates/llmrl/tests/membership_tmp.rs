//! Membership scenarios of the conformance suite (until the whole suite runs from conformance.rs).
use llmrl::conformance::{InProcess, membership};
#[tokio::test(start_paused = true)]
async fn a() {
    membership::one_instance_has_all_slots(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn b() {
    membership::a_second_instance_halves_the_first(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn c() {
    membership::a_leaving_instance_gives_its_share_back_at_once(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn d() {
    membership::a_dead_instance_is_evicted_after_the_stale_threshold(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn e() {
    membership::one_two_three_two_one(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn f() {
    membership::an_evicted_instance_registers_again(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn g() {
    membership::a_reset_backend_recovers_the_fleet_figures(&InProcess).await
}
