//! Failure-mode scenarios of the conformance suite (until the whole suite runs from conformance.rs).
use llmrl::conformance::{InProcess, failure};
#[tokio::test(start_paused = true)]
async fn closed() {
    failure::closed_admits_nothing_while_down(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn open() {
    failure::open_admits_on_local_limits(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn last_known() {
    failure::last_known_share_keeps_the_fleet_within_limits(&InProcess).await
}
#[tokio::test(start_paused = true)]
async fn recovery() {
    failure::recovery_reports_outage_usage(&InProcess).await
}
