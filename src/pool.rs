//! [`ConnectionPool`]: checkout, hand-off to waiters, return, discard, close.
//!
//! All bookkeeping lives in one [`PoolState`] behind one runtime mutex. The
//! lock is held only for a few pointer moves and counter updates, never across
//! a blocking call or a call into user code (the manager, a connection's
//! destructor), so it never parks a green thread for long.
//!
//! Fairness: a connection given back goes straight to the oldest waiter
//! (FIFO hand-off); it is never put where a newcomer could take it first.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use greenpool_runtime::sync::{AtomicOption, Blocker, ParkError, Semaphore};
use greenpool_runtime::{Deadline, JoinHandle, Wait};

use crate::builder::{Builder, Config};
use crate::clock::{CoarseClock, Millis, RateLimit};
use crate::connector::{self, ConnectHealth, Failing, HealthReport};
use crate::deadlines;
use crate::error::Error;
use crate::error::SharedError;
use crate::events::{self, PoolEvents};
use crate::guard::PooledConnection;
use crate::maintenance::{self, CheckoutCheck};
use crate::manager::Manager;
use crate::slot::{Held, Memory, Role, Slot};
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

/// A connection whose peer closed it sooner than this after it was opened,
/// before it did any work, counts as a failed connect (a proxy whose backend
/// is down accepts and closes at once); one closed later was closed for
/// idling. A server's idle timeout is at least a second (Redis counts it in
/// seconds).
const DIED_YOUNG_WITHIN: Duration = Duration::from_millis(500);

/// The role of a background task that runs `Manager::close`.
const GOODBYE: &str = "goodbye";
/// The role of the maintenance green thread.
pub(crate) const MAINTENANCE: &str = "maintenance";

/// How often a pool that cannot start green threads says so.
const SPAWN_FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

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
    /// Handed straight from its connect to a waiting caller, never idle: a
    /// connection that was just opened is not validated.
    pub fresh: bool,
    /// The pool's suspicion epoch when the connection last proved itself
    /// (see [`Shared::suspect_idle`]): older means "idle since before a
    /// connection was found broken", so it is validated before use.
    pub epoch: u64,
    /// The slot's memory while the connection is idle (a token carries it
    /// otherwise).
    pub memory: Option<Memory>,
}

impl<C> Conn<C> {
    /// A connection just opened by a connector. Boxed: it moves between the
    /// idle list, slot tokens and guards on every checkout, and a pointer
    /// moves cheaper than the whole record (a memcpy per move, measured).
    pub fn new<M: Manager<Connection = C>>(shared: &Shared<M>, raw: C) -> Box<Self> {
        let now = shared.clock.refresh();
        let expires = shared
            .cfg
            .max_lifetime
            .map(|life| now.plus(life.mul_f64(1.0 - 0.1 * crate::connector::unit_random())));
        Box::new(Conn {
            raw,
            id: shared.next_id(),
            created: Instant::now(),
            last_ok: now,
            expires,
            fresh: true,
            epoch: shared.epoch(),
            memory: None,
        })
    }
}

/// A caller blocked in `get`. Exactly one of two things ends the wait, both
/// under the pool lock and both removing the waiter from the queue first: a
/// giver fills `slot`, or the deadline watcher sets `expired`. Then it is
/// unparked. A connection left in `slot` (the waiter unwound) holds its
/// slot's token, so it is not lost.
pub(crate) struct Waiter<M: Manager> {
    slot: AtomicOption<Held<M>>,
    blocker: Blocker,
    /// The deadline, when the pool's deadline watcher enforces it (a `get`
    /// with the pool's checkout timeout, from a green thread). `None`: the
    /// waiter parks with its own timer (`get_timeout`, OS threads), or waits
    /// forever.
    pub watched_deadline: Option<Instant>,
    /// Set by the deadline watcher when it took this waiter off the queue.
    pub expired: AtomicBool,
}

impl<M: Manager> Waiter<M> {
    pub fn unpark(&self) {
        self.blocker.unpark()
    }
}

/// A background green thread the pool may have to cancel: on close, or when
/// it runs past its deadline (a connect past the connect timeout, a health
/// check past the health-check timeout).
#[derive(Default)]
pub(crate) struct Running {
    handle: Option<JoinHandle<()>>,
    deadline: Option<Instant>,
    cancelled: bool,
    keepalive: bool,
    /// A `Manager::close` call: not cancelled when the pool closes (a closing
    /// pool says goodbye too), only past its deadline.
    goodbye: bool,
    /// The maintenance green thread: not cancelled when the pool closes
    /// either, because it holds the goodbyes to their deadlines and then
    /// ends by itself (close kicks it).
    outlives_close: bool,
}

pub(crate) struct PoolState<M: Manager> {
    /// Idle connections; the back is the most recently returned (LIFO keeps
    /// the busiest connections warm and lets the rest be kept alive or expire).
    pub idle: VecDeque<Box<Conn<M::Connection>>>,
    pub waiters: VecDeque<Arc<Waiter<M>>>,
    /// When the deadline watcher will next wake (`None`: not until kicked).
    /// A watched waiter with an earlier deadline must kick it.
    pub watcher_wakes_at: Option<Instant>,
    /// The most slots: `Builder::size`, or the last `resize`.
    pub size: usize,
    /// `Builder::min_idle` (`None`: `size`, whatever it is now).
    pub min_idle: Option<usize>,
    /// Slot tokens by role (see [`Slot`]).
    pub in_use: usize,
    pub checking: usize,
    pub connecting: usize,
    pub counters: Counters,
    pub health: ConnectHealth,
    /// Keepalive interval learnt from `Manager::server_idle_timeout`.
    pub learnt_keepalive: Option<Duration>,
    pub asked_server_idle_timeout: bool,
    /// Callers of `wait_ready` and `close_timeout`, woken when a
    /// connection opens or the pool closes, and (once closed) when a slot or
    /// a background green thread ends.
    ready_waiters: Vec<Arc<Blocker>>,
    /// Background green threads by task id.
    pub running: HashMap<u64, Running>,
}

impl<M: Manager> PoolState<M> {
    pub fn open(&self) -> usize {
        self.idle.len() + self.in_use + self.checking
    }

    /// Slots taken: connections open or being opened.
    pub fn slots(&self) -> usize {
        self.open() + self.connecting
    }

    /// Idle connections to keep open ahead of demand.
    pub fn min_idle(&self) -> usize {
        self.min_idle.map_or(self.size, |n| n.min(self.size))
    }

    /// How many slots the pool wants now: one per connection in use and per
    /// waiter, plus `min_idle` spare (a connection being checked is a spare
    /// too), never more than `size`. With the default `min_idle` (= `size`)
    /// that is always `size`.
    pub fn wanted(&self) -> usize {
        (self.in_use + self.waiters.len() + self.min_idle()).min(self.size)
    }

    /// Count connectors for the slots [`wanted`](Self::wanted) but not
    /// taken; returns how many the caller must [`spawn_connectors`] once the
    /// lock is released.
    ///
    /// [`spawn_connectors`]: Shared::spawn_connectors
    #[must_use = "spawn the connectors counted"]
    pub fn start_missing(&mut self) -> usize {
        let missing = self.wanted().saturating_sub(self.slots());
        self.connecting += missing;
        missing
    }

    /// Count a failed connect attempt. While no connection is open, waiters
    /// are woken to see whether they should fail fast.
    pub fn connect_failed(
        &mut self,
        cfg: &Config,
        error: SharedError,
        permanent: bool,
    ) -> FailureReport<M> {
        self.counters.connect_failures += 1;
        let log = self
            .health
            .failure(&cfg.name, Arc::clone(&error), permanent, cfg.backoff_max);
        let wake = if self.open() == 0 && cfg.fail_fast.is_some() {
            self.waiters.iter().cloned().collect()
        } else {
            Vec::new()
        };
        FailureReport {
            log,
            wake,
            error,
            permanent,
        }
    }

    /// The pool is down — no connection open, connects failing for longer
    /// than the fail-fast grace, or with a permanent error — so a checkout
    /// should fail now rather than wait out its timeout.
    fn down(&self, cfg: &Config) -> Option<Failing> {
        let grace = cfg.fail_fast?;
        if self.open() > 0 {
            return None;
        }
        self.health
            .failing()
            .filter(|f| f.permanent || f.since.elapsed() >= grace)
    }

    /// Count a new token in `role`.
    pub fn count(&mut self, role: Role) {
        match role {
            Role::Connecting => self.connecting += 1,
            Role::InUse => self.in_use += 1,
            Role::Checking => self.checking += 1,
        }
    }

    /// Uncount a token in `role`.
    pub fn uncount(&mut self, role: Role) {
        match role {
            Role::Connecting => self.connecting -= 1,
            Role::InUse => self.in_use -= 1,
            Role::Checking => self.checking -= 1,
        }
    }

    /// Give a working connection to the oldest waiter, or make it idle.
    /// Returns the waiter to unpark once the lock is released, and the
    /// disarmed token to drop then.
    fn deliver(&mut self, mut held: Held<M>) -> Delivered<M> {
        if self.slots() > self.size {
            // `resize` lowered the size: this one closes instead.
            held.slot.reason = Some(DiscardReason::Surplus);
            return Delivered::Surplus(held);
        }
        let Held { mut conn, mut slot } = held;
        self.uncount(slot.role());
        match self.waiters.pop_front() {
            Some(w) => {
                self.count(Role::InUse);
                slot.set_role(Role::InUse);
                self.counters.checkouts += 1;
                w.slot.store(Held { conn, slot });
                Delivered::Waiter(w)
            }
            None => {
                conn.memory = Some(slot.memory);
                // Once idle, even a new connection is validated as usual.
                conn.fresh = false;
                self.idle.push_back(conn);
                Delivered::Idle(slot)
            }
        }
    }

    /// Take the most recently returned idle connection for a user.
    fn take_idle(&mut self, shared: &Arc<Shared<M>>) -> Option<Held<M>> {
        let conn = self.idle.pop_back()?;
        self.counters.checkouts += 1;
        Some(self.hold(shared, conn, Role::InUse))
    }

    /// Make a token for an idle connection just taken out of the list.
    pub fn hold(
        &mut self,
        shared: &Arc<Shared<M>>,
        mut conn: Box<Conn<M::Connection>>,
        role: Role,
    ) -> Held<M> {
        self.count(role);
        let memory = conn.memory.take().unwrap_or_else(|| Memory::new(shared));
        let mut slot = Slot::adopt(shared, role, memory);
        slot.conn = Some((conn.id, conn.created));
        Held { conn, slot }
    }
}

/// A connect failure recorded under the pool lock: its log line, the
/// waiters to wake so that they can fail fast, and the event.
/// [`emit`](Self::emit) them once the lock is released.
#[must_use = "call emit() once the pool lock is released"]
pub(crate) struct FailureReport<M: Manager> {
    log: HealthReport,
    wake: Vec<Arc<Waiter<M>>>,
    error: SharedError,
    permanent: bool,
}

impl<M: Manager> FailureReport<M> {
    pub fn emit(self, shared: &Shared<M>) {
        self.log.emit();
        for w in self.wake {
            w.unpark();
        }
        shared.emit(|h| {
            h.connect_failed(&events::ConnectFailed {
                error: &*self.error,
                permanent: self.permanent,
            })
        });
    }
}

/// Where [`PoolState::deliver`] put a connection.
#[must_use]
enum Delivered<M: Manager> {
    Waiter(Arc<Waiter<M>>),
    Idle(Slot<M>),
    /// Above the size: closed, not replaced.
    Surplus(Held<M>),
}

impl<M: Manager> Delivered<M> {
    /// Finish the delivery, after the pool lock is released.
    fn finish(self, shared: &Arc<Shared<M>>) {
        match self {
            Delivered::Waiter(w) => w.unpark(),
            Delivered::Idle(slot) => slot.disarm(),
            Delivered::Surplus(held) => shared.retire(held),
        }
    }
}

pub(crate) struct Shared<M: Manager> {
    pub manager: M,
    pub cfg: Config,
    state: Mutex<PoolState<M>>,
    closed: AtomicBool,
    /// Wakes the maintenance green thread early: on close, and when its tick
    /// must change (a keepalive interval was learnt from the server).
    pub maintenance_kick: Semaphore,
    /// Wakes the deadline watcher: a first watched waiter arrived, or close.
    pub watcher_kick: Semaphore,
    /// False if the deadline watcher could not be started: every waiter then
    /// parks with its own timer.
    pub has_watcher: AtomicBool,
    next_id: AtomicU64,
    next_task: AtomicU64,
    /// Failed spawns are logged at most every [`SPAWN_FAILURE_LOG_EVERY`].
    spawn_failure_log: RateLimit,
    pub clock: CoarseClock,
    /// Suspicion epoch: bumped whenever a connection is found broken, so
    /// that every connection idle since before then proves itself first.
    epoch: AtomicU64,
    /// Background green threads alive (connectors, maintenance, health checks).
    tasks: AtomicUsize,
}

/// A background green thread's share of the pool; counted in
/// [`State::background_tasks`] from creation until dropped, so tests can prove
/// that no green thread outlives a closed pool, and registered so that the
/// pool can cancel it.
pub(crate) struct Task<M: Manager> {
    pub shared: Arc<Shared<M>>,
    id: u64,
}

impl<M: Manager> Task<M> {
    /// Run `body` in a new background green thread named `<pool>-<role>`,
    /// cancelled when the pool closes and, if `deadline` is set, by
    /// maintenance once it has passed. Fails only if no green thread can be
    /// started; `body` is then dropped without running.
    pub fn spawn(
        shared: &Arc<Shared<M>>,
        role: &str,
        deadline: Option<Instant>,
        body: impl FnOnce(Task<M>) + Send + 'static,
    ) -> std::io::Result<u64> {
        #[cfg(feature = "testing")]
        if shared.cfg.spawn_faults.as_ref().is_some_and(|f| f.take()) {
            return Err(std::io::Error::other("injected green-thread spawn failure"));
        }
        let id = shared.next_task.fetch_add(1, Ordering::Relaxed);
        shared.lock().running.insert(
            id,
            Running {
                deadline,
                keepalive: role == "keepalive",
                goodbye: role == GOODBYE,
                outlives_close: role == GOODBYE || role == MAINTENANCE,
                ..Running::default()
            },
        );
        shared.tasks.fetch_add(1, Ordering::AcqRel);
        let task = Task {
            shared: Arc::clone(shared),
            id,
        };
        let handle = shared.task_builder(role).spawn(move || body(task))?;
        let mut st = shared.lock();
        match st.running.get_mut(&id) {
            Some(r) => {
                if r.cancelled || (shared.is_closed() && !r.outlives_close) {
                    r.cancelled = true;
                    handle.cancel();
                }
                r.handle = Some(handle);
            }
            // Finished already.
            None => {
                drop(st);
                drop(handle);
            }
        }
        Ok(id)
    }

    /// Set or clear the time after which maintenance cancels this task.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        if let Some(r) = self.shared.lock().running.get_mut(&self.id) {
            r.deadline = deadline;
        }
    }

    /// True once the pool cancelled this task (close, or past its deadline).
    pub fn cancelled(&self) -> bool {
        self.shared
            .lock()
            .running
            .get(&self.id)
            .is_some_and(|r| r.cancelled)
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

    /// Log a green thread that could not be started: the first time, then at
    /// most once every [`SPAWN_FAILURE_LOG_EVERY`] (maintenance retries every
    /// tick, and a runtime at its limit stays there a while).
    pub fn spawn_failed(&self, role: &str, e: &std::io::Error, then: &str) {
        if self.spawn_failure_log.allow() {
            log::error!(
                "pool {}: cannot start a {role} green thread: {e}; {then} (logged at most \
                 every {SPAWN_FAILURE_LOG_EVERY:?})",
                self.cfg.name
            );
        } else {
            log::debug!(
                "pool {}: cannot start a {role} green thread: {e}",
                self.cfg.name
            );
        }
    }

    /// True if the deadline watcher runs (it may fail to start).
    pub fn has_watcher(&self) -> bool {
        self.has_watcher.load(Ordering::Acquire)
    }

    /// Have the deadline watcher wake by `at`: a task deadline (a
    /// validation's) that it must enforce on time.
    pub fn watch_deadline(&self, at: Instant) {
        let kick = {
            let mut st = self.lock();
            let earlier = st.watcher_wakes_at.is_none_or(|wakes| at < wakes);
            if earlier {
                st.watcher_wakes_at = Some(at);
            }
            earlier
        };
        if kick {
            self.watcher_kick.post();
        }
    }

    /// Cancel background task `id`, if it still runs.
    pub fn cancel_task(&self, id: u64) {
        let mut st = self.lock();
        if let Some(r) = st.running.get_mut(&id) {
            r.cancelled = true;
            if let Some(h) = &r.handle {
                h.cancel();
            }
        }
    }

    /// The earliest deadline of a task not yet cancelled.
    pub fn next_task_deadline(st: &PoolState<M>) -> Option<Instant> {
        st.running
            .values()
            .filter(|r| !r.cancelled)
            .filter_map(|r| r.deadline)
            .min()
    }

    /// Cancel every task past its deadline; returns how many keepalives run.
    pub fn enforce_deadlines(&self, now: Instant) -> usize {
        let mut st = self.lock();
        let mut keepalives = 0;
        for r in st.running.values_mut() {
            if r.keepalive {
                keepalives += 1;
            }
            if !r.cancelled && r.deadline.is_some_and(|at| at <= now) {
                r.cancelled = true;
                if let Some(h) = &r.handle {
                    h.cancel();
                }
            }
        }
        keepalives
    }
}

impl<M: Manager> Drop for Task<M> {
    fn drop(&mut self) {
        let entry = self.shared.lock().running.remove(&self.id);
        // Dropping our own handle detaches; done outside the lock.
        drop(entry);
        self.shared.tasks.fetch_sub(1, Ordering::AcqRel);
        if self.shared.is_closed() {
            self.shared.wake_state_waiters();
        }
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
        let opening = cfg.min_idle.unwrap_or(size);
        let shared = Arc::new(Shared {
            manager,
            state: Mutex::new(PoolState {
                idle: VecDeque::with_capacity(size.min(1024)),
                waiters: VecDeque::new(),
                watcher_wakes_at: None,
                in_use: 0,
                checking: 0,
                size,
                min_idle: cfg.min_idle,
                connecting: opening,
                counters: Counters::default(),
                health: ConnectHealth::default(),
                learnt_keepalive: None,
                asked_server_idle_timeout: false,
                ready_waiters: Vec::new(),
                running: HashMap::new(),
            }),
            closed: AtomicBool::new(false),
            maintenance_kick: Semaphore::new(0),
            watcher_kick: Semaphore::new(0),
            has_watcher: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            next_task: AtomicU64::new(1),
            spawn_failure_log: RateLimit::new(SPAWN_FAILURE_LOG_EVERY),
            clock: CoarseClock::new(),
            epoch: AtomicU64::new(0),
            tasks: AtomicUsize::new(0),
            cfg,
        });
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
    /// [`Builder::validate_after`] is validated first, and a failing one is
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
            let (mut held, from_idle) = match shared.try_checkout()? {
                Some(held) => (held, true),
                None => {
                    let a = attempt.get_or_insert_with(|| Attempt::new(timeout));
                    shared.checkout(a, pool_timeout)?
                }
            };
            let check = maintenance::checkout_check(shared, &held.conn, from_idle);
            if check == CheckoutCheck::None {
                return Ok(PooledConnection::new(Arc::clone(shared), held));
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
                return Ok(PooledConnection::new(Arc::clone(shared), held));
            }
            let a = attempt.get_or_insert_with(|| Attempt::new(timeout));
            if a.deadline.is_expired() {
                // No time left to validate: the connection goes back unchecked.
                shared.give_back_unchecked(held);
                return Err(shared.timeout_error(&mut shared.lock(), a));
            }
            match maintenance::validate(shared, held, a.deadline) {
                Ok(held) => return Ok(PooledConnection::new(Arc::clone(shared), held)),
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
    /// of them by default, [`min_idle`](Builder::min_idle) if that is set —
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
    /// ([`Builder::size`], or the last [`resize`](Self::resize)).
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

/// One caller's checkout: its deadline and what went wrong so far.
pub(crate) struct Attempt {
    start: Instant,
    pub deadline: Deadline,
    validation_failures: u32,
    last_validation_error: Option<String>,
    /// Queue at the front: this caller was served once already (its
    /// connection failed validation).
    front: bool,
}

impl Attempt {
    /// A connection this caller was given failed its checkout check (and
    /// was discarded): it tries the next, first in line.
    fn failed_check(&mut self, why: &str) {
        self.validation_failures += 1;
        self.last_validation_error = Some(why.to_owned());
        self.front = true;
    }

    fn new(timeout: Option<Duration>) -> Self {
        Attempt {
            start: Instant::now(),
            deadline: match timeout {
                Some(d) => Deadline::after(d),
                None => Deadline::never(),
            },
            validation_failures: 0,
            last_validation_error: None,
            front: false,
        }
    }
}

impl<M: Manager> Shared<M> {
    /// Report an event to the pool's handler, if it has one (see
    /// [`crate::events`]); `f` runs only then.
    #[inline]
    pub fn emit(&self, f: impl FnOnce(&dyn PoolEvents)) {
        if let Some(h) = &self.cfg.events {
            h.call(&self.cfg.name, f);
        }
    }

    /// True if the pool has an event handler.
    #[inline]
    pub fn has_events(&self) -> bool {
        self.cfg.events.is_some()
    }

    /// Lock the pool state.
    ///
    /// This never parks the green thread: it spins on `try_lock`, yielding the
    /// OS thread between tries. The lock is held only for a few instructions
    /// and never across a blocking call (a holder cannot be descheduled by
    /// another green thread while holding it), so the wait is short. Parking
    /// would be wrong here: in a green thread that has been cancelled, may
    /// turns any park into a cancellation panic, and inside an unwind (a slot
    /// token dropped by a cancelled green thread) that aborts the process.
    /// So the lock is `std`'s, of which only `try_lock` is ever called (it
    /// never blocks the worker thread): nothing waits on it through the
    /// runtime, and the runtime mutex's unlock alone was 12 % of an
    /// uncontended checkout and return (perf, on the overhead bench's 1 / 1).
    pub fn lock(&self) -> MutexGuard<'_, PoolState<M>> {
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

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A connection was found broken (it failed, failed a health check, or
    /// its peer closed it while idle): every connection idle since before
    /// now must prove itself before it is handed out. When the server
    /// restarts or a middlebox drops every idle connection at once, this
    /// costs one failed attempt, not one per pooled connection (SQLAlchemy's
    /// pessimistic invalidation).
    pub fn suspect_idle(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// `conn` worked just now: in working order as of the current epoch.
    pub fn proved(&self, conn: &mut Conn<M::Connection>, now: Millis) {
        conn.last_ok = now;
        conn.epoch = self.epoch();
    }

    /// Take an idle connection if there is one; never waits.
    fn try_checkout(self: &Arc<Self>) -> Result<Option<Held<M>>, Error> {
        let mut st = self.lock();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let held = st.take_idle(self);
        let grow = st.start_missing();
        drop(st);
        self.spawn_connectors(grow);
        Ok(held)
    }

    /// Take an idle connection, or wait in line for one until the deadline.
    /// Also says whether the connection came from the idle list (rather than
    /// handed over by whoever gave it back or opened it).
    fn checkout(
        self: &Arc<Self>,
        a: &Attempt,
        pool_timeout: bool,
    ) -> Result<(Held<M>, bool), Error> {
        let deadline = a.deadline;
        let mut st = self.lock();
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if let Some(held) = st.take_idle(self) {
            let grow = st.start_missing();
            drop(st);
            self.spawn_connectors(grow);
            return Ok((held, true));
        }
        if let Some(e) = self.unavailable_error(&mut st, a) {
            return Err(e);
        }
        if deadline.is_expired() {
            return Err(self.timeout_error(&mut st, a));
        }
        // A runtime timer per wait is expensive in may (each cancelled timer
        // wakes its timer thread), so waits with the pool's own timeout are
        // timed by the pool's deadline watcher instead: FIFO order makes the
        // front waiter's deadline the earliest, and one sleep covers them all.
        // An OS thread keeps its own timer: the watcher is a green thread,
        // and busy green threads can keep it from running.
        let watched_deadline = deadline.instant().filter(|_| {
            pool_timeout
                && self.has_watcher.load(Ordering::Acquire)
                && greenpool_runtime::is_green()
        });
        let waiter = Arc::new(Waiter {
            slot: AtomicOption::none(),
            // Cancellation must come back to us as an error, not unwind inside
            // `park`, so that the waiter can leave the queue first.
            blocker: Blocker::new(true),
            watched_deadline,
            expired: AtomicBool::new(false),
        });
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
            let parked = match (watched_deadline, deadline.wait()) {
                (Some(_), _) | (None, Wait::Forever) => waiter.blocker.park(None),
                (None, Wait::For(d)) => waiter.blocker.park(Some(d)),
                (None, Wait::Expired) => Ok(()),
            };
            if let Some(held) = waiter.slot.take() {
                return Ok((held, false));
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
                return self.abandon_wait(&waiter, cancelled, a).map(|h| (h, false));
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
        let held = waiter.slot.take();
        if held.is_none() {
            st.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
        }
        if cancelled {
            // Pass a connection we were handed on, then unwind.
            let delivered = held.map(|h| st.deliver(h));
            drop(st);
            if let Some(d) = delivered {
                d.finish(self);
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
    fn timeout_error(&self, st: &mut PoolState<M>, a: &Attempt) -> Error {
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

    /// A connection comes back from a user (or a health check) in working
    /// order: it did useful work.
    pub fn give_back(self: &Arc<Self>, mut held: Held<M>) {
        let now = self.clock.now();
        if held.conn.expires.is_some_and(|at| at <= now) {
            held.slot.reason = Some(DiscardReason::Expired);
            return self.discard(held);
        }
        self.proved(&mut held.conn, now);
        held.conn.fresh = false;
        let first_work = held.slot.memory.worked();
        let mut st = self.lock();
        if self.is_closed() {
            drop(st);
            // The token gives the slot back; nothing replaces it.
            return self.retire(held);
        }
        let report = first_work.then(|| st.health.recovered(&self.cfg.name));
        let delivered = st.deliver(held);
        drop(st);
        delivered.finish(self);
        if let Some(r) = report {
            r.emit();
        }
    }

    /// Put back a connection that was taken for validation but not checked
    /// (no time was left): it neither worked nor failed.
    pub fn give_back_unchecked(self: &Arc<Self>, held: Held<M>) {
        let mut st = self.lock();
        if self.is_closed() {
            drop(st);
            return self.retire(held);
        }
        let delivered = st.deliver(held);
        drop(st);
        delivered.finish(self);
    }

    /// Close a connection and open a replacement in the background (the
    /// slot's token does that when it drops); `held.slot.reason` says why.
    pub fn discard(self: &Arc<Self>, held: Held<M>) {
        if !self.is_closed() {
            log::debug!(
                "pool {}: discarding connection #{} ({})",
                self.cfg.name,
                held.conn.id,
                held.slot.reason.unwrap_or(DiscardReason::Explicit)
            );
        }
        self.retire(held);
    }

    /// Close the connection and give the slot back (its token opens a
    /// replacement unless the pool is closed): the replacement opens while
    /// the old connection says goodbye. Call outside the lock.
    fn retire(self: &Arc<Self>, held: Held<M>) {
        let Held { conn, slot } = held;
        // The goodbye is started first (it never blocks), so that a closed
        // pool's last slot cannot look drained before its goodbye runs.
        self.close_conn(*conn);
        drop(slot);
    }

    /// Close a connection the pool is done with: `Manager::close` in a
    /// green thread of its own, under the health-check timeout (enforced by
    /// maintenance, which keeps running after the pool closes until every
    /// goodbye has ended). Never blocks the caller. If no green thread can
    /// be started, the connection is just dropped.
    pub fn close_conn(self: &Arc<Self>, conn: Conn<M::Connection>) {
        let raw = conn.raw;
        let id = conn.id;
        let deadline = crate::connector::deadline_after(self.cfg.health_check_timeout);
        // A spawn that fails drops the closure, and the connection with it.
        let spawned = Task::spawn(self, GOODBYE, deadline, move |task| {
            let manager = &task.shared.manager;
            if panic::catch_unwind(AssertUnwindSafe(|| manager.close(raw))).is_err() {
                log::debug!(
                    "pool {}: Manager::close of connection #{id} panicked or was cancelled",
                    task.shared.cfg.name
                );
            }
        });
        if let Err(e) = spawned {
            self.spawn_failed(GOODBYE, &e, "closing the connection without a goodbye");
        }
    }

    /// Goodbyes still running (see [`close_conn`](Self::close_conn)).
    pub fn goodbyes_running(&self) -> usize {
        self.lock().running.values().filter(|r| r.goodbye).count()
    }

    /// Start `n` connectors for slots already counted in `connecting` (see
    /// [`PoolState::start_missing`]), each with a fresh connect history.
    pub fn spawn_connectors(self: &Arc<Self>, n: usize) {
        for _ in 0..n {
            connector::spawn(self, Memory::new(self));
        }
    }

    /// Change the size; see [`ConnectionPool::resize`].
    pub fn resize(self: &Arc<Self>, size: usize) {
        let (grow, surplus) = {
            let mut st = self.lock();
            if self.is_closed() {
                return;
            }
            st.size = size;
            let grow = st.start_missing();
            // Idle connections above the new size close now, the oldest
            // first; those in use close as they come back, connectors as
            // they fail or open.
            let over = st.slots().saturating_sub(size).min(st.idle.len());
            let surplus: Vec<_> = st.idle.drain(..over).collect();
            let surplus: Vec<_> = surplus
                .into_iter()
                .map(|c| {
                    let mut held = st.hold(self, c, Role::Checking);
                    held.slot.reason = Some(DiscardReason::Surplus);
                    held
                })
                .collect();
            (grow, surplus)
        };
        log::info!(
            "pool {}: resized to {size} ({grow} connections to open, {} idle closed)",
            self.cfg.name,
            surplus.len()
        );
        self.spawn_connectors(grow);
        for held in surplus {
            self.discard(held);
        }
    }

    /// A connector opened a connection: hand it out.
    pub fn add_connection(self: &Arc<Self>, conn: Box<Conn<M::Connection>>, mut slot: Slot<M>) {
        slot.memory.useful = false;
        slot.conn = Some((conn.id, conn.created));
        let held = Held { conn, slot };
        let mut st = self.lock();
        if self.is_closed() {
            drop(st);
            return self.retire(held);
        }
        st.counters.created += 1;
        let delivered = st.deliver(held);
        let ready = std::mem::take(&mut st.ready_waiters);
        drop(st);
        delivered.finish(self);
        for b in ready {
            b.unpark();
        }
    }

    /// A keepalive proved a connection alive: put it back.
    pub fn keepalive_passed(self: &Arc<Self>, mut held: Held<M>) {
        self.proved(&mut held.conn, self.clock.refresh());
        let first_work = held.slot.memory.worked();
        let mut st = self.lock();
        st.counters.keepalives += 1;
        if self.is_closed() {
            drop(st);
            return self.retire(held);
        }
        let report = first_work.then(|| st.health.recovered(&self.cfg.name));
        let delivered = st.deliver(held);
        drop(st);
        delivered.finish(self);
        if let Some(r) = report {
            r.emit();
        }
    }

    fn wait_ready(&self, deadline: Deadline, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        self.wait_on_state(deadline, |st, expired| {
            if self.is_closed() {
                Some(Err(Error::Closed))
            } else if st.open() >= st.min_idle() {
                Some(Ok(()))
            } else if expired {
                Some(Err(Error::NotReady {
                    waited: timeout.max(start.elapsed()),
                    size: st.min_idle(),
                    open: st.open(),
                    last_connect_error: st.health.current_error(),
                }))
            } else {
                None
            }
        })
    }

    /// True once a closed pool has nothing left: no connection open or
    /// being opened, no background green thread (goodbyes included).
    pub fn drained(&self, st: &PoolState<M>) -> bool {
        self.is_closed()
            && st.open() + st.connecting == 0
            && self.tasks.load(Ordering::Acquire) == 0
    }

    /// Wait until a closed pool is [`drained`](Self::drained), at most until
    /// `deadline`; true if it is.
    pub fn wait_drained(&self, deadline: Deadline) -> bool {
        self.wait_on_state(deadline, |st, expired| {
            if self.drained(st) {
                Some(true)
            } else if expired {
                Some(false)
            } else {
                None
            }
        })
    }

    /// Wake the callers of [`wait_on_state`](Self::wait_on_state): a
    /// connection opened, or the pool closed, or (once it is closed) a slot
    /// or a background green thread ended.
    pub fn wake_state_waiters(&self) {
        let ready = std::mem::take(&mut self.lock().ready_waiters);
        for b in ready {
            b.unpark();
        }
    }

    /// Block until `answer` — asked under the lock, with whether the
    /// deadline has passed — has one. Woken by
    /// [`wake_state_waiters`](Self::wake_state_waiters); a cancellation
    /// leaves the list first, then unwinds.
    fn wait_on_state<R>(
        &self,
        deadline: Deadline,
        mut answer: impl FnMut(&PoolState<M>, bool) -> Option<R>,
    ) -> R {
        loop {
            let blocker = {
                let mut st = self.lock();
                if let Some(r) = answer(&st, deadline.is_expired()) {
                    return r;
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
            size: st.size,
            min_idle: st.min_idle(),
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

    pub fn close(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (idle, waiters, ready) = {
            let mut st = self.lock();
            let idle: Vec<_> = st.idle.drain(..).collect();
            let waiters: Vec<_> = st.waiters.drain(..).collect();
            let ready = std::mem::take(&mut st.ready_waiters);
            // Connectors and health checks stop now, even in a hung connect
            // or check: they unwind at their next blocking call. Goodbyes
            // run to their deadline, held to it by maintenance.
            for r in st.running.values_mut().filter(|r| !r.outlives_close) {
                r.cancelled = true;
                if let Some(h) = &r.handle {
                    h.cancel();
                }
            }
            (idle, waiters, ready)
        };
        log::info!(
            "pool {}: closing ({} idle connections closed now, {} waiters woken)",
            self.cfg.name,
            idle.len(),
            waiters.len()
        );
        // Goodbyes first: maintenance, once kicked, holds them to their
        // deadline before it ends.
        for conn in idle {
            self.close_conn(*conn);
        }
        self.maintenance_kick.post();
        self.watcher_kick.post();
        for b in ready {
            b.unpark();
        }
        for w in waiters {
            w.blocker.unpark();
        }
        maintenance::report_state(self);
    }
}
