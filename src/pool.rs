//! [`ConnectionPool`]: the public pool — checkout (with the checks an idle
//! connection needs first), state, close. The books and the hand-off are in
//! `state`, the checkout wait in `checkout`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use greenpool_runtime::Deadline;

use crate::checkout::Attempt;
use crate::config::Config;
use crate::error::Error;
use crate::events;
use crate::guard::PooledConnection;
use crate::maintenance::{self, CheckoutCheck};
use crate::manager::Manager;
use crate::state::Shared;
use crate::stats::{DiscardReason, State};
use crate::{connector, deadlines};

/// A pool of connections kept open to one backend (geventconnpool's
/// `ConnectionPool`).
///
/// A cheap, clonable handle: clones share one pool. It is `Send + Sync` and
/// usable from green threads and plain OS threads at once. When the last handle
/// is dropped the pool closes (see [`close`](Self::close)).
///
/// ```
/// use greenpool::{ConnectionPool, Manager};
/// use greenpool::testing::TestServer;
/// use greenpool::runtime::net::{connect, ConnectOptions, TcpStream};
/// use std::io::{self, BufRead, BufReader, Write};
/// use std::time::Duration;
///
/// struct Line { addr: String }
/// impl Manager for Line {
///     type Connection = BufReader<TcpStream>;
///     type Error = io::Error;
///     fn new_connection(&self) -> io::Result<Self::Connection> {
///         Ok(BufReader::new(connect(&self.addr, &ConnectOptions::default())?))
///     }
/// }
///
/// let server = TestServer::start()?;
/// let pool = ConnectionPool::new(Line { addr: server.addr().to_string() }, 4)?;
/// let pong = pool.with(|c| {
///     c.get_mut().write_all(b"PING\n")?;
///     let mut reply = String::new();
///     c.read_line(&mut reply)?;
///     Ok::<_, io::Error>(reply)
/// })?;
/// assert_eq!(pong, "PONG\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ConnectionPool<M: Manager> {
    handle: Arc<Handle<M>>,
}

/// Closes the pool when the last [`ConnectionPool`] handle goes away.
/// Background tasks and guards hold the [`Shared`] part only, so they do not
/// keep the pool open.
struct Handle<M: Manager> {
    shared: Arc<Shared<M>>,
}

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// A connection whose peer closed it sooner than this after it was opened,
/// before it did any work, counts as a failed connect (a proxy whose backend
/// is down accepts and closes at once); one closed later was closed for
/// idling. A server's idle timeout is at least a second (Redis counts it in
/// seconds).
const DIED_YOUNG_WITHIN: Duration = Duration::from_millis(500);

impl<M: Manager> ConnectionPool<M> {
    pub(crate) fn start(manager: M, cfg: Config) -> Self {
        let size = cfg.size;
        let opening = cfg.min_idle.unwrap_or(size);
        let shared = Arc::new(Shared::new(manager, cfg, opening, connector::spawn));
        log::debug!(
            "pool {}: starting with {opening} connections (at most {size})",
            shared.cfg.name,
        );
        shared.spawn_connectors(opening);
        maintenance::spawn(&shared);
        deadlines::spawn(&shared);
        ConnectionPool {
            handle: Arc::new(Handle { shared }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<M>> {
        &self.handle.shared
    }

    /// Check out a connection, waiting up to the pool's checkout timeout.
    ///
    /// Returns an idle connection at once if there is one. Otherwise the
    /// caller blocks — only its green thread, or its OS thread outside the
    /// runtime — in a FIFO queue until a connection is given back or opened,
    /// or the timeout passes ([`Error::Timeout`], which says what happened:
    /// connects failing, with the last error; connects still running;
    /// validations failing, with the last validation error; or all
    /// connections in use). A connection idle longer than
    /// [`Builder::validate_after`](crate::Builder::validate_after) is validated first, and a failing one is
    /// discarded and replaced by the next; the caller never sees it, keeps
    /// its place in line, and still gets its answer by the deadline. A caller
    /// on a plain OS thread waits on its own timer, whatever the green
    /// threads do.
    /// Fails with [`Error::Closed`] once the pool is closed.
    pub fn get(&self) -> Result<PooledConnection<M>, Error> {
        self.get_by(self.shared().cfg.checkout_timeout, true)
    }

    /// [`get`](Self::get) with this timeout instead of the pool's.
    /// `Duration::ZERO` never waits (like [`try_get`](Self::try_get)).
    ///
    /// A wait here arms a runtime timer of its own, which costs more than a
    /// wait in [`get`](Self::get) (whose deadlines one watcher per pool
    /// enforces); prefer the pool's checkout timeout on hot paths.
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection<M>, Error> {
        self.get_by(Some(timeout), false)
    }

    /// Check out an idle connection without waiting; fails with
    /// [`Error::Timeout`] when none is idle.
    pub fn try_get(&self) -> Result<PooledConnection<M>, Error> {
        self.get_by(Some(Duration::ZERO), false)
    }

    /// Check out with a timeout (`None`: wait forever); `pool_timeout` says
    /// it is the pool's own, which the deadline watcher can enforce.
    fn get_by(
        &self,
        timeout: Option<Duration>,
        pool_timeout: bool,
    ) -> Result<PooledConnection<M>, Error> {
        // Read the clock only if we have to wait or validate: the fast path
        // takes none.
        let mut attempt: Option<Attempt> = None;
        let got = self.checkout_by(timeout, pool_timeout, &mut attempt);
        let shared = self.shared();
        if shared.has_events() {
            let waited = attempt.map_or(Duration::ZERO, |a| a.start.elapsed());
            shared.emit(|h| match &got {
                Ok(c) => h.checkout(&events::Checkout { id: c.id(), waited }),
                Err(error) => h.checkout_failed(&events::CheckoutFailed { error }),
            });
        }
        got
    }

    /// [`get_by`](Self::get_by) without the event; `attempt` is set once
    /// the checkout had to read the clock.
    fn checkout_by(
        &self,
        timeout: Option<Duration>,
        pool_timeout: bool,
        attempt: &mut Option<Attempt>,
    ) -> Result<PooledConnection<M>, Error> {
        let shared = self.shared();
        loop {
            let (mut held, from_idle, spare) = shared.checkout(timeout, attempt, pool_timeout)?;
            let check = maintenance::checkout_check(shared, &held.conn, from_idle);
            if check == CheckoutCheck::None {
                return Ok(PooledConnection::new(held, spare));
            }
            // The cheap test first: a connection whose peer closed it while
            // it sat idle never costs a round trip (or a caller's request).
            if maintenance::peer_closed(shared, &mut held.conn) {
                held.slot.reason = Some(DiscardReason::Closed);
                if held.conn.created.elapsed() >= DIED_YOUNG_WITHIN {
                    // It lived long enough to be closed for idling (a
                    // server's idle timeout), which says nothing against the
                    // server: no backoff for its slot.
                    held.slot.memory.worked();
                }
                let a = attempt.get_or_insert_with(|| Attempt::new(timeout));
                a.failed_check("the peer closed it while it was idle (Manager::has_broken)");
                shared.discard(held);
                if a.deadline.is_expired() {
                    return Err(shared.timeout_error(&mut shared.lock(), a));
                }
                continue;
            }
            if check == CheckoutCheck::Quick {
                return Ok(PooledConnection::new(held, spare));
            }
            let a = attempt.get_or_insert_with(|| Attempt::new(timeout));
            if a.deadline.is_expired() {
                // No time left to validate: the connection goes back unchecked.
                Shared::give_back_unchecked(held);
                return Err(shared.timeout_error(&mut shared.lock(), a));
            }
            match maintenance::validate(shared, held, a.deadline) {
                Ok(held) => return Ok(PooledConnection::new(held, None)),
                Err(e) => {
                    // Discarded and replaced: try the next one within the
                    // same deadline, and keep this caller's place in line.
                    a.failed_check(&e);
                    if a.deadline.is_expired() {
                        return Err(shared.timeout_error(&mut shared.lock(), a));
                    }
                }
            }
        }
    }

    /// Wait until the connections the pool keeps open are open — all `size`
    /// of them by default, [`min_idle`](crate::Builder::min_idle) if that is set —
    /// e.g. at start-up. Fails with [`Error::NotReady`] (carrying the last
    /// connect error) if they are not open within `timeout`, and with
    /// [`Error::Closed`] if the pool closes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        self.shared().wait_ready(Deadline::after(timeout), timeout)
    }

    /// A snapshot of the pool's counts and counters.
    pub fn state(&self) -> State {
        self.shared().state()
    }

    /// The pool's size: the most connections it opens
    /// ([`Builder::size`](crate::Builder::size), or the last [`resize`](Self::resize)).
    pub fn size(&self) -> usize {
        self.shared().lock().size
    }

    /// The manager, e.g. to read its settings.
    pub fn manager(&self) -> &M {
        &self.shared().manager
    }

    /// Close the pool. Idle connections are closed now (each says goodbye
    /// through [`Manager::close`] in a green thread of its own, bounded by
    /// the health-check timeout); callers waiting in [`get`](Self::get) and
    /// every later `get` fail with [`Error::Closed`]; connections still
    /// checked out are closed the same way when their guard drops;
    /// background tasks stop: connects and health checks in progress are
    /// cancelled (they unwind at their next blocking runtime call, closing
    /// what they hold). Returns without waiting for them. Idempotent; also
    /// happens when the last handle is dropped.
    pub fn close(&self) {
        self.shared().close()
    }

    /// True once the pool is closed.
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }
}

impl<M: Manager> Clone for ConnectionPool<M> {
    fn clone(&self) -> Self {
        ConnectionPool {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl<M: Manager> fmt::Debug for ConnectionPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("name", &self.shared().cfg.name)
            .field("state", &self.state())
            .finish()
    }
}
