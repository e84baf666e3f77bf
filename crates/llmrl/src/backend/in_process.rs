//! The in-process backend: a complete fleet for several limiter instances in one process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::fair_share;
use super::{
    Admission, AdmitReply, Backend, BackendError, CONCURRENCY, FleetFigures, FleetView,
    ModelLimits, OwnUsage, RESOURCES, Settlement, SettlementOutcome, Windows,
};
use crate::clock::Timestamp;

/// How often, at most, usage changes are pushed to the fleet's instances.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// A fleet of limiter instances in one process: the in-process [`Backend`].
///
/// Clone it into every limiter that shares the same models' limits. The fleet keeps global
/// window counters and in-flight counts per model, divides each limit among live instances
/// (SPEC §7.1), evicts instances silent for longer than the stale threshold, and pushes changes
/// at most every 50 ms.
///
/// ```
/// use llmrl::backend::InProcessFleet;
/// let fleet = InProcessFleet::new();
/// // Give a clone to each limiter's builder: `.backend(fleet.clone())`.
/// # let _ = fleet;
/// ```
#[derive(Clone)]
pub struct InProcessFleet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InProcessFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessFleet").finish_non_exhaustive()
    }
}

struct Inner {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    dirty: Notify,
    reachable: AtomicBool,
    stale_after: Duration,
    publisher: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    limits: Vec<ModelLimits>,
    windows: Windows,
    models: Vec<ModelFleet>,
    /// Live members in registration order: position is rank (the remainder goes to the oldest).
    members: Vec<Member>,
    index: HashMap<String, usize>,
    /// Usage of evicted instances in the current windows, so that a re-registration (which
    /// reports the instance's own usage again) does not count it twice.
    evicted: HashMap<String, (Windows, Vec<[u64; RESOURCES]>)>,
    version: u64,
}

#[derive(Clone, Copy, Default)]
struct ModelFleet {
    used: [u64; RESOURCES],
    /// Σ over members of `share − own`: keeps every reply O(1) in the fleet's size.
    unused: [u64; RESOURCES],
}

struct Member {
    id: String,
    last_seen: Timestamp,
    windows: Windows,
    share: Vec<[u64; RESOURCES]>,
    own: Vec<[u64; RESOURCES]>,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for InProcessFleet {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessFleet {
    /// A new, empty fleet with the default stale threshold (15 s).
    #[must_use]
    pub fn new() -> Self {
        Self::with_stale_threshold(Duration::from_secs(15))
    }

    /// A new fleet that evicts instances silent for longer than `stale_after`.
    #[must_use]
    pub fn with_stale_threshold(stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes: watch::Sender::new(0),
                dirty: Notify::new(),
                reachable: AtomicBool::new(true),
                stale_after,
                publisher: Mutex::new(None),
            }),
        }
    }

    /// Makes every call fail as if the backend were unreachable (or reachable again): for
    /// testing failure modes.
    pub fn set_reachable(&self, reachable: bool) {
        self.inner.reachable.store(reachable, Ordering::SeqCst);
    }

    /// Forgets everything, as a restarted backend would: every instance must register again.
    pub fn reset(&self) {
        let mut state = lock(&self.inner.state);
        *state = State {
            version: state.version + 1,
            ..State::default()
        };
        self.inner.changes.send_replace(state.version);
    }

    /// Live instances.
    #[must_use]
    pub fn instances(&self) -> usize {
        lock(&self.inner.state).members.len()
    }

    /// Used per resource of model `model`, fleet-wide, in the windows containing `now`.
    #[must_use]
    pub fn used(&self, model: usize, now: Timestamp) -> [u64; RESOURCES] {
        let mut state = lock(&self.inner.state);
        state.roll(Windows::at(now));
        state.models.get(model).map(|m| m.used).unwrap_or_default()
    }

    fn check_reachable(&self) -> Result<(), BackendError> {
        if self.inner.reachable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(BackendError::Unreachable(
                "the in-process fleet is switched off".into(),
            ))
        }
    }

    /// Usage moved: tell the instances soon (coalesced).
    fn usage_changed(&self, state: &mut State) {
        state.version += 1;
        self.inner.dirty.notify_one();
    }

    /// Membership moved: tell the instances now.
    fn membership_changed(&self, state: &mut State) {
        state.version += 1;
        self.inner.changes.send_replace(state.version);
    }

    fn ensure_publisher(&self) {
        let mut publisher = self
            .inner
            .publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if publisher.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        *publisher = Some(tokio::spawn(async move {
            loop {
                let Some(fleet) = inner.upgrade() else { return };
                fleet.dirty.notified().await;
                let (version, empty) = {
                    let state = lock(&fleet.state);
                    (state.version, state.members.is_empty())
                };
                if empty {
                    return;
                }
                fleet.changes.send_replace(version);
                drop(fleet);
                tokio::time::sleep(PUBLISH_EVERY).await;
            }
        }));
    }

    async fn stop_publisher_if_empty(&self) {
        if !lock(&self.inner.state).members.is_empty() {
            return;
        }
        let task = self
            .inner
            .publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            self.inner.dirty.notify_one();
            let _ = task.await;
        }
    }
}

impl State {
    /// Moves the fleet to the windows of `now`: counters of ended windows restart at zero, and
    /// with every instance's usage at zero, the unused shares sum to the limit.
    fn roll(&mut self, now: Windows) {
        let Self {
            windows,
            limits,
            models,
            ..
        } = self;
        let mut rolled = false;
        for (resources, current, new) in [
            ([0, 2], &mut windows.minute, now.minute),
            ([1, 3], &mut windows.day, now.day),
        ] {
            if new <= *current {
                continue;
            }
            *current = new;
            rolled = true;
            for (model, limits) in models.iter_mut().zip(limits.iter()) {
                for r in resources {
                    model.used[r] = 0;
                    model.unused[r] = limits.limits[r].unwrap_or(0);
                }
            }
            // An evicted instance's usage of an ended window is forgotten, its usage of the
            // windows still running (the day, when a minute ends) is not.
            for (w, own) in self.evicted.values_mut() {
                if w.of(resources[0]) < new {
                    for o in own.iter_mut() {
                        resources.iter().for_each(|&r| o[r] = 0);
                    }
                }
            }
        }
        if rolled {
            for (w, own) in self.evicted.values_mut() {
                *w = now;
                own.iter_mut().for_each(|o| o[CONCURRENCY] = 0);
            }
            self.evicted
                .retain(|_, (_, own)| own.iter().flatten().any(|&used| used > 0));
        }
        for member in &mut self.members {
            member.roll(self.windows);
        }
    }

    fn member(&self, id: &str) -> Result<usize, BackendError> {
        self.index
            .get(id)
            .copied()
            .ok_or(BackendError::NotRegistered)
    }

    fn limit(&self, model: usize, resource: usize) -> Option<u64> {
        self.limits[model].limits[resource]
    }

    /// Changes member `i`'s own usage of one resource, keeping the unused sum exact.
    fn add_own(&mut self, i: usize, model: usize, resource: usize, delta: i128) {
        let member = &mut self.members[i];
        let share = member.share[model][resource];
        let own = &mut member.own[model][resource];
        let before = fair_share::unused(share, *own);
        *own = add(*own, delta);
        let after = fair_share::unused(share, *own);
        let unused = &mut self.models[model].unused[resource];
        *unused = unused.saturating_sub(before).saturating_add(after);
    }

    fn add_used(&mut self, model: usize, resource: usize, delta: i128) {
        let used = &mut self.models[model].used[resource];
        *used = add(*used, delta);
    }

    /// Shares follow membership: recompute them, and the unused sums, for everyone.
    fn reshare(&mut self) {
        let n = self.members.len() as u64;
        let mut unused = vec![[0u64; RESOURCES]; self.limits.len()];
        for (rank, member) in self.members.iter_mut().enumerate() {
            for (m, limits) in self.limits.iter().enumerate() {
                for (r, limit) in limits.limits.iter().enumerate() {
                    let share = limit.map_or(0, |l| fair_share::share(l, n, rank as u64));
                    member.share[m][r] = share;
                    unused[m][r] += fair_share::unused(share, member.own[m][r]);
                }
            }
        }
        for (model, unused) in self.models.iter_mut().zip(unused) {
            model.unused = unused;
        }
        for (rank, member) in self.members.iter().enumerate() {
            self.index.insert(member.id.clone(), rank);
        }
    }

    fn figures(&self, i: usize, model: usize) -> FleetFigures {
        let member = &self.members[i];
        let fleet = &self.models[model];
        let others_unused = std::array::from_fn(|r| {
            let own = fair_share::unused(member.share[model][r], member.own[model][r]);
            fleet.unused[r].saturating_sub(own)
        });
        FleetFigures {
            windows: self.windows,
            share: member.share[model],
            used: fleet.used,
            own: member.own[model],
            others_unused,
            version: self.version,
        }
    }

    fn view(&self, i: usize) -> FleetView {
        FleetView {
            instances: u32::try_from(self.members.len()).unwrap_or(u32::MAX),
            models: (0..self.limits.len()).map(|m| self.figures(i, m)).collect(),
        }
    }

    /// Removes member `i`: its in-flight units return; its window usage stays counted (the
    /// provider was called) and is remembered in case it registers again.
    fn remove(&mut self, i: usize, evicted: bool) {
        let member = self.members.remove(i);
        self.index.remove(&member.id);
        for (m, own) in member.own.iter().enumerate() {
            self.add_used(m, CONCURRENCY, -i128::from(own[CONCURRENCY]));
        }
        if evicted {
            self.evicted.insert(member.id, (member.windows, member.own));
        }
        self.reshare();
    }
}

impl Member {
    fn roll(&mut self, now: Windows) {
        for (resources, current, new) in [
            ([0, 2], &mut self.windows.minute, now.minute),
            ([1, 3], &mut self.windows.day, now.day),
        ] {
            if new > *current {
                *current = new;
                for own in &mut self.own {
                    for r in resources {
                        own[r] = 0;
                    }
                }
            }
        }
    }
}

fn add(value: u64, delta: i128) -> u64 {
    u64::try_from((i128::from(value) + delta).max(0)).unwrap_or(u64::MAX)
}

impl Backend for InProcessFleet {
    async fn register(
        &self,
        instance: &str,
        models: &[ModelLimits],
        own: &OwnUsage,
        now: Timestamp,
    ) -> Result<FleetView, BackendError> {
        self.check_reachable()?;
        let view = {
            let mut state = lock(&self.inner.state);
            if state.limits.is_empty() {
                state.limits = models.to_vec();
                state.models = vec![ModelFleet::default(); models.len()];
                state.windows = Windows::default();
            } else if state.limits != models {
                return Err(BackendError::Mismatch(
                    "the fleet's models or limits differ from this instance's".into(),
                ));
            }
            let windows = Windows::at(now);
            state.roll(windows);
            let i = match state.index.get(instance) {
                Some(&i) => i,
                None => {
                    let count = models.len();
                    state.members.push(Member {
                        id: instance.to_owned(),
                        last_seen: now,
                        windows,
                        share: vec![[0; RESOURCES]; count],
                        own: vec![[0; RESOURCES]; count],
                    });
                    // What the fleet already counts for this instance: its usage before an
                    // eviction, if any.
                    if let Some((w, old)) = state.evicted.remove(instance) {
                        let i = state.members.len() - 1;
                        let member = &mut state.members[i];
                        member.windows = w;
                        member.own = old;
                        member.own.iter_mut().for_each(|o| o[CONCURRENCY] = 0);
                        member.roll(windows);
                    }
                    state.reshare();
                    state.members.len() - 1
                }
            };
            state.members[i].last_seen = now;
            // Reconcile: the instance's report is the truth about its own usage.
            for (m, reported) in own.models.iter().enumerate().take(models.len()) {
                for (r, &reported) in reported.iter().enumerate() {
                    let current = r == CONCURRENCY || own.windows.of(r) == windows.of(r);
                    let value = if current { reported } else { 0 };
                    let delta = i128::from(value) - i128::from(state.members[i].own[m][r]);
                    state.add_own(i, m, r, delta);
                    state.add_used(m, r, delta);
                }
            }
            self.membership_changed(&mut state);
            state.view(i)
        };
        self.ensure_publisher();
        Ok(view)
    }

    async fn admit(
        &self,
        instance: &str,
        admission: Admission,
    ) -> Result<AdmitReply, BackendError> {
        self.check_reachable()?;
        let mut state = lock(&self.inner.state);
        state.roll(Windows::at(admission.now));
        let i = state.member(instance)?;
        let m = admission.model;
        let mut admitted = true;
        for r in 0..RESOURCES {
            let Some(limit) = state.limit(m, r) else {
                continue;
            };
            let estimate = if r == CONCURRENCY {
                1
            } else {
                admission.estimates[r]
            };
            let fleet = state.models[m];
            let remaining = i128::from(limit) - i128::from(fleet.used[r]);
            let member = &state.members[i];
            let own_unused = fair_share::unused(member.share[m][r], member.own[m][r]);
            let part = fair_share::available(own_unused, fleet.unused[r], remaining);
            if remaining < i128::from(estimate) || (estimate > 0 && part < estimate) {
                admitted = false;
                break;
            }
        }
        if admitted {
            for r in 0..RESOURCES {
                let estimate = if r == CONCURRENCY {
                    1
                } else {
                    admission.estimates[r]
                };
                state.add_own(i, m, r, i128::from(estimate));
                state.add_used(m, r, i128::from(estimate));
            }
            self.usage_changed(&mut state);
        }
        Ok(AdmitReply {
            admitted,
            instances: u32::try_from(state.members.len()).unwrap_or(u32::MAX),
            figures: state.figures(i, m),
        })
    }

    async fn settle(&self, instance: &str, s: Settlement) -> Result<FleetFigures, BackendError> {
        self.check_reachable()?;
        let mut state = lock(&self.inner.state);
        let windows = Windows::at(s.now);
        state.roll(windows);
        let member = state.index.get(instance).copied();
        let m = s.model;
        for r in 0..4 {
            let same = s.reserved_in.of(r) == windows.of(r);
            let estimate = i128::from(s.estimates[r]);
            let delta = match s.outcome {
                SettlementOutcome::NeverStarted if same => -estimate,
                SettlementOutcome::Used(actual) if same => i128::from(actual[r]) - estimate,
                SettlementOutcome::Used(actual) => (i128::from(actual[r]) - estimate).max(0),
                _ => 0,
            };
            if delta != 0 {
                state.add_used(m, r, delta);
                if let Some(i) = member {
                    state.add_own(i, m, r, delta);
                }
            }
        }
        // An evicted instance's in-flight units were returned when it was evicted.
        if let Some(i) = member {
            state.add_own(i, m, CONCURRENCY, -1);
            state.add_used(m, CONCURRENCY, -1);
        }
        self.usage_changed(&mut state);
        // The usage counts either way (the provider was called); an evicted instance must
        // register again before its figures mean anything.
        member
            .map(|i| state.figures(i, m))
            .ok_or(BackendError::NotRegistered)
    }

    async fn sync(
        &self,
        instance: &str,
        now: Timestamp,
    ) -> Result<Option<FleetView>, BackendError> {
        self.check_reachable()?;
        let mut state = lock(&self.inner.state);
        state.roll(Windows::at(now));
        let stale_after = self.inner.stale_after;
        let mut evicted = false;
        while let Some(i) = state.members.iter().position(|member| {
            member.id != instance && now.saturating_duration_since(member.last_seen) > stale_after
        }) {
            state.remove(i, true);
            evicted = true;
        }
        if evicted {
            self.membership_changed(&mut state);
        }
        let Some(&i) = state.index.get(instance) else {
            return Ok(None);
        };
        state.members[i].last_seen = now;
        Ok(Some(state.view(i)))
    }

    async fn unregister(&self, instance: &str) -> Result<(), BackendError> {
        self.check_reachable()?;
        {
            let mut state = lock(&self.inner.state);
            if let Some(&i) = state.index.get(instance) {
                state.remove(i, false);
                self.membership_changed(&mut state);
            }
        }
        self.stop_publisher_if_empty().await;
        Ok(())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}
