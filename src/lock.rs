//! Taking the pool's locks without ever parking the green thread.

use std::sync::{Mutex, MutexGuard, TryLockError};

/// Rounds of backoff before each further try yields the OS thread instead:
/// 1 + 2 + … + 512 spins, a few microseconds, far longer than the lock is
/// ever held.
const SPIN_ROUNDS: u32 = 10;

/// Lock `m`, trying with `try_lock` and backing off (spinning, then yielding
/// the OS thread) between tries; it never parks the green thread.
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
            Err(TryLockError::WouldBlock) if spins < SPIN_ROUNDS => {
                // Back off, doubling, before the next try: a failed try
                // takes the lock's cache line from its holder, which needs it
                // back to unlock (at 64 workers over 8 connections, trying
                // on every spin was half of all samples; backing off took
                // the get+return from 245 to 165 ns).
                for _ in 0..(1u32 << spins) {
                    std::hint::spin_loop();
                }
                spins += 1;
            }
            Err(TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
}
