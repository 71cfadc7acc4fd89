//! The pool's shared state: its books (idle list, waiters, slot counts,
//! counters), the hand-off of connections between givers and waiters, and
//! everything that closes a connection or the pool.
//!
//! All bookkeeping lives in one [`PoolState`] behind one lock. The lock is
//! held only for a few pointer moves and counter updates, never across a
//! blocking call or a call into user code (the manager, a connection's
//! destructor), so it never parks a green thread for long.
//!
//! Fairness: a connection given back goes straight to the oldest waiter
//! (FIFO hand-off); it is never put where a newcomer could take it first.
//!
//! This is the bottom of the pool: the checkout wait, the background work
//! (connector, maintenance, deadline watcher) and the public pool sit above
//! it and call in; it calls up only through the connector starter it is
//! built with ([`Shared::new`]).

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use greenpool_runtime::sync::{Blocker, ParkError, Semaphore};
use greenpool_runtime::{Deadline, Wait};

use crate::clock::{deadline_after, CoarseClock, Millis, RateLimit};
use crate::config::Config;
use crate::error::{Error, SharedError};
use crate::events::{self, PoolEvents};
use crate::handoff::Handoff;
use crate::health::{ConnectHealth, Failing, HealthReport};
use crate::manager::Manager;
use crate::slot::{Memory, Released, Role, Slot, SlotOwner};
use crate::stats::{Counters, DiscardReason, State};
use crate::tasks::{Kind, Tasks};

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
            .map(|life| now.plus(life.mul_f64(1.0 - 0.1 * crate::backoff::unit_random())));
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
///
/// A waiter whose wait ended with a connection travels with it in the guard
/// and comes back with it, to be reused by the next caller that must wait
/// (two allocations fewer per wait, counting may's park).
pub(crate) struct Waiter<M: Manager> {
    pub slot: Handoff<Held<M>>,
    pub blocker: Blocker,
    /// The deadline, when the pool's deadline watcher enforces it (a `get`
    /// with the pool's checkout timeout, from a green thread). `None`: the
    /// waiter parks with its own timer (`get_timeout`, OS threads), or waits
    /// forever.
    pub watched_deadline: Option<Instant>,
    /// Set by the deadline watcher when it took this waiter off the queue.
    pub expired: AtomicBool,
    /// The blocker parks a green thread (not an OS thread): a spare waiter
    /// is reused only by the same kind of caller.
    green: bool,
}

impl<M: Manager> Waiter<M> {
    /// A waiter for a caller on a green thread (`green`) or an OS thread.
    pub fn new(watched_deadline: Option<Instant>, green: bool) -> Arc<Self> {
        Arc::new(Waiter {
            slot: Handoff::empty(),
            // Cancellation must come back to the waiter as an error, not
            // unwind inside `park`, so that it can leave the queue first.
            blocker: Blocker::new(true),
            watched_deadline,
            expired: AtomicBool::new(false),
            green,
        })
    }

    pub fn unpark(&self) {
        self.blocker.unpark()
    }
}

/// Spare waiters a pool keeps for reuse, at most.
const MAX_SPARE_WAITERS: usize = 1024;

/// A slot's token in this pool.
pub(crate) type PoolSlot<M> = Slot<Shared<M>>;

/// A connection together with its slot's token. Dropping it closes the
/// connection first, then gives the slot back (fields drop in order).
pub(crate) struct Held<M: Manager> {
    pub conn: Box<Conn<M::Connection>>,
    pub slot: PoolSlot<M>,
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
    /// Set by a `resize` that left more slots than the new size, cleared
    /// once they are down to it: only then can a connection given back be
    /// a surplus (the hot path need not count the slots otherwise).
    pub shrinking: bool,
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
    pub ready_waiters: Vec<Arc<Blocker>>,
    /// Waiters whose wait ended with a connection, given back with it (see
    /// [`Waiter`]).
    spare_waiters: Vec<Arc<Waiter<M>>>,
}

impl<M: Manager> PoolState<M> {
    pub fn open(&self) -> usize {
        self.idle.len() + self.in_use + self.checking
    }

    /// Slots taken: connections open or being opened.
    pub fn slots(&self) -> usize {
        self.open() + self.connecting
    }

    /// `min_idle` is below the size: demand decides how many slots the
    /// pool wants (see [`wanted`](Self::wanted)).
    pub fn grows_on_demand(&self) -> bool {
        self.min_idle.is_some_and(|n| n < self.size)
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
        if !self.grows_on_demand() {
            // Every slot is wanted all the time; a slot lost to a failed
            // spawn is reopened by maintenance.
            return 0;
        }
        self.start_all_missing()
    }

    /// [`start_missing`](Self::start_missing), also in a pool that keeps
    /// every slot open (maintenance and `resize`).
    #[must_use = "spawn the connectors counted"]
    pub fn start_all_missing(&mut self) -> usize {
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
    pub fn down(&self, cfg: &Config) -> Option<Failing> {
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

    /// Give a working connection to the oldest waiter, or make it idle:
    /// the books change here, under the lock; the caller finishes the move
    /// with [`Delivery::finish`] once the lock is released (handing the
    /// connection over touches the waiter's cache lines, which the pool's
    /// critical section should not). `slot` is the connection's token.
    pub fn deliver(
        &mut self,
        mut conn: Box<Conn<M::Connection>>,
        slot: &PoolSlot<M>,
    ) -> Delivery<M> {
        if self.shrinking {
            if self.slots() > self.size {
                // `resize` lowered the size: this one closes instead.
                return Delivery::Surplus(conn);
            }
            self.shrinking = false;
        }
        self.uncount(slot.role());
        match self.waiters.pop_front() {
            Some(w) => {
                self.count(Role::InUse);
                self.counters.checkouts += 1;
                Delivery::Waiter(w, conn)
            }
            None => {
                conn.memory = Some(slot.memory);
                // Once idle, even a new connection is validated as usual.
                conn.fresh = false;
                self.idle.push_back(conn);
                Delivery::Idle
            }
        }
    }

    /// A waiter for a new wait: a spare one no one else holds any more, if
    /// there is one made for the same kind of caller, or a new one.
    pub fn waiter(&mut self, watched_deadline: Option<Instant>, green: bool) -> Arc<Waiter<M>> {
        if let Some(mut w) = self.spare_waiters.pop() {
            // Not unique: the giver that handed over its last connection is
            // still unparking it. Then it is simply dropped.
            if let Some(inner) = Arc::get_mut(&mut w).filter(|w| w.green == green) {
                inner.slot.reset();
                inner.watched_deadline = watched_deadline;
                *inner.expired.get_mut() = false;
                return w;
            }
        }
        Waiter::new(watched_deadline, green)
    }

    /// Keep a waiter whose wait ended with a connection for the next wait.
    fn keep_spare(&mut self, w: Arc<Waiter<M>>) {
        if self.spare_waiters.len() < MAX_SPARE_WAITERS {
            self.spare_waiters.push(w);
        }
    }

    /// Make a token for an idle connection just taken out of the list to be
    /// closed, for `reason`: the token counts the discard when it drops.
    pub fn hold_to_close(
        &mut self,
        shared: &Arc<Shared<M>>,
        conn: Box<Conn<M::Connection>>,
        reason: DiscardReason,
    ) -> Held<M> {
        let mut held = self.hold(shared, conn, Role::Checking);
        held.slot.reason = Some(reason);
        held
    }

    /// Make a token for an idle connection just taken out of the list.
    pub fn hold(
        &mut self,
        shared: &Arc<Shared<M>>,
        conn: Box<Conn<M::Connection>>,
        role: Role,
    ) -> Held<M> {
        self.count(role);
        Held::adopt(Arc::clone(shared), conn, role)
    }
}

impl<M: Manager> Held<M> {
    /// A token for a connection that was idle, counted under `role` by the
    /// caller (in the critical section that took it out of the idle list;
    /// nothing between can unwind). Reads the connection, so the checkout's
    /// fast path calls it after releasing the lock.
    pub fn adopt(owner: Arc<Shared<M>>, mut conn: Box<Conn<M::Connection>>, role: Role) -> Self {
        let memory = conn.memory.take().unwrap_or_else(|| owner.fresh_memory());
        let mut slot = Slot::adopt(owner, role, memory);
        slot.conn = Some((conn.id, conn.created));
        Held { conn, slot }
    }

    /// Give the connection to the oldest waiter, or make it idle (see
    /// [`PoolState::deliver`]); closed if the pool is. `under_lock` runs in
    /// the same critical section first, unless the pool is closed; its
    /// result is returned.
    ///
    /// The lock is reached through the connection's own token, so a
    /// give-back costs no reference count updates beyond the token's own.
    pub fn hand_over<R>(
        self,
        under_lock: impl FnOnce(&Arc<Shared<M>>, &mut PoolState<M>) -> R,
    ) -> Option<R> {
        let Held { conn, slot } = self;
        let shared = slot.owner();
        let mut st = shared.lock();
        if shared.is_closed() {
            drop(st);
            // The token gives the slot back; nothing replaces it.
            Arc::clone(shared).retire(Held { conn, slot });
            return None;
        }
        let r = under_lock(shared, &mut st);
        let delivery = st.deliver(conn, &slot);
        drop(st);
        delivery.finish(slot);
        Some(r)
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
pub(crate) enum Delivery<M: Manager> {
    /// Taken off the queue: the connection is to be handed to it.
    Waiter(Arc<Waiter<M>>, Box<Conn<M::Connection>>),
    Idle,
    /// Above the size: closed, not replaced.
    Surplus(Box<Conn<M::Connection>>),
}

impl<M: Manager> Delivery<M> {
    /// Finish the delivery, after the pool lock is released; `slot` is the
    /// connection's token.
    pub fn finish(self, mut slot: PoolSlot<M>) {
        match self {
            Delivery::Waiter(w, conn) => {
                slot.set_role(Role::InUse);
                match w.slot.store(Held { conn, slot }) {
                    Ok(()) => w.unpark(),
                    // It left (a timeout on its own timer, a cancellation)
                    // between being taken off the queue and now: the next
                    // in line gets it.
                    Err(held) => {
                        // The checkout counted for it did not happen.
                        held.slot.owner().lock().counters.checkouts -= 1;
                        held.hand_over(|_, _| ());
                    }
                }
            }
            Delivery::Idle => slot.disarm(),
            Delivery::Surplus(conn) => {
                slot.reason = Some(DiscardReason::Surplus);
                let shared = Arc::clone(slot.owner());
                shared.retire(Held { conn, slot });
            }
        }
    }
}

/// What a pool's green threads share: the manager, the settings, the state
/// behind its lock, and the registry of background green threads.
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
    /// Failed spawns are logged at most every [`SPAWN_FAILURE_LOG_EVERY`].
    spawn_failure_log: RateLimit,
    pub clock: CoarseClock,
    /// Suspicion epoch: bumped whenever a connection is found broken, so
    /// that every connection idle since before then proves itself first.
    epoch: AtomicU64,
    /// Background green threads: alive, deadlines, cancellation.
    pub tasks: Tasks,
    /// Starts a connector for a slot counted in `connecting` (the
    /// connector module's, given by the pool that builds this).
    start_connector: fn(&Arc<Shared<M>>, Memory),
}

impl<M: Manager> Shared<M> {
    /// The state of a new pool whose first `opening` slots are counted as
    /// connecting (the caller starts their connectors); slots released
    /// later are reopened with `start_connector`.
    pub fn new(
        manager: M,
        cfg: Config,
        opening: usize,
        start_connector: fn(&Arc<Shared<M>>, Memory),
    ) -> Self {
        Shared {
            manager,
            state: Mutex::new(PoolState {
                idle: VecDeque::with_capacity(cfg.size.min(1024)),
                waiters: VecDeque::new(),
                watcher_wakes_at: None,
                size: cfg.size,
                min_idle: cfg.min_idle,
                shrinking: false,
                in_use: 0,
                checking: 0,
                connecting: opening,
                counters: Counters::default(),
                health: ConnectHealth::default(),
                learnt_keepalive: None,
                asked_server_idle_timeout: false,
                ready_waiters: Vec::new(),
                spare_waiters: Vec::new(),
            }),
            closed: AtomicBool::new(false),
            maintenance_kick: Semaphore::new(0),
            watcher_kick: Semaphore::new(0),
            has_watcher: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            spawn_failure_log: RateLimit::new(SPAWN_FAILURE_LOG_EVERY),
            clock: CoarseClock::new(),
            epoch: AtomicU64::new(0),
            tasks: Tasks::default(),
            start_connector,
            cfg,
        }
    }

    /// A connect history for a slot that never connected.
    pub fn fresh_memory(&self) -> Memory {
        Memory::new(self.cfg.backoff_min, self.cfg.backoff_max)
    }
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
    /// cancelled when the pool closes (unless `kind` outlives a close) and,
    /// if `deadline` is set, once it has passed. Fails only if no green
    /// thread can be started; `body` is then dropped without running.
    pub fn spawn(
        shared: &Arc<Shared<M>>,
        kind: Kind,
        deadline: Option<Instant>,
        body: impl FnOnce(Task<M>) + Send + 'static,
    ) -> std::io::Result<u64> {
        #[cfg(feature = "testing")]
        if shared.cfg.spawn_faults.as_ref().is_some_and(|f| f.take()) {
            return Err(std::io::Error::other("injected green-thread spawn failure"));
        }
        let id = shared.tasks.register(kind, deadline);
        // From here the task's drop unregisters it, even if the spawn fails
        // (the closure, and the task in it, are dropped then).
        let task = Task {
            shared: Arc::clone(shared),
            id,
        };
        let handle = shared.task_builder(kind.role()).spawn(move || body(task))?;
        shared.tasks.attach(id, handle, shared.is_closed());
        Ok(id)
    }

    /// Set or clear the time after which this task is cancelled.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        self.shared.tasks.set_deadline(self.id, deadline);
    }

    /// True once the pool cancelled this task (close, or past its deadline).
    pub fn cancelled(&self) -> bool {
        self.shared.tasks.cancelled(self.id)
    }
}

impl<M: Manager> Drop for Task<M> {
    fn drop(&mut self) {
        self.shared.tasks.finish(self.id);
        if self.shared.is_closed() {
            self.shared.wake_state_waiters();
        }
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

    /// Lock the pool state; never parks (see [`crate::lock::lock`]).
    pub fn lock(&self) -> MutexGuard<'_, PoolState<M>> {
        crate::lock::lock(&self.state)
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

    /// A connection comes back from a user (or a health check) in working
    /// order: it did useful work.
    pub fn give_back(held: Held<M>) {
        Self::give_back_with(held, None)
    }

    /// [`give_back`](Self::give_back), keeping `spare` (the waiter of the
    /// wait that got the connection) for the next wait.
    pub fn give_back_with(mut held: Held<M>, spare: Option<Arc<Waiter<M>>>) {
        let shared = held.slot.owner();
        let now = shared.clock.now();
        if held.conn.expires.is_some_and(|at| at <= now) {
            held.slot.reason = Some(DiscardReason::Expired);
            return Arc::clone(held.slot.owner()).discard(held);
        }
        shared.proved(&mut held.conn, now);
        held.conn.fresh = false;
        Self::put_back_proven(held, spare, false);
    }

    /// Put back a connection that has just proved itself (by a user's work,
    /// or a keepalive): to the oldest waiter, or idle. The first useful work
    /// in its slot tells the connect health the pool works again.
    fn put_back_proven(mut held: Held<M>, spare: Option<Arc<Waiter<M>>>, keepalive: bool) {
        let first_work = held.slot.memory.worked();
        let report = held.hand_over(|shared, st| {
            if keepalive {
                st.counters.keepalives += 1;
            }
            if let Some(w) = spare {
                st.keep_spare(w);
            }
            first_work.then(|| st.health.recovered(&shared.cfg.name))
        });
        if let Some(r) = report.flatten() {
            r.emit();
        }
    }

    /// Put back a connection that was taken for validation but not checked
    /// (no time was left): it neither worked nor failed.
    pub fn give_back_unchecked(held: Held<M>) {
        held.hand_over(|_, _| ());
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
    /// green thread of its own, under the health-check timeout. Never blocks
    /// the caller. If no green thread can be started, the connection is just
    /// dropped.
    ///
    /// Maintenance enforces that timeout, and keeps running after the pool
    /// closes until every goodbye it can see has ended. A goodbye that
    /// starts on a closed pool (a connection that was out when it closed
    /// came back) may find maintenance gone, so it times itself.
    pub fn close_conn(self: &Arc<Self>, conn: Conn<M::Connection>) {
        let raw = conn.raw;
        let id = conn.id;
        let deadline = deadline_after(self.cfg.health_check_timeout);
        // A spawn that fails drops the closure, and the connection with it.
        let spawned = Task::spawn(self, Kind::Goodbye, deadline, move |task| {
            let shared = &task.shared;
            let said = panic::catch_unwind(AssertUnwindSafe(|| {
                if shared.is_closed() {
                    // Registered after maintenance's last look, or before:
                    // either way this green thread is no longer its to
                    // cancel (which would leave the inner one running).
                    // Cancelled just before that: the deadline has passed.
                    task.set_deadline(None);
                    if task.cancelled() {
                        return Err("ran out of time before it started".to_owned());
                    }
                    shared.timed_goodbye(raw, deadline)
                } else {
                    shared.manager.close(raw);
                    Ok(())
                }
            }));
            let why = match said {
                Ok(Ok(())) => return,
                Ok(Err(why)) => why,
                Err(_) => "panicked or was cancelled".to_owned(),
            };
            log::debug!(
                "pool {}: Manager::close of connection #{id} {why}",
                shared.cfg.name
            );
        });
        if let Err(e) = spawned {
            self.spawn_failed(
                Kind::Goodbye.role(),
                &e,
                "closing the connection without a goodbye",
            );
        }
    }

    /// `Manager::close(raw)` in a green thread of its own, cancelled at
    /// `deadline` (see [`close_conn`](Self::close_conn)); the caller waits.
    fn timed_goodbye(
        self: &Arc<Self>,
        raw: M::Connection,
        deadline: Option<Instant>,
    ) -> Result<(), String> {
        let left = deadline.map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        let shared = Arc::clone(self);
        let builder = self.task_builder(Kind::Goodbye.role());
        match greenpool_runtime::timeout_with(builder, left, move || shared.manager.close(raw)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(format!(
                "took longer than the health-check timeout ({:?}) and was cancelled",
                self.cfg.health_check_timeout
            )),
            Err(e) => Err(format!("could not start ({e}): the connection was dropped")),
        }
    }

    /// Report the pool's counts to the event handler, if there is one.
    pub fn report_state(&self) {
        if self.has_events() {
            let state = self.state();
            self.emit(|h| h.state(&state));
        }
    }

    /// Goodbyes still running (see [`close_conn`](Self::close_conn)).
    pub fn goodbyes_running(&self) -> usize {
        self.tasks.goodbyes()
    }

    /// Start `n` connectors for slots already counted in `connecting` (see
    /// [`PoolState::start_missing`]), each with a fresh connect history.
    pub fn spawn_connectors(self: &Arc<Self>, n: usize) {
        for _ in 0..n {
            (self.start_connector)(self, self.fresh_memory());
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
            st.shrinking = st.slots() > size;
            let grow = st.start_all_missing();
            // Idle connections above the new size close now, the oldest
            // first; those in use close as they come back, connectors as
            // they fail or open.
            let over = st.slots().saturating_sub(size).min(st.idle.len());
            let surplus: Vec<_> = st.idle.drain(..over).collect();
            let surplus: Vec<_> = surplus
                .into_iter()
                .map(|c| st.hold_to_close(self, c, DiscardReason::Surplus))
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
    pub fn add_connection(self: &Arc<Self>, conn: Box<Conn<M::Connection>>, mut slot: PoolSlot<M>) {
        slot.memory.useful = false;
        slot.conn = Some((conn.id, conn.created));
        let ready = Held { conn, slot }.hand_over(|_, st| {
            st.counters.created += 1;
            std::mem::take(&mut st.ready_waiters)
        });
        for b in ready.into_iter().flatten() {
            b.unpark();
        }
    }

    /// A keepalive proved a connection alive: put it back.
    pub fn keepalive_passed(self: &Arc<Self>, mut held: Held<M>) {
        self.proved(&mut held.conn, self.clock.refresh());
        Self::put_back_proven(held, None, true);
    }

    pub fn wait_ready(&self, deadline: Deadline, timeout: Duration) -> Result<(), Error> {
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
        self.is_closed() && st.open() + st.connecting == 0 && self.tasks.alive() == 0
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
            background_tasks: self.tasks.alive(),
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
            (idle, waiters, ready)
        };
        // Connectors and health checks stop now, even in a hung connect or
        // check: they unwind at their next blocking call. Goodbyes run to
        // their deadline, held to it by maintenance.
        self.tasks.cancel_on_close();
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
        self.report_state();
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

impl<M: Manager> SlotOwner for Shared<M> {
    /// Count the slot's discard (or detach), and reopen it if the pool still
    /// wants it ([`PoolState::wanted`]: always, unless `min_idle` is below
    /// the size or `resize` lowered it).
    fn release(shared: &Arc<Self>, slot: Released) {
        let mut memory = slot.memory;
        let mut discarded = None;
        let (replace, report) = {
            let mut st = shared.lock();
            st.uncount(slot.role);
            if shared.is_closed() {
                // The slot is simply given back; nothing replaces it.
                (false, None)
            } else {
                let mut report = None;
                if slot.detached {
                    st.counters.detached += 1;
                } else if slot.role != Role::Connecting {
                    let reason = slot.reason.unwrap_or(match slot.role {
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
        if let (Some(reason), Some((id, created))) = (discarded, slot.conn) {
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
            (shared.start_connector)(shared, memory);
        } else if shared.is_closed() {
            // A `close_timeout` may be waiting for the last slot.
            shared.wake_state_waiters();
        }
    }
}
