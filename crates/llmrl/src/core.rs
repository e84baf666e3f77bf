//! The shared state behind both faces of a limiter: the engine under a mutex, the clock, the
//! job tasks, the optional fleet link, and the deliveries of slot-change callbacks.

use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::availability::Availability;
use crate::backend::SettlementOutcome;
use crate::clock::{Clock, Timestamp};
use crate::config::{RATIO_ONE, Spec, WaitBound};
use crate::driver::{Schedule, drive, time_out_waiters};
use crate::engine::{Adjustment, Arrival, Engine, Grant, MEMORY, Reservation};
use crate::error::BuildError;
use crate::event::{Event, Listener, UsageAdjustment};
use crate::fleet::{FleetLink, FleetOptions};
use crate::job::JobId;
use crate::live_ids::IdHash;
use crate::memory::{Membership, MemoryPool, MemoryWatcher};
use crate::notify::{RelativeAdjustment, SlotsHook};
use crate::registry::{Registry, TaskKey};
use crate::usage::Usage;
use crate::window::Window;

/// Extra wait after the next minute boundary in the default `max_wait` (SPEC §2.3).
const DEFAULT_WAIT_AFTER_BOUNDARY: Duration = Duration::from_secs(5);

/// How a request for capacity on one model ended.
pub(crate) enum Acquire {
    Admitted(Reservation),
    TimedOut,
    Closed,
}

/// A job waiting in a (model, job type) queue until `deadline`.
pub(crate) struct Queued {
    key: usize,
    deadline: Timestamp,
}

/// A job's first arrival, taken when the job is queued (so that jobs queued one after the
/// other arrive in that order), carried into its task. If the task never runs (cancelled or
/// stopped before its first poll), dropping this gives the capacity or the place back.
pub(crate) struct Arrived {
    core: Arc<Core>,
    step: Option<Result<Acquire, Queued>>,
}

impl Arrived {
    /// Whether the job was admitted at once (its attempt can start without waiting).
    pub(crate) const fn admitted(&self) -> bool {
        matches!(self.step, Some(Ok(Acquire::Admitted(_))))
    }

    /// The arrival, now in the hands of a running task.
    pub(crate) fn take(mut self) -> Result<Acquire, Queued> {
        self.step.take().unwrap_or(Ok(Acquire::Closed))
    }
}

impl Drop for Arrived {
    fn drop(&mut self) {
        match self.step.take() {
            Some(Ok(Acquire::Admitted(reservation))) => self.core.unreserve(reservation),
            Some(Err(queued)) => self.core.abandon(queued.key),
            _ => {}
        }
    }
}

/// Builds the [`SlotsHook`] of the user's callback once the configuration is validated (names
/// are known).
pub(crate) type SlotsHookFactory = Box<dyn FnOnce(&Spec) -> Box<dyn SlotsHook> + Send>;

pub(crate) struct Core {
    pub(crate) spec: Spec,
    pub(crate) clock: Clock,
    pub(crate) instance_id: String,
    engine: Mutex<Engine>,
    pub(crate) tasks: Registry,
    stopping: AtomicBool,
    runtime: Handle,
    listener: Option<Listener>,
    slots_hook: Option<Box<dyn SlotsHook>>,
    memory: Mutex<Option<Membership>>,
    pub(crate) fleet: Option<FleetLink>,
    /// Tells the task that times waiters out of an earlier deadline.
    rearm: Arc<Notify>,
    /// The background tasks (the driver, the waiters' timer), each with the sender that stops
    /// it: dropping the sender (with the core) stops it too.
    tasks_in_background: Mutex<Vec<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if user code somehow did, the state is still
    // consistent between operations.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One operation on the engine. When it ends (drops) the lock is released first, then waiters
/// are woken, the slots callback is told, and other limiters hear about returned memory.
pub(crate) struct Session<'a> {
    core: &'a Core,
    engine: Option<MutexGuard<'a, Engine>>,
    wake: Vec<Waker>,
    pub(crate) adjustment: Option<RelativeAdjustment>,
    pub(crate) memory_released: u64,
}

impl std::ops::Deref for Session<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine
            .as_deref()
            .unwrap_or_else(|| unreachable!("engine taken before drop"))
    }
}

impl std::ops::DerefMut for Session<'_> {
    fn deref_mut(&mut self) -> &mut Engine {
        self.engine
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("engine taken before drop"))
    }
}

impl Session<'_> {
    /// Rolls windows to `now`, granting waiters if a window ended.
    pub(crate) fn refresh(&mut self, now: Timestamp) {
        let mut wake = std::mem::take(&mut self.wake);
        if self.engine_mut().refresh(now) {
            self.engine_mut().grant(None, &mut wake);
        }
        self.wake = wake;
    }

    pub(crate) fn grant(&mut self, model: Option<usize>) {
        let mut wake = std::mem::take(&mut self.wake);
        self.engine_mut().grant(model, &mut wake);
        self.wake = wake;
    }

    fn engine_mut(&mut self) -> &mut Engine {
        self
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let Some(mut engine) = self.engine.take() else {
            return;
        };
        if engine.take_rearm() {
            self.core.rearm.notify_one();
        }
        for (model, job_type) in engine.take_newly_stranded() {
            tracing::warn!(
                model = %self.core.spec.models[model].name,
                job_type = %self.core.spec.job_types[job_type].name,
                instances = engine.instances(),
                "the fair share of a limit of this model is smaller than one job of this type: \
                 it cannot start on this model at the current fleet size"
            );
        }
        let mut notify = None;
        if let Some(hook) = &self.core.slots_hook {
            if let Some(reason) = engine.slots_changed(self.adjustment.is_some()) {
                hook.record(&engine, reason, self.adjustment);
                notify = Some(hook);
            }
        }
        drop(engine);
        for waker in self.wake.drain(..) {
            waker.wake();
        }
        if let Some(hook) = notify {
            hook.deliver();
        }
        if self.memory_released > 0 {
            if let Some(membership) = lock(&self.core.memory).as_ref() {
                MemoryPool::global().tell_others(membership.id());
            }
        }
    }
}

impl Core {
    pub(crate) fn start(
        spec: Spec,
        clock: Clock,
        listener: Option<Listener>,
        slots_hook: Option<SlotsHookFactory>,
        fleet: Option<FleetOptions>,
    ) -> Result<Arc<Self>, BuildError> {
        let runtime = Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let now = clock.now();
        let instance_id = spec
            .instance_id
            .clone()
            .unwrap_or_else(crate::instance::generate_id);
        let uses_memory = spec.job_types.iter().any(|t| t.memory_kb > 0);
        let core = Arc::new(Self {
            engine: Mutex::new(Engine::new(&spec, now, fleet.is_some())),
            slots_hook: slots_hook.map(|factory| factory(&spec)),
            fleet: fleet.map(|options| FleetLink::new(options, &spec)),
            spec,
            clock,
            instance_id,
            tasks: Registry::default(),
            stopping: AtomicBool::new(false),
            runtime,
            listener,
            memory: Mutex::new(None),
            rearm: Arc::new(Notify::new()),
            tasks_in_background: Mutex::new(Vec::new()),
        });
        if uses_memory {
            let watcher: Weak<dyn MemoryWatcher> = Arc::downgrade(&core) as Weak<Core>;
            let membership = MemoryPool::global()
                .join(&core.spec.memory, watcher, now)
                .map_err(|conflict| BuildError::MemoryConflict {
                    existing: conflict.existing.describe(),
                    requested: core.spec.memory.describe(),
                })?;
            *lock(&core.memory) = Some(membership);
        }
        for warning in &core.spec.warnings {
            tracing::warn!(instance = %core.instance_id, "{warning}");
        }
        if core.slots_hook.is_some() {
            lock(&core.engine).baseline_slots();
        }
        let schedule = Schedule {
            ratio_interval: core.spec.ratio_adjustment.interval,
            memory_interval: (uses_memory && core.spec.memory.max_memory_kb.is_none())
                .then_some(core.spec.memory.recalculation_interval),
        };
        let (stop_driver, stopped) = oneshot::channel();
        let driver = core.runtime.spawn(drive(
            Arc::downgrade(&core),
            core.clock.clone(),
            schedule,
            stopped,
        ));
        let (stop_timer, stopped) = oneshot::channel();
        let timer = core.runtime.spawn(time_out_waiters(
            Arc::downgrade(&core),
            core.clock.clone(),
            core.rearm.clone(),
            stopped,
        ));
        *lock(&core.tasks_in_background) = vec![(stop_driver, driver), (stop_timer, timer)];
        Ok(core)
    }

    pub(crate) fn session(&self) -> Session<'_> {
        Session {
            core: self,
            engine: Some(lock(&self.engine)),
            wake: Vec::new(),
            adjustment: None,
            memory_released: 0,
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The deadline of a job of `job_type` that starts waiting on `model` at `now`, or `None`
    /// if it never waits there.
    fn deadline(&self, model: usize, job_type: usize, now: Timestamp) -> Option<Timestamp> {
        match self.spec.job_types[job_type].max_wait[model] {
            WaitBound::For(d) if d.is_zero() => None,
            WaitBound::For(d) => Some(now.saturating_add(d)),
            WaitBound::NextMinute => Some(
                Window::Minute
                    .next_boundary(now)
                    .saturating_add(DEFAULT_WAIT_AFTER_BOUNDARY),
            ),
        }
    }

    /// Capacity for one job of `job_type` on `model` now, or where to wait for it. An admission
    /// here is local; in a fleet it still needs [`Core::confirm`].
    pub(crate) fn arrive(&self, model: usize, job_type: usize) -> Result<Acquire, Queued> {
        let now = self.clock.now();
        let mut session = self.session();
        session.refresh(now);
        match session.arrive(model, job_type) {
            Arrival::Admitted(reservation) => Ok(Acquire::Admitted(reservation)),
            Arrival::Closed => Ok(Acquire::Closed),
            Arrival::Wait if session.never_fits_memory(job_type) => {
                tracing::warn!(
                    job_type = %self.spec.job_types[job_type].name,
                    "a job's memory estimate exceeds the whole process budget; not waiting"
                );
                Ok(Acquire::TimedOut)
            }
            Arrival::Wait => match self.deadline(model, job_type, now) {
                None => Ok(Acquire::TimedOut),
                Some(deadline) => Err(Queued {
                    key: session.enqueue(model, job_type, false, deadline),
                    deadline,
                }),
            },
        }
    }

    /// [`Core::arrive`] on the first model of the escalation order, for a job being queued.
    pub(crate) fn arrive_first(self: &Arc<Self>, job_type: usize) -> Arrived {
        Arrived {
            step: Some(self.arrive(self.spec.order[0], job_type)),
            core: self.clone(),
        }
    }

    /// Everything [`Core::arrive`] did not settle at once: waiting in the queue, then, in a
    /// fleet, the backend's confirmation. A job the fleet refuses goes back to the front of its
    /// queue with the same deadline.
    /// (A function returning an `async` block that uses `step` in place: an `async fn` would
    /// keep two copies of it.)
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn acquire_slowly(
        &self,
        model: usize,
        job_type: usize,
        mut step: Result<Acquire, Queued>,
    ) -> impl Future<Output = Acquire> + Send + '_ {
        async move {
            let mut deadline = None;
            loop {
                let acquired = match step {
                    Ok(acquired) => acquired,
                    Err(queued) => {
                        deadline = Some(queued.deadline);
                        self.wait(queued.key).await
                    }
                };
                let Acquire::Admitted(reservation) = acquired else {
                    return acquired;
                };
                if !reservation.unconfirmed {
                    return Acquire::Admitted(reservation);
                }
                // Boxed: a wait without a fleet need not carry the confirmation's state.
                if let Some(reservation) = Box::pin(self.confirm(reservation)).await {
                    return Acquire::Admitted(reservation);
                }
                // The capacity went back without anyone being granted it: this job keeps its place
                // at the front of its queue, then the others are served.
                let now = self.clock.now();
                let deadline = deadline
                    .or_else(|| self.deadline(model, job_type, now))
                    .filter(|&deadline| deadline > now);
                let mut session = self.session();
                let Some(deadline) = deadline else {
                    session.grant(None);
                    return Acquire::TimedOut;
                };
                let key = session.enqueue(model, job_type, true, deadline);
                session.grant(None);
                step = Err(Queued { key, deadline });
            }
        }
    }

    /// Waits in the queue until capacity is granted or the deadline passes (the waiters'
    /// timer task tells).
    ///
    /// Cancel safe: dropped while waiting, the waiter leaves its queue and gives back anything
    /// granted to it meanwhile.
    async fn wait(&self, key: usize) -> Acquire {
        let mut waiter = Waiter {
            core: self,
            key: Some(key),
        };
        let granted = poll_fn(|cx| {
            lock(&self.engine)
                .poll_grant(key, cx.waker())
                .map_or(Poll::Pending, Poll::Ready)
        })
        .await;
        waiter.key = None;
        match granted {
            Grant::Admitted(reservation) => Acquire::Admitted(reservation),
            Grant::Closed => Acquire::Closed,
            Grant::TimedOut => Acquire::TimedOut,
        }
    }

    /// The waiters' timer: times out waiters whose deadline has come, once capacity that
    /// returns exactly then has been granted (SPEC §10). Returns the next deadline.
    pub(crate) fn expire_waiters(&self) -> Option<Timestamp> {
        let now = self.clock.now();
        let mut session = self.session();
        session.refresh(now);
        session.grant(None);
        let mut wake = std::mem::take(&mut session.wake);
        let next = session.expire(now, &mut wake);
        session.wake = wake;
        next
    }

    /// Settles a reservation with the attempt's usage (`None`: unknown, the estimate stays).
    /// Returns what the fleet backend must hear, if there is one.
    pub(crate) fn settle(
        &self,
        reservation: Reservation,
        usage: Option<&Usage>,
        job_id: &JobId,
    ) -> Option<crate::backend::Settlement> {
        let now = self.clock.now();
        let model = reservation.model();
        let job_type = reservation.job_type();
        let outcome = usage.map_or(SettlementOutcome::Unknown, |usage| {
            SettlementOutcome::Used([
                usage.total_tokens(),
                usage.total_tokens(),
                usage.requests,
                usage.requests,
            ])
        });
        let settlement = self.settlement(&reservation, outcome);
        let mut adjustments = [None; 4];
        let mut ratio_changes = Vec::new();
        {
            let mut session = self.session();
            session.refresh(now);
            session.memory_released = session.settle(reservation, usage, now, &mut adjustments);
            if adjustments.iter().any(Option::is_some) {
                let mut relative = RelativeAdjustment::default();
                for a in adjustments.iter().flatten() {
                    relative.set(a.limit, a.charged);
                }
                session.adjustment = Some(relative);
            }
            if session.adjustment_due() {
                ratio_changes = session.adjust_ratios();
            }
            let everywhere = session.memory_released > 0 || !ratio_changes.is_empty();
            session.grant(if everywhere { None } else { Some(model) });
        }
        tracing::trace!(
            job_id = %job_id,
            model = %self.spec.models[model].name,
            known_usage = usage.is_some(),
            "settled"
        );
        for adjustment in adjustments.into_iter().flatten() {
            self.report_adjustment(job_id, model, job_type, adjustment);
        }
        self.report_ratio_changes(&ratio_changes);
        settlement
    }

    /// Settles a reservation whose attempt ended without a usage report (a panic, a cancelled
    /// job, a dropped lease): its estimate stays counted, its concurrency unit is freed; the
    /// fleet hears of it through the driver, since nothing here can wait.
    pub(crate) fn settle_unknown(&self, reservation: Reservation, job_id: &JobId) {
        if let Some(settlement) = self.settle(reservation, None, job_id) {
            self.report_later(settlement);
        }
    }

    /// Takes a waiter out of its queue, giving back anything granted to it meanwhile.
    fn abandon(&self, key: usize) {
        let granted = lock(&self.engine).leave(key);
        if let Some(Grant::Admitted(reservation)) = granted {
            self.unreserve(reservation);
        }
    }

    /// Gives back a reservation whose job never started.
    pub(crate) fn unreserve(&self, reservation: Reservation) {
        let now = self.clock.now();
        let model = reservation.model();
        let mut session = self.session();
        session.memory_released = session.unreserve(reservation, now);
        let released = session.memory_released > 0;
        session.grant(if released { None } else { Some(model) });
    }

    fn report_adjustment(&self, job_id: &JobId, model: usize, job_type: usize, a: Adjustment) {
        tracing::debug!(
            job_id = %job_id,
            model = %self.spec.models[model].name,
            limit = a.limit.key(),
            estimated = a.estimated,
            actual = a.actual,
            charged = a.charged,
            cross_window = a.cross_window,
            "{}",
            if a.charged > 0 { "overage" } else { "refund" }
        );
        self.emit(|spec| {
            Event::UsageAdjusted(UsageAdjustment {
                job_id: job_id.clone(),
                model: spec.models[model].name.clone(),
                job_type: spec.job_types[job_type].name.clone(),
                limit: a.limit,
                estimated: a.estimated,
                actual: a.actual,
                charged: a.charged,
                cross_window: a.cross_window,
            })
        });
    }

    fn report_ratio_changes(&self, changes: &[(usize, u64, u64)]) {
        #[allow(clippy::cast_precision_loss)] // ratios are at most 10^9
        let fraction = |ppb: u64| ppb as f64 / RATIO_ONE as f64;
        for &(job_type, from, to) in changes {
            tracing::debug!(
                job_type = %self.spec.job_types[job_type].name,
                from = fraction(from),
                to = fraction(to),
                "ratio adjusted"
            );
            self.emit(|spec| Event::RatioChanged {
                job_type: spec.job_types[job_type].name.clone(),
                from: fraction(from),
                to: fraction(to),
            });
        }
    }

    /// A snapshot of what this instance can start now.
    pub(crate) fn availability<M, J>(
        &self,
        model_of: impl Fn(usize) -> M,
        job_type_of: impl Fn(usize) -> J,
    ) -> Availability<M, J> {
        let now = self.clock.now();
        let mut session = self.session();
        session.refresh(now);
        session.availability(model_of, job_type_of)
    }

    /// Reports an event to the listener, if any; `make` runs only when someone listens.
    pub(crate) fn emit(&self, make: impl FnOnce(&Spec) -> Event) {
        if let Some(listener) = &self.listener {
            listener(&make(&self.spec));
        }
    }

    /// The timer's work: roll windows, adjust ratios on their cadence, measure memory.
    pub(crate) fn tick(&self, adjust_ratios: bool, measure_memory: bool) {
        let now = self.clock.now();
        let measured = measure_memory
            && lock(&self.memory)
                .as_ref()
                .is_some_and(|m| MemoryPool::global().remeasure_if_due(now, Some(m.id())));
        let ratio_changes = {
            let mut session = self.session();
            session.refresh(now);
            let changes = if adjust_ratios {
                session.adjust_ratios()
            } else {
                Vec::new()
            };
            if measured {
                session.mark(MEMORY);
            }
            if measured || !changes.is_empty() {
                session.grant(None);
            }
            changes
        };
        self.report_ratio_changes(&ratio_changes);
    }

    /// Spawns a job task, registered so that `stop()` can end it.
    pub(crate) fn spawn_job<Fut>(
        &self,
        id: &JobId,
        hash: IdHash,
        task: impl FnOnce(TaskKey) -> Fut,
    ) -> (TaskKey, JoinHandle<Fut::Output>)
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.tasks.spawn(&self.runtime, id, hash, task)
    }

    /// Stops admitting, fails waiting jobs, lets running jobs finish within `grace`, then
    /// aborts the rest, stops the timer task and leaves the fleet.
    pub(crate) async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        {
            let mut session = self.session();
            let mut wake = std::mem::take(&mut session.wake);
            session.close(&mut wake);
            session.wake = wake;
        }
        let deadline = self.clock.now().saturating_add(grace);
        self.tasks.drained(self.clock.sleep_until(deadline)).await;
        self.tasks.abort_all();
        self.tasks.drained(std::future::pending()).await;
        let tasks = std::mem::take(&mut *lock(&self.tasks_in_background));
        for (stop, task) in tasks {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.leave_fleet().await;
        lock(&self.memory).take();
    }
}

impl MemoryWatcher for Core {
    fn memory_changed(&self) {
        let mut session = self.session();
        session.mark(MEMORY);
        session.grant(None);
    }
}

/// A job waiting in a queue; leaves it when dropped.
struct Waiter<'a> {
    core: &'a Core,
    key: Option<usize>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.core.abandon(key);
        }
    }
}
