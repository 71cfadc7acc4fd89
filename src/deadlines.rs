//! The checkout deadline watcher: one green thread per pool that times out
//! callers waiting in [`ConnectionPool::get`](crate::ConnectionPool::get).
//!
//! Arming a runtime timer for every wait costs more than the rest of a
//! contended checkout together: may keys its timers by interval, and every
//! timer cancelled before it fires wakes may's timer thread. Waiters with the
//! pool's checkout timeout therefore park without a timer, and this watcher
//! sleeps until the earliest of their deadlines. They all share one timeout
//! and queue in FIFO order, so a newcomer's deadline is almost never earlier
//! than the one the watcher sleeps towards (it kicks the watcher when it is):
//! under steady load the watcher wakes about once per timeout period, not
//! once per checkout.
//!
//! It also enforces the deadlines of the pool's background tasks, so that a
//! validation (whose caller waits for it without a timer) is cancelled at
//! its deadline, not at the next maintenance tick.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use greenpool_runtime::time::clamp_timeout;

use crate::manager::Manager;
use crate::state::{Shared, Task};
use crate::tasks::Kind;

/// Start the watcher. If it cannot start, waiters fall back to timers.
pub(crate) fn spawn<M: Manager>(shared: &Arc<Shared<M>>) {
    match Task::spawn(shared, Kind::Deadlines, None, run) {
        Ok(_) => shared.has_watcher.store(true, Ordering::Release),
        Err(e) => log::warn!(
            "pool {}: cannot start the checkout deadline watcher ({e}); waiters use \
             their own timers",
            shared.cfg.name
        ),
    }
}

fn run<M: Manager>(task: Task<M>) {
    let shared = &task.shared;
    loop {
        if shared.is_closed() {
            return;
        }
        let now = Instant::now();
        // Validations past their deadline (and any other task) are cancelled
        // here, on time: their callers wait without timers of their own.
        shared.tasks.enforce_deadlines(now);
        let next_task = shared.tasks.next_deadline();
        let (expired, next) = {
            let mut st = shared.lock();
            let mut expired = Vec::new();
            // Expired waiters leave the queue here, under the lock, so no
            // giver can hand them a connection afterwards.
            st.waiters.retain(|w| match w.watched_deadline {
                Some(at) if at <= now => {
                    w.expired.store(true, Ordering::Release);
                    expired.push(Arc::clone(w));
                    false
                }
                _ => true,
            });
            // O(waiters), but only once per wake-up, which is rare.
            let next_waiter = st.waiters.iter().filter_map(|w| w.watched_deadline).min();
            let next = match (next_waiter, next_task) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            st.watcher_wakes_at = next;
            (expired, next)
        };
        for w in expired {
            w.unpark();
        }
        match next {
            // A waiter that arrives while we sleep posts the kick.
            None => shared.watcher_kick.wait(),
            Some(at) => {
                if let Some(d) = clamp_timeout(at.saturating_duration_since(Instant::now())) {
                    shared.watcher_kick.wait_timeout(d);
                    // A timed-out wait resumes on may's timer thread.
                    greenpool_runtime::yield_now();
                }
            }
        }
    }
}
