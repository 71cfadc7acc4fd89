//! Event hooks: [`PoolEvents`], set with
//! [`Builder::event_handler`](crate::Builder::event_handler) (r2d2's
//! `HandleEvent`, deadpool's hooks, bb8's `ErrorSink`).
//!
//! The pool calls a handler outside its lock, in whichever green thread (or
//! OS thread) the event happens in: a caller's for checkouts and checkins, a
//! background green thread of the pool's for connects and health checks. A
//! panic in a handler is caught (and logged at most every 10 s); it never
//! costs the pool a slot or a connection. A pool without a handler pays one
//! branch per event and nothing else.

use std::error::Error as StdError;
use std::fmt;
use std::panic::{self, AssertUnwindSafe, RefUnwindSafe, UnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::RateLimit;
use crate::error::Error;
use crate::stats::{DiscardReason, State};

/// How often a handler that keeps panicking is logged.
const PANIC_LOG_EVERY: Duration = Duration::from_secs(10);

/// Receives a pool's events. Every method has a default that does nothing,
/// so a handler implements only what it needs.
///
/// Handlers run inline where the event happens (a caller's checkout, a
/// background connect), so they should be quick and must not block for
/// long: count, record, log. [`state`](Self::state) delivers the pool's
/// counts (open, idle, in use, waiting) once per maintenance tick, for
/// gauges. With the `metrics` feature,
/// `greenpool::metrics::MetricsEvents` is a ready-made handler.
///
/// ```
/// use greenpool::events::{Checkout, Discarded, PoolEvents};
/// use greenpool::testing::{LineManager, TestServer};
/// use greenpool::ConnectionPool;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// #[derive(Default)]
/// struct Counts { checkouts: AtomicU64, discards: AtomicU64 }
///
/// impl PoolEvents for Counts {
///     fn checkout(&self, _: &Checkout) {
///         self.checkouts.fetch_add(1, Ordering::Relaxed);
///     }
///     fn discarded(&self, e: &Discarded) {
///         log::info!("connection #{} discarded: {}", e.id, e.reason);
///         self.discards.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let server = TestServer::start()?;
/// let counts = Arc::new(Counts::default());
/// let pool = ConnectionPool::builder()
///     .size(2)
///     .event_handler(Arc::clone(&counts))
///     .build(LineManager::new(server.addr()))?;
/// pool.wait_ready(Duration::from_secs(5))?;
/// pool.get()?.discard();
/// assert_eq!(counts.checkouts.load(Ordering::Relaxed), 1);
/// assert_eq!(counts.discards.load(Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait PoolEvents: Send + Sync + 'static {
    /// A connection was opened.
    fn connected(&self, event: &Connected) {
        let _ = event;
    }

    /// A connect attempt failed (it is retried with backoff).
    fn connect_failed(&self, event: &ConnectFailed<'_>) {
        let _ = event;
    }

    /// A caller checked out a connection.
    fn checkout(&self, event: &Checkout) {
        let _ = event;
    }

    /// A checkout failed: it timed out ([`Error::Timeout`]), the backend is
    /// down ([`Error::Unavailable`]) or the pool is closed.
    fn checkout_failed(&self, event: &CheckoutFailed<'_>) {
        let _ = event;
    }

    /// A caller handed a connection back (its guard dropped or was
    /// discarded). If the pool closes it rather than keep it,
    /// [`discarded`](Self::discarded) follows.
    fn checkin(&self, event: &Checkin) {
        let _ = event;
    }

    /// The pool closed a connection instead of keeping it, and why.
    fn discarded(&self, event: &Discarded) {
        let _ = event;
    }

    /// A keepalive or a validation ended, passed or failed.
    fn health_check(&self, event: &HealthCheck<'_>) {
        let _ = event;
    }

    /// The pool's counts, once per maintenance tick (at most a second
    /// apart) and once more when the pool closes, for gauges.
    fn state(&self, state: &State) {
        let _ = state;
    }
}

/// A shared handler is a handler: keep an `Arc` to read what it collected.
impl<T: PoolEvents + ?Sized> PoolEvents for Arc<T> {
    fn connected(&self, event: &Connected) {
        (**self).connected(event)
    }
    fn connect_failed(&self, event: &ConnectFailed<'_>) {
        (**self).connect_failed(event)
    }
    fn checkout(&self, event: &Checkout) {
        (**self).checkout(event)
    }
    fn checkout_failed(&self, event: &CheckoutFailed<'_>) {
        (**self).checkout_failed(event)
    }
    fn checkin(&self, event: &Checkin) {
        (**self).checkin(event)
    }
    fn discarded(&self, event: &Discarded) {
        (**self).discarded(event)
    }
    fn health_check(&self, event: &HealthCheck<'_>) {
        (**self).health_check(event)
    }
    fn state(&self, state: &State) {
        (**self).state(state)
    }
}

/// [`PoolEvents::connected`]: a connection was opened.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Connected {
    /// The new connection's id.
    pub id: u64,
    /// How long the connect took ([`Manager::new_connection`](crate::Manager::new_connection),
    /// and on the first connection `server_idle_timeout`).
    pub took: Duration,
}

/// [`PoolEvents::connect_failed`]: a connect attempt failed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConnectFailed<'a> {
    /// Why: the manager's error, a panic of `new_connection`, a connect
    /// past the connect timeout, or a new connection discarded before it
    /// did any useful work.
    pub error: &'a (dyn StdError + Send + Sync + 'static),
    /// The manager called the error permanent
    /// ([`Manager::is_permanent`](crate::Manager::is_permanent)).
    pub permanent: bool,
}

/// [`PoolEvents::checkout`]: a caller got a connection.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Checkout {
    /// The connection's id.
    pub id: u64,
    /// How long the caller waited: in the queue, and for any validation.
    /// Zero when an idle connection was handed out at once (the pool reads
    /// no clock then).
    pub waited: Duration,
}

/// [`PoolEvents::checkout_failed`]: a caller got no connection.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CheckoutFailed<'a> {
    /// What the caller got.
    pub error: &'a Error,
}

impl CheckoutFailed<'_> {
    /// A short name for why, for metric labels: `timeout`, `unavailable`
    /// or `closed`.
    pub fn reason(&self) -> &'static str {
        if self.error.is_unavailable() {
            "unavailable"
        } else if self.error.is_closed() {
            "closed"
        } else {
            "timeout"
        }
    }
}

/// [`PoolEvents::checkin`]: a caller handed a connection back.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Checkin {
    /// The connection's id.
    pub id: u64,
}

/// [`PoolEvents::discarded`]: the pool closed a connection.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Discarded {
    /// The connection's id.
    pub id: u64,
    /// Why.
    pub reason: DiscardReason,
    /// How long it had been open.
    pub age: Duration,
}

/// Which health check a [`HealthCheck`] event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckKind {
    /// [`Manager::keepalive`](crate::Manager::keepalive) on an idle connection.
    Keepalive,
    /// [`Manager::validate`](crate::Manager::validate) at checkout.
    Validation,
}

impl CheckKind {
    /// `"keepalive"` or `"validation"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Keepalive => "keepalive",
            CheckKind::Validation => "validation",
        }
    }
}

/// [`PoolEvents::health_check`]: a keepalive or a validation ended.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HealthCheck<'a> {
    /// The connection's id.
    pub id: u64,
    /// Keepalive or validation.
    pub kind: CheckKind,
    /// How long it took.
    pub took: Duration,
    /// `Ok` if it passed; otherwise why it failed (an error, a panic, or no
    /// answer within the health-check timeout). A failed connection is
    /// discarded ([`PoolEvents::discarded`] follows).
    pub result: Result<(), &'a str>,
}

/// A pool's event handler, with the rate limit on logging its panics.
pub(crate) struct EventHandler {
    handler: Box<dyn PoolEvents>,
    panics: RateLimit,
}

impl EventHandler {
    pub fn new(handler: impl PoolEvents) -> Arc<Self> {
        Arc::new(EventHandler {
            handler: Box::new(handler),
            panics: RateLimit::new(PANIC_LOG_EVERY),
        })
    }

    /// Call the handler; a panic is caught and logged (rate-limited). A
    /// cancellation that unwinds out of a handler is caught too: may's
    /// cancellation is sticky, so the green thread's next blocking call
    /// unwinds again.
    pub fn call(&self, pool: &str, f: impl FnOnce(&dyn PoolEvents)) {
        let handler = &*self.handler;
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| f(handler))) {
            let why = greenpool_runtime::panic_message(&*p).unwrap_or("non-string payload");
            if self.panics.allow() {
                log::error!(
                    "pool {pool}: an event handler panicked: {why}; the pool carries on \
                     (logged at most every {PANIC_LOG_EVERY:?})"
                );
            } else {
                log::debug!("pool {pool}: an event handler panicked: {why}");
            }
        }
    }
}

impl fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHandler")
    }
}

// The pool calls a handler only through `&`, under `catch_unwind`, and
// relies on nothing it holds: a panic in one leaves the pool as it was. A
// handler that keeps state behind interior mutability is its author's to
// keep consistent, as with any shared `Fn` (see src/unwind_safety.rs).
impl UnwindSafe for EventHandler {}
impl RefUnwindSafe for EventHandler {}
