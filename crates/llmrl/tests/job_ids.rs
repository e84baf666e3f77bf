//! Job ids (SPEC §3.1): a string for tracing and reports, however it was given — a literal, a
//! `String` or an `Arc<str>` — printed, compared and serialized as that string.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Solo, Work, clock, pricing, sleeper};
use llmrl::{JobId, JobRequest, JobTypeConfig, Limiter, ModelConfig, Usage};

fn all_forms(text: &'static str) -> [JobId; 3] {
    [
        JobId::from(text),
        JobId::from(text.to_owned()),
        JobId::from(Arc::<str>::from(text)),
    ]
}

#[test]
fn every_form_reads_back_as_its_string() {
    for id in all_forms("job-7") {
        assert_eq!(id.as_str(), "job-7");
        assert_eq!(&*id, "job-7", "derefs to the string");
        assert_eq!(id.len(), 5);
        assert_eq!(id.to_string(), "job-7", "Display is the bare string");
        assert_eq!(format!("{id:?}"), "\"job-7\"", "Debug is the quoted string");
        assert_eq!(
            serde_json::to_value(&id).unwrap(),
            serde_json::json!("job-7")
        );
        assert!(id == *"job-7", "compares with str");
        assert!(id == "job-7", "compares with &str");
        assert!(id != "job-8");
    }
}

#[test]
fn clones_are_equal_and_distinct_ids_are_ordered_by_their_text() {
    for id in all_forms("a") {
        assert_eq!(id.clone(), id);
    }
    let (a, b) = (JobId::from("a"), JobId::from("b"));
    assert!(a < b);
    let (a, b) = (
        JobId::from(String::from("a")),
        JobId::from(String::from("b")),
    );
    assert!(a < b);
    assert_ne!(JobId::from("a"), JobId::from("b"));
}

#[test]
fn the_same_text_is_the_same_id_whatever_its_form() {
    let [literal, owned, shared] = all_forms("job-7");
    assert_eq!(literal, owned);
    assert_eq!(owned, shared);
    assert_eq!(literal, shared);
    let set: HashSet<JobId> = all_forms("job-7").into_iter().collect();
    assert_eq!(set.len(), 1, "one id, however it was spelt");
    assert_eq!(
        JobId::from("b").cmp(&JobId::from("a".to_owned())),
        std::cmp::Ordering::Greater,
        "ordered by text"
    );
}

#[tokio::test(start_paused = true)]
async fn the_id_given_to_a_request_reaches_its_handle_its_job_and_its_outcome() {
    let limiter = Limiter::<Solo, Work>::builder(|Solo::Only| ModelConfig::new(pricing()))
        .job_types(|Work::Job| JobTypeConfig::new().estimated_tokens(10))
        .clock(clock())
        .build()
        .unwrap();
    let request = JobRequest::new(
        Arc::<str>::from("shared-id"),
        Work::Job,
        |ctx: llmrl::JobContext<Solo>| async move {
            llmrl::JobResult::<_, String>::done(ctx.job_id.to_string(), Usage::new())
        },
    );
    assert_eq!(request.job_id(), "shared-id");
    let handle = limiter.queue_job(request);
    assert_eq!(handle.job_id(), "shared-id");
    let done = handle.await.unwrap();
    assert_eq!(done.value, "shared-id", "the job's context carries the id");
    assert_eq!(done.job_id, "shared-id");

    let handle = limiter.queue_job(JobRequest::new(
        format!("job-{}", 42),
        Work::Job,
        sleeper(Duration::from_secs(1), Usage::new()),
    ));
    assert_eq!(handle.await.unwrap().job_id.as_str(), "job-42");
    limiter.stop(Duration::ZERO).await;
}
