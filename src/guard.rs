//! [`PooledConnection`]: the guard that hands out a connection.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::error_type::AsStdError;
use crate::manager::Manager;
use crate::state::{Conn, Held, Shared, Waiter};
use crate::stats::DiscardReason;

/// A connection checked out of a [`ConnectionPool`](crate::ConnectionPool).
///
/// Derefs to the connection. When dropped it goes back into the pool, unless
/// it is to be discarded: [`discard`](Self::discard) was called, a `Result`
/// passed through [`check`](Self::check) was an `Err` in the pool's
/// [`ErrorSet`](crate::ErrorSet) or a timeout, [`Manager::has_broken`] says
/// so, or the guard is dropped by an unwind (a panic or a cancellation). A
/// discarded connection is closed and a replacement is opened in the
/// background.
///
/// [`ConnectionPool::with`](crate::ConnectionPool::with) knows exactly when
/// its closure unwound. A guard from [`get`](crate::ConnectionPool::get) can
/// only ask `std::thread::panicking()`, which is per OS thread: while another
/// green thread on the same worker is unwinding and blocked in a destructor,
/// a healthy connection dropped here is discarded too (a reconnect, never a
/// connection left mid-request handed out again). Prefer `with` where that
/// matters.
///
/// The guard owns a reference to the pool, so it can move to another green
/// thread; a guard that outlives its pool closes the connection when dropped.
pub struct PooledConnection<M: Manager> {
    /// The pool is reached through the slot's token: the guard holds no
    /// reference of its own (one pair of atomic count updates fewer per
    /// checkout, and a guard small enough to move without a `memcpy`).
    held: Option<Held<M>>,
    discard: Option<DiscardReason>,
    /// Set by [`ConnectionPool::with`](crate::ConnectionPool::with), which
    /// catches an unwind of its closure itself: the guard then need not ask
    /// whether its thread is panicking.
    settled: bool,
    /// The waiter of the wait that got the connection, if it waited: the
    /// pool keeps it for reuse when the connection comes back.
    spare: Option<Arc<Waiter<M>>>,
}

impl<M: Manager> PooledConnection<M> {
    pub(crate) fn new(held: Held<M>, spare: Option<Arc<Waiter<M>>>) -> Self {
        PooledConnection {
            held: Some(held),
            discard: None,
            settled: false,
            spare,
        }
    }

    fn shared(&self) -> &Arc<Shared<M>> {
        self.held
            .as_ref()
            .expect("connection present until drop")
            .slot
            .owner()
    }

    fn inner(&self) -> &Conn<M::Connection> {
        &self
            .held
            .as_ref()
            .expect("connection present until drop")
            .conn
    }

    /// Pass a result through the guard: an `Err` in the pool's error set marks
    /// the connection to be discarded when the guard drops. The result is
    /// returned unchanged, so this reads as `conn.check(do_io(&mut conn))?`.
    ///
    /// An `Err` that says the operation timed out (an `io::Error` of kind
    /// `TimedOut` anywhere in its source chain, or a
    /// [`runtime::Elapsed`](crate::runtime::Elapsed)) marks it too, whatever
    /// the error set says: a request that timed out may still get its reply,
    /// and the next request on the connection would read that reply as its
    /// own. (A pool's own checkout timeout in the chain does not count: it
    /// says nothing about this connection.)
    ///
    /// `E` is any error type the pool accepts: see
    /// [`AsStdError`](crate::AsStdError).
    pub fn check<T, E, Via>(&mut self, result: Result<T, E>) -> Result<T, E>
    where
        E: AsStdError<Via>,
    {
        if let Err(e) = &result {
            let e = e.as_std_error();
            crate::error_set::settle_after_io_timeout(e);
            let timed_out = crate::error_set::is_stream_timeout(e);
            if timed_out || self.shared().cfg.discard_on.matches_dyn(e) {
                log::debug!(
                    "pool {}: connection #{} failed with {}; it will be discarded{}",
                    self.shared().cfg.name,
                    self.id(),
                    crate::error::describe(e),
                    if timed_out {
                        " (a timed-out connection is out of step)"
                    } else {
                        ""
                    }
                );
                self.discard = Some(DiscardReason::Error);
            }
        }
        result
    }

    /// Close this connection now instead of giving it back; a replacement is
    /// opened in the background.
    pub fn discard(mut self) {
        if let Some(mut held) = self.held.take() {
            checked_in(&held);
            held.slot.reason = Some(DiscardReason::Explicit);
            let shared = Arc::clone(held.slot.owner());
            shared.discard(held);
        }
    }

    /// Take the connection out of the pool for good (deadpool's
    /// `Object::take`): the pool forgets it, opens a replacement in the
    /// background, and counts it in
    /// [`Counters::detached`](crate::Counters::detached). The connection is
    /// yours to keep or drop; [`Manager::close`] is not called on it. No
    /// checkin event is reported.
    ///
    /// ```
    /// use greenpool::ConnectionPool;
    /// use greenpool::testing::{LineManager, TestServer};
    /// use std::time::Duration;
    ///
    /// let server = TestServer::start()?;
    /// let pool = ConnectionPool::new(LineManager::new(server.addr()), 2)?;
    /// pool.wait_ready(Duration::from_secs(5))?;
    /// let mut mine = pool.get()?.detach();
    /// assert_eq!(mine.request("PING")?, "PONG");
    /// pool.wait_ready(Duration::from_secs(5))?; // the slot was refilled
    /// assert_eq!(pool.state().counters.detached, 1);
    /// assert_eq!(pool.state().open, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detach(mut self) -> M::Connection {
        let Held { conn, mut slot } = self.held.take().expect("connection present until drop");
        slot.detached = true;
        // The slot goes back (and is refilled) before the caller sees the
        // connection.
        drop(slot);
        conn.raw
    }

    /// Mark the connection to be discarded when the guard drops.
    pub fn mark_broken(&mut self) {
        self.discard = Some(DiscardReason::Explicit);
    }

    /// True if the connection will be discarded when the guard drops.
    pub fn is_marked_broken(&self) -> bool {
        self.discard.is_some()
    }

    /// The connection's id, unique within its pool (assigned in opening order
    /// from 1); useful in logs.
    pub fn id(&self) -> u64 {
        self.inner().id
    }

    /// How long ago the connection was opened.
    pub fn age(&self) -> Duration {
        self.inner().created.elapsed()
    }

    /// `with`'s closure unwound (a panic or a cancellation): discard.
    pub(crate) fn unwound(&mut self, payload: &(dyn std::any::Any + Send)) {
        self.discard = Some(if greenpool_runtime::is_cancellation(payload) {
            DiscardReason::Cancelled
        } else {
            DiscardReason::Panic
        });
        self.settled = true;
    }

    /// `with`'s closure returned: no unwind to ask about.
    pub(crate) fn returned(&mut self) {
        self.settled = true;
    }
}

impl<M: Manager> Deref for PooledConnection<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.inner().raw
    }
}

impl<M: Manager> DerefMut for PooledConnection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self
            .held
            .as_mut()
            .expect("connection present until drop")
            .conn
            .raw
    }
}

impl<M: Manager> Drop for PooledConnection<M> {
    fn drop(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        checked_in(&held);
        // A guard from `with` knows whether its closure unwound. A guard from
        // `get` can only ask the OS thread, which may also be unwinding for
        // another green thread (a destructor that yields mid-unwind); then a
        // healthy connection is discarded, which costs a reconnect but never
        // hands out a connection left mid-request by a panic.
        let reason = if !self.settled && std::thread::panicking() {
            Some(DiscardReason::Panic)
        } else {
            self.discard
        };
        let reason = reason.or_else(|| {
            // A panicking check must not lose the pool slot: count it as broken.
            let manager = &held.slot.owner().manager;
            let raw = &mut held.conn.raw;
            let broken =
                panic::catch_unwind(AssertUnwindSafe(|| manager.has_broken(raw))).unwrap_or(true);
            broken.then(|| {
                // It came back without an error, so it did its work; it just
                // cannot be reused (an HTTP `Connection: close`, say). That
                // says nothing against the server: no backoff for the slot.
                held.slot.memory.worked();
                DiscardReason::Broken
            })
        });
        match reason {
            Some(reason) => {
                held.slot.reason = Some(reason);
                Arc::clone(held.slot.owner()).discard(held)
            }
            // No reference to the pool of our own: the give-back reaches it
            // through the connection's token.
            None => Shared::give_back_with(held, self.spare.take()),
        }
    }
}

/// The connection comes back from its user: the checkin event.
fn checked_in<M: Manager>(held: &Held<M>) {
    held.slot
        .owner()
        .emit(|h| h.checkin(&crate::events::Checkin { id: held.conn.id }));
}

impl<M: Manager> fmt::Debug for PooledConnection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("id", &self.id())
            .field("marked_broken", &self.is_marked_broken())
            .finish()
    }
}
