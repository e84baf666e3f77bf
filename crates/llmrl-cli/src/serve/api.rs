//! The HTTP API.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use llmrl::{AcquireError, Clock, Lease, NamedLimiter, QueueError, Usage};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::leases::Leases;
use super::metrics;

pub(crate) struct State {
    pub(crate) limiter: NamedLimiter,
    pub(crate) clock: Clock,
    ttl: Duration,
    token: Option<String>,
    events: broadcast::Sender<String>,
    /// Set when the server shuts down: ends the event streams, which would otherwise keep
    /// the graceful shutdown waiting forever.
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) leases: Leases,
    pub(crate) stats: Stats,
}

/// Counters for `/v1/stats` and `/metrics`.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) acquired: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) delegated: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
}

impl State {
    pub(crate) fn new(
        limiter: NamedLimiter,
        clock: Clock,
        ttl: Duration,
        token: Option<String>,
        events: broadcast::Sender<String>,
    ) -> Self {
        Self {
            limiter,
            clock,
            ttl,
            token: token.filter(|t| !t.is_empty()),
            events,
            stopping: watch::Sender::new(false),
            leases: Leases::default(),
            stats: Stats::default(),
        }
    }

    fn lease_json(&self, id: &str, lease: &Lease<Arc<str>>, expires_at: u64) -> Value {
        json!({
            "lease_id": id,
            "job_id": lease.job_id().as_str(),
            "model": &**lease.model(),
            "attempt": lease.attempt(),
            "expires_at_ms": expires_at,
        })
    }

    fn keep(&self, lease: Lease<Arc<str>>) -> Value {
        let expires_at = self.clock.now().saturating_add(self.ttl);
        let (id, json) = {
            // Build the JSON before the lease moves into the table.
            let preview = self.lease_json("", &lease, expires_at.as_millis());
            let id = self
                .leases
                .insert(self.limiter.instance_id(), lease, expires_at);
            (id, preview)
        };
        let mut json = json;
        json["lease_id"] = Value::String(id);
        json
    }
}

/// An error answer: `{"error": "...", "field": "..."}`.
pub(crate) struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>, field: Option<&str>) -> Self {
        Self {
            status,
            error: error.into(),
            field: field.map(str::to_owned),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "field": self.field});
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body, naming the field at fault.
fn parse<T: DeserializeOwned>(state: &State, body: &Bytes) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        state.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::BAD_REQUEST,
            error.inner().to_string(),
            field_of(&error).as_deref(),
        )
    })
}

/// The field at fault: the path read up to the error (without `?`, a key never read in broken
/// JSON), plus the field a "missing field" error names; `None` for the body as a whole.
fn field_of(error: &serde_path_to_error::Error<serde_json::Error>) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut field = String::new();
    for segment in error.path() {
        match segment {
            Segment::Unknown => break,
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            named => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(&named.to_string());
            }
        }
    }
    // serde names a missing field only in its message.
    let message = error.inner().to_string();
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(name);
    }
    (!field.is_empty()).then_some(field)
}

pub(crate) fn router(state: Arc<State>) -> Router {
    let api = Router::new()
        .route("/v1/leases", post(acquire))
        .route("/v1/leases/{id}/release", post(release))
        .route("/v1/availability", get(availability))
        .route("/v1/stats", get(stats))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .with_state(state)
}

async fn authorize(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token",
                Some("authorization"),
            ));
        }
    }
    Ok(next.run(request).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireRequest {
    job_type: String,
    #[serde(default)]
    job_id: Option<String>,
}

async fn acquire(
    Extract(state): Extract<Arc<State>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: AcquireRequest = parse(&state, &body)?;
    let job_id = request.job_id.unwrap_or_else(|| "http".to_owned());
    let lease = match state.limiter.acquire(job_id, &request.job_type).await {
        Err(QueueError::UnknownJobType { known, .. }) => {
            state.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            let error = format!(
                "unknown job type {:?} (configured: {known})",
                request.job_type
            );
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                error,
                Some("job_type"),
            ));
        }
        Err(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                other.to_string(),
                None,
            ));
        }
        Ok(lease) => lease.map_err(|error| unavailable(&state, &error))?,
    };
    state.stats.acquired.fetch_add(1, Ordering::Relaxed);
    Ok(Json(state.keep(lease)))
}

fn unavailable(state: &State, error: &AcquireError) -> ApiError {
    match error {
        AcquireError::Exhausted => {
            state.stats.exhausted.fetch_add(1, Ordering::Relaxed);
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string(), None)
        }
        _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string(), None),
    }
}

#[derive(Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageBody {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    cached_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    requests: u64,
}

#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    #[default]
    Done,
    Rejected,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    usage: UsageBody,
    #[serde(default)]
    outcome: Outcome,
    #[serde(default = "yes")]
    delegate: bool,
}

const fn yes() -> bool {
    true
}

async fn release(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ReleaseRequest = parse(&state, &body)?;
    let Some(held) = state.leases.take(&id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no lease {id:?} (released already, expired, or never given)"),
            Some("lease_id"),
        ));
    };
    let usage = Usage::new()
        .input_tokens(request.usage.input_tokens)
        .cached_tokens(request.usage.cached_tokens)
        .output_tokens(request.usage.output_tokens)
        .requests(request.usage.requests);
    state.stats.released.fetch_add(1, Ordering::Relaxed);
    match (request.outcome, request.delegate) {
        (Outcome::Rejected, true) => {
            state.stats.delegated.fetch_add(1, Ordering::Relaxed);
            let (entry, next) = held.lease.delegate(usage).await;
            match next {
                Ok(lease) => {
                    state.stats.acquired.fetch_add(1, Ordering::Relaxed);
                    Ok(Json(json!({"usage": entry, "next": state.keep(lease)})))
                }
                Err(error) => {
                    let _ = unavailable(&state, &error);
                    Ok(Json(
                        json!({"usage": entry, "next": null, "error": error.to_string()}),
                    ))
                }
            }
        }
        _ => {
            let entry = held.lease.release(usage).await;
            Ok(Json(json!({"usage": entry, "next": null})))
        }
    }
}

async fn availability(Extract(state): Extract<Arc<State>>) -> Json<Value> {
    Json(serde_json::to_value(state.limiter.availability()).unwrap_or(Value::Null))
}

async fn stats(Extract(state): Extract<Arc<State>>) -> Json<Value> {
    let s = &state.stats;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Json(json!({
        "instance_id": state.limiter.instance_id(),
        "leases_active": state.leases.len(),
        "acquired": load(&s.acquired),
        "released": load(&s.released),
        "delegated": load(&s.delegated),
        "exhausted": load(&s.exhausted),
        "expired": load(&s.expired),
        "bad_requests": load(&s.bad_requests),
    }))
}

async fn events(
    Extract(state): Extract<Arc<State>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.events.subscribe();
    let stopping = state.stopping.subscribe();
    let stream = futures_util::stream::unfold(
        (receiver, stopping),
        |(mut receiver, mut stopping)| async move {
            loop {
                let received = tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => return None,
                    received = receiver.recv() => received,
                };
                match received {
                    Ok(line) => {
                        return Some((Ok(Event::default().data(line)), (receiver, stopping)));
                    }
                    // A slow client misses events rather than slowing the limiter.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state),
    )
}
