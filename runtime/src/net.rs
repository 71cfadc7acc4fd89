//! TCP networking for green threads: gevent's `create_connection`, with name
//! resolution that never blocks a worker thread and per-socket options.
//!
//! [`TcpListener`], [`TcpStream`] and [`UdpSocket`] are may's types: every
//! read, write, accept and connect on them blocks only the calling green
//! thread (or the calling OS thread outside the runtime). Read and write
//! timeouts on them return [`io::ErrorKind::TimedOut`] (std returns
//! `WouldBlock`).
//!
//! [`connect`] adds what a client needs on top of may's
//! `TcpStream::connect_timeout`:
//!
//! - host names are resolved by a [`Resolve`]r (by default the system's
//!   `getaddrinfo`) on a small pool of dedicated OS threads, never on a may
//!   worker, with a time limit ([`ConnectOptions::resolve_timeout`]);
//! - every resolved address is tried in turn, each with its own time limit
//!   ([`ConnectOptions::connect_timeout`]);
//! - the new socket gets `TCP_NODELAY`, TCP keepalive timings,
//!   `TCP_USER_TIMEOUT` and read/write timeouts, as configured;
//! - every error keeps its [`io::ErrorKind`] and says which address failed.
//!
//! **Traps.** may's own `TcpStream::connect("name:port")` resolves names with
//! a blocking `getaddrinfo` *on the worker thread*, stalling every green
//! thread scheduled there; use [`connect`] instead. To tune a may stream with
//! socket2 use `SockRef::from(stream.inner())` (may's stream has no `AsFd`).
//! After a read or write on a may stream returns `TimedOut` inside a green
//! thread, call [`after_io_timeout`] before waking other green threads, or
//! they may wait seconds to run.
//!
//! Server side: a [`TcpListener`] binds with `SO_REUSEADDR` *and*
//! `SO_REUSEPORT` (may's choice: a second bind on the same port succeeds
//! silently), and the streams it accepts keep Nagle's algorithm on: call
//! `set_nodelay(true)` on each, or a request/response protocol that writes a
//! reply in two pieces stalls on delayed ACKs (tens of milliseconds per
//! request). Call [`crate::init`] before binding, so that the runtime is
//! configured before may's scheduler starts.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::server::{serve, Accepted, ServeOptions, Server, DEFAULT_MAX_CONNECTIONS};
pub use may::net::{TcpListener, TcpStream, UdpSocket};

use crate::config::ensure_configured;
use crate::sync::Semaphore;
use crate::task::{is_green, panic_message};
use crate::time::{after_timed_wake, clamp_timeout};

/// Default for [`ConnectOptions::connect_timeout`]: 5 s per address.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default for [`ConnectOptions::resolve_timeout`]: 5 s.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Number of OS threads that run name resolution for the whole process.
pub const RESOLVER_THREADS: usize = 4;

/// Most name resolutions that may be queued or running at once, process-wide.
/// A caller beyond that waits (within its resolve timeout) for a slot.
pub const MAX_PENDING_RESOLUTIONS: usize = 256;

const MIN_WAIT: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------

/// Turns a host name into socket addresses.
///
/// Implement it to plug in your own DNS client, a static table, or a fake for
/// tests; install it with [`ConnectOptions::resolver`]. Any
/// `Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync` closure is a
/// `Resolve`r too.
///
/// `resolve` is always called on one of the runtime's dedicated resolver OS
/// threads, never on a green-thread worker, so it may block (it must not use
/// green-thread primitives that need a coroutine). If it panics, the panic is
/// turned into an error for the caller. A call that never returns occupies one
/// of the [`RESOLVER_THREADS`] threads forever, so give blocking resolvers
/// their own time limit.
///
/// `host` is a name, never an IP literal and never bracketed: [`connect`]
/// handles literals itself.
pub trait Resolve: Send + Sync {
    /// The addresses of `host`, each with `port`, in the order to try them.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync,
{
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self(host, port)
    }
}

/// The default resolver: the operating system's `getaddrinfo`, through std's
/// [`ToSocketAddrs`]. It honours `/etc/hosts`, `nsswitch.conf` and the
/// system's DNS settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The process-wide resolver threads. Jobs go through a std channel (the
/// consumers are plain OS threads); the number of queued plus running jobs is
/// bounded by `slots`, a green-thread semaphore, so a caller waiting for a
/// slot blocks only itself.
struct ResolverPool {
    jobs: std::sync::mpsc::Sender<Job>,
    slots: Semaphore,
    threads: usize,
}

fn resolver_pool() -> &'static ResolverPool {
    static POOL: OnceLock<ResolverPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        // Plain OS threads share the receiver; a std mutex is right here.
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut threads = 0;
        for i in 0..RESOLVER_THREADS {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("greenpool-resolver-{i}"))
                .spawn(move || loop {
                    let job = {
                        let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                        rx.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            match spawned {
                Ok(_) => threads += 1,
                Err(e) => log::error!("greenpool: cannot start resolver thread {i}: {e}"),
            }
        }
        log::debug!("greenpool: started {threads} resolver threads");
        ResolverPool {
            jobs: tx,
            slots: Semaphore::new(MAX_PENDING_RESOLUTIONS),
            threads,
        }
    })
}

/// Gives a resolver-pool slot back when dropped, whether the job ran, panicked
/// or was never run. Only posts to a semaphore, which never blocks.
struct SlotGuard(&'static Semaphore);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.post();
    }
}

/// Call this in a green thread right after a may IO call (connect, read,
/// write, accept) returned [`io::ErrorKind::TimedOut`], before waking any
/// other green thread (sending on a channel, releasing a lock or semaphore,
/// returning a connection to a pool). Does nothing on a plain OS thread.
///
/// Why: may resumes a coroutine whose IO timed out from inside the worker's
/// event loop, *after* that loop has drained its ready queue. Whatever the
/// coroutine makes runnable from there — another green thread it wakes, or
/// itself via `yield_now` — waits in that worker's local queue until the
/// loop's next epoll wake-up, which can be as late as the worker's next
/// pending IO timer: seconds (measured: a wake-up delayed 4.5 s behind a
/// leftover 5 s connect timer). This function sleeps 1 ms, which parks the
/// coroutine on may's timer thread; from there it comes back to a worker
/// through the global queue, with a wake-up, and everything works normally
/// again. It costs 1 ms on a path that has already waited a whole timeout.
///
/// [`connect`] and [`connect_addr`] call it themselves.
pub fn after_io_timeout() {
    if is_green() {
        crate::time::sleep(MIN_WAIT);
    }
}

fn resolve_timed_out(host: &str, port: u16, limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "resolve {host}:{port}: no answer within the resolve timeout of {limit:?} \
             (ConnectOptions::resolve_timeout); check the name and the DNS server"
        ),
    )
}

/// Resolve `host` with the resolver in `opts`, on the dedicated resolver
/// threads, waiting at most `opts`' resolve timeout. Blocks only the calling
/// green thread.
///
/// IP literals are returned as they are, without asking the resolver. An
/// answer with no addresses is an [`io::ErrorKind::NotFound`] error; expiry of
/// the resolve timeout is [`io::ErrorKind::TimedOut`]. Every error message
/// names the host.
///
/// ```
/// use greenpool_runtime::net::{resolve, ConnectOptions};
/// let opts = ConnectOptions::new().resolver(|_host: &str, port| {
///     Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
/// });
/// let addrs = resolve("db.internal", 5432, &opts).unwrap();
/// assert_eq!(addrs, vec!["127.0.0.1:5432".parse().unwrap()]);
/// ```
pub fn resolve(host: &str, port: u16, opts: &ConnectOptions) -> io::Result<Vec<SocketAddr>> {
    ensure_configured();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "resolve: the host name is empty",
        ));
    }
    let limit = checked_duration("resolve_timeout", opts.resolve_timeout)?;
    let addrs = resolve_off_worker(host, port, limit, &opts.resolver)?;
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("resolve {host}:{port}: the resolver returned no addresses"),
        ));
    }
    Ok(addrs)
}

fn resolve_off_worker(
    host: &str,
    port: u16,
    limit: Duration,
    resolver: &Arc<dyn Resolve>,
) -> io::Result<Vec<SocketAddr>> {
    let pool = resolver_pool();
    if pool.threads == 0 {
        return Err(io::Error::other(format!(
            "resolve {host}:{port}: no resolver thread could be started (see the error log)"
        )));
    }
    let started = Instant::now();
    let deadline = started.checked_add(limit);
    let remaining = || match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => limit,
    };

    // Take a slot: bounds the queue without blocking the worker thread.
    if !pool.slots.try_wait() {
        let acquired = match clamp_timeout(remaining()) {
            Some(wait) => {
                let ok = pool.slots.wait_timeout(wait);
                if !ok {
                    after_timed_wake();
                }
                ok
            }
            None => false,
        };
        if !acquired {
            return Err(resolve_timed_out(host, port, limit));
        }
    }
    let slot = SlotGuard(&pool.slots);

    let (tx, rx) = may::sync::mpsc::channel();
    let resolver = Arc::clone(resolver);
    let name = host.to_owned();
    let job: Job = Box::new(move || {
        let _slot = slot;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // The caller has given up already; skip the lookup.
            return;
        }
        let result = panic::catch_unwind(AssertUnwindSafe(|| resolver.resolve(&name, port)))
            .unwrap_or_else(|payload| {
                let why = panic_message(&*payload).unwrap_or("a non-string payload");
                Err(io::Error::other(format!("the resolver panicked: {why}")))
            });
        // The caller may have timed out and dropped the receiver.
        let _ = tx.send(result);
    });
    if pool.jobs.send(job).is_err() {
        // Unreachable while any resolver thread lives; the job (and its slot)
        // was dropped.
        return Err(io::Error::other(format!(
            "resolve {host}:{port}: the resolver threads have stopped"
        )));
    }

    let result = match clamp_timeout(remaining()) {
        Some(wait) => rx.recv_timeout(wait),
        None => Err(std::sync::mpsc::RecvTimeoutError::Timeout),
    };
    match result {
        Ok(Ok(addrs)) => {
            log::trace!(
                "greenpool: resolved {host}:{port} to {addrs:?} in {:?}",
                started.elapsed()
            );
            Ok(addrs)
        }
        Ok(Err(e)) => Err(with_context(e, format!("resolve {host}:{port}"))),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            after_timed_wake();
            Err(resolve_timed_out(host, port, limit))
        }
        // The job was skipped because its deadline passed before it ran.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(resolve_timed_out(host, port, limit))
        }
    }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// TCP keepalive timings for one socket: the kernel probes an idle connection
/// and reports it dead when the peer stops answering.
///
/// This is the transport-level alternative to an application-level `PING` on
/// idle connections: it costs no application traffic and catches dead peers
/// and dropped network paths, but it cannot see a server that is alive yet
/// stuck, and middleboxes (NAT, load balancers) may drop a connection whose
/// only traffic is keepalive probes. Keep `idle` shorter than the shortest
/// idle timeout on the path.
///
/// The OS counts in whole seconds: fractions of a second are dropped, and
/// `idle` and `interval` must be at least 1 s and `retries` at least 1. A dead
/// peer is detected after about `idle + interval * retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub idle: Duration,
    /// Time between unanswered probes (`TCP_KEEPINTVL`).
    pub interval: Duration,
    /// Unanswered probes before the connection is declared dead
    /// (`TCP_KEEPCNT`).
    pub retries: u32,
}

impl TcpKeepalive {
    /// Keepalive with these timings.
    pub fn new(idle: Duration, interval: Duration, retries: u32) -> Self {
        TcpKeepalive {
            idle,
            interval,
            retries,
        }
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.idle < Duration::from_secs(1) {
            return bad(format!(
                "TCP keepalive idle time {:?} is below 1 s (the OS counts whole seconds)",
                self.idle
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return bad(format!(
                "TCP keepalive interval {:?} is below 1 s (the OS counts whole seconds)",
                self.interval
            ));
        }
        if self.retries == 0 {
            return bad("TCP keepalive retries must be at least 1".to_owned());
        }
        Ok(())
    }

    fn to_socket2(self) -> socket2::TcpKeepalive {
        #[allow(unused_mut)] // only reassigned where the OS supports it
        let mut ka = socket2::TcpKeepalive::new().with_time(self.idle);
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "dragonfly",
            target_os = "illumos",
            target_os = "fuchsia",
            target_os = "windows",
        ))]
        {
            ka = ka.with_interval(self.interval).with_retries(self.retries);
        }
        ka
    }
}

/// How [`connect`] opens and sets up a TCP connection. Build it with the
/// methods below, each of which takes and returns the options:
///
/// ```
/// use std::time::Duration;
/// use greenpool_runtime::net::{ConnectOptions, TcpKeepalive};
/// let opts = ConnectOptions::new()
///     .connect_timeout(Duration::from_secs(2))
///     .tcp_keepalive(Some(TcpKeepalive::new(
///         Duration::from_secs(30),
///         Duration::from_secs(5),
///         3,
///     )))
///     .read_timeout(Some(Duration::from_secs(10)));
/// # let _ = opts;
/// ```
///
/// | option | default |
/// |---|---|
/// | [`connect_timeout`](Self::connect_timeout) | 5 s per address |
/// | [`resolve_timeout`](Self::resolve_timeout) | 5 s |
/// | [`nodelay`](Self::nodelay) | `true` |
/// | [`tcp_keepalive`](Self::tcp_keepalive) | `None`: the OS default (normally off) |
/// | [`user_timeout`](Self::user_timeout) | `None`: the OS default |
/// | [`read_timeout`](Self::read_timeout), [`write_timeout`](Self::write_timeout) | `None`: wait forever |
/// | [`resolver`](Self::resolver) | [`SystemResolver`] |
///
/// Durations are checked by [`connect`]: a zero duration is an
/// [`io::ErrorKind::InvalidInput`] error (use `None` where "no limit" is
/// meant), and anything between 0 and 1 ms counts as 1 ms, because the
/// runtime's timers count whole milliseconds.
#[derive(Clone)]
pub struct ConnectOptions {
    connect_timeout: Duration,
    resolve_timeout: Duration,
    nodelay: bool,
    keepalive: Option<TcpKeepalive>,
    user_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    resolver: Arc<dyn Resolve>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            resolve_timeout: DEFAULT_RESOLVE_TIMEOUT,
            nodelay: true,
            keepalive: None,
            user_timeout: None,
            read_timeout: None,
            write_timeout: None,
            resolver: Arc::new(SystemResolver),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("resolve_timeout", &self.resolve_timeout)
            .field("nodelay", &self.nodelay)
            .field("tcp_keepalive", &self.keepalive)
            .field("user_timeout", &self.user_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Time limit for connecting to **one** address (default 5 s). When a
    /// name resolves to several addresses each gets this long, so the worst
    /// case is this times the number of addresses. Zero is rejected by
    /// [`connect`]; under 1 ms counts as 1 ms.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time limit for resolving a host name, including any wait for a free
    /// resolver thread (default 5 s). Expiry is an
    /// [`io::ErrorKind::TimedOut`] error naming the host. Not used for IP
    /// literals. Zero is rejected; under 1 ms counts as 1 ms.
    pub fn resolve_timeout(mut self, d: Duration) -> Self {
        self.resolve_timeout = d;
        self
    }

    /// Set `TCP_NODELAY` (default `true`: small request/response messages go
    /// out at once instead of waiting for Nagle's algorithm).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// TCP keepalive timings for the socket (default `None`: leave the OS
    /// default, which on Linux is off). See [`TcpKeepalive`] for when to use
    /// it instead of an application-level `PING`.
    pub fn tcp_keepalive(mut self, keepalive: Option<TcpKeepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// `TCP_USER_TIMEOUT` (default `None`: the OS default): how long sent data
    /// may stay unacknowledged before the kernel drops the connection. Bounds
    /// how long a write to a vanished peer can go unnoticed, and, together
    /// with [`tcp_keepalive`](Self::tcp_keepalive), how long keepalive takes to
    /// give up. Linux (and Android) only; ignored elsewhere. Zero is
    /// rejected; under 1 ms counts as 1 ms.
    pub fn user_timeout(mut self, d: Option<Duration>) -> Self {
        self.user_timeout = d;
        self
    }

    /// Time limit for each read on the new stream (default `None`: wait
    /// forever). A read that times out returns [`io::ErrorKind::TimedOut`] and
    /// leaves the stream usable; in a green thread, call [`after_io_timeout`]
    /// next. Zero is rejected; under 1 ms counts as 1 ms.
    pub fn read_timeout(mut self, d: Option<Duration>) -> Self {
        self.read_timeout = d;
        self
    }

    /// Time limit for each write on the new stream (default `None`: wait
    /// forever). As with reads, call [`after_io_timeout`] after a write
    /// timed out in a green thread. Zero is rejected; under 1 ms counts as
    /// 1 ms.
    pub fn write_timeout(mut self, d: Option<Duration>) -> Self {
        self.write_timeout = d;
        self
    }

    /// Resolve host names with `resolver` instead of [`SystemResolver`]. It
    /// runs on the dedicated resolver threads, never on a green-thread worker.
    pub fn resolver(mut self, resolver: impl Resolve + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    fn validate(&self) -> io::Result<()> {
        checked_duration("connect_timeout", self.connect_timeout)?;
        checked_duration("resolve_timeout", self.resolve_timeout)?;
        for (name, d) in [
            ("user_timeout", self.user_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if let Some(d) = d {
                checked_duration(name, d)?;
            }
        }
        if let Some(ka) = &self.keepalive {
            ka.validate()?;
        }
        Ok(())
    }
}

/// Reject zero, clamp sub-millisecond values to 1 ms.
fn checked_duration(name: &str, d: Duration) -> io::Result<Duration> {
    if d.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ConnectOptions::{name} is zero; give a positive duration \
                 (or None, where allowed, for no limit)"
            ),
        ));
    }
    Ok(d.max(MIN_WAIT))
}

// ---------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------

/// An error with a prefix saying what was being done; the original error
/// stays reachable through [`std::error::Error::source`].
#[derive(Debug)]
struct Context {
    what: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn with_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), Context { what, source: e })
}

fn invalid_addr(addr: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "invalid address {addr:?}: expected \"host:port\", \"1.2.3.4:port\" or \"[v6]:port\""
        ),
    )
}

/// Split `host:port` / `[v6]:port`; the host comes back without brackets.
fn split_host_port(addr: &str) -> io::Result<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| invalid_addr(addr))?;
    let port: u16 = port.parse().map_err(|_| invalid_addr(addr))?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(|| invalid_addr(addr))?,
        None if host.contains(':') => return Err(invalid_addr(addr)),
        None => host,
    };
    if host.is_empty() {
        return Err(invalid_addr(addr));
    }
    Ok((host, port))
}

/// Open a TCP connection to `addr` (gevent's `create_connection`) and set it
/// up as `opts` says. Blocks only the calling green thread; works from a plain
/// OS thread too.
///
/// `addr` is `"host:port"`, `"1.2.3.4:port"` or `"[v6]:port"`. IP literals are
/// used as they are; a host name is resolved with the options' resolver on the
/// dedicated resolver threads (see [`resolve`]), and each address it returns
/// is tried in turn, each for at most the connect timeout.
///
/// Errors keep their [`io::ErrorKind`] (`ConnectionRefused`, `TimedOut`,
/// `InvalidInput`, ...) and their message names the address, e.g.
/// `connect to 127.0.0.1:9: Connection refused (os error 111)`. When every
/// resolved address fails, the last error is returned and the message says
/// how many addresses were tried.
///
/// ```
/// use greenpool_runtime::net::{connect, ConnectOptions, TcpListener};
/// use std::io::{Read, Write};
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = listener.local_addr().unwrap();
/// let server = greenpool_runtime::spawn(move || {
///     let (mut s, _) = listener.accept().unwrap();
///     let mut buf = [0u8; 4];
///     s.read_exact(&mut buf).unwrap();
///     s.write_all(&buf).unwrap();
/// });
///
/// let mut stream = connect(&addr.to_string(), &ConnectOptions::new()).unwrap();
/// stream.write_all(b"ping").unwrap();
/// let mut buf = [0u8; 4];
/// stream.read_exact(&mut buf).unwrap();
/// assert_eq!(&buf, b"ping");
/// server.join().unwrap();
/// ```
pub fn connect(addr: &str, opts: &ConnectOptions) -> io::Result<TcpStream> {
    ensure_configured();
    opts.validate()?;
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return connect_addr_validated(sa, opts);
    }
    let (host, port) = split_host_port(addr)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return connect_addr_validated(SocketAddr::new(ip, port), opts);
    }
    let addrs = resolve(host, port, opts)?;
    let mut last = None;
    for &sa in &addrs {
        match attempt(sa, opts) {
            Ok(stream) => {
                configure(&stream, sa, opts)?;
                return Ok(stream);
            }
            Err(e) => {
                log::debug!("greenpool: {e}");
                last = Some(e);
            }
        }
    }
    let last = last.expect("resolve returns at least one address");
    if addrs.len() == 1 {
        return Err(last);
    }
    Err(with_context(
        last,
        format!(
            "connect to {addr}: all {} resolved addresses failed; the last",
            addrs.len()
        ),
    ))
}

/// Open a TCP connection to one socket address and set it up as `opts` says;
/// no name resolution. Blocks only the calling green thread.
///
/// ```
/// use greenpool_runtime::net::{connect_addr, ConnectOptions, TcpListener};
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let stream = connect_addr(listener.local_addr().unwrap(), &ConnectOptions::new()).unwrap();
/// assert!(stream.inner().nodelay().unwrap());
/// ```
pub fn connect_addr(addr: SocketAddr, opts: &ConnectOptions) -> io::Result<TcpStream> {
    ensure_configured();
    opts.validate()?;
    connect_addr_validated(addr, opts)
}

fn connect_addr_validated(addr: SocketAddr, opts: &ConnectOptions) -> io::Result<TcpStream> {
    let stream = attempt(addr, opts)?;
    configure(&stream, addr, opts)?;
    Ok(stream)
}

/// One connect attempt with the per-attempt timeout.
fn attempt(addr: SocketAddr, opts: &ConnectOptions) -> io::Result<TcpStream> {
    let limit = opts.connect_timeout.max(MIN_WAIT);
    match TcpStream::connect_timeout(&addr, limit) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            after_io_timeout();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connect to {addr}: no answer within the connect timeout of {limit:?} \
                     (ConnectOptions::connect_timeout); is the server overloaded or \
                     the address filtered?"
                ),
            ))
        }
        Err(e) => Err(with_context(e, format!("connect to {addr}"))),
    }
}

/// Apply the socket options to a fresh connection.
fn configure(stream: &TcpStream, peer: SocketAddr, opts: &ConnectOptions) -> io::Result<()> {
    let ctx =
        |what: &'static str| move |e: io::Error| with_context(e, format!("set {what} on {peer}"));
    stream
        .set_nodelay(opts.nodelay)
        .map_err(ctx("TCP_NODELAY"))?;
    let sock = socket2::SockRef::from(stream.inner());
    if let Some(ka) = opts.keepalive {
        sock.set_tcp_keepalive(&ka.to_socket2())
            .map_err(ctx("TCP keepalive"))?;
    }
    if let Some(ut) = opts.user_timeout {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        sock.set_tcp_user_timeout(Some(ut.max(MIN_WAIT)))
            .map_err(ctx("TCP_USER_TIMEOUT"))?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        log::debug!("greenpool: TCP_USER_TIMEOUT ({ut:?}) is not supported here; ignored");
    }
    stream
        .set_read_timeout(opts.read_timeout.map(|d| d.max(MIN_WAIT)))
        .map_err(ctx("read timeout"))?;
    stream
        .set_write_timeout(opts.write_timeout.map(|d| d.max(MIN_WAIT)))
        .map_err(ctx("write timeout"))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Idle-connection check
// ---------------------------------------------------------------------------

/// What a non-blocking look at an idle connection found: see
/// [`peer_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    /// Open, and nothing to read: the normal state of an idle connection.
    Idle,
    /// Bytes are waiting to be read. For a request/response protocol an idle
    /// connection with unread bytes is out of step (or the server sent an
    /// error before closing): treat it as broken.
    Pending,
    /// The peer has closed its side (a FIN; for TLS also `close_notify`).
    Closed,
    /// The socket has failed, e.g. the peer reset it (RST): the kind of the
    /// error it reports.
    Failed(io::ErrorKind),
}

impl PeerStatus {
    /// True for [`PeerStatus::Idle`]: the connection can carry a new request.
    pub fn is_idle(self) -> bool {
        self == PeerStatus::Idle
    }
}

/// Has the peer closed or reset this idle connection? Never blocks: one
/// `recv(MSG_PEEK)` on the non-blocking socket, which consumes nothing.
///
/// A server that closes idle connections (HTTP keep-alive timeout, Redis
/// `timeout`, a restart) sends a FIN that nobody reads until the next
/// request, which then fails; this check sees it first, at the cost of one
/// system call. It cannot see a peer that vanished without a FIN or RST
/// (use TCP keepalive or an application `PING` for that). For TLS use
/// `TlsStream::peer_status` (feature `tls`), which also reads `close_notify`.
///
/// ```
/// use greenpool_runtime::net::{connect_addr, peer_status, ConnectOptions, PeerStatus, TcpListener};
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let client = connect_addr(listener.local_addr().unwrap(), &ConnectOptions::new()).unwrap();
/// let (server_side, _) = listener.accept().unwrap();
/// assert_eq!(peer_status(&client), PeerStatus::Idle);
/// drop(server_side);
/// # let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
/// # while peer_status(&client) == PeerStatus::Idle && std::time::Instant::now() < deadline {
/// #     greenpool_runtime::sleep(std::time::Duration::from_millis(1));
/// # }
/// assert_eq!(peer_status(&client), PeerStatus::Closed);
/// ```
pub fn peer_status(stream: &TcpStream) -> PeerStatus {
    let mut byte = [0u8; 1];
    loop {
        // may keeps its sockets in non-blocking mode, so this returns at once.
        return match stream.inner().peek(&mut byte) {
            Ok(0) => PeerStatus::Closed,
            Ok(_) => PeerStatus::Pending,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => PeerStatus::Idle,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => PeerStatus::Failed(e.kind()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_addresses() {
        assert_eq!(
            split_host_port("example.com:80").unwrap(),
            ("example.com", 80)
        );
        assert_eq!(split_host_port("[::1]:8080").unwrap(), ("::1", 8080));
        for bad in [
            "example.com",
            ":80",
            "::1:80",
            "[::1:80",
            "host:99999",
            "host:",
        ] {
            let e = split_host_port(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn validates_durations() {
        let e = ConnectOptions::new()
            .connect_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("connect_timeout"), "{e}");
        assert_eq!(
            checked_duration("x", Duration::from_micros(500)).unwrap(),
            MIN_WAIT
        );
        let ka = TcpKeepalive::new(Duration::from_millis(500), Duration::from_secs(1), 3);
        assert!(ConnectOptions::new()
            .tcp_keepalive(Some(ka))
            .validate()
            .is_err());
    }
}
