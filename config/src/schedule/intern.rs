//! Interning of what many schedules share: registries repeat a handful of
//! schedule definitions over thousands of workers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Shared values by key. The table holds weak references: a value no
/// schedule uses any more is freed, and its key is swept out as the table
/// grows (each sweep at twice the size the last one left, so sweeping costs
/// amortised constant time per insert).
pub(crate) struct Interner<K, V> {
    table: Mutex<Table<K, V>>,
}

struct Table<K, V> {
    values: HashMap<K, Weak<V>>,
    sweep_at: usize,
}

/// Fewest keys before the first sweep.
const FIRST_SWEEP: usize = 1024;

impl<K: Hash + Eq, V> Interner<K, V> {
    pub(crate) fn new() -> Self {
        Interner {
            table: Mutex::new(Table {
                values: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }

    /// The value for `key`, made by `make` unless a live one is shared.
    pub(crate) fn get_or_make<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Some(value) = self.lock().values.get(&key).and_then(Weak::upgrade) {
            return Ok(value);
        }
        // Made outside the lock: making may be slow, and a value made twice
        // at once is merely not shared.
        let value = Arc::new(make()?);
        let mut table = self.lock();
        if table.values.len() >= table.sweep_at {
            table.values.retain(|_, weak| weak.strong_count() > 0);
            table.sweep_at = (table.values.len() * 2).max(FIRST_SWEEP);
        }
        table.values.insert(key, Arc::downgrade(&value));
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<K, V>> {
        // The table stays consistent whatever panicked while it was held.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_value_is_shared_and_a_dropped_one_is_made_again() {
        let interner = Interner::<u32, String>::new();
        let made = |text: &str| Ok::<_, ()>(text.to_owned());
        let first = interner.get_or_make(1, || made("one")).expect("made");
        let again = interner
            .get_or_make(1, || made("not used"))
            .expect("shared");
        assert!(Arc::ptr_eq(&first, &again));
        drop((first, again));
        let remade = interner.get_or_make(1, || made("one again")).expect("made");
        assert_eq!(*remade, "one again");
    }

    #[test]
    fn dead_keys_are_swept_as_the_table_grows() {
        let interner = Interner::<usize, usize>::new();
        let kept = interner.get_or_make(0, || Ok::<_, ()>(0)).expect("made");
        for key in 1..10 * FIRST_SWEEP {
            drop(interner.get_or_make(key, || Ok::<_, ()>(key)));
        }
        let table = interner.lock();
        assert!(
            table.values.len() <= FIRST_SWEEP,
            "{} keys",
            table.values.len()
        );
        assert!(table.values.contains_key(&0));
        drop(table);
        drop(kept);
    }

    #[test]
    fn a_failure_to_make_is_returned_and_not_remembered() {
        let interner = Interner::<u32, u32>::new();
        assert_eq!(interner.get_or_make(7, || Err("bad")), Err("bad"));
        assert_eq!(
            *interner.get_or_make(7, || Ok::<_, &str>(7)).expect("made"),
            7
        );
    }
}
