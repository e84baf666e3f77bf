//! When waiting jobs give up (SPEC §5): the deadlines of a limiter's waiters in one min-heap,
//! served by one timer task, rather than a timer in every waiting job.
//!
//! Entries are not removed when a waiter stops waiting for another reason (granted, cancelled):
//! the engine checks each popped entry against the waiter it names, and stale entries are swept
//! out once they outnumber the live ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::clock::Timestamp;

/// Stale entries tolerated before a sweep, beyond twice the live waiters.
const SWEEP_SLACK: usize = 1024;

#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Timestamp, usize)>>,
    /// The deadline the timer task sleeps until (`None`: it sleeps until told).
    armed: Option<Timestamp>,
    /// A deadline earlier than `armed` arrived: the timer task must be told.
    rearm: bool,
}

impl Deadlines {
    /// Waiter `key` gives up at `at`.
    pub(crate) fn push(&mut self, at: Timestamp, key: usize) {
        self.heap.push(Reverse((at, key)));
        if self.armed.is_none_or(|armed| at < armed) {
            self.armed = Some(at);
            self.rearm = true;
        }
    }

    /// Whether the timer task must be told of an earlier deadline (once).
    pub(crate) fn take_rearm(&mut self) -> bool {
        std::mem::take(&mut self.rearm)
    }

    /// The next entry due at `now`: a deadline and the waiter it was set for.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, usize)> {
        let Reverse((at, key)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some((at, key))
    }

    /// Arms the timer for the earliest deadline left, which it returns.
    pub(crate) fn arm(&mut self) -> Option<Timestamp> {
        self.armed = self.heap.peek().map(|Reverse((at, _))| *at);
        self.armed
    }

    /// Sweeps out entries of waiters that stopped waiting, if they outnumber the `live` ones;
    /// `waits(at, key)` tells whether an entry still belongs to a waiting job.
    pub(crate) fn sweep(&mut self, live: usize, waits: impl Fn(Timestamp, usize) -> bool) {
        if self.heap.len() > live.saturating_mul(2).saturating_add(SWEEP_SLACK) {
            self.heap.retain(|Reverse((at, key))| waits(*at, *key));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn deadlines_pop_in_time_order_once_due() {
        let mut d = Deadlines::default();
        d.push(at(30), 3);
        d.push(at(10), 1);
        d.push(at(20), 2);
        assert_eq!(d.pop_due(at(5)), None);
        assert_eq!(d.pop_due(at(20)), Some((at(10), 1)));
        assert_eq!(d.pop_due(at(20)), Some((at(20), 2)));
        assert_eq!(d.pop_due(at(20)), None);
        assert_eq!(d.arm(), Some(at(30)));
    }

    #[test]
    fn only_an_earlier_deadline_rearms_the_timer() {
        let mut d = Deadlines::default();
        d.push(at(100), 0);
        assert!(d.take_rearm(), "the first deadline arms an idle timer");
        assert!(!d.take_rearm(), "told once");
        d.push(at(200), 1);
        assert!(!d.take_rearm(), "a later deadline waits its turn");
        d.push(at(50), 2);
        assert!(d.take_rearm());
        assert_eq!(d.pop_due(at(60)), Some((at(50), 2)));
        assert_eq!(d.arm(), Some(at(100)));
        d.push(at(150), 3);
        assert!(!d.take_rearm());
    }

    #[test]
    fn stale_entries_are_swept_once_they_outnumber_live_waiters() {
        let mut d = Deadlines::default();
        for key in 0..SWEEP_SLACK + 10 {
            d.push(at(1_000), key);
        }
        d.sweep(SWEEP_SLACK, |_, _| false);
        assert_eq!(d.len(), SWEEP_SLACK + 10, "within the slack: kept");
        d.sweep(1, |_, key| key < 3);
        assert_eq!(d.len(), 3);
    }
}
