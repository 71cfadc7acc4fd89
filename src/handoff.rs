//! A one-shot cell for handing a connection to a waiting caller.

use std::sync::Mutex;

use crate::lock::lock;

/// The connection a giver hands to a waiter: stored at most once per wait,
/// by the giver that took the waiter off the queue (after it released the
/// pool lock, so that the pool's critical section does not touch the
/// waiter's cache lines), and taken only by the waiter itself. Its lock is
/// never held for more than a move: two uncontended atomic operations a
/// side. (may's `AtomicOption`, used before, falls back for a value this
/// large to crossbeam's global striped locks, shared by every pool in the
/// process.)
///
/// A waiter that gives up (a timeout on its own timer, a cancellation, a
/// close) [`close`](Self::close)s the cell under the pool lock: a giver that
/// took it off the queue just before gets its value back from
/// [`store`](Self::store) and hands it to someone else.
pub(crate) struct Handoff<T> {
    value: Mutex<Cell<T>>,
}

enum Cell<T> {
    Empty,
    Full(T),
    /// The waiter left: nothing more is stored.
    Closed,
}

impl<T> Handoff<T> {
    /// An empty cell.
    pub fn empty() -> Self {
        Handoff {
            value: Mutex::new(Cell::Empty),
        }
    }

    /// Fill the cell; `Err(t)` if the waiter has left
    /// ([`close`](Self::close)). Called at most once per wait: by the giver
    /// that has taken the waiter off the queue.
    pub fn store(&self, t: T) -> Result<(), T> {
        let mut v = lock(&self.value);
        match *v {
            Cell::Empty => {
                *v = Cell::Full(t);
                Ok(())
            }
            Cell::Closed => Err(t),
            Cell::Full(_) => unreachable!("a waiter was handed two connections"),
        }
    }

    /// Take what a giver stored, if anything. Called by the waiter alone.
    pub fn take(&self) -> Option<T> {
        let mut v = lock(&self.value);
        match std::mem::replace(&mut *v, Cell::Empty) {
            Cell::Full(t) => Some(t),
            Cell::Empty => None,
            Cell::Closed => {
                *v = Cell::Closed;
                None
            }
        }
    }

    /// The waiter leaves: take what was stored, if anything, and refuse
    /// whatever a giver stores later.
    pub fn close(&self) -> Option<T> {
        match std::mem::replace(&mut *lock(&self.value), Cell::Closed) {
            Cell::Full(t) => Some(t),
            Cell::Empty | Cell::Closed => None,
        }
    }

    /// Empty the cell for its next wait (a spare waiter being reused).
    pub fn reset(&mut self) {
        *self.value.get_mut().unwrap_or_else(|p| p.into_inner()) = Cell::Empty;
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
        assert!(h.store(7).is_ok());
        assert_eq!(h.take(), Some(7));
        assert_eq!(h.take(), None);
        // Reused for the next wait.
        assert!(h.store(8).is_ok());
        assert_eq!(h.take(), Some(8));
    }

    #[test]
    fn a_closed_cell_refuses_a_store_and_gives_back_what_it_held() {
        let h = Handoff::empty();
        assert_eq!(h.close(), None::<u32>);
        assert_eq!(h.store(7), Err(7));
        assert_eq!(h.take(), None);
        let mut h = Handoff::empty();
        assert!(h.store(8).is_ok());
        assert_eq!(h.close(), Some(8));
        assert_eq!(h.take(), None);
        h.reset();
        assert!(h.store(9).is_ok());
        assert_eq!(h.take(), Some(9));
    }

    #[test]
    fn a_value_left_in_the_cell_is_dropped_with_it() {
        let v = Arc::new(());
        let h = Handoff::empty();
        assert!(h.store(Arc::clone(&v)).is_ok());
        drop(h);
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn a_value_stored_on_another_thread_is_seen_whole() {
        for _ in 0..200 {
            let h = Arc::new(Handoff::empty());
            let giver = Arc::clone(&h);
            let t = std::thread::spawn(move || assert!(giver.store(vec![1u8; 64]).is_ok()));
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
