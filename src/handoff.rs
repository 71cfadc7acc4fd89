//! A one-shot cell for handing a connection to a waiting caller.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The connection a giver hands to a waiter: stored at most once per wait,
/// by the giver that took the waiter off the queue (under the pool lock),
/// and taken only by the waiter itself. One atomic flag instead of may's
/// `AtomicOption`, which for a value this large falls back to crossbeam's
/// global striped locks (a lock on store and on take, shared by every pool
/// in the process).
pub(crate) struct Handoff<T> {
    full: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the value is written once per wait, before `full` is set
// (release), by the one giver that removed the waiter from the queue; it is
// read only after `full` was seen set (acquire) and cleared, by the waiter's
// own thread, or by the destructor once no one else holds the waiter.
unsafe impl<T: Send> Sync for Handoff<T> {}

impl<T> Handoff<T> {
    /// An empty cell.
    pub fn empty() -> Self {
        Handoff {
            full: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Fill the cell. Called at most once per wait: by the giver that has
    /// just taken the waiter off the queue, under the pool lock.
    pub fn store(&self, t: T) {
        debug_assert!(!self.full.load(Ordering::Relaxed));
        // SAFETY: see the `Sync` impl: no reader before `full` is set, and
        // only one giver per wait.
        unsafe { *self.value.get() = Some(t) };
        self.full.store(true, Ordering::Release);
    }

    /// Take what a giver stored, if it has finished storing it. Called by
    /// the waiter alone (its wait, its abandon).
    pub fn take(&self) -> Option<T> {
        if self.full.swap(false, Ordering::Acquire) {
            // SAFETY: the giver's write happened before `full` was set, and
            // no one else takes.
            unsafe { (*self.value.get()).take() }
        } else {
            None
        }
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
