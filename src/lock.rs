//! Taking the pool's locks without ever parking the green thread.

use std::sync::{Mutex, MutexGuard, TryLockError};

/// Lock `m`, spinning on `try_lock` and yielding the OS thread between
/// tries; it never parks the green thread.
///
/// The pool's locks are held only for a few instructions and never across a
/// blocking call (a holder cannot be descheduled by another green thread
/// while holding one), so the wait is short. Parking would be wrong here: in
/// a green thread that has been cancelled, may turns any park into a
/// cancellation panic, and inside an unwind (a slot token dropped by a
/// cancelled green thread) that aborts the process. So the locks are `std`'s,
/// of which only `try_lock` is ever called (it never blocks the worker
/// thread): nothing waits on them through the runtime, and the runtime
/// mutex's unlock alone was 12 % of an uncontended checkout and return (perf,
/// on the overhead bench's 1 / 1).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    let mut spins = 0u32;
    loop {
        match m.try_lock() {
            Ok(guard) => return guard,
            // The locks are never held across user code, so poisoning can
            // only come from a bug in the pool; the state is consistent then.
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) if spins < 64 => {
                spins += 1;
                std::hint::spin_loop();
            }
            Err(TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
}
