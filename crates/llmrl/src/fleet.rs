//! A limiter's link to its fleet backend (SPEC §7): admissions confirmed by the backend,
//! settlements reported to it, heartbeats and re-registration, and what happens while it is
//! unreachable.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::backend::{
    Admission, BackendError, DynBackend, FailureMode, FleetView, ModelLimits, RESOURCES,
    Settlement, SettlementOutcome,
};
use crate::clock::Timestamp;
use crate::config::Spec;
use crate::core::{Core, Session};
use crate::engine::Reservation;
use crate::event::Event;
use crate::window::WindowLimit;

/// How a limiter joins a fleet; settings left `None` come from the configuration's
/// `[backend]` section (or its defaults).
pub(crate) struct FleetOptions {
    pub(crate) backend: Arc<dyn DynBackend>,
    pub(crate) failure_mode: Option<FailureMode>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
}

impl FleetOptions {
    pub(crate) fn new(backend: Arc<dyn DynBackend>) -> Self {
        Self {
            backend,
            failure_mode: None,
            heartbeat: None,
            timeout: None,
        }
    }
}

pub(crate) struct FleetLink {
    pub(crate) backend: Arc<dyn DynBackend>,
    mode: FailureMode,
    pub(crate) heartbeat: Duration,
    timeout: Duration,
    limits: Vec<ModelLimits>,
    /// The backend did not answer: admissions follow `mode` without asking it.
    outage: AtomicBool,
    registered: AtomicBool,
    /// Settlements made where nothing could wait for the backend (a dropped job).
    pending: Mutex<Vec<Settlement>>,
    /// Asks the driver to sync now (pending settlements, an outage to recover from).
    pub(crate) wake_driver: Arc<Notify>,
    /// Whether the first registration attempt is over (see `ready()`).
    ready: watch::Sender<bool>,
}

impl FleetLink {
    pub(crate) fn new(options: FleetOptions, spec: &Spec) -> Self {
        let limits = spec
            .models
            .iter()
            .map(|m| {
                let mut limits = [None; RESOURCES];
                limits[..4].copy_from_slice(&m.limits);
                limits[4] = m.concurrency;
                ModelLimits::new(m.name.clone(), limits)
            })
            .collect();
        let defaults = &spec.backend;
        Self {
            backend: options.backend,
            mode: options.failure_mode.unwrap_or(defaults.failure_mode),
            heartbeat: options.heartbeat.unwrap_or(defaults.heartbeat_interval),
            timeout: options.timeout.unwrap_or(defaults.timeout),
            limits,
            outage: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            wake_driver: Arc::new(Notify::new()),
            ready: watch::Sender::new(false),
        }
    }

    pub(crate) fn in_outage(&self) -> bool {
        self.outage.load(Ordering::Acquire)
    }

    /// How long the driver waits before its next sync.
    pub(crate) fn next_sync_in(&self) -> Duration {
        if self.in_outage() || !self.registered.load(Ordering::Acquire) {
            self.heartbeat.min(Duration::from_secs(1))
        } else {
            self.heartbeat
        }
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(BackendError::Timeout(self.timeout)))
    }
}

/// Gives back a reservation the backend did not confirm and takes it again if the failure
/// mode admits it. Only a readmitted job lets others be granted capacity: a job that must wait
/// again goes back to the front of its queue first.
fn readmit_in_outage(
    session: &mut Session<'_>,
    reservation: Reservation,
    now: Timestamp,
) -> Option<Reservation> {
    let (model, job_type) = (reservation.model(), reservation.job_type());
    session.memory_released = session.unreserve(reservation, now);
    let readmitted = session.reserve_now(model, job_type);
    if readmitted.is_some() {
        session.grant(None);
    }
    readmitted
}

impl Core {
    fn link(&self) -> Option<&FleetLink> {
        self.fleet.as_ref()
    }

    /// Asks the backend to admit a job reserved locally. Returns the reservation if the fleet
    /// admits it (or, the backend being unreachable, the failure mode does); otherwise undoes it
    /// and takes the backend's figures in, so local checks see what the fleet sees. An undone
    /// reservation is granted to no one: the caller puts its job back in the queue first.
    pub(crate) async fn confirm(&self, reservation: Reservation) -> Option<Reservation> {
        let Some(link) = self.link() else {
            return Some(reservation);
        };
        let (model, job_type) = (reservation.model(), reservation.job_type());
        if link.in_outage() {
            // Reserved before the outage began: check it again under the failure mode.
            return readmit_in_outage(&mut self.session(), reservation, self.clock.now());
        }
        let admission = Admission {
            model,
            estimates: self.window_estimates(job_type),
            now: self.clock.now(),
        };
        let reply = link
            .call(link.backend.admit(&self.instance_id, admission))
            .await;
        let now = self.clock.now();
        let mut session = self.session();
        match reply {
            Ok(reply) if reply.admitted => {
                session.apply_fleet(reply.instances, model, &reply.figures);
                session.grant(None);
                let mut reservation = reservation;
                reservation.unconfirmed = false;
                reservation.backend_windows = Some(reply.figures.windows);
                Some(reservation)
            }
            // Refused: the capacity goes back without granting it to anyone, so that the caller
            // can put the job back at the front of its queue first.
            Ok(reply) => {
                // The backend's figures do not hold this reservation: undo it first.
                session.memory_released = session.unreserve(reservation, now);
                session.apply_fleet(reply.instances, model, &reply.figures);
                drop(session);
                tracing::debug!(
                    model = %self.spec.models[model].name,
                    "the fleet refused a local reservation; the job waits again"
                );
                self.emit(|spec| Event::AdmissionRefused {
                    job_type: spec.job_types[job_type].name.clone(),
                    model: spec.models[model].name.clone(),
                });
                None
            }
            Err(BackendError::NotRegistered) => {
                // Evicted or forgotten: register again at once; meanwhile the job waits.
                link.registered.store(false, Ordering::Release);
                link.wake_driver.notify_one();
                session.memory_released = session.unreserve(reservation, now);
                None
            }
            Err(error) => {
                tracing::warn!(%error, "fleet backend unreachable; applying the failure mode");
                self.enter_outage(&mut session);
                readmit_in_outage(&mut session, reservation, now)
            }
        }
    }

    fn window_estimates(&self, job_type: usize) -> [u64; 4] {
        let job_type = &self.spec.job_types[job_type];
        WindowLimit::ALL.map(|limit| job_type.estimate(limit))
    }

    /// What the backend must hear of a reservation that ended so.
    pub(crate) fn settlement(
        &self,
        reservation: &Reservation,
        outcome: SettlementOutcome,
    ) -> Option<Settlement> {
        self.link()?;
        Some(Settlement {
            model: reservation.model(),
            reserved_in: reservation.windows(),
            estimates: self.window_estimates(reservation.job_type()),
            outcome,
            now: self.clock.now(),
        })
    }

    /// Reports a settlement; in an outage (or if the call fails) the next registration reports
    /// the instance's usage instead.
    pub(crate) async fn report(&self, settlement: Settlement) {
        let Some(link) = self.link() else { return };
        if link.in_outage() {
            return;
        }
        match link
            .call(link.backend.settle(&self.instance_id, settlement))
            .await
        {
            Ok(figures) => {
                let mut session = self.session();
                let instances = session.instances();
                session.apply_fleet(instances, settlement.model, &figures);
                session.grant(None);
            }
            Err(BackendError::NotRegistered) => {
                // Evicted or forgotten: the usage is counted; register again at once.
                link.registered.store(false, Ordering::Release);
                link.wake_driver.notify_one();
            }
            Err(error) => {
                tracing::warn!(%error, "fleet backend unreachable while settling");
                let mut session = self.session();
                self.enter_outage(&mut session);
            }
        }
    }

    /// Reports a settlement from where nothing can wait (a job dropped mid-attempt).
    pub(crate) fn report_later(&self, settlement: Settlement) {
        if let Some(link) = self.link() {
            link.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(settlement);
            link.wake_driver.notify_one();
        }
    }

    fn enter_outage(&self, session: &mut Session<'_>) {
        let Some(link) = self.link() else { return };
        if !link.outage.swap(true, Ordering::AcqRel) {
            session.set_outage(Some(link.mode));
            link.wake_driver.notify_one();
        }
    }

    fn apply_view(&self, view: &FleetView, registered: bool) {
        let mut session = self.session();
        if registered {
            session.forget_fleet_versions();
        }
        for (model, figures) in view.models.iter().enumerate() {
            session.apply_fleet(view.instances, model, figures);
        }
        session.set_outage(None);
        session.grant(None);
    }

    /// The driver's fleet work: register (again, after an eviction, a backend restart or an
    /// outage, reporting this instance's own usage), heartbeat, take fresh figures in, and
    /// report settlements left pending.
    pub(crate) async fn sync_fleet(&self) {
        let Some(link) = self.link() else { return };
        let now = self.clock.now();
        let must_register = !link.registered.load(Ordering::Acquire) || link.in_outage();
        let result = if must_register {
            self.register().await.map(|view| (view, true))
        } else {
            match link.call(link.backend.sync(&self.instance_id, now)).await {
                Ok(Some(view)) => Ok((view, false)),
                Ok(None) => {
                    tracing::info!(instance = %self.instance_id, "evicted by the fleet; registering again");
                    self.register().await.map(|view| (view, true))
                }
                Err(error) => Err(error),
            }
        };
        match result {
            Ok((view, registered)) => {
                link.outage.store(false, Ordering::Release);
                self.apply_view(&view, registered);
                self.flush_pending().await;
            }
            Err(error) => {
                tracing::warn!(%error, "fleet backend unreachable");
                let mut session = self.session();
                self.enter_outage(&mut session);
                // A recovery reports everything through registration: nothing stays pending.
                link.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
        }
        link.ready.send_replace(true);
    }

    async fn register(&self) -> Result<FleetView, BackendError> {
        let Some(link) = self.link() else {
            return Err(BackendError::Protocol("not in a fleet".into()));
        };
        let own = self.session().own_usage();
        let now = self.clock.now();
        let view = link
            .call(
                link.backend
                    .register(&self.instance_id, &link.limits, &own, now),
            )
            .await?;
        link.registered.store(true, Ordering::Release);
        // Settlements queued before this registration are included in the usage it reported.
        link.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(view)
    }

    async fn flush_pending(&self) {
        let Some(link) = self.link() else { return };
        let pending =
            std::mem::take(&mut *link.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for settlement in pending {
            self.report(settlement).await;
        }
    }

    /// Waits until the instance has joined its fleet (or failed to, the failure mode then
    /// applying). Returns at once without a fleet.
    pub(crate) async fn ready(&self) {
        if let Some(link) = self.link() {
            let mut ready = link.ready.subscribe();
            let _ = ready.wait_for(|ready| *ready).await;
        }
    }

    /// Leaves the fleet (on `stop()`).
    pub(crate) async fn leave_fleet(&self) {
        if let Some(link) = self.link() {
            if let Err(error) = link.call(link.backend.unregister(&self.instance_id)).await {
                tracing::warn!(%error, "could not unregister from the fleet backend");
            }
            link.registered.store(false, Ordering::Release);
        }
    }
}
