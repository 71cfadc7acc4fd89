//! Synchronisation primitives that block only the calling green thread.
//!
//! These are may's types, re-exported. They work from green threads and from
//! plain OS threads, in any mix. Never use `std::sync::Mutex` or
//! `std::sync::mpsc` across a blocking call in a green thread: they block the
//! whole worker thread and can deadlock the runtime.
//!
//! **Trap:** the `*_timeout` methods of these types, called inside a green
//! thread with a duration under 1 ms (including zero), wait *forever*. Pass
//! durations through [`crate::time::clamp_timeout`] or use a
//! [`crate::time::Deadline`].

pub use may::coroutine::ParkError;
pub use may::sync::{
    mpmc, mpsc, AtomicOption, Barrier, Blocker, Condvar, Mutex, MutexGuard, RwLock,
    RwLockReadGuard, RwLockWriteGuard, Semphore as Semaphore, SyncFlag, WaitGroup,
};

/// Unwind the calling green thread because it was cancelled. Call this after a
/// [`Blocker::park`] returned [`ParkError::Canceled`], once local state is
/// consistent again.
pub fn resume_cancel() -> ! {
    may::coroutine::trigger_cancel_panic()
}
