//! One owner for each of the pool's slots.
//!
//! A [`Slot`] is an RAII token: whoever holds a connection that is not idle,
//! or stands in for one (a connector opening it, a health check running on
//! it, a user's guard, a waiter it was handed to), holds the slot's token.
//! The token's count in the pool's books changes in the same critical
//! section as the token is made or disarmed, and dropping an armed token —
//! on any path: a return, an unwind, a cancellation, a panic — hands the
//! slot back to its owner ([`SlotOwner::release`]), which decides whether a
//! replacement connects. Idle connections hold no token: they sit in the
//! pool's idle list, counted by its length, and become a token again under
//! the same lock that takes them out.
//!
//! So the books cannot drift: `open + connecting` is the number of tokens
//! plus idle connections, and a slot is only ever lost when a connector
//! green thread cannot be started at all (then maintenance reopens it on its
//! next tick).
//!
//! A slot also remembers its connect history ([`Memory`]): its backoff
//! survives discards, and resets only after a connection in this slot did
//! useful work.
//!
//! The token knows nothing of the pool: the owner (the pool's shared state,
//! `state::Shared`) says what a release does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
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
    /// A slot that never connected, with backoff delays from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Memory {
            failures: 0,
            backoff: Backoff::new(min, max),
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

/// Who gives a dropped token's slot back: the pool's shared state.
pub(crate) trait SlotOwner {
    /// An armed token was dropped (see the module docs); `owner` is the one
    /// it was made for.
    fn release(owner: &Arc<Self>, slot: Released);
}

/// What a dropped token hands back to its [`SlotOwner`].
pub(crate) struct Released {
    pub role: Role,
    pub memory: Memory,
    pub reason: Option<DiscardReason>,
    /// The id and opening time of the connection (none while connecting).
    pub conn: Option<(u64, Instant)>,
    pub detached: bool,
}

/// Ownership of one pool slot; see the module docs.
pub(crate) struct Slot<O: SlotOwner> {
    owner: Arc<O>,
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

impl<O: SlotOwner> Slot<O> {
    /// A token for a slot the caller has just counted under `role` (in the
    /// same critical section of the pool lock, or before anyone can see it,
    /// or, with nothing between that can unwind, just after).
    pub fn adopt(owner: Arc<O>, role: Role, memory: Memory) -> Self {
        Slot {
            owner,
            role,
            armed: true,
            memory,
            reason: None,
            conn: None,
            detached: false,
        }
    }

    /// The owner the token gives its slot back to.
    pub fn owner(&self) -> &Arc<O> {
        &self.owner
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

impl<O: SlotOwner> Drop for Slot<O> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let released = Released {
            role: self.role,
            memory: self.memory,
            reason: self.reason,
            conn: self.conn,
            detached: self.detached,
        };
        O::release(&self.owner, released);
    }
}
