//! Pool state snapshots and counters.

use std::fmt;

/// Why a connection was closed instead of going back into the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiscardReason {
    /// Work on it failed with an error in the pool's [`ErrorSet`](crate::ErrorSet),
    /// or timed out (see [`PooledConnection::check`](crate::PooledConnection::check)).
    Error,
    /// The code holding it panicked.
    Panic,
    /// [`PooledConnection::discard`](crate::PooledConnection::discard) was called.
    Explicit,
    /// [`Manager::has_broken`](crate::Manager::has_broken) said so on return.
    Broken,
    /// [`Manager::has_broken`](crate::Manager::has_broken) said so at
    /// checkout: the peer closed or reset the connection while it was idle.
    Closed,
    /// The green thread holding it was cancelled (e.g. by
    /// [`runtime::timeout`](crate::runtime::timeout)): its work stopped at an
    /// unknown point.
    Cancelled,
    /// [`Manager::keepalive`](crate::Manager::keepalive) failed, panicked or
    /// timed out.
    Keepalive,
    /// [`Manager::validate`](crate::Manager::validate) failed, panicked or
    /// timed out at checkout.
    Validation,
    /// It exceeded the idle timeout or its maximum lifetime.
    Expired,
    /// The pool had more connections than it needs: one above
    /// [`Builder::min_idle`](crate::Builder::min_idle) idle too long, or one
    /// above a size lowered by [`ConnectionPool::resize`](crate::ConnectionPool::resize).
    /// Not replaced.
    Surplus,
}

impl DiscardReason {
    /// A short lowercase name for metric labels: `error`, `panic`,
    /// `explicit`, `broken`, `closed`, `cancelled`, `keepalive`,
    /// `validation`, `expired`, `surplus`.
    pub fn label(self) -> &'static str {
        match self {
            DiscardReason::Error => "error",
            DiscardReason::Panic => "panic",
            DiscardReason::Explicit => "explicit",
            DiscardReason::Broken => "broken",
            DiscardReason::Closed => "closed",
            DiscardReason::Cancelled => "cancelled",
            DiscardReason::Keepalive => "keepalive",
            DiscardReason::Validation => "validation",
            DiscardReason::Expired => "expired",
            DiscardReason::Surplus => "surplus",
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiscardReason::Closed => "closed by the peer while idle",
            other => other.label(),
        })
    }
}

/// Connections discarded, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Discards {
    /// Failed with an error in the pool's error set, or timed out.
    pub error: u64,
    /// The holder panicked.
    pub panic: u64,
    /// Discarded explicitly.
    pub explicit: u64,
    /// Reported broken by `Manager::has_broken` on return.
    pub broken: u64,
    /// Found closed by the peer at checkout (`Manager::has_broken`).
    pub closed: u64,
    /// The holder's green thread was cancelled.
    pub cancelled: u64,
    /// Failed a keepalive.
    pub keepalive: u64,
    /// Failed validation at checkout.
    pub validation: u64,
    /// Idle too long or past its lifetime.
    pub expired: u64,
    /// Closed because the pool had more than it needs (not replaced).
    pub surplus: u64,
}

impl Discards {
    /// All discards together.
    pub fn total(&self) -> u64 {
        self.error
            + self.panic
            + self.explicit
            + self.broken
            + self.closed
            + self.cancelled
            + self.keepalive
            + self.validation
            + self.expired
            + self.surplus
    }

    pub(crate) fn count(&mut self, reason: DiscardReason) {
        let slot = match reason {
            DiscardReason::Error => &mut self.error,
            DiscardReason::Panic => &mut self.panic,
            DiscardReason::Explicit => &mut self.explicit,
            DiscardReason::Broken => &mut self.broken,
            DiscardReason::Closed => &mut self.closed,
            DiscardReason::Cancelled => &mut self.cancelled,
            DiscardReason::Keepalive => &mut self.keepalive,
            DiscardReason::Validation => &mut self.validation,
            DiscardReason::Expired => &mut self.expired,
            DiscardReason::Surplus => &mut self.surplus,
        };
        *slot += 1;
    }
}

/// Totals since the pool started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Connections opened.
    pub created: u64,
    /// Failed connect attempts: errors and panics of `new_connection`,
    /// connects cancelled for taking longer than the connect timeout, and
    /// connections discarded (for an error, a failed health check or
    /// `has_broken`) before they did any useful work.
    pub connect_failures: u64,
    /// Connections closed instead of pooled, by reason.
    pub discarded: Discards,
    /// Successful checkouts.
    pub checkouts: u64,
    /// Checkouts that had to wait for a connection.
    pub waited_checkouts: u64,
    /// Checkouts that gave up with a timeout (a [`try_get`] that found
    /// nothing idle counts too).
    ///
    /// [`try_get`]: crate::ConnectionPool::try_get
    pub checkout_timeouts: u64,
    /// Checkouts that failed fast with
    /// [`Error::Unavailable`](crate::Error::Unavailable): no connection was
    /// open and the connects were failing.
    pub unavailable: u64,
    /// Keepalive calls that succeeded.
    pub keepalives: u64,
    /// Connections taken out of the pool for good with
    /// [`PooledConnection::detach`](crate::PooledConnection::detach) (each
    /// slot was refilled).
    pub detached: u64,
}

/// A snapshot of a pool, from [`ConnectionPool::state`](crate::ConnectionPool::state).
///
/// `open == idle + in_use + checking` holds in every snapshot, and so does
/// `open + connecting <= size` except for a while after
/// [`resize`](crate::ConnectionPool::resize) lowered `size` (the surplus
/// closes as it comes back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The most connections the pool opens: [`Builder::size`](crate::Builder::size),
    /// or the last [`resize`](crate::ConnectionPool::resize).
    pub size: usize,
    /// Idle connections the pool keeps open ahead of demand
    /// ([`Builder::min_idle`](crate::Builder::min_idle), at most `size`).
    pub min_idle: usize,
    /// Connections open now.
    pub open: usize,
    /// Open and waiting in the pool.
    pub idle: usize,
    /// Open and held by a user (or being validated for one).
    pub in_use: usize,
    /// Open and being checked by a keepalive.
    pub checking: usize,
    /// Connections being opened (including those waiting out a backoff).
    pub connecting: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
    /// True once the pool is closed.
    pub closed: bool,
    /// Background green threads alive: connectors, the maintenance thread,
    /// the checkout deadline watcher and health checks. Drops to 0 soon after
    /// the pool closes (connects and health checks in progress are
    /// cancelled).
    pub background_tasks: usize,
    /// Totals since the pool started.
    pub counters: Counters,
}
