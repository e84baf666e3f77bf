//! Fleet backends (SPEC §7): how limiter instances that share models' limits stay, together,
//! inside them.
//!
//! An instance asks its backend to admit each job (one atomic check and reservation across all
//! of the model's limits, concurrency and the instance's fair share), reports settlements, and
//! keeps in sync with a heartbeat. Replies carry fresh figures; changes made by other instances
//! arrive through [`Backend::changes`], coalesced so that no message is sent per job per
//! instance.
//!
//! [`InProcessFleet`] is the in-process backend; `llmrl-redis` provides one on Redis. Both
//! implement [`Backend`], whose arithmetic is in [`fair_share`].

pub mod fair_share;
mod in_process;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Timestamp;

pub use in_process::InProcessFleet;

/// Resources per model as backends count them: the four window limits in
/// [`WindowLimit::ALL`](crate::WindowLimit::ALL) order, then concurrency.
pub const RESOURCES: usize = 5;
/// Index of concurrency among the resources.
pub const CONCURRENCY: usize = 4;

/// One model's limits, as every instance of a fleet must agree on them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelLimits {
    /// The model id.
    pub name: Arc<str>,
    /// Limits per resource (window limits, then concurrency); `None`: no such limit.
    pub limits: [Option<u64>; RESOURCES],
}

impl ModelLimits {
    /// Limits of a model named `name`.
    #[must_use]
    pub const fn new(name: Arc<str>, limits: [Option<u64>; RESOURCES]) -> Self {
        Self { name, limits }
    }
}

/// Window numbers (see [`Window::index_at`](crate::Window::index_at)) that figures refer to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Windows {
    /// The minute.
    pub minute: u64,
    /// The UTC day.
    pub day: u64,
}

impl Windows {
    /// The windows containing `now`.
    #[must_use]
    pub const fn at(now: Timestamp) -> Self {
        Self {
            minute: crate::window::Window::Minute.index_at(now),
            day: crate::window::Window::Day.index_at(now),
        }
    }

    /// The window number of resource `r` (concurrency has none: 0).
    #[must_use]
    pub const fn of(self, resource: usize) -> u64 {
        match resource {
            0 | 2 => self.minute,
            1 | 3 => self.day,
            _ => 0,
        }
    }
}

/// What an instance knows of the fleet for one model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetFigures {
    /// The windows the window figures belong to.
    pub windows: Windows,
    /// This instance's fair share of each resource (0 where the model has no such limit).
    pub share: [u64; RESOURCES],
    /// Used fleet-wide in the current windows; in flight, for concurrency.
    pub used: [u64; RESOURCES],
    /// This instance's own usage, as the backend records it.
    pub own: [u64; RESOURCES],
    /// What the other instances have not used of their shares, summed.
    pub others_unused: [u64; RESOURCES],
    /// The backend's state version these figures were read at: replies can arrive out of
    /// order, and an instance ignores figures older than the ones it has. 0 means unversioned
    /// (always taken in). A backend that loses its state may restart the count: instances take
    /// any version after they register again.
    pub version: u64,
}

impl FleetFigures {
    /// Figures for one model in `windows`, per resource.
    #[must_use]
    pub const fn new(
        windows: Windows,
        share: [u64; RESOURCES],
        used: [u64; RESOURCES],
        own: [u64; RESOURCES],
        others_unused: [u64; RESOURCES],
    ) -> Self {
        Self {
            windows,
            share,
            used,
            own,
            others_unused,
            version: 0,
        }
    }

    /// The same figures, read at the backend's state `version`.
    #[must_use]
    pub const fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }
}

/// What an instance knows of the fleet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetView {
    /// Live instances, this one included.
    pub instances: u32,
    /// Per model, in configuration order.
    pub models: Vec<FleetFigures>,
}

impl FleetView {
    /// A fleet of `instances` live instances, with figures per model.
    #[must_use]
    pub const fn new(instances: u32, models: Vec<FleetFigures>) -> Self {
        Self { instances, models }
    }
}

/// A request to admit one job on one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admission {
    /// Model index.
    pub model: usize,
    /// The job type's estimate per window limit (concurrency: always one unit).
    pub estimates: [u64; 4],
    /// The instance's clock (backends may prefer their own).
    pub now: Timestamp,
}

/// A backend's answer to an [`Admission`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmitReply {
    /// Whether the job was admitted (and reserved).
    pub admitted: bool,
    /// Live instances.
    pub instances: u32,
    /// Fresh figures for the model, after the reservation if admitted.
    pub figures: FleetFigures,
}

impl AdmitReply {
    /// An answer: admitted or not, with the fleet's size and fresh figures for the model.
    #[must_use]
    pub const fn new(admitted: bool, instances: u32, figures: FleetFigures) -> Self {
        Self {
            admitted,
            instances,
            figures,
        }
    }
}

/// How a reservation ends, for the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settlement {
    /// Model index.
    pub model: usize,
    /// The windows the reservation was taken in.
    pub reserved_in: Windows,
    /// What was reserved per window limit.
    pub estimates: [u64; 4],
    /// What happened to it.
    pub outcome: SettlementOutcome,
    /// The instance's clock.
    pub now: Timestamp,
}

impl Settlement {
    /// A settlement of a reservation taken in `reserved_in`.
    #[must_use]
    pub const fn new(
        model: usize,
        reserved_in: Windows,
        estimates: [u64; 4],
        outcome: SettlementOutcome,
        now: Timestamp,
    ) -> Self {
        Self {
            model,
            reserved_in,
            estimates,
            outcome,
            now,
        }
    }
}

/// What happened to a reserved job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettlementOutcome {
    /// It ran and reported this usage per window limit (tokens, tokens, requests, requests).
    Used([u64; 4]),
    /// It ran but its usage is unknown (panic, cancellation): the estimates stay counted.
    Unknown,
    /// It never started: the whole reservation returns.
    NeverStarted,
}

/// An instance's own usage per model, reported when it registers, so that a backend that lost
/// its state (a restart, a flush) recovers the fleet's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnUsage {
    /// The windows the usage belongs to.
    pub windows: Windows,
    /// Per model: used per window limit, then jobs in flight.
    pub models: Vec<[u64; RESOURCES]>,
}

impl OwnUsage {
    /// Usage in `windows` per model.
    #[must_use]
    pub const fn new(windows: Windows, models: Vec<[u64; RESOURCES]>) -> Self {
        Self { windows, models }
    }
}

/// A backend call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend cannot be reached (the message never contains credentials).
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// The call did not answer in time.
    #[error("backend call timed out after {0:?}")]
    Timeout(Duration),
    /// The fleet's models or limits differ from this instance's.
    #[error("fleet configuration mismatch: {0}")]
    Mismatch(String),
    /// The backend does not know this instance (evicted, or the backend lost its state): it
    /// must register again.
    #[error("instance not registered with the fleet")]
    NotRegistered,
    /// The backend answered something unexpected.
    #[error("backend protocol error: {0}")]
    Protocol(String),
}

/// What an instance does while its backend is unreachable (SPEC §7.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureMode {
    /// Admit nothing until the backend answers again.
    Closed,
    /// Admit on local limits only: the model's full limits, as if alone. Unsafe for a fleet:
    /// every instance may use the whole limit.
    Open,
    /// Keep admitting within the last known fair share (`⌊L / n⌋ − own`), so the fleet stays
    /// within the global limit as long as membership does not change.
    #[default]
    LastKnownShare,
}

/// A future a [`DynBackend`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A fleet backend. See the [module documentation](self).
///
/// Every method takes the instance id the instance registered with. Implementations must make
/// [`Backend::admit`] atomic: the check of every limit, of concurrency and of the instance's fair
/// share, and the reservation, happen as one step for the whole fleet.
pub trait Backend: Send + Sync + 'static {
    /// Joins the fleet (or re-joins it, after an eviction or a backend restart), reporting this
    /// instance's own current usage; returns the fleet as it is now.
    fn register(
        &self,
        instance: &str,
        models: &[ModelLimits],
        own: &OwnUsage,
        now: Timestamp,
    ) -> impl Future<Output = Result<FleetView, BackendError>> + Send;

    /// Checks and reserves one job atomically.
    fn admit(
        &self,
        instance: &str,
        admission: Admission,
    ) -> impl Future<Output = Result<AdmitReply, BackendError>> + Send;

    /// Replaces a reservation by what happened.
    fn settle(
        &self,
        instance: &str,
        settlement: Settlement,
    ) -> impl Future<Output = Result<FleetFigures, BackendError>> + Send;

    /// Heartbeat and refresh: marks the instance alive, evicts stale ones, returns the fleet
    /// (`None` if this instance is not registered, e.g. after being evicted: register again).
    fn sync(
        &self,
        instance: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<FleetView>, BackendError>> + Send;

    /// Leaves the fleet; the others' shares grow at once.
    fn unregister(&self, instance: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A signal that moves whenever the fleet changed somewhere; instances then
    /// [`sync`](Backend::sync). Coalesced: at most one change per short period, whatever the job
    /// rate; membership changes at once.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// [`Backend`] as a trait object, for choosing a backend at run time (from a config file).
/// Every `Backend` is a `DynBackend`.
pub trait DynBackend: Send + Sync + 'static {
    /// See [`Backend::register`].
    fn register<'a>(
        &'a self,
        instance: &'a str,
        models: &'a [ModelLimits],
        own: &'a OwnUsage,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<FleetView, BackendError>>;
    /// See [`Backend::admit`].
    fn admit<'a>(
        &'a self,
        instance: &'a str,
        admission: Admission,
    ) -> BoxFuture<'a, Result<AdmitReply, BackendError>>;
    /// See [`Backend::settle`].
    fn settle<'a>(
        &'a self,
        instance: &'a str,
        settlement: Settlement,
    ) -> BoxFuture<'a, Result<FleetFigures, BackendError>>;
    /// See [`Backend::sync`].
    fn sync<'a>(
        &'a self,
        instance: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<FleetView>, BackendError>>;
    /// See [`Backend::unregister`].
    fn unregister<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;
    /// See [`Backend::changes`].
    fn changes(&self) -> watch::Receiver<u64>;
}

impl<B: Backend> DynBackend for B {
    fn register<'a>(
        &'a self,
        instance: &'a str,
        models: &'a [ModelLimits],
        own: &'a OwnUsage,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<FleetView, BackendError>> {
        Box::pin(Backend::register(self, instance, models, own, now))
    }
    fn admit<'a>(
        &'a self,
        instance: &'a str,
        admission: Admission,
    ) -> BoxFuture<'a, Result<AdmitReply, BackendError>> {
        Box::pin(Backend::admit(self, instance, admission))
    }
    fn settle<'a>(
        &'a self,
        instance: &'a str,
        settlement: Settlement,
    ) -> BoxFuture<'a, Result<FleetFigures, BackendError>> {
        Box::pin(Backend::settle(self, instance, settlement))
    }
    fn sync<'a>(
        &'a self,
        instance: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<FleetView>, BackendError>> {
        Box::pin(Backend::sync(self, instance, now))
    }
    fn unregister<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(Backend::unregister(self, instance))
    }
    fn changes(&self) -> watch::Receiver<u64> {
        Backend::changes(self)
    }
}
