//! A TCP server for green threads (gevent's `StreamServer`): an accept loop
//! that serves every connection in a green thread of its own, with a bound on
//! how many are served at once and a stop that waits for them.
//!
//! Re-exported as [`crate::net::serve`], [`crate::net::Server`] and
//! [`crate::net::ServeOptions`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use may::coroutine::Coroutine;

use crate::net::{TcpListener, TcpStream};
use crate::sync::Semaphore;
use crate::task::{Builder, JoinHandle};
use crate::time::{after_timed_wake, sleep, Deadline, Wait};

/// Default for [`ServeOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Pause after a failed `accept` (out of file descriptors, say) or a failed
/// spawn, so that the accept loop does not spin while the cause lasts.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// What a handler learns about its connection besides the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The peer's address.
    pub peer: SocketAddr,
    /// 1, 2, 3, ... in the order the server accepted the connections (handlers
    /// run concurrently, so they may start in another order).
    pub id: u64,
}

/// How [`serve`] runs: the bound on concurrent connections, socket options,
/// the handlers' green threads.
///
/// | option | default |
/// |---|---|
/// | [`max_connections`](Self::max_connections) | [`DEFAULT_MAX_CONNECTIONS`] |
/// | [`nodelay`](Self::nodelay) | `true` |
/// | [`stack_size`](Self::stack_size) | the runtime's default |
/// | [`name`](Self::name) | `"server"` |
#[derive(Debug, Clone)]
pub struct ServeOptions {
    max_connections: usize,
    nodelay: bool,
    stack_size: Option<usize>,
    name: String,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            nodelay: true,
            stack_size: None,
            name: "server".into(),
        }
    }
}

impl ServeOptions {
    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Most connections served at once. While that many handlers run, the
    /// server accepts nothing more: new connections wait in the listener's
    /// backlog (gevent's `Pool`-bounded server). Zero is rejected by
    /// [`serve`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Set `TCP_NODELAY` on every accepted stream (default `true`; may's
    /// accepted streams keep Nagle's algorithm on otherwise, which stalls a
    /// reply written in two pieces on delayed ACKs).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Stack size in bytes of each handler's green thread (default: the
    /// runtime's, [`crate::config::DEFAULT_STACK_SIZE`] unless configured).
    /// Give TLS or parsing handlers 256 KiB: an overflow in a release build
    /// exits the process.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Name of the server, used for its green threads (`NAME-accept`,
    /// `NAME-conn`) and in log lines.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// State shared by the accept loop, the handlers and the [`Server`] handle.
struct Shared {
    name: String,
    max: usize,
    /// One permit per connection that may be served; the accept loop takes
    /// one before it accepts, a handler gives it back when it ends.
    slots: Semaphore,
    active: AtomicUsize,
    accepted: AtomicU64,
    /// The handlers still running, to cancel them at the end of a stop.
    /// A std mutex: held for a map operation only, never across a yield, and
    /// taken by handlers as they unwind (a may lock would re-raise a
    /// cancellation there and abort the process).
    running: StdMutex<HashMap<u64, Coroutine>>,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Coroutine>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One permit of `Shared::slots`, given back when dropped: by the accept loop
/// if its `accept` fails or is cancelled, else by the handler it moved to.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.post();
    }
}

/// Owned by each handler's green thread: forgets the handler and gives its
/// slot back when it ends, whether it returned, panicked or was cancelled.
struct Served {
    slot: Slot,
    id: u64,
}

impl Served {
    fn new(slot: Slot, id: u64) -> Served {
        slot.0.active.fetch_add(1, Ordering::AcqRel);
        Served { slot, id }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let shared = &self.slot.0;
        shared.running().remove(&self.id);
        shared.active.fetch_sub(1, Ordering::AcqRel);
        // `slot` is dropped next: the permit goes back last.
    }
}

/// A running server: its address, counters, and [`stop`](Self::stop).
///
/// Dropping it without `stop` stops accepting (the listener closes) and
/// leaves the connections that are being served to finish on their own.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("active", &self.active())
            .field("accepted", &self.accepted())
            .finish()
    }
}

/// Serve every connection `listener` accepts with `handler(stream, accepted)`, each
/// in a green thread of its own, at most
/// [`max_connections`](ServeOptions::max_connections) at once (gevent's
/// `StreamServer(listener, handle).start()`). Returns at once; the accept
/// loop runs in a green thread until [`Server::stop`] or drop.
///
/// A handler that panics ends only its own connection (the panic is logged
/// by the panic hook); its slot is given back. A failed `accept` (for
/// example, out of file descriptors) is logged and retried after 10 ms.
///
/// Errors: [`io::ErrorKind::InvalidInput`] for `max_connections(0)`, or the
/// error of starting the accept loop's green thread.
///
/// ```
/// use greenpool_runtime::net::{connect_addr, serve, ConnectOptions, ServeOptions, TcpListener};
/// use std::io::{Read, Write};
/// use std::time::Duration;
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let server = serve(listener, ServeOptions::new().max_connections(100), |mut s, _accepted| {
///     let mut buf = [0u8; 64];
///     while let Ok(n @ 1..) = s.read(&mut buf) {
///         if s.write_all(&buf[..n]).is_err() {
///             break;
///         }
///     }
/// })
/// .unwrap();
///
/// let mut c = connect_addr(server.local_addr(), &ConnectOptions::new()).unwrap();
/// c.write_all(b"ping").unwrap();
/// let mut reply = [0u8; 4];
/// c.read_exact(&mut reply).unwrap();
/// assert_eq!(&reply, b"ping");
/// drop(c); // the handler sees the end of the stream and returns
/// assert_eq!(server.stop(Duration::from_secs(5)), 0, "no handler had to be cancelled");
/// ```
pub fn serve<F>(listener: TcpListener, opts: ServeOptions, handler: F) -> io::Result<Server>
where
    F: Fn(TcpStream, Accepted) + Send + Sync + 'static,
{
    crate::config::ensure_configured();
    if opts.max_connections == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ServeOptions::max_connections is 0: a server must be able to serve at least one connection",
        ));
    }
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        name: opts.name.clone(),
        max: opts.max_connections,
        slots: Semaphore::new(opts.max_connections),
        active: AtomicUsize::new(0),
        accepted: AtomicU64::new(0),
        running: StdMutex::new(HashMap::new()),
    });
    let loop_shared = Arc::clone(&shared);
    let accept = Builder::new()
        .name(format!("{}-accept", opts.name))
        .spawn(move || accept_loop(listener, loop_shared, opts, Arc::new(handler)))?;
    log::debug!("{} listening on {addr}", shared.name);
    Ok(Server {
        addr,
        shared,
        accept: Some(accept),
    })
}

fn accept_loop<F>(listener: TcpListener, shared: Arc<Shared>, opts: ServeOptions, handler: Arc<F>)
where
    F: Fn(TcpStream, Accepted) + Send + Sync + 'static,
{
    loop {
        // A slot first: beyond the bound, connections wait in the backlog.
        shared.slots.wait();
        let slot = Slot(Arc::clone(&shared));
        let (stream, peer) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) => {
                drop(slot);
                log::warn!("{} accept failed: {e}; retrying", shared.name);
                sleep(ACCEPT_RETRY);
                continue;
            }
        };
        if opts.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("{}: TCP_NODELAY on a stream from {peer}: {e}", shared.name);
            }
        }
        let id = shared.accepted.fetch_add(1, Ordering::AcqRel) + 1;
        let served = Served::new(slot, id);
        let handler = Arc::clone(&handler);
        let mut builder = Builder::new().name(format!("{}-conn", shared.name));
        if let Some(bytes) = opts.stack_size {
            builder = builder.stack_size(bytes);
        }
        // Registered under the lock, so that a handler that ends at once
        // finds its entry to remove.
        let mut running = shared.running();
        match builder.spawn(move || {
            let _served = served;
            handler(stream, Accepted { peer, id });
        }) {
            Ok(h) => {
                running.insert(id, h.coroutine().clone());
            }
            Err(e) => {
                drop(running);
                // The closure was dropped: `served` gave the slot back.
                log::error!(
                    "{}: cannot start a green thread for a connection from {peer}: {e}; \
                     it was closed",
                    shared.name
                );
                sleep(ACCEPT_RETRY);
            }
        }
    }
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections being served now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Acquire)
    }

    /// Stop accepting at once (the listener is closed: new connections are
    /// refused), then wait up to `grace` for the connections being served to
    /// end. Handlers still running after `grace` are cancelled: each unwinds
    /// at its next blocking runtime call, dropping (and so closing) its
    /// stream. Returns how many were cancelled.
    ///
    /// Blocks the calling green thread (or OS thread) for at most `grace`
    /// plus the time cancelled handlers take to unwind, which is bounded by
    /// another `grace` (a handler stuck in a non-runtime call cannot be
    /// cancelled; it is logged and left running). A zero `grace` cancels
    /// every handler at once. Don't call it from one of the server's own
    /// handlers: that handler would wait for itself and then be cancelled.
    pub fn stop(mut self, grace: Duration) -> usize {
        self.stop_accepting();
        if self.wait_idle(Deadline::after(grace)) {
            return 0;
        }
        let stragglers: Vec<Coroutine> = self.shared.running().values().cloned().collect();
        for co in &stragglers {
            // SAFETY: cancellation unwinds the handler at its next blocking
            // call, running its destructors (its `Served` gives the slot back);
            // the crate requires panic = "unwind".
            unsafe { co.cancel() };
        }
        if !self.wait_idle(Deadline::after(grace)) {
            log::warn!(
                "{}: {} handler(s) did not end within {grace:?} of being cancelled \
                 (stuck outside the runtime's blocking calls?); left running",
                self.shared.name,
                self.active()
            );
        }
        stragglers.len()
    }

    fn stop_accepting(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.cancel();
            // Joined so that the listener is closed when this returns.
            let _ = accept.join();
            log::debug!("{} stopped accepting on {}", self.shared.name, self.addr);
        }
    }

    /// Wait until every slot is free again: no handler runs.
    fn wait_idle(&self, deadline: Deadline) -> bool {
        let slots = &self.shared.slots;
        let mut taken = 0;
        let idle = loop {
            if taken == self.shared.max {
                break true;
            }
            if slots.try_wait() {
                taken += 1;
                continue;
            }
            match deadline.wait() {
                Wait::Expired => break false,
                Wait::For(d) if slots.wait_timeout(d) => taken += 1,
                Wait::For(_) => {
                    after_timed_wake();
                    break false;
                }
                Wait::Forever => {
                    slots.wait();
                    taken += 1;
                }
            }
        };
        for _ in 0..taken {
            slots.post();
        }
        idle
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}
