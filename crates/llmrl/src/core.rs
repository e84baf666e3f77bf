//! The shared state behind both faces of a limiter: the engine under a mutex, the clock, the
//! registry of job tasks and the timer task that rolls windows.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

use crate::availability::Availability;
use crate::clock::{Clock, Timestamp};
use crate::config::{Spec, WaitBound};
use crate::engine::{Adjustment, Arrival, Engine, Grant, Reservation};
use crate::error::BuildError;
use crate::event::{Event, Listener, UsageAdjustment};
use crate::job::JobId;
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

pub(crate) struct Core {
    pub(crate) spec: Spec,
    pub(crate) clock: Clock,
    pub(crate) instance_id: String,
    engine: Mutex<Engine>,
    /// Abort handles of live job tasks, so `stop()` can end them.
    tasks: Mutex<Slab<AbortHandle>>,
    drained: Notify,
    stopping: AtomicBool,
    runtime: Handle,
    listener: Option<Listener>,
    /// Stops the timer task: dropping the sender (with the core) stops it too.
    driver: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

fn wake_all(wake: Vec<Waker>) {
    for waker in wake {
        waker.wake();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The engine never panics while holding the lock; if user code somehow did, the state is
    // still consistent between operations.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Core {
    pub(crate) fn start(
        spec: Spec,
        clock: Clock,
        listener: Option<Listener>,
    ) -> Result<Arc<Self>, BuildError> {
        let runtime = Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let now = clock.now();
        let instance_id = spec
            .instance_id
            .clone()
            .unwrap_or_else(crate::instance::generate_id);
        for warning in &spec.warnings {
            tracing::warn!(instance = %instance_id, "{warning}");
        }
        let core = Arc::new(Self {
            engine: Mutex::new(Engine::new(&spec, now)),
            spec,
            clock,
            instance_id,
            tasks: Mutex::new(Slab::new()),
            drained: Notify::new(),
            stopping: AtomicBool::new(false),
            runtime,
            listener,
            driver: Mutex::new(None),
        });
        let (stop, stopped) = oneshot::channel();
        let task = core
            .runtime
            .spawn(drive(Arc::downgrade(&core), core.clock.clone(), stopped));
        *lock(&core.driver) = Some((stop, task));
        Ok(core)
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Capacity for one job of `job_type` on `model`: at once, or after waiting up to the job
    /// type's `max_wait` for that model in FIFO order.
    ///
    /// Cancel safe: dropped while waiting, the waiter leaves its queue and gives back anything
    /// granted to it meanwhile.
    pub(crate) async fn acquire(&self, model: usize, job_type: usize) -> Acquire {
        let now = self.clock.now();
        let mut wake = Vec::new();
        let queued = {
            let mut engine = self.engine();
            if engine.refresh(now) {
                engine.grant(None, &mut wake);
            }
            match engine.arrive(model, job_type) {
                Arrival::Admitted(reservation) => Err(Acquire::Admitted(reservation)),
                Arrival::Closed => Err(Acquire::Closed),
                Arrival::Wait => match self.spec.job_types[job_type].max_wait[model] {
                    WaitBound::For(d) if d.is_zero() => Err(Acquire::TimedOut),
                    bound => {
                        let deadline = match bound {
                            WaitBound::For(d) => now.saturating_add(d),
                            WaitBound::NextMinute => Window::Minute
                                .next_boundary(now)
                                .saturating_add(DEFAULT_WAIT_AFTER_BOUNDARY),
                        };
                        Ok((engine.enqueue(model, job_type), deadline))
                    }
                },
            }
        };
        wake_all(wake);
        let (key, deadline) = match queued {
            Ok(queued) => queued,
            Err(done) => return done,
        };
        let mut waiter = Waiter {
            core: self,
            model,
            key: Some(key),
        };
        let mut sleep = pin!(self.clock.sleep_until(deadline));
        let granted = poll_fn(|cx| {
            if let Some(grant) = self.engine().poll_grant(key, cx.waker()) {
                return Poll::Ready(Some(grant));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await;
        waiter.key = None;
        match granted.or_else(|| waiter.time_out(key)) {
            Some(Grant::Admitted(reservation)) => Acquire::Admitted(reservation),
            Some(Grant::Closed) => Acquire::Closed,
            None => Acquire::TimedOut,
        }
    }

    /// Settles a reservation with the attempt's usage (`None`: unknown, the estimate stays).
    pub(crate) fn settle(&self, reservation: Reservation, usage: Option<&Usage>, job_id: &JobId) {
        let now = self.clock.now();
        let model = reservation.model;
        let job_type = reservation.job_type;
        let mut wake = Vec::new();
        let mut adjustments = [None; 4];
        {
            let mut engine = self.engine();
            let rolled = engine.refresh(now);
            engine.settle(reservation, usage, now, &mut adjustments);
            engine.grant(if rolled { None } else { Some(model) }, &mut wake);
        }
        wake_all(wake);
        for adjustment in adjustments.into_iter().flatten() {
            self.report_adjustment(job_id, model, job_type, adjustment);
        }
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

    /// A snapshot of what this instance can start now.
    pub(crate) fn availability<M, J>(
        &self,
        model_of: impl Fn(usize) -> M,
        job_type_of: impl Fn(usize) -> J,
    ) -> Availability<M, J> {
        let now = self.clock.now();
        let mut wake = Vec::new();
        let snapshot = {
            let mut engine = self.engine();
            if engine.refresh(now) {
                engine.grant(None, &mut wake);
            }
            engine.availability(model_of, job_type_of, |t| self.spec.job_types[t].flexible)
        };
        wake_all(wake);
        snapshot
    }

    /// Reports an event to the listener, if any; `make` runs only when someone listens.
    pub(crate) fn emit(&self, make: impl FnOnce(&Spec) -> Event) {
        if let Some(listener) = &self.listener {
            listener(&make(&self.spec));
        }
    }

    /// Rolls windows and wakes whoever the new windows admit.
    fn tick(&self) {
        let now = self.clock.now();
        let mut wake = Vec::new();
        {
            let mut engine = self.engine();
            if engine.refresh(now) {
                engine.grant(None, &mut wake);
            }
        }
        wake_all(wake);
    }

    /// Spawns a job task, registered so that `stop()` can end it.
    pub(crate) fn spawn_job<Fut>(&self, task: impl FnOnce(usize) -> Fut) -> AbortHandle
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = lock(&self.tasks);
        let entry = tasks.vacant_entry();
        let key = entry.key();
        // Spawning under the lock: the task cannot deregister before it is registered.
        let handle = self.runtime.spawn(task(key));
        entry.insert(handle.abort_handle());
        handle.abort_handle()
    }

    /// A job task ended (or was dropped).
    pub(crate) fn job_ended(&self, key: usize) {
        let mut tasks = lock(&self.tasks);
        tasks.try_remove(key);
        if tasks.is_empty() && self.is_stopping() {
            self.drained.notify_waiters();
        }
    }

    /// Stops admitting, fails waiting jobs, lets running jobs finish within `grace`, then
    /// aborts the rest and stops the timer task.
    pub(crate) async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        let mut wake = Vec::new();
        self.engine().close(&mut wake);
        wake_all(wake);
        let deadline = self.clock.now().saturating_add(grace);
        self.drain(Some(deadline)).await;
        let running: Vec<AbortHandle> = lock(&self.tasks).iter().map(|(_, a)| a.clone()).collect();
        for task in running {
            task.abort();
        }
        self.drain(None).await;
        let driver = lock(&self.driver).take();
        if let Some((stop, task)) = driver {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Waits until no job task is left, or until `deadline`.
    async fn drain(&self, deadline: Option<Timestamp>) {
        let mut sleep = pin!(
            self.clock
                .sleep_until(deadline.unwrap_or(Timestamp::from_millis(u64::MAX)))
        );
        loop {
            let mut notified = pin!(self.drained.notified());
            notified.as_mut().enable();
            if lock(&self.tasks).is_empty() {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = sleep.as_mut(), if deadline.is_some() => return,
            }
        }
    }
}

/// A job waiting in a queue; leaves it when dropped.
struct Waiter<'a> {
    core: &'a Core,
    model: usize,
    key: Option<usize>,
}

impl Waiter<'_> {
    /// The wait bound passed: capacity that returns exactly now still counts (SPEC §10).
    fn time_out(&self, key: usize) -> Option<Grant> {
        let now = self.core.clock.now();
        let mut wake = Vec::new();
        let grant = {
            let mut engine = self.core.engine();
            let rolled = engine.refresh(now);
            engine.grant(if rolled { None } else { Some(self.model) }, &mut wake);
            engine.leave(key)
        };
        wake_all(wake);
        grant
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let now = self.core.clock.now();
        let mut wake = Vec::new();
        {
            let mut engine = self.core.engine();
            if let Some(Grant::Admitted(reservation)) = engine.leave(key) {
                engine.unreserve(reservation, now);
                engine.grant(Some(self.model), &mut wake);
            }
        }
        wake_all(wake);
    }
}

/// The timer task: wakes at every minute boundary so waiters are admitted when a window rolls
/// over even if no job finishes.
async fn drive(core: Weak<Core>, clock: Clock, mut stop: oneshot::Receiver<()>) {
    loop {
        let next = Window::Minute.next_boundary(clock.now());
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = clock.sleep_until(next) => {}
        }
        let Some(core) = core.upgrade() else { return };
        core.tick();
    }
}
