//! One owner for each of the pool's `size` slots.
//!
//! A [`Slot`] is an RAII token: whoever holds a connection that is not idle,
//! or stands in for one (a connector opening it, a health check running on
//! it, a user's guard, a waiter it was handed to), holds the slot's token.
//! The token's count in [`PoolState`](crate::pool::PoolState) changes in the
//! same critical section as the token is made or disarmed, and dropping an
//! armed token — on any path: a return, an unwind, a cancellation, a panic —
//! gives the slot back and, if the pool still wants the slot
//! (`PoolState::wanted`: always, unless `min_idle` is below the size or
//! `resize` lowered it), starts a replacement connector. Idle connections
//! hold no token: they sit in the pool's idle list, counted by its length,
//! and become a token again under the same lock that takes them out.
//!
//! So the books cannot drift: `open + connecting` is the number of tokens
//! plus idle connections, never above `size` (but for the surplus a `resize`
//! down leaves until it comes back), and a slot is only ever lost
//! when a connector green thread cannot be started at all (then maintenance
//! reopens it on its next tick).
//!
//! A slot also remembers its connect history ([`Memory`]): its backoff
//! survives discards, and resets only after a connection in this slot did
//! useful work. A connection discarded before it did any (it failed, broke or
//! failed a health check) counts as a failed connect.

use std::sync::Arc;
use std::time::Instant;

use crate::connector::{self, Backoff};
use crate::error::SharedError;
use crate::manager::Manager;
use crate::pool::{Conn, Shared};
use crate::stats::DiscardReason;

/// What a slot's token stands for; each role has its own count in the pool
/// state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A connector is opening (or backing off before opening) a connection.
    Connecting,
    /// A user (or a waiter it was handed to) holds the connection.
    InUse,
    /// A keepalive or validation runs on the connection.
    Checking,
}

/// A slot's connect history; copied along with the slot from connection to
/// connector to connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Failed connects in a row, counting connections that were discarded
    /// before they did any useful work.
    pub failures: u32,
    /// The delay schedule before the next attempt.
    pub backoff: Backoff,
    /// The current connection has done useful work (a user gave it back in
    /// working order, or it passed a health check).
    pub useful: bool,
}

impl Memory {
    pub fn new<M: Manager>(shared: &Shared<M>) -> Self {
        Memory {
            failures: 0,
            backoff: Backoff::new(shared.cfg.backoff_min, shared.cfg.backoff_max),
            useful: false,
        }
    }

    /// A connection in this slot did useful work: forget past failures.
    /// Returns true the first time for this connection.
    pub fn worked(&mut self) -> bool {
        if self.useful {
            return false;
        }
        self.useful = true;
        self.failures = 0;
        self.backoff.reset();
        true
    }
}

/// Ownership of one pool slot; see the module docs.
pub(crate) struct Slot<M: Manager> {
    shared: Arc<Shared<M>>,
    role: Role,
    armed: bool,
    /// The slot's connect history.
    pub memory: Memory,
    /// Why the connection is being closed, for the counters, when the token
    /// is dropped holding one. `None`: a default for the role.
    pub reason: Option<DiscardReason>,
    /// The id and opening time of the connection the token stands for (none
    /// while connecting), for the discard event.
    pub conn: Option<(u64, Instant)>,
    /// The connection left the pool for good
    /// ([`PooledConnection::detach`](crate::PooledConnection::detach)): the
    /// slot is replaced, but nothing was discarded.
    pub detached: bool,
}

/// A connection together with its slot's token. Dropping it closes the
/// connection first, then gives the slot back (fields drop in order).
pub(crate) struct Held<M: Manager> {
    pub conn: Box<Conn<M::Connection>>,
    pub slot: Slot<M>,
}

impl<M: Manager> Slot<M> {
    /// A token for a slot the caller has just counted under `role` (in the
    /// same critical section of the pool lock, or before anyone can see it).
    pub fn adopt(shared: &Arc<Shared<M>>, role: Role, memory: Memory) -> Self {
        Slot {
            shared: Arc::clone(shared),
            role,
            armed: true,
            memory,
            reason: None,
            conn: None,
            detached: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Change the role; the caller moves the count under the pool lock.
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    /// The caller has uncounted the slot under the pool lock (the connection
    /// went idle): dropping the token does nothing more.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

/// A connection was closed before it did any useful work.
#[derive(Debug)]
struct DiedYoung(DiscardReason);

impl std::fmt::Display for DiedYoung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a new connection was discarded before it did any useful work ({}); \
             the server accepts connections but they do not work",
            self.0
        )
    }
}

impl std::error::Error for DiedYoung {}

/// Discard reasons that say something about the server, so that a
/// connection discarded for one before it did useful work is a failed
/// connect. A panic, a cancellation, an explicit discard and an expiry say
/// nothing.
fn blames_the_server(reason: DiscardReason) -> bool {
    matches!(reason, DiscardReason::Broken) || casts_doubt_on_idle(reason)
}

/// Discard reasons that make every connection idle since then suspect
/// ([`Shared::suspect_idle`]). Not `Broken`: `has_broken` on return also
/// reports an HTTP `Connection: close` after a good response.
fn casts_doubt_on_idle(reason: DiscardReason) -> bool {
    matches!(
        reason,
        DiscardReason::Error
            | DiscardReason::Closed
            | DiscardReason::Keepalive
            | DiscardReason::Validation
    )
}

impl<M: Manager> Drop for Slot<M> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let shared = &self.shared;
        let mut memory = self.memory;
        let mut discarded = None;
        let (replace, report) = {
            let mut st = shared.lock();
            st.uncount(self.role);
            if shared.is_closed() {
                // The slot is simply given back; nothing replaces it.
                (false, None)
            } else {
                let mut report = None;
                if self.detached {
                    st.counters.detached += 1;
                } else if self.role != Role::Connecting {
                    let reason = self.reason.unwrap_or(match self.role {
                        Role::Checking => DiscardReason::Keepalive,
                        _ => DiscardReason::Panic,
                    });
                    st.counters.discarded.count(reason);
                    discarded = Some(reason);
                    if casts_doubt_on_idle(reason) {
                        shared.suspect_idle();
                    }
                    if !memory.useful && blames_the_server(reason) {
                        memory.failures = memory.failures.saturating_add(1);
                        let error: SharedError = Arc::new(DiedYoung(reason));
                        report = Some(st.connect_failed(&shared.cfg, error, false));
                    }
                }
                memory.useful = false;
                let wanted = st.slots() < st.wanted();
                if wanted {
                    st.connecting += 1;
                }
                (wanted, report)
            }
        };
        if let (Some(reason), Some((id, created))) = (discarded, self.conn) {
            shared.emit(|h| {
                h.discarded(&crate::events::Discarded {
                    id,
                    reason,
                    age: created.elapsed(),
                })
            });
        }
        if let Some(report) = report {
            report.emit(shared);
        }
        if replace {
            connector::spawn(shared, memory);
        } else if shared.is_closed() {
            // A `close_timeout` may be waiting for the last slot.
            shared.wake_state_waiters();
        }
    }
}
