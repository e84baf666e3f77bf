//! The registry of a limiter's job tasks: lets `stop()` end them, and keeps the outcome of a
//! task dropped before its job ended (cancelled, or stopped) until the job's handle reads it.

use std::any::Any;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use slab::Slab;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

use crate::job::JobId;
use crate::live_ids::{IdHash, IdHasher, LiveIds};

/// Identifies a job task; `seq` tells a reused slot from the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskKey {
    index: usize,
    seq: u64,
}

enum TaskState {
    Running {
        abort: AbortHandle,
        /// A handle may still want the outcome if the task is dropped.
        watched: bool,
        /// Its handle cancelled it (whatever happens to the limiter afterwards).
        cancelled: bool,
    },
    /// The task was dropped before its job ended; the outcome waits here for its handle.
    Dropped(Box<dyn Any + Send>),
}

#[derive(Default)]
struct Tasks {
    slab: Slab<(u64, TaskState)>,
    next_seq: u64,
    running: usize,
    ids: LiveIds,
}

impl Tasks {
    fn entry(&mut self, key: TaskKey) -> Option<&mut TaskState> {
        self.slab
            .get_mut(key.index)
            .filter(|(seq, _)| *seq == key.seq)
            .map(|(_, state)| state)
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    tasks: Mutex<Tasks>,
    pub(crate) ids: IdHasher,
    /// Told when the last running task leaves, once someone waits for that.
    drained: Notify,
    draining: AtomicBool,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns the task of job `id` (hashed by [`Registry::ids`]) on `runtime`, registered
    /// before it can run. Reports an id that another live job has too.
    pub(crate) fn spawn<Fut>(
        &self,
        runtime: &Handle,
        id: &JobId,
        hash: IdHash,
        task: impl FnOnce(TaskKey) -> Fut,
    ) -> (TaskKey, JoinHandle<Fut::Output>)
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let mut tasks = self.lock();
        if tasks.ids.insert(hash) {
            tracing::warn!(job_id = %id, "duplicate job id: another queued or running job has it");
        }
        let seq = tasks.next_seq;
        tasks.next_seq += 1;
        let entry = tasks.slab.vacant_entry();
        let key = TaskKey {
            index: entry.key(),
            seq,
        };
        // Spawning under the lock: the task cannot deregister before it is registered.
        let handle = runtime.spawn(task(key));
        entry.insert((
            seq,
            TaskState::Running {
                abort: handle.abort_handle(),
                watched: true,
                cancelled: false,
            },
        ));
        tasks.running += 1;
        (key, handle)
    }

    fn left(&self, tasks: &mut Tasks) {
        tasks.running -= 1;
        if tasks.running == 0 && self.draining.load(Ordering::Acquire) {
            self.drained.notify_waiters();
        }
    }

    /// The task of job `id` ended with its outcome (which its `JoinHandle` carries).
    pub(crate) fn ended(&self, key: TaskKey, id: IdHash) {
        let mut tasks = self.lock();
        tasks.ids.remove(id);
        if tasks.entry(key).is_some() {
            tasks.slab.remove(key.index);
            self.left(&mut tasks);
        }
    }

    /// A job task was dropped before its job ended: keeps `outcome` for the job's handle,
    /// unless nobody holds one.
    pub(crate) fn dropped(&self, key: TaskKey, id: IdHash, outcome: Box<dyn Any + Send>) {
        let mut tasks = self.lock();
        tasks.ids.remove(id);
        let Some(state) = tasks.entry(key) else {
            return;
        };
        if matches!(state, TaskState::Running { watched: true, .. }) {
            *state = TaskState::Dropped(outcome);
        } else {
            tasks.slab.remove(key.index);
        }
        self.left(&mut tasks);
    }

    /// Cancels a job's task: it is dropped at its next await point.
    pub(crate) fn cancel(&self, key: TaskKey) {
        let mut tasks = self.lock();
        if let Some(TaskState::Running {
            abort, cancelled, ..
        }) = tasks.entry(key)
        {
            *cancelled = true;
            abort.abort();
        }
    }

    /// Whether the job's handle cancelled its task.
    pub(crate) fn was_cancelled(&self, key: TaskKey) -> bool {
        matches!(
            self.lock().entry(key),
            Some(TaskState::Running {
                cancelled: true,
                ..
            })
        )
    }

    /// The outcome a dropped task left for its handle.
    pub(crate) fn take_outcome(&self, key: TaskKey) -> Option<Box<dyn Any + Send>> {
        let mut tasks = self.lock();
        if !matches!(tasks.entry(key), Some(TaskState::Dropped(_))) {
            return None;
        }
        match tasks.slab.remove(key.index).1 {
            TaskState::Dropped(outcome) => Some(outcome),
            TaskState::Running { .. } => None,
        }
    }

    /// A job's handle is gone before the job's outcome was read.
    pub(crate) fn handle_dropped(&self, key: TaskKey) {
        let mut tasks = self.lock();
        match tasks.entry(key) {
            Some(TaskState::Running { watched, .. }) => *watched = false,
            Some(TaskState::Dropped(_)) => {
                tasks.slab.remove(key.index);
            }
            None => {}
        }
    }

    /// Aborts every running task.
    pub(crate) fn abort_all(&self) {
        let running: Vec<AbortHandle> = self
            .lock()
            .slab
            .iter()
            .filter_map(|(_, (_, state))| match state {
                TaskState::Running { abort, .. } => Some(abort.clone()),
                TaskState::Dropped(_) => None,
            })
            .collect();
        for task in running {
            task.abort();
        }
    }

    /// Waits until no task runs, or until `deadline` resolves.
    pub(crate) async fn drained(&self, deadline: impl Future<Output = ()>) {
        self.draining.store(true, Ordering::Release);
        let mut deadline = pin!(deadline);
        loop {
            let mut notified = pin!(self.drained.notified());
            notified.as_mut().enable();
            if self.lock().running == 0 {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = deadline.as_mut() => return,
            }
        }
    }
}
