//! The ids of a limiter's live jobs, to report a duplicate (SPEC §3.1: duplicates are allowed
//! but reported in logs).
//!
//! Ids are kept as 64-bit hashes (a queued job costs a few bytes here, whatever its id's
//! length), in a set; the rare id held by several live jobs also gets a count.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use crate::job::JobId;

#[derive(Default)]
pub(crate) struct LiveIds {
    /// Ids held by at least one live job.
    once: HashSet<u64, BuildHasherDefault<AlreadyHashed>>,
    /// Ids held by more than one: how many more.
    more: HashMap<u64, u32, BuildHasherDefault<AlreadyHashed>>,
}

/// A job id as [`LiveIds`] keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdHash(u64);

/// Turns ids into [`IdHash`]es, keyed per limiter (computed once per job, outside any lock).
#[derive(Default)]
pub(crate) struct IdHasher(RandomState);

impl IdHasher {
    pub(crate) fn hash(&self, id: &JobId) -> IdHash {
        IdHash(self.0.hash_one(id.as_str()))
    }
}

impl LiveIds {
    /// A job with this id became live. Returns whether another live job has the same id.
    pub(crate) fn insert(&mut self, IdHash(hash): IdHash) -> bool {
        if self.once.insert(hash) {
            return false;
        }
        *self.more.entry(hash).or_insert(0) += 1;
        true
    }

    /// A job with this id ended.
    pub(crate) fn remove(&mut self, IdHash(hash): IdHash) {
        match self.more.get_mut(&hash) {
            Some(1) => {
                self.more.remove(&hash);
            }
            Some(n) => *n -= 1,
            None => {
                self.once.remove(&hash);
            }
        }
    }
}

/// The keys are hashes already: used as they are.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_duplicate_while_another_live_job_holds_it() {
        let (hasher, mut ids) = (IdHasher::default(), LiveIds::default());
        let a = hasher.hash(&JobId::from("a"));
        let b = hasher.hash(&JobId::from(String::from("b")));
        assert_eq!(a, hasher.hash(&JobId::from(String::from("a"))), "same text");
        assert!(!ids.insert(a));
        assert!(!ids.insert(b));
        assert!(ids.insert(a), "a second");
        assert!(ids.insert(a), "a third");
        ids.remove(a);
        ids.remove(a);
        assert!(ids.insert(a), "one still holds it");
        ids.remove(a);
        ids.remove(a);
        assert!(!ids.insert(a), "none did");
        ids.remove(a);
        ids.remove(b);
        assert!(ids.once.is_empty() && ids.more.is_empty());
    }
}
