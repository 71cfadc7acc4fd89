//! The machinery [`TestServer`](super::TestServer) and
//! [`FaultProxy`](super::FaultProxy) share: a listener that can be stopped
//! and restarted on the same port, a registry of open connections whose
//! green threads can be cancelled, an idle reaper, the stall gate, counters
//! and a condition wait.
//!
//! # How a connection is closed
//!
//! Each connection is an [`Entry`] served by one or more green threads. The
//! sockets are owned by those green threads (wrapped in [`Sock`]); nobody else
//! holds a descriptor. To close a connection, its entry is taken out of the
//! registry, flags saying which sides to reset are set, and its green threads
//! are cancelled and waited for. Cancelling unwinds them; each [`Sock`] sets
//! `SO_LINGER` to zero on the way out if its side is flagged, so the last
//! `close()` sends an RST (and no FIN before it). Unflagged sides get a normal
//! close (FIN).
//!
//! Nothing on a cancellation path blocks on a runtime primitive (a cancelled
//! green thread that parks again panics again, and a panic during an unwind
//! aborts): the registry uses short `std` critical sections that never wait
//! for anything, and waking waiters (`Condvar::notify_all`) never parks.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard as StdGuard};
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::runtime::net::{serve, ServeOptions, Server, TcpListener, TcpStream};
use crate::runtime::sync::{mpsc, Condvar, Mutex as GreenMutex, SyncFlag};
use crate::runtime::{yield_now, Builder, Deadline, JoinHandle, Wait};

/// Reset (RST) the client side of a connection when it is closed.
pub(crate) const RESET_CLIENT: u8 = 1;
/// Reset (RST) the upstream side of a proxied connection when it is closed.
pub(crate) const RESET_UPSTREAM: u8 = 2;

/// Longest a condition wait sleeps before re-checking its condition, in case
/// a wake-up was missed or the condition depends on something that does not
/// notify.
const WAIT_SLICE: Duration = Duration::from_millis(10);

/// How long `shutdown` waits for the last connection to finish closing before
/// it logs a warning and returns anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Stack size of the kit's green threads.
const STACK_SIZE: usize = 64 * 1024;

/// Lock a std mutex, ignoring poisoning. Every critical section guarded this
/// way is a few lines that neither block nor panic.
fn lock<T>(m: &std::sync::Mutex<T>) -> StdGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to do with an accepted connection: given the endpoint, the stream and
/// its id, register it (with [`Endpoint::admit`]) and start serving it.
pub(crate) type OnConn = Arc<dyn Fn(&Arc<Endpoint>, TcpStream, u64) + Send + Sync>;

/// One open connection (a client connection of the server, or a client and
/// upstream pair of the proxy).
pub(crate) struct Entry {
    id: u64,
    /// `RESET_*` bits: sides to reset when the sockets are dropped.
    flags: AtomicU8,
    /// Live [`Member`]s (green threads serving this entry). The last one to
    /// finish releases the entry.
    alive: AtomicUsize,
    /// Operations in progress that must not count as idle time.
    busy: AtomicUsize,
    /// Last activity, in microseconds since the endpoint's epoch.
    last_active_us: AtomicU64,
    tasks: std::sync::Mutex<Tasks>,
}

struct Tasks {
    /// Set once the entry is being torn down: no new green thread may join.
    closing: bool,
    handles: Vec<JoinHandle<()>>,
}

impl Entry {
    /// The connection's id (1, 2, ... in accept order).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn flagged(&self, bit: u8) -> bool {
        self.flags.load(Ordering::Acquire) & bit != 0
    }

    pub(crate) fn set_flags(&self, bits: u8) {
        self.flags.fetch_or(bits, Ordering::AcqRel);
    }

    /// Mark the connection busy until the returned guard is dropped: the
    /// idle reaper leaves busy connections alone.
    pub(crate) fn busy(&self) -> BusyGuard<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self)
    }
}

pub(crate) struct BusyGuard<'a>(&'a Entry);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A green thread's share of an [`Entry`]. Dropping the last one closes the
/// books on the connection: it leaves the registry and `open` goes down.
pub(crate) struct Member {
    ep: Arc<Endpoint>,
    entry: Arc<Entry>,
}

impl Member {
    pub(crate) fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    pub(crate) fn endpoint(&self) -> &Arc<Endpoint> {
        &self.ep
    }

    /// Record activity now (for the idle reaper).
    pub(crate) fn touch(&self) {
        self.entry
            .last_active_us
            .store(self.ep.now_us(), Ordering::Release);
    }

    /// Ask the supervisor to tear this connection down, resetting the sides
    /// in `bits`. Used by a green thread that hit an error and must stop its
    /// siblings; it returns at once.
    pub(crate) fn abort(&self, bits: u8) {
        self.entry.set_flags(bits);
        self.ep.command(Cmd::Close(self.entry.id));
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.entry.alive.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ep.release(&self.entry);
        }
    }
}

/// The closure a connection's green thread runs, together with its
/// [`Member`]. Fields drop in order: the closure (and the sockets it owns)
/// first, then the member, so `open` goes down only once the sockets are
/// closed — also when the green thread is cancelled before it starts.
struct Job<F> {
    f: Option<F>,
    member: Member,
}

impl<F: FnOnce(&Member)> Job<F> {
    fn run(mut self) {
        if let Some(f) = self.f.take() {
            f(&self.member);
        }
    }
}

/// A connection's socket, owned by the green thread that serves it. When
/// dropped, it sets `SO_LINGER` to zero first if its side is flagged for a
/// reset, so the final close sends an RST.
pub(crate) struct Sock {
    stream: TcpStream,
    entry: Arc<Entry>,
    side: u8,
}

impl Sock {
    /// Wrap `stream`, the `side` (`RESET_CLIENT` or `RESET_UPSTREAM`) of
    /// `entry`.
    pub(crate) fn new(stream: TcpStream, entry: &Arc<Entry>, side: u8) -> Sock {
        Sock {
            stream,
            entry: entry.clone(),
            side,
        }
    }

    pub(crate) fn side(&self) -> u8 {
        self.side
    }

    /// A second handle on the same socket (a duplicated descriptor).
    pub(crate) fn try_clone(&self) -> io::Result<Sock> {
        Ok(Sock {
            stream: self.stream.try_clone()?,
            entry: self.entry.clone(),
            side: self.side,
        })
    }

    /// Send a FIN: the peer reads end-of-file once it has read everything.
    pub(crate) fn shutdown_write(&self) {
        // Fails only if the socket is already disconnected; nothing to do.
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        if self.entry.flagged(self.side) {
            set_reset_on_close(&self.stream);
        }
    }
}

/// Make the next (last) close of this socket send an RST instead of a FIN.
pub(crate) fn set_reset_on_close(stream: &TcpStream) {
    if let Err(e) = SockRef::from(stream.inner()).set_linger(Some(Duration::ZERO)) {
        log::debug!("greenpool::testing: SO_LINGER=0 failed: {e}");
    }
}

/// Closed while stalled: green threads that reach [`Gate::pass`] wait until
/// it opens again (or they are cancelled).
pub(crate) struct Gate {
    closed: std::sync::Mutex<Option<Arc<SyncFlag>>>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            closed: std::sync::Mutex::new(None),
        }
    }

    fn set_closed(&self, closed: bool) {
        let mut g = lock(&self.closed);
        if closed {
            if g.is_none() {
                *g = Some(Arc::new(SyncFlag::new()));
            }
        } else if let Some(flag) = g.take() {
            flag.fire();
        }
    }

    fn is_closed(&self) -> bool {
        lock(&self.closed).is_some()
    }

    /// Return at once if the gate is open, otherwise wait (blocking only the
    /// calling green thread) until it opens.
    pub(crate) fn pass(&self) {
        let flag = lock(&self.closed).clone();
        if let Some(flag) = flag {
            flag.wait();
        }
    }
}

/// Messages to the supervisor green thread.
enum Cmd {
    /// A setting changed; re-plan the idle timer.
    Wake,
    /// Tear down this connection (its flags are already set).
    Close(u64),
    /// Exit.
    Stop,
}

struct Lifecycle {
    addr: SocketAddr,
    /// The accept loop (`net::serve`); dropped to stop listening.
    accept: Option<Server>,
    supervisor: Option<JoinHandle<()>>,
    on_conn: OnConn,
    shut_down: bool,
}

/// A listening endpoint with its connections, knobs and counters.
pub(crate) struct Endpoint {
    kind: &'static str,
    epoch: Instant,
    conns: std::sync::Mutex<HashMap<u64, Arc<Entry>>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    requests: AtomicU64,
    refuse: AtomicBool,
    idle_close: std::sync::Mutex<Option<Duration>>,
    pub(crate) gate: Gate,
    /// Bumped on every change a waiter may care about.
    generation: AtomicU64,
    changed: Condvar,
    changed_lock: GreenMutex<()>,
    cmds: std::sync::Mutex<mpsc::Sender<Cmd>>,
    lifecycle: GreenMutex<Lifecycle>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.kind)
            .field("accepted", &self.accepted())
            .field("refused", &self.refused())
            .field("open", &self.open())
            .field("peak_open", &self.peak_open())
            .field("requests", &self.requests())
            .field("stalled", &self.gate.is_closed())
            .field("refusing", &self.refuse.load(Ordering::Acquire))
            .field("idle_close", &*lock(&self.idle_close))
            .finish()
    }
}

impl Endpoint {
    /// Bind 127.0.0.1 on an ephemeral port and start accepting; `on_conn`
    /// serves each accepted connection.
    pub(crate) fn start(kind: &'static str, on_conn: OnConn) -> io::Result<Arc<Endpoint>> {
        let (tx, rx) = mpsc::channel();
        let ep = Arc::new(Endpoint {
            kind,
            epoch: Instant::now(),
            conns: std::sync::Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            idle_close: std::sync::Mutex::new(None),
            gate: Gate::new(),
            generation: AtomicU64::new(0),
            changed: Condvar::new(),
            changed_lock: GreenMutex::new(()),
            cmds: std::sync::Mutex::new(tx),
            lifecycle: GreenMutex::new(Lifecycle {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                accept: None,
                supervisor: None,
                on_conn,
                shut_down: false,
            }),
        });
        let mut lc = ep.lifecycle();
        ep.listen(&mut lc)?;
        let sup = ep.clone();
        match Builder::new()
            .name(format!("{kind}-supervisor"))
            .stack_size(STACK_SIZE)
            .spawn(move || supervisor(sup, rx))
        {
            Ok(h) => lc.supervisor = Some(h),
            Err(e) => {
                Self::stop_listening(&mut lc);
                return Err(e);
            }
        }
        drop(lc);
        log::debug!("{kind} listening on {}", ep.addr());
        Ok(ep)
    }

    fn lifecycle(&self) -> crate::runtime::sync::MutexGuard<'_, Lifecycle> {
        self.lifecycle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bind `lc.addr` and start accepting. Each accepted connection is
    /// refused (reset) or handed to `on_conn`, which registers it and starts
    /// its own green threads; the kit tracks and closes connections itself,
    /// so the server's bound is only a backstop.
    fn listen(self: &Arc<Self>, lc: &mut Lifecycle) -> io::Result<()> {
        let listener = bind_listener(lc.addr)?;
        let ep = self.clone();
        let on_conn = lc.on_conn.clone();
        let opts = ServeOptions::new()
            .name(self.kind)
            .stack_size(STACK_SIZE)
            .nodelay(true);
        let first_id = self.accepted.load(Ordering::Acquire);
        let server = serve(listener, opts, move |stream, a| {
            ep.accept(stream, a.peer, first_id + a.id, &on_conn)
        })?;
        lc.addr = server.local_addr();
        lc.accept = Some(server);
        Ok(())
    }

    /// Accepted connection `id` (1, 2, ... in accept order, across restarts):
    /// refused, or handed to `on_conn`.
    fn accept(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, id: u64, on_conn: &OnConn) {
        self.accepted.fetch_add(1, Ordering::AcqRel);
        if self.refuse.load(Ordering::Acquire) {
            set_reset_on_close(&stream);
            drop(stream);
            self.refused.fetch_add(1, Ordering::AcqRel);
            log::debug!("{} refused connection {id} from {peer}", self.kind);
            self.notify();
            return;
        }
        log::trace!("{} accepted connection {id} from {peer}", self.kind);
        on_conn(self, stream, id);
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.lifecycle().addr
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.lifecycle().accept.is_some()
    }

    /// Stop accepting, wait until the listener is closed and every accepted
    /// connection has been refused or registered (so that closing all
    /// connections next misses none). Returns with the port refusing
    /// connections.
    fn stop_listening(lc: &mut Lifecycle) {
        if let Some(server) = lc.accept.take() {
            server.stop(SHUTDOWN_GRACE);
        }
    }

    pub(crate) fn stop(self: &Arc<Self>) -> usize {
        {
            let mut lc = self.lifecycle();
            Self::stop_listening(&mut lc);
        }
        log::debug!("{} on {} stopped listening", self.kind, self.addr());
        self.notify();
        self.close_all(RESET_CLIENT)
    }

    pub(crate) fn restart(self: &Arc<Self>) -> io::Result<()> {
        let mut lc = self.lifecycle();
        if lc.shut_down {
            return Err(io::Error::other(format!(
                "{} was shut down; start a new one instead of restarting it",
                self.kind
            )));
        }
        if lc.accept.is_some() {
            return Ok(());
        }
        self.listen(&mut lc).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{} cannot listen again on {}: {e} (another socket may have taken the port)",
                    self.kind, lc.addr
                ),
            )
        })?;
        log::debug!("{} listening again on {}", self.kind, lc.addr);
        drop(lc);
        self.notify();
        Ok(())
    }

    /// Stop everything: accept loop, supervisor, connections (closed
    /// gracefully). Idempotent.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        // Held throughout, so a concurrent `shutdown` (or `stop`/`restart`)
        // returns only once this one has finished. Nothing below takes it.
        let mut lc = self.lifecycle();
        if lc.shut_down {
            return;
        }
        lc.shut_down = true;
        Self::stop_listening(&mut lc);
        if let Some(h) = lc.supervisor.take() {
            // Not cancelled: it may be in the middle of closing a connection
            // it has already taken out of the registry. It finishes that first.
            self.command(Cmd::Stop);
            h.wait();
        }
        // Stalled green threads are cancelled like the others; their held
        // requests are never answered.
        self.close_all(0);
        if !self.wait_until(SHUTDOWN_GRACE, || self.open() == 0) {
            log::warn!(
                "{} on {}: {} connection(s) still closing after {:?}",
                self.kind,
                lc.addr,
                self.open(),
                SHUTDOWN_GRACE
            );
        }
        log::debug!("{} on {} shut down", self.kind, lc.addr);
    }

    // ----- connections -----

    /// Register a new connection with id `id`. The caller then starts its
    /// green thread(s) with [`Endpoint::launch`].
    pub(crate) fn admit(&self, id: u64) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            id,
            flags: AtomicU8::new(0),
            alive: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            last_active_us: AtomicU64::new(self.now_us()),
            tasks: std::sync::Mutex::new(Tasks {
                closing: false,
                handles: Vec::new(),
            }),
        });
        lock(&self.conns).insert(id, entry.clone());
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_open.fetch_max(open, Ordering::AcqRel);
        self.notify();
        entry
    }

    /// Start a green thread serving `entry`. Returns `Ok(false)`, without
    /// running `f`, if the entry is already being torn down.
    pub(crate) fn launch<F>(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        name: &str,
        f: F,
    ) -> io::Result<bool>
    where
        F: FnOnce(&Member) + Send + 'static,
    {
        let mut tasks = lock(&entry.tasks);
        entry.alive.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            f: Some(f),
            member: Member {
                ep: self.clone(),
                entry: entry.clone(),
            },
        };
        if tasks.closing {
            drop(tasks);
            drop(job);
            return Ok(false);
        }
        let h = Builder::new()
            .name(format!("{}-{}-{name}", self.kind, entry.id))
            .stack_size(STACK_SIZE)
            .spawn(move || job.run())?;
        tasks.handles.push(h);
        Ok(true)
    }

    /// The last member of `entry` is gone: forget it.
    fn release(&self, entry: &Entry) {
        lock(&self.conns).remove(&entry.id);
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.notify();
    }

    /// Tear `entry` down: set `bits`, cancel its green threads and wait until
    /// they have finished (their sockets are closed then).
    fn teardown(entry: &Entry, bits: u8) {
        entry.set_flags(bits);
        let handles = {
            let mut t = lock(&entry.tasks);
            t.closing = true;
            std::mem::take(&mut t.handles)
        };
        for h in &handles {
            h.cancel();
        }
        for h in &handles {
            h.wait();
        }
    }

    /// Close every open connection; returns how many.
    pub(crate) fn close_all(&self, bits: u8) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.conns).drain().map(|(_, e)| e).collect();
        for e in &entries {
            Self::teardown(e, bits);
        }
        if !entries.is_empty() {
            log::debug!(
                "{} closed {} connection(s) (reset bits {bits:#b})",
                self.kind,
                entries.len()
            );
        }
        entries.len()
    }

    fn close_one(&self, id: u64) {
        let entry = lock(&self.conns).remove(&id);
        if let Some(e) = entry {
            Self::teardown(&e, 0);
        }
    }

    /// Take out the connections idle for at least `limit`. Also returns how
    /// long until the next one could expire.
    fn take_idle(&self, limit: Duration) -> (Vec<Arc<Entry>>, Duration) {
        let now = self.now_us();
        let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        let mut next = limit_us;
        let mut expired = Vec::new();
        let mut conns = lock(&self.conns);
        conns.retain(|_, e| {
            if e.busy.load(Ordering::Acquire) > 0 {
                return true;
            }
            let idle = now.saturating_sub(e.last_active_us.load(Ordering::Acquire));
            if idle >= limit_us {
                expired.push(e.clone());
                false
            } else {
                next = next.min(limit_us - idle);
                true
            }
        });
        (expired, Duration::from_micros(next))
    }

    // ----- knobs and counters -----

    pub(crate) fn set_refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::Release);
    }

    pub(crate) fn set_stall(&self, on: bool) {
        self.gate.set_closed(on);
    }

    pub(crate) fn is_stalled(&self) -> bool {
        self.gate.is_closed()
    }

    pub(crate) fn set_idle_close(&self, limit: Option<Duration>) {
        *lock(&self.idle_close) = limit;
        self.command(Cmd::Wake);
    }

    fn command(&self, cmd: Cmd) {
        // Fails only when the supervisor is gone (shutting down): nothing
        // left to do then.
        let _ = lock(&self.cmds).send(cmd);
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Acquire)
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn peak_open(&self) -> usize {
        self.peak_open.load(Ordering::Acquire)
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.notify();
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Wake every [`Endpoint::wait_until`]. Never blocks.
    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_all();
    }

    /// Wait until `cond()` is true or `timeout` has passed; returns the last
    /// value of `cond()`. Re-checks after every change to the counters and
    /// at least every [`WAIT_SLICE`].
    pub(crate) fn wait_until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Deadline::after(timeout);
        loop {
            let seen = self.generation.load(Ordering::Acquire);
            if cond() {
                return true;
            }
            let slice = match deadline.wait() {
                Wait::Expired => return cond(),
                Wait::For(d) => d.min(WAIT_SLICE),
                Wait::Forever => WAIT_SLICE,
            };
            let guard = self.changed_lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.generation.load(Ordering::Acquire) != seen {
                continue;
            }
            let r = self.changed.wait_timeout(guard, slice);
            drop(r);
            // A timed-out wait resumes on may's timer thread.
            yield_now();
        }
    }
}

/// Bind a listener on `addr` with `SO_REUSEADDR` (so a restart can reuse a
/// port with connections in TIME_WAIT) but, unlike may's
/// `TcpListener::bind`, without `SO_REUSEPORT`: a second listener on the
/// same port fails with `AddrInUse` instead of silently sharing it.
#[cfg(unix)]
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    // The first may socket starts may's scheduler: configure the runtime first.
    crate::runtime::init();
    use std::os::unix::io::{FromRawFd, IntoRawFd};

    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is a listening TCP socket we own: `into_raw_fd` gave up
    // ownership, and nothing else refers to it. may takes ownership, makes it
    // non-blocking and registers it with its event loop (panicking only if
    // epoll registration fails, as with any may socket).
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

#[cfg(not(unix))]
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    crate::runtime::init();
    TcpListener::bind(addr)
}

/// Closes idle connections and connections whose green threads asked for it.
fn supervisor(ep: Arc<Endpoint>, rx: mpsc::Receiver<Cmd>) {
    loop {
        let limit = *lock(&ep.idle_close);
        let next = limit.map(|limit| {
            let (expired, next) = ep.take_idle(limit);
            for e in &expired {
                log::debug!("{} closing connection {} idle for {limit:?}", ep.kind, e.id);
                Endpoint::teardown(e, 0);
            }
            next
        });
        let cmd = match next {
            None => rx.recv().ok(),
            Some(d) => {
                let r = rx.recv_timeout(d.max(Duration::from_millis(1)));
                yield_now();
                match r {
                    Ok(cmd) => Some(cmd),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match cmd {
            Some(Cmd::Wake) => {}
            Some(Cmd::Close(id)) => ep.close_one(id),
            Some(Cmd::Stop) | None => return,
        }
    }
}

/// The owner of an endpoint: dropping the last clone of a `TestServer` or
/// `FaultProxy` drops this, which shuts the endpoint down.
pub(crate) struct Owner(pub(crate) Arc<Endpoint>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}
