//! The process-wide memory budget (SPEC §6.3, §10): one pool shared by every limiter in the
//! process, since they share the process's memory. Memory never goes to a fleet backend.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use crate::clock::Timestamp;
use crate::config::MemorySpec;

/// Something to tell when memory returns to the pool (a limiter with waiting jobs).
pub(crate) trait MemoryWatcher: Send + Sync {
    /// Memory was returned or the budget grew: try to admit waiters.
    fn memory_changed(&self);
}

/// The process's memory pool.
pub(crate) struct MemoryPool {
    state: Mutex<PoolState>,
}

struct Member {
    id: u64,
    watcher: Weak<dyn MemoryWatcher>,
}

struct PoolState {
    /// Settings of the live members (all equal): `None` when nobody uses the pool.
    spec: Option<MemorySpec>,
    total_kb: u64,
    held_kb: u64,
    members: Vec<Member>,
    next_id: u64,
    measured_at: Option<Timestamp>,
}

/// The pool's settings differ from a new limiter's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conflict {
    pub(crate) existing: MemorySpec,
}

/// A limiter's membership in the pool; leaves it when dropped.
pub(crate) struct Membership {
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut state = MemoryPool::global().lock();
        state.members.retain(|m| m.id != self.id);
        if state.members.is_empty() {
            state.spec = None;
            state.measured_at = None;
        }
    }
}

impl MemoryPool {
    /// The one pool of this process.
    pub(crate) fn global() -> &'static Self {
        static POOL: OnceLock<MemoryPool> = OnceLock::new();
        POOL.get_or_init(|| Self {
            state: Mutex::new(PoolState {
                spec: None,
                total_kb: 0,
                held_kb: 0,
                members: Vec::new(),
                next_id: 0,
                measured_at: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the pool with `spec`; the first member sets the budget, later ones must agree.
    pub(crate) fn join(
        &self,
        spec: &MemorySpec,
        watcher: Weak<dyn MemoryWatcher>,
        now: Timestamp,
    ) -> Result<Membership, Conflict> {
        let mut state = self.lock();
        state.members.retain(|m| m.watcher.strong_count() > 0);
        match &state.spec {
            Some(existing) if existing != spec => {
                return Err(Conflict {
                    existing: existing.clone(),
                });
            }
            Some(_) => {}
            None => {
                state.spec = Some(spec.clone());
                state.measured_at = None;
                state.measure(now);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        state.members.push(Member { id, watcher });
        Ok(Membership { id })
    }

    /// `(total, free)` in KB.
    pub(crate) fn figures(&self) -> (u64, u64) {
        let state = self.lock();
        (state.total_kb, state.total_kb.saturating_sub(state.held_kb))
    }

    /// Takes `kb` if the process budget has room.
    pub(crate) fn try_take(&self, kb: u64) -> bool {
        let mut state = self.lock();
        if state.held_kb.saturating_add(kb) > state.total_kb {
            return false;
        }
        state.held_kb += kb;
        true
    }

    /// Returns `kb` to the pool. The caller then calls [`MemoryPool::tell_others`] once it
    /// holds no lock, so other limiters' waiters can use it.
    pub(crate) fn put_back(&self, kb: u64) {
        let mut state = self.lock();
        state.held_kb = state.held_kb.saturating_sub(kb);
    }

    /// Tells every member but `from` that memory changed.
    pub(crate) fn tell_others(&self, from: u64) {
        let watchers = self.lock().others(Some(from));
        for watcher in watchers {
            watcher.memory_changed();
        }
    }

    /// Measures again if the budget is measured and `recalculation_interval` has passed; tells
    /// every member but `from` when the budget changed. Returns whether it changed.
    pub(crate) fn remeasure_if_due(&self, now: Timestamp, from: Option<u64>) -> bool {
        let watchers = {
            let mut state = self.lock();
            if !state.measure(now) {
                return false;
            }
            state.others(from)
        };
        for watcher in watchers {
            watcher.memory_changed();
        }
        true
    }
}

impl Membership {
    pub(crate) const fn id(&self) -> u64 {
        self.id
    }
}

impl PoolState {
    fn others(&self, except: Option<u64>) -> Vec<Arc<dyn MemoryWatcher>> {
        self.members
            .iter()
            .filter(|m| Some(m.id) != except)
            .filter_map(|m| m.watcher.upgrade())
            .collect()
    }

    /// Sets the total from the settings (measuring when not fixed and due); true if it changed.
    fn measure(&mut self, now: Timestamp) -> bool {
        let Some(spec) = &self.spec else { return false };
        let total = match spec.max_memory_kb {
            Some(fixed) => fixed,
            None => {
                let due = self.measured_at.is_none_or(|at| {
                    now.saturating_duration_since(at) >= spec.recalculation_interval
                });
                if !due {
                    return false;
                }
                self.measured_at = Some(now);
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let budget = (available_kb() as f64 * spec.free_memory_ratio) as u64;
                budget
            }
        };
        let changed = total != self.total_kb;
        self.total_kb = total;
        changed
    }
}

/// Memory available to this process in KB: what its cgroup (v2, then v1) still allows if it has
/// a limit, else the system's available memory, else 0.
fn available_kb() -> u64 {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = cgroup_available(
        read("/sys/fs/cgroup/memory.max").as_deref(),
        read("/sys/fs/cgroup/memory.current").as_deref(),
    )
    .or_else(|| {
        cgroup_available(
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes").as_deref(),
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes").as_deref(),
        )
    });
    let system = read("/proc/meminfo").and_then(|m| meminfo_available_kb(&m));
    match (cgroup, system) {
        (Some(c), Some(s)) => c.min(s),
        (c, s) => c.or(s).unwrap_or(0),
    }
}

/// `limit − usage` in KB from cgroup files; `None` without a limit (`max`, or v1's huge value).
fn cgroup_available(limit: Option<&str>, usage: Option<&str>) -> Option<u64> {
    let limit: u64 = limit?.trim().parse().ok()?;
    // cgroup v1 reports "no limit" as a number near i64::MAX rounded to the page size.
    if limit >= (1 << 62) {
        return None;
    }
    let usage: u64 = usage.and_then(|u| u.trim().parse().ok()).unwrap_or(0);
    Some(limit.saturating_sub(usage) / 1024)
}

fn meminfo_available_kb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_and_meminfo_parse() {
        assert_eq!(
            cgroup_available(Some("1073741824\n"), Some("536870912\n")),
            Some(524_288)
        );
        assert_eq!(cgroup_available(Some("max\n"), Some("5")), None);
        assert_eq!(
            cgroup_available(Some("9223372036854771712"), Some("5")),
            None
        );
        assert_eq!(cgroup_available(None, None), None);
        let meminfo =
            "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_available_kb(meminfo), Some(20_000_000));
        assert_eq!(meminfo_available_kb("MemTotal: 5 kB"), None);
    }

    #[test]
    fn this_machine_reports_some_memory() {
        assert!(available_kb() > 0);
    }
}
