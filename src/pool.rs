//! [`ConnectionPool`]: checkout, hand-off to waiters, return, discard, close.
//!
//! All bookkeeping lives in one [`PoolState`] behind one runtime mutex. The
//! lock is held only for a few pointer moves and counter updates, never across
//! a blocking call or a call into user code (the manager, a connection's
//! destructor), so it never parks a green thread for long.
//!
//! Fairness: a connection given back goes straight to the oldest waiter
//! (FIFO hand-off); it is never put where a newcomer could take it first.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, TryLockError};
use std::time::{Duration, Instant};

use greenpool_runtime::sync::{
    AtomicOption, Blocker, Mutex, MutexGuard, ParkError, Semaphore, SyncFlag,
};
use greenpool_runtime::{Deadline, Wait};

use crate::builder::{Builder, Config};
use crate::clock::{CoarseClock, Millis};
use crate::connector::{self, ConnectHealth};
use crate::deadlines;
use crate::error::Error;
use crate::guard::PooledConnection;
use crate::maintenance;
use crate::manager::Manager;
use crate::stats::{Counters, DiscardReason, State};

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

/// A pooled connection with the bookkeeping the pool needs.
pub(crate) struct Conn<C> {
    pub raw: C,
    pub id: u64,
    pub created: Instant,
    /// Last time the connection was known to work: returned by a user after
    /// work that did not fail, or passed a keepalive (coarse clock).
    pub last_ok: Millis,
    /// When the connection reaches its maximum lifetime, with jitter (coarse
    /// clock).
    pub expires: Option<Millis>,
}

/// A caller blocked in `get`. Exactly one of two things ends the wait, both
/// under the pool lock and both removing the waiter from the queue first: a
/// giver fills `slot`, or the deadline watcher sets `expired`. Then it is
/// unparked.
pub(crate) struct Waiter<C> {
    slot: AtomicOption<Conn<C>>,
    blocker: Blocker,
    /// The deadline, when the pool's deadline watcher enforces it (a `get`
    /// with the pool's checkout timeout). `None`: the waiter parks with its
    /// own timer (`get_timeout`), or waits forever.
    pub watched_deadline: Option<Instant>,
    /// Set by the deadline watcher when it took this waiter off the queue.
    pub expired: AtomicBool,
}

impl<C> Waiter<C> {
    pub fn unpark(&self) {
        self.blocker.unpark()
    }
}

pub(crate) struct PoolState<C> {
    /// Idle connections; the back is the most recently returned (LIFO keeps
    /// the busiest connections warm and lets the rest be kept alive or expire).
    pub idle: VecDeque<Conn<C>>,
    pub waiters: VecDeque<Arc<Waiter<C>>>,
    /// When the deadline watcher will next wake (`None`: not until kicked).
    /// A watched waiter with an earlier deadline must kick it.
    pub watcher_wakes_at: Option<Instant>,
    pub in_use: usize,
    pub checking: usize,
    pub connecting: usize,
    pub counters: Counters,
    pub health: ConnectHealth,
    /// Keepalive interval learnt from `Manager::server_idle_timeout`.
    pub learnt_keepalive: Option<Duration>,
    pub asked_server_idle_timeout: bool,
    /// Callers of `wait_ready`, woken when a connection opens or the pool
    /// closes.
    ready_waiters: Vec<Arc<Blocker>>,
}

impl<C> PoolState<C> {
    pub fn open(&self) -> usize {
        self.idle.len() + self.in_use + self.checking
    }

    /// Give a connection counted in `in_use` to the oldest waiter (it stays in
    /// use), or make it idle. Returns the waiter to unpark once the lock is
    /// released.
    #[must_use]
    fn deliver_in_use(&mut self, conn: Conn<C>) -> Option<Arc<Waiter<C>>> {
        match self.waiters.pop_front() {
            Some(w) => {
                w.slot.store(conn);
                self.counters.checkouts += 1;
                Some(w)
            }
            None => {
                self.in_use -= 1;
                self.idle.push_back(conn);
                None
            }
        }
    }
}

pub(crate) struct Shared<M: Manager> {
    pub manager: M,
    pub cfg: Config,
    state: Mutex<PoolState<M::Connection>>,
    closed: AtomicBool,
    /// Fired on close: wakes background tasks out of their sleeps.
    pub close_flag: SyncFlag,
    /// Wakes the maintenance green thread early: on close, and when its tick
    /// must change (a keepalive interval was learnt from the server).
    pub maintenance_kick: Semaphore,
    /// Wakes the deadline watcher: a first watched waiter arrived, or close.
    pub watcher_kick: Semaphore,
    /// False if the deadline watcher could not be started: every waiter then
    /// parks with its own timer.
    pub has_watcher: AtomicBool,
    next_id: AtomicU64,
    pub clock: CoarseClock,
    /// Background green threads alive (connectors, maintenance, health checks).
    tasks: AtomicUsize,
}

/// A background green thread's share of the pool; counted in
/// [`State::background_tasks`] from creation until dropped, so tests can prove
/// that no green thread outlives a closed pool.
pub(crate) struct Task<M: Manager> {
    pub shared: Arc<Shared<M>>,
}

impl<M: Manager> Task<M> {
    pub fn new(shared: &Arc<Shared<M>>) -> Self {
        shared.tasks.fetch_add(1, Ordering::AcqRel);
        Task {
            shared: Arc::clone(shared),
        }
    }

    /// Run `body` in a new background green thread named `<pool>-<role>`.
    /// Fails only if no stack can be allocated; the task is then uncounted.
    pub fn spawn(
        shared: &Arc<Shared<M>>,
        role: &str,
        body: impl FnOnce(Task<M>) + Send + 'static,
    ) -> std::io::Result<()> {
        let task = Task::new(shared);
        shared
            .task_builder(role)
            .spawn(move || body(task))
            .map(drop)
    }
}

impl<M: Manager> Shared<M> {
    /// A green-thread builder for this pool's background work: named after
    /// the pool and `role`, with the configured connector stack size.
    pub fn task_builder(&self, role: &str) -> greenpool_runtime::Builder {
        let builder = greenpool_runtime::Builder::new().name(format!("{}-{role}", self.cfg.name));
        match self.cfg.connector_stack_size {
            Some(bytes) => builder.stack_size(bytes),
            None => builder,
        }
    }
}

impl<M: Manager> Drop for Task<M> {
    fn drop(&mut self) {
        self.shared.tasks.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<M: Manager> ConnectionPool<M> {
    /// A pool that keeps `size` connections open, with every other setting at
    /// its default (see [`Builder`]). Returns at once; connections open in the
    /// background. Fails only if `size` is 0.
    pub fn new(manager: M, size: usize) -> Result<Self, crate::BuildError> {
        Builder::new().size(size).build(manager)
    }

    /// A [`Builder`] for every option.
    pub fn builder() -> Builder<M> {
        Builder::new()
    }

    pub(crate) fn start(manager: M, cfg: Config) -> Self {
        let size = cfg.size;
        let shared = Arc::new(Shared {
            manager,
            state: Mutex::new(PoolState {
                idle: VecDeque::with_capacity(size),
                waiters: VecDeque::new(),
                watcher_wakes_at: None,
                in_use: 0,
                checking: 0,
                connecting: size,
                counters: Counters::default(),
                health: ConnectHealth::default(),
                learnt_keepalive: None,
                asked_server_idle_timeout: false,
                ready_waiters: Vec::new(),
            }),
            closed: AtomicBool::new(false),
            close_flag: SyncFlag::new(),
            maintenance_kick: Semaphore::new(0),
            watcher_kick: Semaphore::new(0),
            has_watcher: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            clock: CoarseClock::new(),
            tasks: AtomicUsize::new(0),
            cfg,
        });
        log::debug!(
            "pool {}: starting with {} connections",
            shared.cfg.name,
            size
        );
        for _ in 0..size {
            connector::spawn(&shared);
        }
        maintenance::spawn(&shared);
        deadlines::spawn(&shared);
        ConnectionPool {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared<M>> {
        &self.handle.shared
    }

    /// Check out a connection, waiting up to the pool's checkout timeout.
    ///
    /// Returns an idle connection at once if there is one. Otherwise the
    /// caller blocks — only its green thread, or its OS thread outside the
    /// runtime — in a FIFO queue until a connection is given back or opened,
    /// or the timeout passes ([`Error::Timeout`], which names the last connect
    /// error if the pool is failing to connect). A connection idle longer than
    /// [`Builder::validate_after`] is validated first, and a failing one is
    /// discarded and replaced by the next; the caller never sees it.
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
        let shared = self.shared();
        // Read the clock only if we have to wait: the fast path takes none.
        let mut waiting_since: Option<(Instant, Deadline)> = None;
        loop {
            let mut conn = match shared.try_checkout()? {
                Some(conn) => conn,
                None => {
                    let (start, deadline) = *waiting_since.get_or_insert_with(|| {
                        let deadline = match timeout {
                            Some(d) => Deadline::after(d),
                            None => Deadline::never(),
                        };
                        (Instant::now(), deadline)
                    });
                    shared.checkout(deadline, start, pool_timeout)?
                }
            };
            if maintenance::needs_validation(shared, &conn) {
                match maintenance::validate(shared, conn) {
                    Ok(c) => conn = c,
                    // Discarded and replaced: try the next one.
                    Err(()) => continue,
                }
            }
            return Ok(PooledConnection::new(Arc::clone(shared), conn));
        }
    }

    /// Run `f` on a pooled connection and give the connection back, or
    /// discard it if `f` fails with an error in the pool's
    /// [`ErrorSet`](crate::ErrorSet) or panics (the panic then continues).
    ///
    /// Blocks like [`get`](Self::get) first; a checkout failure is converted
    /// into `E` with `From<greenpool::Error>` (provided for `io::Error`).
    pub fn with<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut M::Connection) -> Result<T, E>,
        E: From<Error> + StdError + 'static,
    {
        let mut conn = self.get()?;
        let result = f(&mut conn);
        conn.check(result)
    }

    /// Wait until all `size` connections are open, e.g. at start-up. Fails
    /// with [`Error::Timeout`] (carrying the last connect error) if they are
    /// not open within `timeout`, and with [`Error::Closed`] if the pool
    /// closes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        self.shared().wait_ready(Deadline::after(timeout), timeout)
    }

    /// A snapshot of the pool's counts and counters.
    pub fn state(&self) -> State {
        self.shared().state()
    }

    /// The pool's size.
    pub fn size(&self) -> usize {
        self.shared().cfg.size
    }

    /// The manager, e.g. to read its settings.
    pub fn manager(&self) -> &M {
        &self.shared().manager
    }

    /// Close the pool. Idle connections are closed now; callers waiting in
    /// [`get`](Self::get) and every later `get` fail with [`Error::Closed`];
    /// connections still checked out are closed when their guard drops;
    /// background tasks stop (a connect attempt in progress is finished and its
    /// connection closed). Returns without waiting for them. Idempotent; also
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

impl<M: Manager> Shared<M> {
    /// Lock the pool state.
    ///
    /// This never parks the green thread: it spins on `try_lock`, yielding the
    /// OS thread between tries. The lock is held only for a few instructions
    /// and never across a blocking call (a holder cannot be descheduled by
    /// another green thread while holding it), so the wait is short. Parking
    /// would be wrong here: in a green thread that has been cancelled, may
    /// turns any park into a cancellation panic, which would leave the pool's
    /// books half-updated (a waiter left in the queue, a slot never given
    /// back), and inside an unwind (a guard dropped by a cancelled green
    /// thread) abort the process. The runtime mutex is still the right type:
    /// its condition variables wait on it.
    pub fn lock(&self) -> MutexGuard<'_, PoolState<M::Connection>> {
        let mut spins = 0u32;
        loop {
            match self.state.try_lock() {
                Ok(guard) => return guard,
                // The lock is never held across user code, so poisoning can
                // only come from a bug here; the state is consistent then.
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) if spins < 64 => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                Err(TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Take an idle connection if there is one; never waits.
    fn try_checkout(&self) -> Result<Option<Conn<M::Connection>>, Error> {
        let mut st = self.lock();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(st.idle.pop_back().inspect(|_| {
            st.in_use += 1;
            st.counters.checkouts += 1;
        }))
    }

    /// Take an idle connection, or wait in line for one until `deadline`.
    fn checkout(
        &self,
        deadline: Deadline,
        start: Instant,
        pool_timeout: bool,
    ) -> Result<Conn<M::Connection>, Error> {
        let mut st = self.lock();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if let Some(conn) = st.idle.pop_back() {
            st.in_use += 1;
            st.counters.checkouts += 1;
            return Ok(conn);
        }
        if deadline.is_expired() {
            st.counters.checkout_timeouts += 1;
            return Err(self.timeout_error(&st, start));
        }
        // A runtime timer per wait is expensive in may (each cancelled timer
        // wakes its timer thread), so waits with the pool's own timeout are
        // timed by the pool's deadline watcher instead: FIFO order makes the
        // front waiter's deadline the earliest, and one sleep covers them all.
        let watched_deadline = deadline
            .instant()
            .filter(|_| pool_timeout && self.has_watcher.load(Ordering::Acquire));
        let waiter = Arc::new(Waiter {
            slot: AtomicOption::none(),
            // Cancellation must come back to us as an error, not unwind inside
            // `park`, so that the waiter can leave the queue first.
            blocker: Blocker::new(true),
            watched_deadline,
            expired: AtomicBool::new(false),
        });
        st.waiters.push_back(Arc::clone(&waiter));
        st.counters.waited_checkouts += 1;
        let kick = watched_deadline.is_some_and(|at| {
            let earlier = st.watcher_wakes_at.is_none_or(|wakes| at < wakes);
            if earlier {
                st.watcher_wakes_at = Some(at);
            }
            earlier
        });
        drop(st);
        if kick {
            self.watcher_kick.post();
        }

        loop {
            let parked = match (watched_deadline, deadline.wait()) {
                (Some(_), _) | (None, Wait::Forever) => waiter.blocker.park(None),
                (None, Wait::For(d)) => waiter.blocker.park(Some(d)),
                (None, Wait::Expired) => Ok(()),
            };
            if let Some(conn) = waiter.slot.take() {
                return Ok(conn);
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
            if cancelled || expired || self.is_closed() {
                return self.abandon_wait(&waiter, cancelled, start);
            }
            // Woken with nothing to take and time left: wait again.
        }
    }

    /// Leave the queue after a timeout, a close or a cancellation. A giver may
    /// have filled the slot meanwhile; then the connection is ours.
    fn abandon_wait(
        &self,
        waiter: &Arc<Waiter<M::Connection>>,
        cancelled: bool,
        start: Instant,
    ) -> Result<Conn<M::Connection>, Error> {
        let mut st = self.lock();
        let conn = waiter.slot.take();
        if conn.is_none() {
            st.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
        }
        if cancelled {
            // Pass a connection we were handed on, then unwind.
            let wake = conn.and_then(|c| st.deliver_in_use(c));
            drop(st);
            if let Some(w) = wake {
                w.blocker.unpark();
            }
            greenpool_runtime::sync::resume_cancel();
        }
        match conn {
            Some(conn) => Ok(conn),
            None if self.is_closed() => Err(Error::Closed),
            None => {
                st.counters.checkout_timeouts += 1;
                Err(self.timeout_error(&st, start))
            }
        }
    }

    fn timeout_error(&self, st: &PoolState<M::Connection>, start: Instant) -> Error {
        Error::Timeout {
            waited: start.elapsed(),
            size: self.cfg.size,
            open: st.open(),
            last_connect_error: st.health.current_error(),
        }
    }

    /// A connection comes back from a user in working order.
    pub fn give_back(self: &Arc<Self>, mut conn: Conn<M::Connection>) {
        let now = self.clock.now();
        if conn.expires.is_some_and(|at| at <= now) {
            return self.discard(conn, DiscardReason::Expired);
        }
        conn.last_ok = now;
        let mut st = self.lock();
        if self.is_closed() {
            st.in_use -= 1;
            drop(st);
            drop(conn);
            return;
        }
        let wake = st.deliver_in_use(conn);
        drop(st);
        if let Some(w) = wake {
            w.blocker.unpark();
        }
    }

    /// Close a connection that is counted in `in_use` (`from_checking` for one
    /// held by a keepalive) and open a replacement in the background.
    pub fn discard_counted(
        self: &Arc<Self>,
        conn: Option<Conn<M::Connection>>,
        reason: DiscardReason,
        from_checking: bool,
    ) {
        let replace = {
            let mut st = self.lock();
            if from_checking {
                st.checking -= 1;
            } else {
                st.in_use -= 1;
            }
            st.counters.discarded.count(reason);
            let replace = !self.is_closed();
            if replace {
                st.connecting += 1;
            }
            replace
        };
        if let Some(c) = &conn {
            log::debug!(
                "pool {}: discarding connection #{} ({reason})",
                self.cfg.name,
                c.id
            );
        }
        // Close outside the lock: a destructor may do IO.
        drop(conn);
        if replace {
            connector::spawn(self);
        }
    }

    /// Discard a connection held by a user.
    pub fn discard(self: &Arc<Self>, conn: Conn<M::Connection>, reason: DiscardReason) {
        self.discard_counted(Some(conn), reason, false)
    }

    /// A connector opened a connection: count it and hand it out.
    pub fn add_connection(&self, conn: Conn<M::Connection>) {
        let mut st = self.lock();
        st.connecting -= 1;
        if self.is_closed() {
            drop(st);
            drop(conn);
            return;
        }
        let report = st.health.success(&self.cfg.name);
        st.counters.created += 1;
        st.in_use += 1;
        let wake = st.deliver_in_use(conn);
        let ready = std::mem::take(&mut st.ready_waiters);
        drop(st);
        report.emit();
        if let Some(w) = wake {
            w.blocker.unpark();
        }
        for b in ready {
            b.unpark();
        }
    }

    /// A keepalive proved a connection alive: put it back.
    pub fn keepalive_passed(&self, mut conn: Conn<M::Connection>) {
        conn.last_ok = self.clock.refresh();
        let mut st = self.lock();
        st.checking -= 1;
        st.counters.keepalives += 1;
        if self.is_closed() {
            drop(st);
            drop(conn);
            return;
        }
        st.in_use += 1;
        let wake = st.deliver_in_use(conn);
        drop(st);
        if let Some(w) = wake {
            w.blocker.unpark();
        }
    }

    /// A connector gives up because the pool closed.
    pub fn connector_exit(&self) {
        self.lock().connecting -= 1;
    }

    fn wait_ready(&self, deadline: Deadline, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            let blocker = {
                let mut st = self.lock();
                if self.is_closed() {
                    return Err(Error::Closed);
                }
                if st.open() >= self.cfg.size {
                    return Ok(());
                }
                if deadline.is_expired() {
                    return Err(Error::NotReady {
                        waited: timeout.max(start.elapsed()),
                        size: self.cfg.size,
                        open: st.open(),
                        last_connect_error: st.health.current_error(),
                    });
                }
                // Cancellation comes back as an error so we can leave the list.
                let b = Arc::new(Blocker::new(true));
                st.ready_waiters.push(Arc::clone(&b));
                b
            };
            let parked = match deadline.wait() {
                Wait::Expired => Ok(()),
                Wait::For(d) => blocker.park(Some(d)),
                Wait::Forever => blocker.park(None),
            };
            self.lock()
                .ready_waiters
                .retain(|b| !Arc::ptr_eq(b, &blocker));
            match parked {
                Err(ParkError::Canceled) => greenpool_runtime::sync::resume_cancel(),
                // A timed-out park resumes on may's timer thread.
                Err(ParkError::Timeout) => greenpool_runtime::yield_now(),
                Ok(()) => {}
            }
        }
    }

    pub fn state(&self) -> State {
        let st = self.lock();
        State {
            size: self.cfg.size,
            open: st.open(),
            idle: st.idle.len(),
            in_use: st.in_use,
            checking: st.checking,
            connecting: st.connecting,
            waiting: st.waiters.len(),
            closed: self.is_closed(),
            background_tasks: self.tasks.load(Ordering::Acquire),
            counters: st.counters,
        }
    }

    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (idle, waiters, ready) = {
            let mut st = self.lock();
            let idle: Vec<_> = st.idle.drain(..).collect();
            let waiters: Vec<_> = st.waiters.drain(..).collect();
            let ready = std::mem::take(&mut st.ready_waiters);
            (idle, waiters, ready)
        };
        log::info!(
            "pool {}: closing ({} idle connections closed now, {} waiters woken)",
            self.cfg.name,
            idle.len(),
            waiters.len()
        );
        self.close_flag.fire();
        self.maintenance_kick.post();
        self.watcher_kick.post();
        for b in ready {
            b.unpark();
        }
        for w in waiters {
            w.blocker.unpark();
        }
        drop(idle);
    }
}
