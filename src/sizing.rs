//! Reshaping a running pool: [`resize`](ConnectionPool::resize) changes its
//! size, [`retain`](ConnectionPool::retain) evicts idle connections by a
//! predicate, [`close_timeout`](ConnectionPool::close_timeout) closes and
//! waits until everything has ended. (Growth on demand between
//! [`Builder::min_idle`](crate::Builder::min_idle) and the size is the
//! pool's own: see `PoolState::wanted`.)

use std::time::Duration;

use greenpool_runtime::Deadline;

use crate::config::MAX_SIZE;
use crate::error::BuildError;
use crate::manager::Manager;
use crate::pool::ConnectionPool;
use crate::state::Shared;
use crate::stats::DiscardReason;

/// What [`ConnectionPool::retain`]'s predicate learns about an idle
/// connection besides the connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The connection's id (as [`PooledConnection::id`](crate::PooledConnection::id)).
    pub id: u64,
    /// How long ago it was opened.
    pub age: Duration,
    /// How long it has been idle, on the pool's coarse clock (see
    /// [`Builder::validate_after`](crate::Builder::validate_after)).
    pub idle_for: Duration,
}

impl<M: Manager> ConnectionPool<M> {
    /// Change the most connections the pool opens (deadpool's `resize`).
    /// Never blocks.
    ///
    /// Growing opens the new connections in the background (as far as
    /// [`Builder::min_idle`](crate::Builder::min_idle) asks: with the
    /// default, all of them). Shrinking closes idle connections above the
    /// new size at once, the longest idle first; connections in use close
    /// as they are given back, and connects in progress as they finish.
    /// Each counts as [`DiscardReason::Surplus`] and is not replaced, so
    /// [`state`](Self::state) shows `open + connecting` above `size` until
    /// the last of them is back. A `min_idle` above the new size acts as the
    /// size. On a closed pool it does nothing.
    ///
    /// Fails, changing nothing, if `size` is 0 or above [`MAX_SIZE`].
    ///
    /// ```
    /// use greenpool::ConnectionPool;
    /// use greenpool::testing::{LineManager, TestServer};
    /// use std::time::Duration;
    ///
    /// let server = TestServer::start()?;
    /// let pool = ConnectionPool::new(LineManager::new(server.addr()), 2)?;
    /// pool.resize(4)?;
    /// pool.wait_ready(Duration::from_secs(5))?; // 4 open
    /// assert_eq!(pool.state().open, 4);
    /// assert!(pool.resize(0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resize(&self, size: usize) -> Result<(), BuildError> {
        if size == 0 || size > MAX_SIZE {
            return Err(BuildError::new(format!(
                "resize: size must be between 1 and {MAX_SIZE}, got {size}"
            )));
        }
        self.shared().resize(size);
        Ok(())
    }

    /// Close every idle connection for which `keep` returns false, and open a
    /// replacement for each (as far as the pool wants one: all of them unless
    /// [`Builder::min_idle`](crate::Builder::min_idle) is below the size);
    /// returns how many were closed. Use it to evict
    /// connections to a server that is no longer the right one (after a
    /// failover, a DNS change) without closing the pool.
    ///
    /// Only connections idle at the call are seen; those checked out are not
    /// (mark them with [`PooledConnection::mark_broken`](crate::PooledConnection::mark_broken)
    /// instead). `keep` runs outside the pool's lock, in the caller; while it
    /// runs, the idle connections are out of the pool, so keep it quick. If
    /// `keep` panics, the connections not yet judged are closed and
    /// replaced (no slot is lost) and the panic continues.
    ///
    /// ```
    /// use greenpool::ConnectionPool;
    /// use greenpool::testing::{LineManager, TestServer};
    /// use std::time::Duration;
    ///
    /// let server = TestServer::start()?;
    /// let pool = ConnectionPool::new(LineManager::new(server.addr()), 4)?;
    /// pool.wait_ready(Duration::from_secs(5))?;
    /// // Evict the connections with an odd id.
    /// let closed = pool.retain(|_conn, info| info.id % 2 == 0);
    /// assert_eq!(closed, 2);
    /// pool.wait_ready(Duration::from_secs(5))?; // replaced
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&M::Connection, &ConnInfo) -> bool) -> usize {
        let shared = self.shared();
        let taken: Vec<_> = {
            let mut st = shared.lock();
            let idle = std::mem::take(&mut st.idle);
            idle.into_iter()
                // Counted as explicit if `keep` unwinds before judging it.
                .map(|conn| st.hold_to_close(shared, conn, DiscardReason::Explicit))
                .collect()
        };
        let now = shared.clock.now();
        let mut closed = 0;
        for mut held in taken {
            let info = ConnInfo {
                id: held.conn.id,
                age: held.conn.created.elapsed(),
                idle_for: now.since(held.conn.last_ok),
            };
            if keep(&held.conn.raw, &info) {
                held.slot.reason = None;
                Shared::give_back_unchecked(held);
            } else {
                closed += 1;
                shared.discard(held);
            }
        }
        closed
    }

    /// [`close`](Self::close) the pool, then wait up to `timeout` until
    /// everything has ended: every connection closed (those checked out
    /// included, so this waits for their guards to drop), every goodbye
    /// ([`Manager::close`]) and every background green thread finished.
    /// Returns true if that happened in time; false leaves it to finish on
    /// its own ([`state`](Self::state) says what is left). Blocks only the
    /// calling green thread (or OS thread).
    #[must_use = "false means something was still running at the timeout"]
    pub fn close_timeout(&self, timeout: Duration) -> bool {
        self.close();
        self.shared().wait_drained(Deadline::after(timeout))
    }
}
