//! A one-shot cell for handing a connection to a waiting caller.

use std::sync::Mutex;

use crate::lock::lock;

/// The connection a giver hands to a waiter: stored at most once per wait,
/// by the giver that took the waiter off the queue (under the pool lock),
/// and taken only by the waiter itself, so its lock is never contended: it
/// costs two uncontended atomic operations a side. (may's `AtomicOption`,
/// used before, falls back for a value this large to crossbeam's global
/// striped locks, shared by every pool in the process.)
pub(crate) struct Handoff<T> {
    value: Mutex<Option<T>>,
}

impl<T> Handoff<T> {
    /// An empty cell.
    pub fn empty() -> Self {
        Handoff {
            value: Mutex::new(None),
        }
    }

    /// Fill the cell. Called at most once per wait: by the giver that has
    /// just taken the waiter off the queue, under the pool lock.
    pub fn store(&self, t: T) {
        let mut v = lock(&self.value);
        debug_assert!(v.is_none(), "a waiter was handed two connections");
        *v = Some(t);
    }

    /// Take what a giver stored, if anything. Called by the waiter alone
    /// (its wait, its abandon).
    pub fn take(&self) -> Option<T> {
        lock(&self.value).take()
    }
}

#[cfg(test)]
mod tests {
    use super::Handoff;
    use std::sync::Arc;

    #[test]
    fn a_stored_value_is_taken_once() {
        let h = Handoff::empty();
        assert_eq!(h.take(), None::<u32>);
        h.store(7);
        assert_eq!(h.take(), Some(7));
        assert_eq!(h.take(), None);
        // Reused for the next wait.
        h.store(8);
        assert_eq!(h.take(), Some(8));
    }

    #[test]
    fn a_value_left_in_the_cell_is_dropped_with_it() {
        let v = Arc::new(());
        let h = Handoff::empty();
        h.store(Arc::clone(&v));
        drop(h);
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn a_value_stored_on_another_thread_is_seen_whole() {
        for _ in 0..200 {
            let h = Arc::new(Handoff::empty());
            let giver = Arc::clone(&h);
            let t = std::thread::spawn(move || giver.store(vec![1u8; 64]));
            let got = loop {
                if let Some(v) = h.take() {
                    break v;
                }
                std::hint::spin_loop();
            };
            assert_eq!(got, vec![1u8; 64]);
            t.join().unwrap();
        }
    }
}
