//! The agent's run slots: `concurrency` of them, shared by every worker it
//! serves. A run holds a slot from the moment it is placed until its
//! delivery is acknowledged; giving a slot back tells every pull loop, so
//! that each can ask its consumer for more.

use std::sync::Arc;

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, watch};

/// The slots of one agent.
#[derive(Debug)]
pub struct Slots {
    free: Arc<Semaphore>,
    /// Counts slots given back; pull loops watch it.
    given_back: watch::Sender<u64>,
}

/// One slot, held by a run; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
}

impl Slots {
    /// `count` slots, all free.
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Slots {
            free: Arc::new(Semaphore::new(count)),
            given_back: watch::Sender::new(0),
        })
    }

    /// How many slots are free now.
    pub fn free(&self) -> usize {
        self.free.available_permits()
    }

    /// A free slot, if there is one.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.free.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    /// The next free slot, waiting for one.
    pub async fn take(self: &Arc<Self>) -> Result<Slot, AcquireError> {
        let permit = self.free.clone().acquire_owned().await?;
        Ok(self.slot(permit))
    }

    /// Changes whenever a slot is given back, or [`Slots::nudge`] is called.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.given_back.subscribe()
    }

    /// Wakes every pull loop, as if a slot had been given back.
    pub fn nudge(&self) {
        self.given_back
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn slot(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            slots: self.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.slots.nudge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_given_back_is_free_again_and_wakes_watchers() {
        let slots = Slots::new(2);
        let mut watch = slots.watch();
        watch.borrow_and_update();
        let first = slots.try_take().expect("a free slot");
        let second = slots.take().await.expect("a free slot");
        assert_eq!(slots.free(), 0);
        assert!(slots.try_take().is_none());
        assert!(!watch.has_changed().expect("open"));

        drop(first);
        assert_eq!(slots.free(), 1);
        assert!(watch.has_changed().expect("open"));
        watch.borrow_and_update();
        drop(second);
        assert_eq!(slots.free(), 2);
        assert!(watch.has_changed().expect("open"));
    }
}
