//! The checkout wait: take an idle connection, or queue (FIFO) until one is
//! handed over, the deadline passes, the pool closes or is found down.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use greenpool_runtime::sync::ParkError;
use greenpool_runtime::{Deadline, Wait};

use crate::error::Error;
use crate::manager::Manager;
use crate::slot::Role;
use crate::state::{Held, PoolState, Shared, Waiter};

/// One caller's checkout: its deadline and what went wrong so far.
pub(crate) struct Attempt {
    pub start: Instant,
    pub deadline: Deadline,
    validation_failures: u32,
    last_validation_error: Option<String>,
    /// Queue at the front: this caller was served once already (its
    /// connection failed validation).
    front: bool,
    /// The timeout is zero: never wait.
    zero: bool,
}

/// What [`Shared::checkout`] got: the connection, whether it came from the
/// idle list, and the waiter of a wait that ended with it (kept for reuse
/// when the connection comes back).
pub(crate) type CheckedOut<M> = (Held<M>, bool, Option<Arc<Waiter<M>>>);

impl Attempt {
    /// A connection this caller was given failed its checkout check (and
    /// was discarded): it tries the next, first in line.
    pub fn failed_check(&mut self, why: &str) {
        self.validation_failures += 1;
        self.last_validation_error = Some(why.to_owned());
        self.front = true;
    }

    /// Reads the clock once: the deadline counts from `start`.
    pub fn new(timeout: Option<Duration>) -> Self {
        let start = Instant::now();
        Attempt {
            start,
            deadline: match timeout {
                Some(d) => Deadline::after_from(start, d),
                None => Deadline::never(),
            },
            validation_failures: 0,
            last_validation_error: None,
            front: false,
            zero: timeout == Some(Duration::ZERO),
        }
    }

    /// This caller has been in line before (a connection it was given
    /// failed its checkout check): its deadline may have passed.
    fn again(&self) -> bool {
        self.front || self.validation_failures > 0
    }
}

impl<M: Manager> Shared<M> {
    /// Take an idle connection, or wait in line for one until the deadline
    /// (`timeout` from now; `None`: forever). Also says whether the
    /// connection came from the idle list (rather than handed over by
    /// whoever gave it back or opened it), and returns the waiter of a wait
    /// that ended with a connection, to be given back with it for reuse.
    ///
    /// One lock round trip whether or not the caller waits: `attempt` is
    /// made (the clock read) only once nothing is idle, under the lock,
    /// which costs less than leaving and taking it again.
    #[inline]
    pub fn checkout(
        self: &Arc<Self>,
        timeout: Option<Duration>,
        attempt: &mut Option<Attempt>,
        pool_timeout: bool,
    ) -> Result<CheckedOut<M>, Error> {
        // The new token's reference to the pool, taken before the lock: an
        // atomic update of a line the other workers share costs the
        // critical section nothing out here.
        let owner = Arc::clone(self);
        let mut st = self.lock();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        // Take the most recently returned connection (LIFO). Only the books
        // change under the lock; the connection itself (last written by
        // whoever gave it back) is read once the lock is released.
        if let Some(conn) = st.idle.pop_back() {
            st.counters.checkouts += 1;
            st.count(Role::InUse);
            let grow = st.start_missing();
            drop(st);
            let held = Held::adopt(owner, conn, Role::InUse);
            if grow > 0 {
                self.spawn_connectors(grow);
            }
            return Ok((held, true, None));
        }
        drop(owner);
        self.wait_in_line(st, timeout, attempt, pool_timeout)
    }

    /// The rest of [`checkout`](Self::checkout), with the lock held and
    /// nothing idle: queue, and wait.
    #[inline(never)]
    fn wait_in_line(
        self: &Arc<Self>,
        mut st: MutexGuard<'_, PoolState<M>>,
        timeout: Option<Duration>,
        attempt: &mut Option<Attempt>,
        pool_timeout: bool,
    ) -> Result<CheckedOut<M>, Error> {
        let a: &Attempt = attempt.get_or_insert_with(|| Attempt::new(timeout));
        let deadline = a.deadline;
        if let Some(e) = self.unavailable_error(&mut st, a) {
            return Err(e);
        }
        // A deadline just computed from a non-zero timeout has not passed:
        // the clock is read again only for a caller back in line.
        if a.zero || (a.again() && deadline.is_expired()) {
            return Err(self.timeout_error(&mut st, a));
        }
        // A runtime timer per wait is expensive in may (each cancelled timer
        // wakes its timer thread), so waits with the pool's own timeout are
        // timed by the pool's deadline watcher instead: FIFO order makes the
        // front waiter's deadline the earliest, and one sleep covers them all.
        // An OS thread keeps its own timer: the watcher is a green thread,
        // and busy green threads can keep it from running.
        let green = greenpool_runtime::is_green();
        let watched_deadline = deadline
            .instant()
            .filter(|_| pool_timeout && green && self.has_watcher.load(Ordering::Acquire));
        let waiter = st.waiter(watched_deadline, green);
        if a.front {
            st.waiters.push_front(Arc::clone(&waiter));
        } else {
            st.waiters.push_back(Arc::clone(&waiter));
        }
        st.counters.waited_checkouts += 1;
        let grow = st.start_missing();
        let kick = watched_deadline.is_some_and(|at| {
            let earlier = st.watcher_wakes_at.is_none_or(|wakes| at < wakes);
            if earlier {
                st.watcher_wakes_at = Some(at);
            }
            earlier
        });
        drop(st);
        self.spawn_connectors(grow);
        if kick {
            self.watcher_kick.post();
        }

        loop {
            // The watcher enforces a watched deadline: no clock read here.
            let wait = match watched_deadline {
                Some(_) => Wait::Forever,
                None => deadline.wait(),
            };
            let parked = match wait {
                Wait::Forever => waiter.blocker.park(None),
                Wait::For(d) => waiter.blocker.park(Some(d)),
                Wait::Expired => Ok(()),
            };
            if let Some(held) = waiter.slot.take() {
                return Ok((held, false, Some(waiter)));
            }
            let cancelled = parked == Err(ParkError::Canceled);
            if parked == Err(ParkError::Timeout) {
                // A timed-out park resumes on may's timer thread.
                greenpool_runtime::yield_now();
            }
            let expired = if watched_deadline.is_some() {
                waiter.expired.load(Ordering::Acquire)
            } else {
                deadline.is_expired()
            };
            if cancelled || expired || self.is_closed() || self.lock().down(&self.cfg).is_some() {
                return self
                    .abandon_wait(&waiter, cancelled, a)
                    .map(|h| (h, false, None));
            }
            // Woken with nothing to take and time left: wait again.
        }
    }

    /// Leave the queue after a timeout, a close or a cancellation. A giver may
    /// have filled the slot meanwhile; then the connection is ours.
    fn abandon_wait(
        self: &Arc<Self>,
        waiter: &Arc<Waiter<M>>,
        cancelled: bool,
        a: &Attempt,
    ) -> Result<Held<M>, Error> {
        let mut st = self.lock();
        // Closed under the pool lock: a giver that took this waiter off the
        // queue but has not stored yet gets its connection back and passes
        // it on (see `Delivery::finish`).
        let held = waiter.slot.close();
        if held.is_none() {
            st.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
        }
        if cancelled {
            // Pass a connection we were handed on, then unwind.
            drop(st);
            if let Some(h) = held {
                h.hand_over(|_, _| ());
            }
            greenpool_runtime::sync::resume_cancel();
        }
        match held {
            Some(held) => Ok(held),
            None if self.is_closed() => Err(Error::Closed),
            None => Err(self
                .unavailable_error(&mut st, a)
                .unwrap_or_else(|| self.timeout_error(&mut st, a))),
        }
    }

    /// [`Error::Unavailable`] if the pool is down (see [`PoolState::down`]).
    fn unavailable_error(&self, st: &mut PoolState<M>, a: &Attempt) -> Option<Error> {
        let down = st.down(&self.cfg)?;
        st.counters.unavailable += 1;
        Some(Error::Unavailable {
            waited: a.start.elapsed(),
            size: st.size,
            failing_for: down.since.elapsed(),
            permanent: down.permanent,
            last_connect_error: down.error,
        })
    }

    /// Count a checkout that timed out and say what happened.
    pub fn timeout_error(&self, st: &mut PoolState<M>, a: &Attempt) -> Error {
        st.counters.checkout_timeouts += 1;
        Error::Timeout {
            waited: a.start.elapsed(),
            size: st.size,
            open: st.open(),
            last_connect_error: st.health.current_error(),
            connecting: st.connecting,
            validation_failures: a.validation_failures,
            last_validation_error: a.last_validation_error.clone(),
        }
    }
}
