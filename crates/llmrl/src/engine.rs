//! The engine: one instance's counters, budgets and wait queues, on dense indices.
//!
//! Synchronous and clock-free: every operation takes `now` from its caller, and nothing here
//! sleeps, spawns or calls user code. [`crate::core`] wraps it in a mutex and drives it.
//!
//! Waiting is *grant-on-wake*: when capacity returns, the engine reserves it for the waiters at
//! the head of each (model, job type) queue, in FIFO order, and hands their wakers back to the
//! caller. A waiter never races new arrivals for capacity it was woken for.

use std::collections::VecDeque;
use std::task::Waker;

use slab::Slab;

use crate::availability::{
    Availability, JobTypeAvailability, JobTypeOnModel, MemoryAvailability, ModelAvailability,
    Remaining,
};
use crate::backend::{FailureMode, FleetFigures, OwnUsage, Windows, fair_share};
use crate::clock::Timestamp;
use crate::config::{RATIO_ONE, RatioAdjustmentSpec, Spec};
use crate::deadlines::Deadlines;
use crate::memory::MemoryPool;
use crate::notify::SlotsChangeReason;
use crate::ratio::{self, TypeLoad};
use crate::slots::{self, UNBOUNDED};
use crate::usage::Usage;
use crate::window::{Window, WindowLimit};

/// Index of the concurrency resource, after the four window limits.
pub(crate) const CONCURRENCY: usize = 4;
/// Window limits plus concurrency.
pub(crate) const RESOURCES: usize = 5;
/// Bit of memory in the dirty mask (after the five resources).
pub(crate) const MEMORY: usize = 5;
/// Bit of the fleet's share in the dirty mask.
pub(crate) const DISTRIBUTED: usize = 6;

/// Capacity taken for one job on one model; turned back by [`Engine::settle`] or
/// [`Engine::unreserve`]. Plain data: the RAII guard lives in the job task.
#[derive(Debug)]
pub(crate) struct Reservation {
    // Indexes kept small: a waiting job carries its reservation in a few places.
    model: u32,
    job_type: u32,
    /// Taken while the fleet backend had to confirm admissions (it was answering).
    pub(crate) unconfirmed: bool,
    minute: u64,
    day: u64,
    memory_kb: u64,
    /// The windows the fleet backend reserved in, by its own clock (which may be the server's).
    pub(crate) backend_windows: Option<Windows>,
}

impl Reservation {
    pub(crate) const fn model(&self) -> usize {
        self.model as usize
    }

    pub(crate) const fn job_type(&self) -> usize {
        self.job_type as usize
    }

    /// The windows the reservation was taken in, as the backend counts them.
    pub(crate) fn windows(&self) -> Windows {
        self.backend_windows.unwrap_or(Windows {
            minute: self.minute,
            day: self.day,
        })
    }
}

/// What happened to a new arrival.
pub(crate) enum Arrival {
    Admitted(Reservation),
    /// No capacity now, or earlier waiters of the same (model, job type) go first.
    Wait,
    Closed,
}

/// What a waiter got.
pub(crate) enum Grant {
    Admitted(Reservation),
    /// Its deadline passed first.
    TimedOut,
    Closed,
}

/// One settled window limit whose actual usage differed from the estimate (SPEC §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Adjustment {
    pub(crate) limit: WindowLimit,
    pub(crate) estimated: u64,
    pub(crate) actual: u64,
    /// What the counter moved by: `actual − estimated` in the same window, the overage alone
    /// when the window of the reservation is over.
    pub(crate) charged: i64,
    pub(crate) cross_window: bool,
}

struct Resource {
    limit: Option<u64>,
    /// Units this instance used in the current window (in flight, for concurrency).
    used: u64,
    /// The same per job type.
    by_type: Vec<u64>,
    /// Each type's entitlement in nano-units, from its ratio and the instance's share.
    entitlement: Vec<u128>,
    /// What this instance knows of the fleet's use of this limit; `None` when alone.
    fleet: Option<FleetResource>,
}

/// One limit as a fleet member sees it (SPEC §7.1).
#[derive(Clone, Copy, Debug, Default)]
struct FleetResource {
    /// This instance's fair share.
    share: u64,
    /// Used by the whole fleet in the current window (in flight, for concurrency).
    used: u64,
    /// What the other instances have not used of their shares.
    others_unused: u64,
}

impl Resource {
    /// The base of the job types' parts: the limit alone, the fair share in a fleet, and
    /// during a backend outage what the failure mode allows (the whole limit when `open`, the
    /// last known share without the remainder otherwise).
    fn share(&self, outage: Option<FailureMode>, instances: u32) -> Option<u64> {
        self.limit.map(|limit| match (self.fleet, outage) {
            (None, _) | (Some(_), Some(FailureMode::Open)) => limit,
            (Some(_), Some(FailureMode::LastKnownShare)) => limit / u64::from(instances.max(1)),
            (Some(fleet), _) => fleet.share,
        })
    }

    /// What this instance may still take (`A`, SPEC §6.1, §7.1); negative when the fleet's
    /// counter is past the limit (an overage), so that nothing, not even a zero estimate,
    /// starts.
    fn available(&self, outage: Option<FailureMode>, instances: u32) -> i128 {
        let Some(limit) = self.limit else {
            return i128::MAX;
        };
        let own = i128::from(self.used);
        let Some(fleet) = self.fleet else {
            return i128::from(limit) - own;
        };
        match outage {
            Some(FailureMode::Closed) => -1,
            Some(FailureMode::Open) => i128::from(limit) - own,
            // The last known share, without the remainder units (SPEC §10).
            Some(_) => i128::from(limit / u64::from(instances.max(1))) - own,
            None => {
                let remaining = i128::from(limit) - i128::from(fleet.used);
                if remaining < 0 {
                    return remaining;
                }
                let unused = fair_share::unused(fleet.share, self.used);
                let part = fair_share::available(unused, unused + fleet.others_unused, remaining);
                i128::from(part)
            }
        }
    }

    /// Moves this instance's usage, and its view of the fleet's, by `delta`.
    fn add(&mut self, job_type: usize, delta: i128) {
        let shift = |value: &mut u64| *value = add(*value, delta);
        shift(&mut self.used);
        shift(&mut self.by_type[job_type]);
        if let Some(fleet) = &mut self.fleet {
            shift(&mut fleet.used);
        }
    }
}

fn add(value: u64, delta: i128) -> u64 {
    u64::try_from((i128::from(value) + delta).max(0)).unwrap_or(u64::MAX)
}

struct ModelState {
    resources: [Resource; RESOURCES],
    min_capacity: Option<u64>,
    max_capacity: Option<u64>,
    /// The backend state version of the fleet figures taken in last.
    fleet_version: u64,
}

enum WaitState {
    Waiting(Option<Waker>),
    Granted(Reservation),
    TimedOut,
    Cancelled,
    Closed,
}

struct Waiter {
    queue: usize,
    deadline: Timestamp,
    state: WaitState,
}

/// This limiter's part of the process memory pool, per job type.
struct MemoryUse {
    pool: &'static MemoryPool,
    /// KB held by running jobs, per job type.
    held: Vec<u64>,
}

pub(crate) struct Engine {
    /// Live instances of the fleet (1 when alone).
    instances: u32,
    /// Set while the fleet backend is unreachable: how to admit meanwhile.
    outage: Option<FailureMode>,
    /// A fleet member: the backend confirms admissions while it answers.
    in_fleet: bool,
    /// Per (model, type): the fair share of some limit is smaller than one job of the type.
    stranded: Vec<bool>,
    newly_stranded: Vec<(usize, usize)>,
    /// Estimates per job type, indexed like the resources (concurrency: 1).
    estimates: Vec<[u64; RESOURCES]>,
    memory_kb: Vec<u64>,
    ratios: Vec<u64>,
    flexible: Vec<bool>,
    adjustment: RatioAdjustmentSpec,
    /// Settlements since the last ratio adjustment.
    releases: u64,
    memory: Option<MemoryUse>,
    /// Resources changed since the last slot check, one bit each (see [`SlotsChangeReason`]).
    dirty: u8,
    /// Slots per (model, type), then per type, at the last check.
    last_slots: Vec<u64>,
    /// The same, being computed: swapped with `last_slots` when they differ, so that checking
    /// does not allocate.
    next_slots: Vec<u64>,
    models: Vec<ModelState>,
    job_types: usize,
    minute: u64,
    day: u64,
    waiters: Slab<Waiter>,
    /// FIFO of waiter keys per (model, job type): index `model * job_types + job_type`.
    queues: Vec<VecDeque<usize>>,
    /// Live (not cancelled) waiters per queue.
    live: Vec<usize>,
    waiting: usize,
    deadlines: Deadlines,
    closed: bool,
    // Scratch buffers for slot computation, so the hot path does not allocate.
    parts: Vec<u128>,
    column: Vec<u64>,
    per_resource: Vec<u64>,
    out: Vec<u64>,
}

fn estimates_of(spec: &Spec) -> Vec<[u64; RESOURCES]> {
    spec.job_types
        .iter()
        .map(|t| {
            let mut e = [1; RESOURCES];
            for limit in WindowLimit::ALL {
                e[limit.index()] = t.estimate(limit);
            }
            e
        })
        .collect()
}

impl Engine {
    /// An engine for `spec`; `fleet` when a backend shares the limits with other instances
    /// (until the backend says otherwise, the instance behaves as if alone).
    pub(crate) fn new(spec: &Spec, now: Timestamp, fleet: bool) -> Self {
        let job_types = spec.job_types.len();
        let models = spec
            .models
            .iter()
            .map(|m| {
                let limit = |r: usize| {
                    if r == CONCURRENCY {
                        m.concurrency
                    } else {
                        m.limits[r]
                    }
                };
                ModelState {
                    resources: std::array::from_fn(|r| Resource {
                        limit: limit(r),
                        used: 0,
                        by_type: vec![0; job_types],
                        entitlement: vec![0; job_types],
                        fleet: fleet.then(|| FleetResource {
                            share: limit(r).unwrap_or(0),
                            ..FleetResource::default()
                        }),
                    }),
                    min_capacity: m.min_capacity,
                    max_capacity: m.max_capacity,
                    fleet_version: 0,
                }
            })
            .collect();
        let queues = spec.models.len() * job_types;
        let memory_kb: Vec<u64> = spec.job_types.iter().map(|t| t.memory_kb).collect();
        let mut engine = Self {
            estimates: estimates_of(spec),
            memory: memory_kb.iter().any(|&kb| kb > 0).then(|| MemoryUse {
                pool: MemoryPool::global(),
                held: vec![0; job_types],
            }),
            memory_kb,
            ratios: spec.job_types.iter().map(|t| t.ratio).collect(),
            flexible: spec.job_types.iter().map(|t| t.flexible).collect(),
            adjustment: spec.ratio_adjustment.clone(),
            releases: 0,
            dirty: 0,
            last_slots: Vec::new(),
            next_slots: Vec::new(),
            models,
            job_types,
            minute: Window::Minute.index_at(now),
            day: Window::Day.index_at(now),
            waiters: Slab::new(),
            queues: (0..queues).map(|_| VecDeque::new()).collect(),
            live: vec![0; queues],
            waiting: 0,
            deadlines: Deadlines::default(),
            closed: false,
            instances: 1,
            outage: None,
            in_fleet: fleet,
            stranded: vec![false; queues],
            newly_stranded: Vec::new(),
            parts: vec![0; job_types],
            column: vec![0; job_types],
            per_resource: vec![0; job_types],
            out: vec![0; job_types],
        };
        engine.recompute_entitlements();
        engine
    }

    /// Entitlements follow ratios and shares; recompute after either changes.
    fn recompute_entitlements(&mut self) {
        let (outage, instances) = (self.outage, self.instances);
        for (m, model) in self.models.iter_mut().enumerate() {
            let stranded = &mut self.stranded[m * self.job_types..(m + 1) * self.job_types];
            let was = stranded.to_vec();
            stranded.fill(false);
            for (r, resource) in model.resources.iter_mut().enumerate() {
                let Some(share) = resource.share(outage, instances) else {
                    continue;
                };
                // A share smaller than one job: the type can never start here at this fleet
                // size (SPEC §7.1), which is reported, not left silent.
                if resource.fleet.is_some() {
                    for (t, stranded) in stranded.iter_mut().enumerate() {
                        *stranded |= self.estimates[t][r] > share;
                    }
                }
                for (t, ent) in resource.entitlement.iter_mut().enumerate() {
                    *ent = slots::entitlement(
                        self.ratios[t],
                        share,
                        self.estimates[t][r],
                        model.min_capacity,
                        model.max_capacity,
                    );
                }
            }
            for (t, (&now, was)) in stranded.iter().zip(was).enumerate() {
                if now && !was {
                    self.newly_stranded.push((m, t));
                }
            }
        }
    }

    /// The (model, job type) pairs whose fair share became smaller than one job since the last
    /// call.
    pub(crate) fn take_newly_stranded(&mut self) -> Vec<(usize, usize)> {
        std::mem::take(&mut self.newly_stranded)
    }

    /// Rolls the minute and day windows forward to `now`; true when a window ended.
    pub(crate) fn refresh(&mut self, now: Timestamp) -> bool {
        let minute = Window::Minute.index_at(now);
        let day = Window::Day.index_at(now);
        let mut rolled = false;
        for (window, current, new) in [
            (Window::Minute, &mut self.minute, minute),
            (Window::Day, &mut self.day, day),
        ] {
            // A clock that steps back never reopens a window.
            if new <= *current {
                continue;
            }
            *current = new;
            rolled = true;
            for model in &mut self.models {
                for limit in WindowLimit::ALL
                    .into_iter()
                    .filter(|l| l.window() == window)
                {
                    let resource = &mut model.resources[limit.index()];
                    if resource.limit.is_some() && resource.used > 0 {
                        self.dirty |= 1 << limit.index();
                    }
                    resource.used = 0;
                    resource.by_type.fill(0);
                    if let Some(fleet) = &mut resource.fleet {
                        fleet.used = 0;
                    }
                }
            }
        }
        rolled
    }

    /// Slots of every job type on `model`, into `self.out` (SPEC §6.1: the minimum over the
    /// model's limits of whole jobs each type's part allows).
    fn compute_slots(&mut self, model: usize) {
        if self.closed_by_outage() {
            self.out.fill(0);
            return;
        }
        self.out.fill(UNBOUNDED);
        let state = &self.models[model];
        for (r, resource) in state.resources.iter().enumerate() {
            if resource.limit.is_none() {
                continue;
            }
            for t in 0..self.job_types {
                self.parts[t] = slots::part(resource.entitlement[t], resource.by_type[t]);
                self.column[t] = self.estimates[t][r];
            }
            let available = resource.available(self.outage, self.instances);
            slots::slots(available, &self.parts, &self.column, &mut self.per_resource);
            for (best, &n) in self.out.iter_mut().zip(&self.per_resource) {
                *best = (*best).min(n);
            }
        }
        if self.memory.is_some() {
            for t in 0..self.job_types {
                self.out[t] = self.out[t].min(self.memory_slots(t));
            }
        }
    }

    /// The fleet backend is unreachable and the failure mode is `closed`: nothing starts, on
    /// any model, limited or not (SPEC §7.4).
    fn closed_by_outage(&self) -> bool {
        self.in_fleet && self.outage == Some(FailureMode::Closed)
    }

    /// Whether one job of `job_type` can start on `model`: `slots(model, job_type) ≥ 1`, decided
    /// without divisions in the common case (a type's own part covers the job and the parts are
    /// not scaled down); the full computation runs only when parts must be scaled.
    fn fits(&mut self, model: usize, job_type: usize) -> bool {
        const ONE: u128 = RATIO_ONE as u128;
        if self.closed_by_outage() {
            return false;
        }
        let estimates = self.estimates[job_type];
        let mut scaled = false;
        for (r, resource) in self.models[model].resources.iter().enumerate() {
            if resource.limit.is_none() {
                continue;
            }
            let available = resource.available(self.outage, self.instances);
            let estimate = estimates[r];
            if estimate == 0 {
                if available < 0 {
                    return false;
                }
                continue;
            }
            // Scaling only shrinks parts and the leftover never exceeds a type's own part, so
            // the job must fit both what is available and its own part.
            let own = slots::part(resource.entitlement[job_type], resource.by_type[job_type]);
            if available < i128::from(estimate) || own < u128::from(estimate) * ONE {
                return false;
            }
            let total: u128 = if self.job_types == 1 {
                own
            } else {
                (0..self.job_types)
                    .map(|t| slots::part(resource.entitlement[t], resource.by_type[t]))
                    .sum()
            };
            // Unscaled, the own part decides; a lone type's scaled part is all that is
            // available, which was checked above.
            #[allow(clippy::cast_sign_loss)] // available ≥ estimate > 0 here
            let available = available as u128;
            scaled |= self.job_types > 1 && total > available * ONE;
        }
        if scaled {
            return self.slots(model, job_type) > 0;
        }
        self.memory_slots(job_type) > 0
    }

    /// Jobs of `job_type` whose memory fits (SPEC §6.3): its ratio of the process budget less
    /// what it holds, and never more than the process has free.
    fn memory_slots(&self, job_type: usize) -> u64 {
        let (Some(memory), estimate) = (&self.memory, self.memory_kb[job_type]) else {
            return UNBOUNDED;
        };
        if estimate == 0 {
            return UNBOUNDED;
        }
        let (total, free) = memory.pool.figures();
        let part = slots::part(
            u128::from(self.ratios[job_type]) * u128::from(total),
            memory.held[job_type],
        ) / u128::from(RATIO_ONE);
        let kb = part.min(u128::from(free));
        u64::try_from(kb / u128::from(estimate)).unwrap_or(UNBOUNDED)
    }

    /// Whether a job of `job_type` could never fit the whole process budget.
    pub(crate) fn never_fits_memory(&self, job_type: usize) -> bool {
        self.memory
            .as_ref()
            .is_some_and(|m| self.memory_kb[job_type] > m.pool.figures().0)
    }

    /// Slots of `job_type` on `model` now.
    pub(crate) fn slots(&mut self, model: usize, job_type: usize) -> u64 {
        self.compute_slots(model);
        self.out[job_type]
    }

    /// Reserves one job of `job_type` on `model` now if it fits, whoever waits (a job the
    /// fleet backend could not confirm, re-checked under the failure mode).
    pub(crate) fn reserve_now(&mut self, model: usize, job_type: usize) -> Option<Reservation> {
        self.try_reserve(model, job_type)
    }

    /// Live instances of the fleet (1 when alone).
    pub(crate) const fn instances(&self) -> u32 {
        self.instances
    }

    /// Reserves one job of `job_type` on `model` if it fits: its slot, then its memory from the
    /// process pool (which other limiters share, so it is taken last).
    fn try_reserve(&mut self, model: usize, job_type: usize) -> Option<Reservation> {
        if self.closed || !self.fits(model, job_type) {
            return None;
        }
        let memory_kb = self.memory_kb[job_type];
        if let Some(memory) = &mut self.memory {
            if memory_kb > 0 {
                if !memory.pool.try_take(memory_kb) {
                    return None;
                }
                memory.held[job_type] += memory_kb;
                self.dirty |= 1 << MEMORY;
            }
        }
        let estimates = self.estimates[job_type];
        for (r, resource) in self.models[model].resources.iter_mut().enumerate() {
            resource.add(job_type, i128::from(estimates[r]));
            if resource.limit.is_some() && estimates[r] > 0 {
                self.dirty |= 1 << r;
            }
        }
        // Both indexes are below counts of configured things, far from `u32::MAX`.
        #[allow(clippy::cast_possible_truncation)]
        Some(Reservation {
            model: model as u32,
            job_type: job_type as u32,
            unconfirmed: self.in_fleet && self.outage.is_none(),
            minute: self.minute,
            day: self.day,
            memory_kb,
            backend_windows: None,
        })
    }

    /// Dirty bits of the resources `model` limits.
    fn limited(&self, model: usize) -> u8 {
        self.models[model]
            .resources
            .iter()
            .enumerate()
            .filter(|(_, r)| r.limit.is_some())
            .fold(0, |bits, (r, _)| bits | 1 << r)
    }

    /// Gives a reservation's memory back to this limiter's part; returns the KB for the pool's
    /// other members to hear about (after the engine lock is released).
    fn release_memory(&mut self, reservation: &Reservation) -> u64 {
        let Some(memory) = &mut self.memory else {
            return 0;
        };
        if reservation.memory_kb == 0 {
            return 0;
        }
        let held = &mut memory.held[reservation.job_type()];
        *held = held.saturating_sub(reservation.memory_kb);
        memory.pool.put_back(reservation.memory_kb);
        self.dirty |= 1 << MEMORY;
        reservation.memory_kb
    }

    /// A new job asks for `model`: admitted at once only if nobody of its (model, job type) is
    /// already waiting and it fits.
    pub(crate) fn arrive(&mut self, model: usize, job_type: usize) -> Arrival {
        if self.closed {
            return Arrival::Closed;
        }
        if self.live[self.queue_of(model, job_type)] > 0 {
            return Arrival::Wait;
        }
        self.try_reserve(model, job_type)
            .map_or(Arrival::Wait, Arrival::Admitted)
    }

    const fn queue_of(&self, model: usize, job_type: usize) -> usize {
        model * self.job_types + job_type
    }

    /// Puts a waiter at the back of its queue (at the front if it `keeps_place`, having been
    /// admitted here before the fleet refused it) until `deadline`; returns its key.
    pub(crate) fn enqueue(
        &mut self,
        model: usize,
        job_type: usize,
        keeps_place: bool,
        deadline: Timestamp,
    ) -> usize {
        let queue = self.queue_of(model, job_type);
        let key = self.waiters.insert(Waiter {
            queue,
            deadline,
            state: WaitState::Waiting(None),
        });
        if keeps_place {
            self.queues[queue].push_front(key);
        } else {
            self.queues[queue].push_back(key);
        }
        self.live[queue] += 1;
        self.waiting += 1;
        let waiters = &self.waiters;
        self.deadlines.sweep(self.waiting, |at, key| {
            waiters
                .get(key)
                .is_some_and(|w| w.deadline == at && matches!(w.state, WaitState::Waiting(_)))
        });
        self.deadlines.push(deadline, key);
        key
    }

    /// Whether the timer task must be told of a new, earlier deadline.
    pub(crate) fn take_rearm(&mut self) -> bool {
        self.deadlines.take_rearm()
    }

    /// Times out the waiters whose deadline is `now` or earlier, pushing their wakers; returns
    /// the next deadline.
    pub(crate) fn expire(&mut self, now: Timestamp, wake: &mut Vec<Waker>) -> Option<Timestamp> {
        while let Some((at, key)) = self.deadlines.pop_due(now) {
            let Some(waiter) = self.waiters.get_mut(key) else {
                continue;
            };
            if waiter.deadline != at || !matches!(waiter.state, WaitState::Waiting(_)) {
                continue;
            }
            if let WaitState::Waiting(Some(waker)) =
                std::mem::replace(&mut waiter.state, WaitState::TimedOut)
            {
                wake.push(waker);
            }
            let queue = waiter.queue;
            // Deadlines follow arrival order, so the waiter is at (or near) the front.
            if let Some(position) = self.queues[queue].iter().position(|&k| k == key) {
                self.queues[queue].remove(position);
            }
            self.live[queue] -= 1;
            self.waiting -= 1;
            self.drop_tombstones(queue);
        }
        self.deadlines.arm()
    }

    /// The waiter's grant if it has one (removing the waiter), else registers `waker`.
    pub(crate) fn poll_grant(&mut self, key: usize, waker: &Waker) -> Option<Grant> {
        let waiter = self.waiters.get_mut(key)?;
        if let WaitState::Waiting(slot) = &mut waiter.state {
            match slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
            return None;
        }
        self.take_grant(key)
    }

    fn take_grant(&mut self, key: usize) -> Option<Grant> {
        match self.waiters.try_remove(key)?.state {
            WaitState::Granted(reservation) => Some(Grant::Admitted(reservation)),
            WaitState::TimedOut => Some(Grant::TimedOut),
            WaitState::Closed => Some(Grant::Closed),
            WaitState::Waiting(_) | WaitState::Cancelled => None,
        }
    }

    /// The waiter stops waiting (dropped). Returns what it was granted meanwhile, which the
    /// caller must use or give back.
    pub(crate) fn leave(&mut self, key: usize) -> Option<Grant> {
        let waiter = self.waiters.get_mut(key)?;
        if !matches!(waiter.state, WaitState::Waiting(_)) {
            return self.take_grant(key);
        }
        waiter.state = WaitState::Cancelled;
        let queue = waiter.queue;
        self.live[queue] -= 1;
        self.waiting -= 1;
        self.drop_tombstones(queue);
        None
    }

    /// Once only cancelled waiters are left in a queue, drops them, so that they never pile up.
    fn drop_tombstones(&mut self, queue: usize) {
        if self.live[queue] == 0 {
            for key in self.queues[queue].drain(..) {
                self.waiters.remove(key);
            }
        }
    }

    /// Grants capacity to waiters on `model` (or on every model), FIFO per queue, pushing the
    /// wakers of those granted.
    pub(crate) fn grant(&mut self, model: Option<usize>, wake: &mut Vec<Waker>) {
        if self.waiting == 0 || self.closed {
            return;
        }
        let models = model.map_or(0..self.models.len(), |m| m..m + 1);
        for m in models {
            for t in 0..self.job_types {
                let queue = self.queue_of(m, t);
                while self.live[queue] > 0 {
                    let Some(&key) = self.queues[queue].front() else {
                        break;
                    };
                    if matches!(self.waiters[key].state, WaitState::Cancelled) {
                        self.queues[queue].pop_front();
                        self.waiters.remove(key);
                        continue;
                    }
                    let Some(reservation) = self.try_reserve(m, t) else {
                        break;
                    };
                    self.queues[queue].pop_front();
                    self.live[queue] -= 1;
                    self.waiting -= 1;
                    let state = std::mem::replace(
                        &mut self.waiters[key].state,
                        WaitState::Granted(reservation),
                    );
                    if let WaitState::Waiting(Some(waker)) = state {
                        wake.push(waker);
                    }
                }
            }
        }
    }

    /// Replaces a reservation by actual usage (SPEC §4.2), or keeps the estimates when the usage
    /// is unknown (§4.3); frees the concurrency unit either way. Reports each window limit whose
    /// counter moved in `adjustments` (indexed like [`WindowLimit::ALL`]).
    /// Returns the memory released, for the pool's other members.
    pub(crate) fn settle(
        &mut self,
        reservation: Reservation,
        actual: Option<&Usage>,
        now: Timestamp,
        adjustments: &mut [Option<Adjustment>; 4],
    ) -> u64 {
        self.refresh(now);
        let released = self.release_memory(&reservation);
        self.releases += 1;
        let (model, job_type) = (reservation.model(), reservation.job_type());
        let Reservation { minute, day, .. } = reservation;
        let estimates = self.estimates[job_type];
        let (current_minute, current_day) = (self.minute, self.day);
        let resources = &mut self.models[model].resources;
        if let Some(usage) = actual {
            for limit in WindowLimit::ALL {
                let r = limit.index();
                let estimated = estimates[r];
                let actual = if limit.counts_tokens() {
                    usage.total_tokens()
                } else {
                    usage.requests
                };
                let same_window = match limit.window() {
                    Window::Minute => minute == current_minute,
                    Window::Day => day == current_day,
                };
                let resource = &mut resources[r];
                // Within the reservation's window the counter still holds the estimate; after
                // it, only an overage is charged, to the current window.
                let charged = if same_window {
                    i128::from(actual) - i128::from(estimated)
                } else {
                    i128::from(actual.saturating_sub(estimated))
                };
                resource.add(job_type, charged);
                if charged != 0 && resource.limit.is_some() {
                    self.dirty |= 1 << r;
                    adjustments[r] = Some(Adjustment {
                        limit,
                        estimated,
                        actual,
                        charged: i64::try_from(charged).unwrap_or(i64::MAX),
                        cross_window: !same_window,
                    });
                }
            }
        }
        let concurrency = &mut resources[CONCURRENCY];
        if concurrency.limit.is_some() {
            self.dirty |= 1 << CONCURRENCY;
        }
        concurrency.add(job_type, -1);
        released
    }

    /// Gives a reservation back whole: the job never started (it was cancelled after being
    /// granted), so the provider was never called.
    /// Returns the memory released, for the pool's other members.
    pub(crate) fn unreserve(&mut self, reservation: Reservation, now: Timestamp) -> u64 {
        self.refresh(now);
        let released = self.release_memory(&reservation);
        self.dirty |= self.limited(reservation.model());
        let estimates = self.estimates[reservation.job_type()];
        let (current_minute, current_day) = (self.minute, self.day);
        for (r, resource) in self.models[reservation.model()]
            .resources
            .iter_mut()
            .enumerate()
        {
            let current = match r {
                CONCURRENCY => true,
                _ => match WindowLimit::ALL[r].window() {
                    Window::Minute => reservation.minute == current_minute,
                    Window::Day => reservation.day == current_day,
                },
            };
            if current {
                resource.add(reservation.job_type(), -i128::from(estimates[r]));
            }
        }
        released
    }

    /// Stops admitting; every waiter is woken with [`Grant::Closed`].
    pub(crate) fn close(&mut self, wake: &mut Vec<Waker>) {
        self.closed = true;
        for queue in 0..self.queues.len() {
            while let Some(key) = self.queues[queue].pop_front() {
                let waiter = &mut self.waiters[key];
                match std::mem::replace(&mut waiter.state, WaitState::Closed) {
                    WaitState::Cancelled => {
                        self.waiters.remove(key);
                    }
                    WaitState::Waiting(waker) => wake.extend(waker),
                    WaitState::Granted(_) | WaitState::TimedOut | WaitState::Closed => {}
                }
            }
            self.live[queue] = 0;
        }
        self.waiting = 0;
    }

    /// Slots of every (model, type), `m * job_types + t`, followed by each type's total: the sum
    /// over models, bounded by its memory slots. Written to `all`, whose allocation is reused.
    fn all_slots(&mut self, all: &mut Vec<u64>) {
        let cells = self.models.len() * self.job_types;
        all.clear();
        all.resize(cells + self.job_types, 0);
        for m in 0..self.models.len() {
            self.compute_slots(m);
            for t in 0..self.job_types {
                let n = self.out[t];
                all[m * self.job_types + t] = n;
                let total = &mut all[cells + t];
                *total = if n == UNBOUNDED {
                    UNBOUNDED
                } else {
                    total.saturating_add(n)
                };
            }
        }
        if self.memory.is_some() {
            for t in 0..self.job_types {
                all[cells + t] = all[cells + t].min(self.memory_slots(t));
            }
        }
    }

    /// Records that `bit`'s resource changed from outside (memory pool, fleet share).
    pub(crate) fn mark(&mut self, bit: usize) {
        self.dirty |= 1 << bit;
    }

    /// Whether enough settlements happened for a ratio adjustment.
    pub(crate) const fn adjustment_due(&self) -> bool {
        self.adjustment.releases_per_adjustment > 0
            && self.releases >= self.adjustment.releases_per_adjustment
    }

    /// Adjusts flexible ratios to the types' loads (SPEC §6.2). Returns the types whose ratio
    /// changed, with old and new ratios (parts per billion).
    pub(crate) fn adjust_ratios(&mut self) -> Vec<(usize, u64, u64)> {
        self.releases = 0;
        if self.flexible.iter().filter(|&&f| f).count() < 2 {
            return Vec::new();
        }
        let mut all = std::mem::take(&mut self.next_slots);
        self.all_slots(&mut all);
        let cells = self.models.len() * self.job_types;
        let loads: Vec<TypeLoad> = (0..self.job_types)
            .map(|t| {
                let slots = all[cells + t];
                let in_flight: u64 = self
                    .models
                    .iter()
                    .map(|m| m.resources[CONCURRENCY].by_type[t])
                    .sum();
                let waiting: u64 = (0..self.models.len())
                    .map(|m| self.live[m * self.job_types + t] as u64)
                    .sum();
                TypeLoad {
                    ratio: self.ratios[t],
                    flexible: self.flexible[t],
                    load: ratio::load(in_flight, waiting, (slots != UNBOUNDED).then_some(slots)),
                }
            })
            .collect();
        self.next_slots = all;
        let Some(new) = ratio::adjust(&loads, &self.adjustment) else {
            return Vec::new();
        };
        let changed: Vec<(usize, u64, u64)> = (0..self.job_types)
            .filter(|&t| new[t] != self.ratios[t])
            .map(|t| (t, self.ratios[t], new[t]))
            .collect();
        if !changed.is_empty() {
            self.ratios = new;
            self.recompute_entitlements();
            for m in 0..self.models.len() {
                self.dirty |= self.limited(m);
            }
            if self.memory.is_some() {
                self.dirty |= 1 << MEMORY;
            }
        }
        changed
    }

    /// Whether any slot count changed since the last check, and why: the settlement's
    /// adjustment if it had one, else the first changed resource in priority order. Clears the
    /// record of changes either way. After a change, [`Engine::availability_at_check`] and
    /// [`Engine::update_availability`] describe the state checked.
    pub(crate) fn slots_changed(&mut self, adjusted: bool) -> Option<SlotsChangeReason> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut now = std::mem::take(&mut self.next_slots);
        self.all_slots(&mut now);
        let first_check = self.last_slots.is_empty();
        let changed = now != self.last_slots;
        if changed {
            std::mem::swap(&mut self.last_slots, &mut now);
        }
        self.next_slots = now;
        if !changed || first_check {
            return None;
        }
        if adjusted {
            return Some(SlotsChangeReason::Adjustment);
        }
        let bit = (0..SlotsChangeReason::BY_RESOURCE.len()).find(|b| dirty & (1 << b) != 0);
        Some(SlotsChangeReason::BY_RESOURCE[bit.unwrap_or(DISTRIBUTED)])
    }

    /// Starts slot-change detection from the current state.
    pub(crate) fn baseline_slots(&mut self) {
        self.dirty = 0;
        let mut all = std::mem::take(&mut self.last_slots);
        self.all_slots(&mut all);
        self.last_slots = all;
    }

    /// Takes in what the backend says of `model` and of the fleet's size, unless it is older
    /// than what was taken in already (replies can overtake each other).
    pub(crate) fn apply_fleet(&mut self, instances: u32, model: usize, figures: &FleetFigures) {
        let version = &mut self.models[model].fleet_version;
        if figures.version != 0 && figures.version < *version {
            return;
        }
        *version = figures.version;
        let current = Windows {
            minute: self.minute,
            day: self.day,
        };
        let mut reshared = instances != self.instances;
        let mut moved = reshared;
        self.instances = instances;
        for (r, resource) in self.models[model].resources.iter_mut().enumerate() {
            let Some(fleet) = &mut resource.fleet else {
                continue;
            };
            reshared |= fleet.share != figures.share[r];
            fleet.share = figures.share[r];
            // Counters of a window that has ended here say nothing of the current one.
            if r == CONCURRENCY || figures.windows.of(r) >= current.of(r) {
                moved |= fleet.used != figures.used[r]
                    || fleet.others_unused != figures.others_unused[r];
                fleet.used = figures.used[r];
                fleet.others_unused = figures.others_unused[r];
            }
        }
        if reshared {
            self.recompute_entitlements();
        }
        if moved || reshared {
            self.dirty |= 1 << DISTRIBUTED;
        }
    }

    /// A (re-)registration starts the backend's versions afresh: a backend that lost its state
    /// may count again from the start.
    pub(crate) fn forget_fleet_versions(&mut self) {
        for model in &mut self.models {
            model.fleet_version = 0;
        }
    }

    /// Enters (with the failure mode to apply) or leaves an outage of the fleet backend.
    pub(crate) fn set_outage(&mut self, outage: Option<FailureMode>) {
        if self.outage != outage {
            self.outage = outage;
            self.recompute_entitlements();
            self.dirty |= 1 << DISTRIBUTED;
        }
    }

    /// This instance's usage in the current windows, per model, for (re-)registration.
    pub(crate) fn own_usage(&self) -> OwnUsage {
        let models = self
            .models
            .iter()
            .map(|m| std::array::from_fn(|r| m.resources[r].used))
            .collect();
        OwnUsage::new(
            Windows {
                minute: self.minute,
                day: self.day,
            },
            models,
        )
    }

    /// A snapshot of what this instance can start now, with models and job types named by the
    /// caller's face.
    pub(crate) fn availability<M, J>(
        &mut self,
        model_of: impl Fn(usize) -> M,
        job_type_of: impl Fn(usize) -> J,
    ) -> Availability<M, J> {
        let mut all = std::mem::take(&mut self.next_slots);
        self.all_slots(&mut all);
        let mut availability = self.blank_availability(model_of, job_type_of);
        self.fill_availability(&all, &mut availability);
        self.next_slots = all;
        availability
    }

    /// The snapshot of the state at the last slot check (which [`Engine::slots_changed`] found
    /// changed): the slots it computed are not computed again.
    pub(crate) fn availability_at_check<M, J>(
        &self,
        model_of: impl Fn(usize) -> M,
        job_type_of: impl Fn(usize) -> J,
    ) -> Availability<M, J> {
        let mut availability = self.blank_availability(model_of, job_type_of);
        self.fill_availability(&self.last_slots, &mut availability);
        availability
    }

    /// Brings a snapshot this engine made (see [`Engine::availability_at_check`]) to the state
    /// at the last slot check, in place: its names and vectors are kept.
    pub(crate) fn update_availability<M, J>(&self, availability: &mut Availability<M, J>) {
        self.fill_availability(&self.last_slots, availability);
    }

    /// A snapshot with every model and job type named and every figure still to be filled in.
    fn blank_availability<M, J>(
        &self,
        model_of: impl Fn(usize) -> M,
        job_type_of: impl Fn(usize) -> J,
    ) -> Availability<M, J> {
        let on_model = |m: usize| JobTypeOnModel {
            model: model_of(m),
            slots: None,
            in_flight: 0,
            waiting: 0,
            stranded: false,
        };
        Availability {
            slots: None,
            job_types: (0..self.job_types)
                .map(|t| JobTypeAvailability {
                    job_type: job_type_of(t),
                    slots: None,
                    ratio: 0.0,
                    flexible: false,
                    in_flight: 0,
                    memory_kb: 0,
                    models: (0..self.models.len()).map(on_model).collect(),
                })
                .collect(),
            models: (0..self.models.len())
                .map(|m| ModelAvailability {
                    model: model_of(m),
                    tokens_per_minute: None,
                    tokens_per_day: None,
                    requests_per_minute: None,
                    requests_per_day: None,
                    concurrent_requests: None,
                })
                .collect(),
            memory: None,
            instances: 0,
        }
    }

    /// Every figure of `availability` (shaped by [`Engine::blank_availability`]), with `all`
    /// the slots of [`Engine::all_slots`]. Names are left as they are.
    fn fill_availability<M, J>(&self, all: &[u64], availability: &mut Availability<M, J>) {
        let bounded = |n: u64| (n != UNBOUNDED).then_some(n);
        let cells = self.models.len() * self.job_types;
        let mut total = Some(0u64);
        for (t, job_type) in availability.job_types.iter_mut().enumerate() {
            let mut in_flight = 0;
            for (m, on_model) in job_type.models.iter_mut().enumerate() {
                let cell = m * self.job_types + t;
                on_model.slots = bounded(all[cell]);
                on_model.in_flight = self.models[m].resources[CONCURRENCY].by_type[t];
                on_model.waiting = self.live[cell] as u64;
                on_model.stranded = self.stranded[cell];
                in_flight += on_model.in_flight;
            }
            job_type.slots = bounded(all[cells + t]);
            #[allow(clippy::cast_precision_loss)] // ratios are at most 10^9
            let ratio = self.ratios[t] as f64 / RATIO_ONE as f64;
            job_type.ratio = ratio;
            job_type.flexible = self.flexible[t];
            job_type.in_flight = in_flight;
            job_type.memory_kb = self.memory.as_ref().map_or(0, |m| m.held[t]);
            total = total.zip(job_type.slots).map(|(a, b)| a.saturating_add(b));
        }
        availability.slots = total;
        for (state, model) in self.models.iter().zip(&mut availability.models) {
            let remaining = |r: usize| {
                let resource = &state.resources[r];
                resource.limit.map(|limit| {
                    let used = resource.fleet.map_or(resource.used, |f| f.used);
                    let available = resource.available(self.outage, self.instances);
                    Remaining {
                        limit,
                        used,
                        remaining: limit.saturating_sub(used),
                        available: u64::try_from(available.max(0)).unwrap_or(0),
                        share: resource.fleet.map_or(limit, |f| f.share),
                        own: resource.used,
                    }
                })
            };
            model.tokens_per_minute = remaining(WindowLimit::TokensPerMinute.index());
            model.tokens_per_day = remaining(WindowLimit::TokensPerDay.index());
            model.requests_per_minute = remaining(WindowLimit::RequestsPerMinute.index());
            model.requests_per_day = remaining(WindowLimit::RequestsPerDay.index());
            model.concurrent_requests = remaining(CONCURRENCY);
        }
        availability.memory = self.memory.as_ref().map(|m| {
            let (total_kb, free_kb) = m.pool.figures();
            MemoryAvailability {
                total_kb,
                free_kb,
                held_kb: m.held.iter().sum(),
            }
        });
        availability.instances = self.instances as usize;
    }

    /// Whether anyone waits.
    #[cfg(test)]
    pub(crate) const fn has_waiters(&self) -> bool {
        self.waiting > 0
    }

    /// Units used in the current window (in flight for concurrency) on `model`.
    #[cfg(test)]
    pub(crate) fn used(&self, model: usize, resource: usize) -> u64 {
        self.models[model].resources[resource].used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, JobTypeConfig, ModelConfig};
    use crate::usage::Pricing;

    fn spec(tpm: u64, conc: u64) -> Spec {
        Config::new()
            .model(
                "m",
                ModelConfig::new(Pricing::default())
                    .tokens_per_minute(tpm)
                    .max_concurrent_requests(conc),
            )
            .job_type("a", JobTypeConfig::new().estimated_tokens(100).ratio(0.5))
            .job_type("b", JobTypeConfig::new().estimated_tokens(100).ratio(0.5))
            .validate()
            .map(|v| v.spec)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const TPM: usize = 0;

    #[test]
    fn admission_reserves_the_estimate_and_settlement_refunds_in_window() {
        let t0 = Timestamp::from_millis(0);
        let mut engine = Engine::new(&spec(1_000, 10), t0, false);
        let Arrival::Admitted(r) = engine.arrive(0, 0) else {
            panic!("not admitted")
        };
        assert_eq!(engine.used(0, TPM), 100);
        assert_eq!(engine.used(0, CONCURRENCY), 1);
        let mut adj = [None; 4];
        engine.settle(r, Some(&Usage::new().input_tokens(40)), t0, &mut adj);
        assert_eq!(engine.used(0, TPM), 40);
        assert_eq!(engine.used(0, CONCURRENCY), 0);
        assert_eq!(adj.iter().flatten().count(), 1);
        assert_eq!(adj[TPM].map(|a| a.charged), Some(-60));
    }

    #[test]
    fn fleet_figures_older_than_those_taken_in_are_ignored_until_registering_again() {
        let t0 = Timestamp::from_millis(0);
        let mut engine = Engine::new(&spec(1_000, 10), t0, true);
        let windows = Windows::at(t0);
        let figures = |share: u64, version: u64| {
            let mut share_of = [0; RESOURCES];
            share_of[TPM] = share;
            FleetFigures::new(
                windows,
                share_of,
                [0; RESOURCES],
                [0; RESOURCES],
                [0; RESOURCES],
            )
            .with_version(version)
        };
        let share = |engine: &Engine| engine.models[0].resources[TPM].fleet.map(|f| f.share);
        engine.apply_fleet(2, 0, &figures(500, 7));
        assert_eq!(share(&engine), Some(500));
        engine.apply_fleet(1, 0, &figures(1_000, 6));
        assert_eq!(
            (engine.instances(), share(&engine)),
            (2, Some(500)),
            "overtaken"
        );
        engine.apply_fleet(4, 0, &figures(250, 7));
        assert_eq!(share(&engine), Some(250), "the same version is taken in");
        engine.forget_fleet_versions();
        engine.apply_fleet(1, 0, &figures(1_000, 1));
        assert_eq!((engine.instances(), share(&engine)), (1, Some(1_000)));
    }

    #[test]
    fn later_window_is_charged_only_the_overage() {
        let mut engine = Engine::new(&spec(1_000, 10), Timestamp::from_millis(0), false);
        let Arrival::Admitted(r1) = engine.arrive(0, 0) else {
            panic!()
        };
        let Arrival::Admitted(r2) = engine.arrive(0, 0) else {
            panic!()
        };
        let next = Timestamp::from_millis(61_000);
        let mut adj = [None; 4];
        engine.settle(r1, Some(&Usage::new().input_tokens(30)), next, &mut adj);
        assert_eq!(
            engine.used(0, TPM),
            0,
            "refund of a finished window is not taken"
        );
        engine.settle(r2, Some(&Usage::new().input_tokens(250)), next, &mut adj);
        assert_eq!(
            engine.used(0, TPM),
            150,
            "overage charged to the current window"
        );
        assert!(adj.iter().flatten().all(|a| a.cross_window));
    }

    #[test]
    fn waiters_are_granted_fifo_per_queue_without_head_of_line_blocking() {
        let t0 = Timestamp::from_millis(0);
        // One concurrent slot per type: ratio 0.5 of CONC 2.
        let mut engine = Engine::new(&spec(1_000_000, 2), t0, false);
        let Arrival::Admitted(a) = engine.arrive(0, 0) else {
            panic!()
        };
        assert!(matches!(engine.arrive(0, 0), Arrival::Wait));
        let later = Timestamp::from_millis(60_000);
        let first = engine.enqueue(0, 0, false, later);
        let second = engine.enqueue(0, 0, false, later);
        // Type b is not blocked by type a's queue.
        assert!(matches!(engine.arrive(0, 1), Arrival::Admitted(_)));
        let mut wake = Vec::new();
        engine.settle(a, Some(&Usage::new()), t0, &mut [None; 4]);
        engine.grant(Some(0), &mut wake);
        let waker = std::task::Waker::noop();
        assert!(matches!(
            engine.poll_grant(first, waker),
            Some(Grant::Admitted(_))
        ));
        assert!(engine.poll_grant(second, waker).is_none());
        assert!(engine.leave(second).is_none());
        assert!(!engine.has_waiters());
    }

    #[test]
    fn waiters_time_out_at_their_deadline_unless_granted_first() {
        let at = Timestamp::from_millis;
        let mut engine = Engine::new(&spec(1_000_000, 2), at(0), false);
        let Arrival::Admitted(running) = engine.arrive(0, 0) else {
            panic!()
        };
        let first = engine.enqueue(0, 0, false, at(1_000));
        let second = engine.enqueue(0, 0, false, at(2_000));
        let third = engine.enqueue(0, 0, false, at(3_000));
        assert!(engine.take_rearm(), "the first deadline arms the timer");
        let waker = std::task::Waker::noop();
        assert!(engine.poll_grant(first, waker).is_none());
        let mut wake = Vec::new();
        assert_eq!(engine.expire(at(999), &mut wake), Some(at(1_000)));
        assert!(wake.is_empty());
        assert_eq!(engine.expire(at(1_000), &mut wake), Some(at(2_000)));
        assert_eq!(wake.len(), 1, "the timed-out waiter is woken");
        assert!(matches!(
            engine.poll_grant(first, waker),
            Some(Grant::TimedOut)
        ));
        // The second is granted before its deadline: its deadline no longer applies.
        engine.settle(running, Some(&Usage::new()), at(1_500), &mut [None; 4]);
        engine.grant(Some(0), &mut wake);
        assert_eq!(engine.expire(at(2_500), &mut wake), Some(at(3_000)));
        assert!(matches!(
            engine.poll_grant(second, waker),
            Some(Grant::Admitted(_))
        ));
        assert_eq!(engine.expire(at(3_000), &mut wake), None);
        assert!(matches!(engine.leave(third), Some(Grant::TimedOut)));
        assert!(!engine.has_waiters());
    }
}
