//! The [`Manager`] trait: how a pool opens and checks its connections.

use std::time::Duration;

/// How to open a connection and how to tell whether one is still alive.
///
/// This is how you "subclass the pool" (geventconnpool's `_new_connection` and
/// `_keepalive`). The connection can be any value: a socket, a TLS stream after
/// STARTTLS and LOGIN, a client holding an authenticated session and a chosen
/// database.
///
/// Every method but `has_broken` and `is_permanent` runs inside a green
/// thread, so it may block on the runtime's network types. `new_connection`
/// runs in the pool's background connector, under the connect timeout;
/// `keepalive`, `validate` and `close` each run in a green thread of their
/// own, under the health-check timeout, which owns the connection while it
/// runs. A call past its timeout is cancelled: it unwinds
/// at its next blocking runtime call (code blocked outside the runtime
/// notices only when it returns, and keeps its pool slot until then).
///
/// ```
/// use greenpool::Manager;
/// use greenpool::runtime::net::{connect, ConnectOptions, TcpStream};
/// use std::io::{self, BufRead, BufReader, Write};
///
/// struct LineProtocol { addr: String }
///
/// impl Manager for LineProtocol {
///     type Connection = BufReader<TcpStream>;
///     type Error = io::Error;
///
///     fn new_connection(&self) -> io::Result<Self::Connection> {
///         Ok(BufReader::new(connect(&self.addr, &ConnectOptions::default())?))
///     }
///
///     fn keepalive(&self, c: &mut Self::Connection) -> io::Result<()> {
///         c.get_mut().write_all(b"PING\n")?;
///         let mut line = String::new();
///         c.read_line(&mut line)?;
///         if line == "PONG\n" { Ok(()) } else {
///             Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad PING reply {line:?}")))
///         }
///     }
/// }
/// ```
pub trait Manager: Send + Sync + 'static {
    /// The pooled value.
    type Connection: Send + 'static;
    /// What opening or checking a connection fails with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Open a new, fully set-up connection: connect, upgrade, log in, select a
    /// database. An `Err` (or a panic) is a failed attempt: the pool logs it and
    /// tries again with backoff.
    fn new_connection(&self) -> Result<Self::Connection, Self::Error>;

    /// Prove an idle connection is still alive, e.g. send `PING` and read the
    /// reply. Called by the pool on connections idle for the keepalive
    /// interval, never while a user holds the connection. An `Err` or a panic
    /// means broken: the connection is closed and replaced.
    ///
    /// The default does nothing and reports success.
    fn keepalive(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let _ = conn;
        Ok(())
    }

    /// Check a connection that sat idle a while, just before it is handed out.
    /// An `Err` or a panic means broken: it is discarded and the caller gets
    /// another connection instead. The default is [`keepalive`](Self::keepalive).
    fn validate(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        self.keepalive(conn)
    }

    /// A cheap, non-blocking liveness test: can this connection carry another
    /// request, as far as can be told without a round trip? For a socket that
    /// means "has the peer closed or reset it, or sent bytes nobody asked
    /// for?" ([`runtime::net::peer_status`](crate::runtime::net::peer_status),
    /// `TlsStream::peer_status`). `true` discards the connection.
    ///
    /// The pool runs it when a connection is given back (r2d2's
    /// `has_broken`) and again, inline in the caller, when a connection that
    /// sat idle is checked out (unless checkout checks are off:
    /// [`Builder::no_validation`](crate::Builder::no_validation)), so that a connection the server closed while
    /// it was idle (its idle timeout, a restart, a kill) is replaced before
    /// anyone sends a request on it. It must not block: it runs on every
    /// such checkout (about a syscall's cost for a socket check). The
    /// default is `false`.
    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// True if `error`, returned by [`new_connection`](Self::new_connection),
    /// will not go away by trying again soon: a wrong password, a
    /// certificate the server rejects, an unknown database. The pool then
    /// waits its longest reconnect backoff before the next attempt, says so
    /// in one log line, and checkouts fail at once with this error while no
    /// connection is open (instead of waiting out the checkout timeout). The
    /// default is `false`: every error is worth retrying with backoff.
    fn is_permanent(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// Say goodbye before the pool closes a connection: Redis `QUIT`, IMAP
    /// `LOGOUT`, a TLS `close_notify`. Called whenever the pool closes a
    /// connection (discarded, expired, idle too long, or the pool closing),
    /// in a green thread of the pool's own under the health-check timeout
    /// (past it the call is cancelled and the connection dropped), never
    /// while anyone waits for it: the replacement opens meanwhile. The
    /// connection may be broken (it was discarded for an error, perhaps with
    /// a request half done), so send the goodbye and do not rely on reading
    /// the reply. The default drops the connection.
    fn close(&self, conn: Self::Connection) {
        drop(conn);
    }

    /// The server's own idle timeout as seen on this connection, if the
    /// protocol can report it (Redis `CONFIG GET timeout`, MySQL
    /// `wait_timeout`). When the pool has no keepalive interval set, it keeps
    /// connections alive a safe margin inside this. The default is `None`.
    fn server_idle_timeout(&self, conn: &mut Self::Connection) -> Option<Duration> {
        let _ = conn;
        None
    }
}
