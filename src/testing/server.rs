//! [`TestServer`]: an embedded line-protocol backend with fault knobs.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint::{Endpoint, Member, OnConn, Owner, Sock, RESET_CLIENT};
use crate::runtime::net::TcpStream;
use crate::runtime::sleep;

/// Longest request line the server accepts, without the `\n`. A longer line
/// gets `ERR line too long` and the connection is closed.
pub const MAX_LINE: usize = 64 * 1024;

/// An embedded TCP server on `127.0.0.1` speaking a tiny line protocol, with
/// knobs that inject the faults a connection pool must survive: resets, idle
/// timeouts, a server that stops listening, one that accepts and never
/// answers.
///
/// # Protocol
///
/// One request per `\n`-terminated line (a trailing `\r` is ignored), one
/// reply line per request, in order. The command word is case-insensitive.
///
/// | request | reply |
/// |---|---|
/// | `PING` | `PONG` |
/// | `ID` | the connection's id: `1` for the first connection accepted, then `2`, ... |
/// | `ECHO <text>` | `<text>` |
/// | `SLEEP <ms>` | `OK`, after sleeping that long |
/// | `QUIT` | `BYE`, then the server closes the connection (FIN) |
/// | anything else | `ERR unknown command` |
///
/// `SLEEP` with a bad number replies `ERR invalid milliseconds`; a line
/// longer than [`MAX_LINE`] gets `ERR line too long` and the connection is
/// closed.
///
/// # Sharing and lifetime
///
/// `TestServer` is `Send + Sync` and cheap to clone: clones are handles on
/// the same server. Every method takes `&self` and works from a plain thread
/// or a green thread; whatever blocks blocks only the calling green thread.
/// When the last handle is dropped (or [`shutdown`](Self::shutdown) is
/// called) the server stops listening, closes every connection gracefully
/// and waits until all its green threads have finished and all its sockets
/// are closed.
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
/// use greenpool::testing::{LineClient, TestServer};
///
/// let server = TestServer::start()?;
/// let mut c = LineClient::connect(server.addr(), Duration::from_secs(5))?;
/// assert_eq!(c.request("ECHO hi")?, "hi");
/// assert_eq!(c.request("ID")?, "1");
/// assert_eq!(server.open(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct TestServer {
    owner: Arc<Owner>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr())
            .field("listening", &self.is_listening())
            .field("state", &*self.owner.0)
            .finish()
    }
}

impl TestServer {
    /// Start a server on `127.0.0.1` with a port chosen by the OS. Returns
    /// once it is listening; connections can be made at once.
    ///
    /// Fails only if a socket cannot be bound or a green thread cannot be
    /// started (e.g. out of file descriptors or memory).
    pub fn start() -> io::Result<TestServer> {
        let on_conn: OnConn = Arc::new(|ep: &Arc<Endpoint>, stream: TcpStream, id: u64| {
            let entry = ep.admit(id);
            let sock = Sock::new(stream, &entry, RESET_CLIENT);
            if let Err(e) = ep.launch(&entry, "conn", move |m| serve(m, sock)) {
                log::warn!("TestServer: cannot serve connection {id}: {e}");
            }
        });
        let ep = Endpoint::start("TestServer", on_conn)?;
        Ok(TestServer {
            owner: Arc::new(Owner(ep)),
        })
    }

    fn ep(&self) -> &Arc<Endpoint> {
        &self.owner.0
    }

    /// The address the server listens on. It stays the same across
    /// [`stop`](Self::stop) and [`restart`](Self::restart). Never blocks
    /// for long (it takes a lock that `stop`/`restart` hold while they run).
    pub fn addr(&self) -> SocketAddr {
        self.ep().addr()
    }

    /// Close every open connection with a TCP reset: `SO_LINGER` is set to
    /// zero and the socket closed, with no FIN first. The client's next read
    /// or write fails with `ConnectionReset` (a request written before the
    /// reset arrives makes the following read fail instead).
    ///
    /// The server keeps listening; new connections are served normally.
    /// Blocks until the sockets are closed. Returns how many were reset.
    pub fn reset_all(&self) -> usize {
        self.ep().close_all(RESET_CLIENT)
    }

    /// Close every open connection gracefully (FIN): the client reads
    /// end-of-file after any replies already sent. Blocks until the sockets
    /// are closed. Returns how many were closed.
    pub fn close_all(&self) -> usize {
        self.ep().close_all(0)
    }

    /// Close connections that have been idle longer than `limit`, like
    /// redis' `timeout` or MySQL's `wait_timeout`; `None` (the default)
    /// turns it off.
    ///
    /// A connection is idle from its last request or reply; a connection
    /// inside `SLEEP` is not idle, but one waiting for a stalled reply (see
    /// [`set_stall`](Self::set_stall)) is. The close is graceful (FIN) and
    /// happens within `limit` plus a few milliseconds, whether or not the
    /// client ever sends anything. Applies at once to connections already
    /// open. Never blocks.
    pub fn set_idle_close(&self, limit: Option<Duration>) {
        self.ep().set_idle_close(limit)
    }

    /// While on, the server keeps accepting connections and reading
    /// requests (they count in [`requests`](Self::requests)) but sends no
    /// replies: a server that accepts and never answers. The requests are
    /// held, not dropped: when the stall is turned off, each connection
    /// answers its pending request and carries on in order. A client that
    /// timed out meanwhile will therefore read a stale reply if it reuses
    /// the connection — exactly the desynchronisation a pool must prevent by
    /// discarding connections after a timeout. Never blocks.
    pub fn set_stall(&self, on: bool) {
        self.ep().set_stall(on)
    }

    /// Whether [`set_stall`](Self::set_stall) is on.
    pub fn is_stalled(&self) -> bool {
        self.ep().is_stalled()
    }

    /// While on, every new connection is accepted and at once closed with a
    /// reset: the client's `connect` succeeds and its first read or write
    /// fails with `ConnectionReset` (if the reset arrives before the client
    /// is told the handshake completed, `connect` itself fails with
    /// `ConnectionReset`). It applies to connections accepted after the call,
    /// which can include a client whose `connect` already returned (the
    /// kernel completes the handshake before the server accepts): wait with
    /// `wait_accepted` first if that matters. Such connections count in
    /// [`accepted`](Self::accepted) and [`refused`](Self::refused), never in
    /// [`open`](Self::open). Connections already open are not affected. To
    /// make `connect` itself fail, use [`stop`](Self::stop). Never blocks.
    pub fn set_refuse(&self, on: bool) {
        self.ep().set_refuse(on)
    }

    /// Stop listening — new connects fail with `ConnectionRefused` — and
    /// reset every open connection (as [`reset_all`](Self::reset_all)).
    /// Blocks until the listening socket and the connections are closed;
    /// returns how many connections were reset. Does nothing more if
    /// already stopped. [`restart`](Self::restart) listens again.
    pub fn stop(&self) -> usize {
        self.ep().stop()
    }

    /// Listen again on the same address after [`stop`](Self::stop). Does
    /// nothing if the server is listening. Fails if the port was taken by
    /// another socket meanwhile (`AddrInUse`; the listener is bound without
    /// `SO_REUSEPORT`, so it can never silently share the port) or if the
    /// server was shut down.
    pub fn restart(&self) -> io::Result<()> {
        self.ep().restart()
    }

    /// True unless stopped or shut down.
    pub fn is_listening(&self) -> bool {
        self.ep().is_listening()
    }

    /// Connections accepted since the start, refused ones included. The
    /// newest connection's id equals this number at the time it was
    /// accepted.
    pub fn accepted(&self) -> u64 {
        self.ep().accepted()
    }

    /// Connections accepted and reset at once because of
    /// [`set_refuse`](Self::set_refuse).
    pub fn refused(&self) -> u64 {
        self.ep().refused()
    }

    /// Connections open now. A connection counts until its socket is
    /// closed on the server side.
    pub fn open(&self) -> usize {
        self.ep().open()
    }

    /// The largest number of connections that were open at the same time.
    pub fn peak_open(&self) -> usize {
        self.ep().peak_open()
    }

    /// Request lines received, on all connections, stalled ones included.
    pub fn requests(&self) -> u64 {
        self.ep().requests()
    }

    /// Wait until `cond(self)` is true, at most `timeout`; returns whether
    /// it became true (it is checked once more at the deadline). Blocks the
    /// calling green thread (or thread), waking whenever a counter changes
    /// and at least every 10 ms. `cond` must not block.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use greenpool::testing::{LineClient, TestServer};
    /// # let server = TestServer::start()?;
    /// let _c = LineClient::connect(server.addr(), Duration::from_secs(5))?;
    /// assert!(server.wait_for(|s| s.open() == 1, Duration::from_secs(5)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_for(&self, mut cond: impl FnMut(&TestServer) -> bool, timeout: Duration) -> bool {
        self.ep().wait_until(timeout, || cond(self))
    }

    /// Wait until exactly `n` connections are open, at most `timeout`;
    /// see [`wait_for`](Self::wait_for).
    pub fn wait_open(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(|s| s.open() == n, timeout)
    }

    /// Wait until at least `n` connections have been accepted, at most
    /// `timeout`; see [`wait_for`](Self::wait_for).
    pub fn wait_accepted(&self, n: u64, timeout: Duration) -> bool {
        self.wait_for(|s| s.accepted() >= n, timeout)
    }

    /// Wait until at least `n` requests have been received, at most
    /// `timeout`; see [`wait_for`](Self::wait_for).
    pub fn wait_requests(&self, n: u64, timeout: Duration) -> bool {
        self.wait_for(|s| s.requests() >= n, timeout)
    }

    /// Stop listening and close every connection gracefully (FIN), then
    /// wait until every green thread of the server has finished and every
    /// socket is closed (at most a few seconds; a straggler is logged).
    /// Irreversible: [`restart`](Self::restart) fails afterwards. Dropping
    /// the last handle does the same.
    pub fn shutdown(&self) {
        self.ep().shutdown()
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Ping,
    Id,
    Echo(&'a str),
    Sleep(Option<u64>),
    Quit,
    Unknown,
}

fn parse(line: &str) -> Request<'_> {
    let (word, rest) = match line.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (line, ""),
    };
    match word.to_ascii_uppercase().as_str() {
        "PING" if rest.is_empty() => Request::Ping,
        "ID" if rest.is_empty() => Request::Id,
        "ECHO" => Request::Echo(rest),
        "SLEEP" => Request::Sleep(rest.trim().parse().ok()),
        "QUIT" if rest.is_empty() => Request::Quit,
        _ => Request::Unknown,
    }
}

/// Serve one connection until the client closes it, an IO error, `QUIT`,
/// or cancellation.
fn serve(m: &Member, sock: Sock) {
    let ep = m.endpoint();
    let id = m.entry().id();
    let mut reader = BufReader::new(sock);
    let mut buf = Vec::with_capacity(128);
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(n) => n,
            Err(e) => {
                log::debug!("TestServer connection {id}: read failed: {e}");
                return;
            }
        };
        if n == 0 {
            log::trace!("TestServer connection {id}: closed by the client");
            return;
        }
        if buf.last() != Some(&b'\n') {
            if n > MAX_LINE {
                let _ = reader.get_mut().write_all(b"ERR line too long\n");
            }
            // Otherwise: a partial last line, then end-of-file.
            return;
        }
        m.touch();
        ep.count_request();
        // A stalled server has read the request but does not answer yet.
        ep.gate.pass();

        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf);
        let mut quit = false;
        let reply: String = match parse(&line) {
            Request::Ping => "PONG".into(),
            Request::Id => id.to_string(),
            Request::Echo(text) => text.into(),
            Request::Sleep(Some(ms)) => {
                let _busy = m.entry().busy();
                sleep(Duration::from_millis(ms));
                "OK".into()
            }
            Request::Sleep(None) => "ERR invalid milliseconds".into(),
            Request::Quit => {
                quit = true;
                "BYE".into()
            }
            Request::Unknown => "ERR unknown command".into(),
        };
        let mut out = reply.into_bytes();
        out.push(b'\n');
        if let Err(e) = reader.get_mut().write_all(&out) {
            log::debug!("TestServer connection {id}: write failed: {e}");
            return;
        }
        m.touch();
        if quit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol() {
        assert_eq!(parse("PING"), Request::Ping);
        assert_eq!(parse("ping"), Request::Ping);
        assert_eq!(parse("ID"), Request::Id);
        assert_eq!(parse("ECHO a b "), Request::Echo("a b "));
        assert_eq!(parse("ECHO"), Request::Echo(""));
        assert_eq!(parse("SLEEP 15"), Request::Sleep(Some(15)));
        assert_eq!(parse("SLEEP x"), Request::Sleep(None));
        assert_eq!(parse("QUIT"), Request::Quit);
        assert_eq!(parse("PING x"), Request::Unknown);
        assert_eq!(parse(""), Request::Unknown);
        assert_eq!(parse("GET /"), Request::Unknown);
    }
}
