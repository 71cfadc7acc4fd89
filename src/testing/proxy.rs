//! [`FaultProxy`]: a TCP proxy that injects network faults in front of any
//! server.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint::{Endpoint, Member, OnConn, Owner, Sock, RESET_CLIENT, RESET_UPSTREAM};
use crate::runtime::net::TcpStream;

/// How long the proxy waits for the upstream connection before it gives up
/// and resets the client.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const BUF_SIZE: usize = 16 * 1024;

/// A TCP proxy on `127.0.0.1` in front of any upstream address, with knobs
/// that make the path between a client and its server misbehave the way
/// networks do: connections reset by a middlebox, a load balancer's idle
/// timeout, a network that black-holes traffic, a service that is down.
///
/// Each accepted client gets its own upstream connection. Bytes are copied
/// both ways by two green threads; a FIN from either side is passed on as a
/// FIN (half-close), an error on either side resets the other side. If the
/// upstream cannot be reached within [`UPSTREAM_CONNECT_TIMEOUT`], the
/// client is reset.
///
/// Works with any TCP protocol; the server need not be a
/// [`TestServer`](super::TestServer) (a real redis-server works as well).
///
/// # Sharing and lifetime
///
/// `FaultProxy` is `Send + Sync` and cheap to clone: clones are handles on
/// the same proxy. Every method takes `&self` and works from a plain thread
/// or a green thread; whatever blocks blocks only the calling green thread.
/// When the last handle is dropped (or [`shutdown`](Self::shutdown) is
/// called) the proxy stops listening, closes both sides of every connection
/// gracefully and waits until all its green threads have finished and all
/// its sockets are closed.
///
/// # What blocks
///
/// The counters and the `set_*` knobs never block. `reset_all`,
/// `close_all`, `stop`, `restart` and `shutdown` block until the sockets
/// concerned are closed or bound — normally well under a millisecond per
/// connection — and `shutdown` gives up waiting for stragglers after 5 s.
/// The `wait_*` methods block until their condition holds, at most their
/// timeout.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use greenpool::testing::{FaultProxy, LineClient, TestServer};
///
/// let server = TestServer::start()?;
/// let proxy = FaultProxy::start(server.addr())?;
/// let mut c = LineClient::connect(proxy.addr(), Duration::from_secs(5))?;
/// assert_eq!(c.request("PING")?, "PONG");
/// proxy.reset_all();
/// let err = c.request("PING").unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct FaultProxy {
    owner: Arc<Owner>,
    upstream: SocketAddr,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr())
            .field("upstream", &self.upstream)
            .field("listening", &self.is_listening())
            .field("state", &*self.owner.0)
            .finish()
    }
}

impl FaultProxy {
    /// Start a proxy on `127.0.0.1` (port chosen by the OS) forwarding to
    /// `upstream`. Returns once it is listening. The upstream is not
    /// contacted until a client connects, so it may be down at this point.
    ///
    /// Fails only if a socket cannot be bound or a green thread cannot be
    /// started.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let on_conn: OnConn = Arc::new(move |ep: &Arc<Endpoint>, stream: TcpStream, id: u64| {
            let entry = ep.admit(id);
            let client = Sock::new(stream, &entry, RESET_CLIENT);
            if let Err(e) = ep.launch(&entry, "pair", move |m| pair(m, client, upstream)) {
                log::warn!("FaultProxy: cannot serve connection {id}: {e}");
            }
        });
        let ep = Endpoint::start("FaultProxy", on_conn)?;
        Ok(FaultProxy {
            owner: Arc::new(Owner(ep)),
            upstream,
        })
    }

    fn ep(&self) -> &Arc<Endpoint> {
        &self.owner.0
    }

    /// The address clients connect to. It stays the same across
    /// [`stop`](Self::stop) and [`restart`](Self::restart).
    pub fn addr(&self) -> SocketAddr {
        self.ep().addr()
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Reset every proxied connection on the client side (`SO_LINGER` zero,
    /// no FIN: the client's next read or write fails with
    /// `ConnectionReset`) and close its upstream connection gracefully (the
    /// server reads end-of-file) — what a middlebox that dropped its state
    /// does. The proxy keeps listening. Blocks until the sockets are closed;
    /// returns how many connections were reset.
    pub fn reset_all(&self) -> usize {
        self.ep().close_all(RESET_CLIENT)
    }

    /// Close both sides of every proxied connection gracefully (FIN).
    /// Blocks until the sockets are closed; returns how many.
    pub fn close_all(&self) -> usize {
        self.ep().close_all(0)
    }

    /// Close proxied connections through which no bytes were read, in
    /// either direction, for longer than `limit` — a load balancer's or
    /// NAT's idle timeout; `None` (the default) turns it off. Both sides
    /// are closed gracefully (FIN), within `limit` plus a few milliseconds.
    /// Applies at once to connections already open. Never blocks.
    pub fn set_idle_close(&self, limit: Option<Duration>) {
        self.ep().set_idle_close(limit)
    }

    /// While on, nothing is forwarded in either direction: a black-holed
    /// network. Connections are still accepted and connected upstream.
    /// Data is **held**, not dropped: it waits in the proxy and the socket
    /// buffers and is delivered, in order, when the stall is turned off.
    /// Never blocks.
    pub fn set_stall(&self, on: bool) {
        self.ep().set_stall(on)
    }

    /// Whether [`set_stall`](Self::set_stall) is on.
    pub fn is_stalled(&self) -> bool {
        self.ep().is_stalled()
    }

    /// While on, the proxy keeps listening but resets every new connection
    /// as soon as it is accepted, without contacting the upstream: the
    /// client's `connect` succeeds and its first read or write fails with
    /// `ConnectionReset` (or, if the reset arrives before the client is told
    /// the handshake completed, `connect` itself fails with
    /// `ConnectionReset`). It applies to connections accepted after the call,
    /// which can include a client whose `connect` already returned (the
    /// kernel completes the handshake before the server accepts): wait with
    /// `wait_accepted` first if that matters. Such connections count in
    /// [`accepted`](Self::accepted) and [`refused`](Self::refused). For
    /// `connect` itself to fail with `ConnectionRefused`, use
    /// [`stop`](Self::stop). Never blocks.
    pub fn set_refuse(&self, on: bool) {
        self.ep().set_refuse(on)
    }

    /// Stop listening — new connects fail with `ConnectionRefused` — and
    /// reset every open connection (as [`reset_all`](Self::reset_all)).
    /// Blocks until the sockets are closed; returns how many connections
    /// were reset. [`restart`](Self::restart) listens again.
    pub fn stop(&self) -> usize {
        self.ep().stop()
    }

    /// Listen again on the same address after [`stop`](Self::stop). Does
    /// nothing if the proxy is listening. Fails if the port was taken by
    /// another socket meanwhile (`AddrInUse`) or if the proxy was shut down.
    pub fn restart(&self) -> io::Result<()> {
        self.ep().restart()
    }

    /// True unless stopped or shut down.
    pub fn is_listening(&self) -> bool {
        self.ep().is_listening()
    }

    /// Client connections accepted since the start, refused ones included.
    pub fn accepted(&self) -> u64 {
        self.ep().accepted()
    }

    /// Client connections reset at once because of
    /// [`set_refuse`](Self::set_refuse).
    pub fn refused(&self) -> u64 {
        self.ep().refused()
    }

    /// Proxied connections open now (a connection counts until both its
    /// sockets are closed).
    pub fn open(&self) -> usize {
        self.ep().open()
    }

    /// The largest number of proxied connections open at the same time.
    pub fn peak_open(&self) -> usize {
        self.ep().peak_open()
    }

    /// Wait until `cond(self)` is true, at most `timeout`; returns whether
    /// it became true (it is checked once more at the deadline). Blocks the
    /// calling green thread (or thread), waking whenever a counter changes
    /// and at least every 10 ms. `cond` must not block.
    pub fn wait_for(&self, mut cond: impl FnMut(&FaultProxy) -> bool, timeout: Duration) -> bool {
        self.ep().wait_until(timeout, || cond(self))
    }

    /// Wait until exactly `n` proxied connections are open, at most
    /// `timeout`; see [`wait_for`](Self::wait_for).
    pub fn wait_open(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(|p| p.open() == n, timeout)
    }

    /// Wait until at least `n` connections have been accepted, at most
    /// `timeout`; see [`wait_for`](Self::wait_for).
    pub fn wait_accepted(&self, n: u64, timeout: Duration) -> bool {
        self.wait_for(|p| p.accepted() >= n, timeout)
    }

    /// Stop listening and close both sides of every connection gracefully
    /// (FIN), then wait until every green thread of the proxy has finished
    /// and every socket is closed (at most a few seconds; a straggler is
    /// logged). Irreversible. Dropping the last handle does the same.
    pub fn shutdown(&self) {
        self.ep().shutdown()
    }
}

/// Connect upstream, then copy bytes both ways: upstream-to-client in a
/// second green thread, client-to-upstream in this one.
fn pair(m: &Member, client: Sock, upstream: SocketAddr) {
    let id = m.entry().id();
    let up = match TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("FaultProxy connection {id}: upstream {upstream}: {e}; resetting client");
            m.entry().set_flags(RESET_CLIENT);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let up = Sock::new(up, m.entry(), RESET_UPSTREAM);
    let clones = client.try_clone().and_then(|c| Ok((c, up.try_clone()?)));
    let (client2, up2) = match clones {
        Ok(c) => c,
        Err(e) => {
            log::warn!("FaultProxy connection {id}: cannot clone sockets: {e}");
            m.entry().set_flags(RESET_CLIENT | RESET_UPSTREAM);
            return;
        }
    };
    let ep = m.endpoint().clone();
    match ep.launch(m.entry(), "u2c", move |m2| pump(m2, up2, client2)) {
        Ok(true) => pump(m, client, up),
        // Being torn down already.
        Ok(false) => {}
        Err(e) => {
            log::warn!("FaultProxy connection {id}: cannot start a green thread: {e}");
            m.entry().set_flags(RESET_CLIENT | RESET_UPSTREAM);
        }
    }
}

/// Copy `from` to `to` until end-of-file (passed on as a FIN) or an error
/// (the whole connection is torn down, the other side reset).
fn pump(m: &Member, mut from: Sock, mut to: Sock) {
    let ep = m.endpoint();
    let id = m.entry().id();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                to.shutdown_write();
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("FaultProxy connection {id}: read failed: {e}; resetting");
                m.abort(to.side());
                return;
            }
        };
        m.touch();
        ep.gate.pass();
        if let Err(e) = to.write_all(&buf[..n]) {
            log::debug!("FaultProxy connection {id}: write failed: {e}; resetting");
            m.abort(from.side());
            return;
        }
        m.touch();
    }
}
