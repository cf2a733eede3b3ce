//! The run states this validator wrote or read last, with their revisions.
//!
//! A run's command and its result are usually handled by the same
//! validator, a moment apart: with the state it wrote for the command at
//! hand, judging the result needs no read before its compare-and-set (and
//! a state it had to read is read once, not again for the compare-and-set). An
//! entry another validator has since overwritten costs one failed
//! compare-and-set and a read, so the books stay right whatever is here.
//! A concluded run leaves; the oldest entries give way beyond the capacity.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use loom_protocol::state::RunState;
use uuid::Uuid;

/// Run states kept by default: runs in flight through one validator.
pub const CAPACITY: usize = 4096;

/// Recently written or read run states by run id.
#[derive(Debug)]
pub struct RecentStates {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    states: HashMap<Uuid, (RunState, u64)>,
    /// Run ids in the order they were first kept (may name ids since gone).
    order: VecDeque<Uuid>,
}

impl RecentStates {
    /// Keeps at most `capacity` states.
    pub fn new(capacity: usize) -> Self {
        RecentStates {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The state last written for `run_id`, and its revision.
    pub fn get(&self, run_id: Uuid) -> Option<(RunState, u64)> {
        self.lock().states.get(&run_id).cloned()
    }

    /// Keeps `state`, written at `revision`, in place of what was kept.
    pub fn put(&self, run_id: Uuid, state: RunState, revision: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.states.insert(run_id, (state, revision)).is_none() {
            inner.order.push_back(run_id);
        }
        while inner.states.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.states.remove(&oldest);
        }
        // Forgotten ids pile up in the order only until it is twice the
        // size of what is kept.
        if inner.order.len() > 2 * self.capacity {
            let Inner { states, order } = &mut *inner;
            order.retain(|id| states.contains_key(id));
        }
    }

    /// Forgets `run_id`.
    pub fn forget(&self, run_id: Uuid) {
        self.lock().states.remove(&run_id);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps are valid whatever a panicking holder was doing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use loom_protocol::state::RunStatus;
    use loom_protocol::{RunCommand, Trigger};

    fn state(run_id: Uuid) -> RunState {
        let command = RunCommand::new(run_id, "w", Utc::now(), Trigger::Manual);
        crate::books::state_from_command(&command, None)
    }

    #[test]
    fn a_kept_state_is_returned_with_its_revision_until_forgotten() {
        let recent = RecentStates::new(8);
        let id = Uuid::now_v7();
        assert!(recent.get(id).is_none());
        recent.put(id, state(id), 3);
        let mut later = state(id);
        later.status = RunStatus::Retrying;
        recent.put(id, later, 5);
        let (kept, revision) = recent.get(id).unwrap();
        assert_eq!((kept.status, revision), (RunStatus::Retrying, 5));
        recent.forget(id);
        assert!(recent.get(id).is_none());
    }

    #[test]
    fn the_oldest_give_way_beyond_the_capacity() {
        let recent = RecentStates::new(3);
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for (n, id) in ids.iter().enumerate() {
            recent.put(*id, state(*id), n as u64);
        }
        let kept: Vec<bool> = ids.iter().map(|id| recent.get(*id).is_some()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
    }

    #[test]
    fn a_state_written_again_counts_once() {
        let recent = RecentStates::new(2);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        recent.put(a, state(a), 1);
        recent.put(a, state(a), 2);
        recent.put(b, state(b), 1);
        assert_eq!(recent.get(a).map(|(_, revision)| revision), Some(2));
        assert!(recent.get(b).is_some());
    }

    #[test]
    fn forgotten_ids_do_not_pile_up() {
        let recent = RecentStates::new(4);
        for _ in 0..1000 {
            let id = Uuid::now_v7();
            recent.put(id, state(id), 1);
            recent.forget(id);
        }
        assert!(recent.lock().order.len() <= 8);
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing() {
        let recent = RecentStates::new(0);
        let id = Uuid::now_v7();
        recent.put(id, state(id), 1);
        assert!(recent.get(id).is_none());
    }
}
