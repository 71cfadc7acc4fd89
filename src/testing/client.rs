//! [`LineClient`]: a small blocking client for the line protocol.

use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::runtime::clamp_timeout;
use crate::runtime::net::TcpStream;

/// A blocking client for [`TestServer`](super::TestServer)'s line protocol
/// (or any protocol with one `\n`-terminated reply line per request line),
/// so tests and examples do not have to write it again.
///
/// It works from a plain thread and from a green thread; every call blocks
/// only the calling green thread, and every read and write gives up with
/// `ErrorKind::TimedOut` after the client's timeout.
///
/// After **any** error the connection is in an unknown state — a reply may
/// still arrive for a request that timed out, and would be read as the
/// reply to the next request. Drop the client and connect a new one, as a
/// pool should.
///
/// ```
/// use std::time::Duration;
/// use greenpool::testing::{LineClient, TestServer};
///
/// let server = TestServer::start()?;
/// let mut c = LineClient::connect(server.addr(), Duration::from_secs(5))?;
/// c.ping()?;
/// assert_eq!(c.id()?, 1);
/// assert_eq!(c.request("ECHO hello")?, "hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct LineClient {
    reader: BufReader<TcpStream>,
    timeout: Duration,
}

impl fmt::Debug for LineClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.reader.get_ref();
        f.debug_struct("LineClient")
            .field("local", &s.local_addr().ok())
            .field("peer", &s.peer_addr().ok())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl LineClient {
    /// Connect to `addr`, waiting at most `timeout` for the connection;
    /// `timeout` is then also the read and write timeout of every call
    /// (change it with [`set_timeout`](Self::set_timeout)). Timeouts under
    /// 1 ms count as 1 ms. Fails with `ConnectionRefused` if nothing
    /// listens, `TimedOut` if the connection is not established in time.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<LineClient> {
        let timeout = clamp(timeout);
        crate::runtime::init();
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        let _ = stream.set_nodelay(true);
        let mut c = LineClient {
            reader: BufReader::new(stream),
            timeout,
        };
        c.set_timeout(timeout)?;
        Ok(c)
    }

    /// Change the read and write timeout. Under 1 ms counts as 1 ms.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = clamp(timeout);
        let s = self.reader.get_ref();
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        self.timeout = timeout;
        Ok(())
    }

    /// The read and write timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `line` (without its `\n`) and read one reply line (returned
    /// without `\r\n`). A reply such as `ERR ...` is returned as `Ok`.
    ///
    /// Blocks for at most the timeout for the write plus the timeout for
    /// the read. Errors: `ConnectionReset` (or `BrokenPipe`) if the server
    /// reset the connection, `UnexpectedEof` if it closed it, `TimedOut` if
    /// no complete reply arrived in time, `InvalidInput` if `line` contains
    /// a `\n`.
    pub fn request(&mut self, line: &str) -> io::Result<String> {
        self.send(line)?;
        self.read_line()
    }

    /// Send one line (a `\n` is appended) without reading a reply. Blocks
    /// for at most the timeout.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        if line.contains('\n') {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "a request line must not contain '\\n'",
            ));
        }
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line.as_bytes());
        msg.push(b'\n');
        let s = self.reader.get_mut();
        s.write_all(&msg).map_err(normalize)?;
        s.flush().map_err(normalize)
    }

    /// Read one line (returned without `\r\n`). Blocks for at most the
    /// timeout. Fails with `UnexpectedEof` if the server closed the
    /// connection (even in the middle of a line), `TimedOut` if no complete
    /// line arrived in time, `ConnectionReset` if the connection was reset.
    /// Useful to observe a close the client did not ask for, e.g. an idle
    /// timeout.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).map_err(normalize)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
    }

    /// `PING`; fails with `InvalidData` unless the reply is `PONG`.
    pub fn ping(&mut self) -> io::Result<()> {
        let reply = self.request("PING")?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(unexpected("PING", &reply))
        }
    }

    /// `ID`: the server's id for this connection.
    pub fn id(&mut self) -> io::Result<u64> {
        let reply = self.request("ID")?;
        reply.parse().map_err(|_| unexpected("ID", &reply))
    }

    /// Can the connection carry a request, as far as can be told without
    /// one? Bytes the client has buffered but nobody asked for are
    /// [`PeerStatus::Pending`](crate::runtime::net::PeerStatus::Pending);
    /// otherwise the socket's [`peer_status`](crate::runtime::net::peer_status).
    /// Never blocks.
    pub fn peer_status(&self) -> crate::runtime::net::PeerStatus {
        if self.reader.buffer().is_empty() {
            crate::runtime::net::peer_status(self.reader.get_ref())
        } else {
            crate::runtime::net::PeerStatus::Pending
        }
    }

    /// The underlying stream, e.g. to read its addresses or set socket
    /// options. Reading from it directly bypasses the client's buffer.
    pub fn get_ref(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }

    /// Take the stream back. Bytes already buffered by the client are lost.
    pub fn into_inner(self) -> TcpStream {
        self.reader.into_inner()
    }
}

fn clamp(d: Duration) -> Duration {
    clamp_timeout(d).unwrap_or(Duration::from_millis(1))
}

/// A plain OS thread's timed-out read reports `WouldBlock` in std; always
/// say `TimedOut`.
fn normalize(e: io::Error) -> io::Error {
    if e.kind() == ErrorKind::WouldBlock {
        io::Error::new(ErrorKind::TimedOut, "timed out waiting for the server")
    } else {
        e
    }
}

fn unexpected(request: &str, reply: &str) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("unexpected reply to {request}: {reply:?}"),
    )
}
