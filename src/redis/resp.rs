//! The RESP2 protocol: [`Value`], [`RespError`], the bounded reply parser,
//! and [`RespConnection`], one connection that sends a command and reads its
//! reply. The pool's side of Redis is [`RedisManager`](super::RedisManager).

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

use crate::runtime::net::{connect, peer_status, ConnectOptions, PeerStatus, TcpStream};

/// Longest reply line (simple string, error, integer, or a length header)
/// the client accepts, without its `\r\n`: 64 KiB, Redis's own limit for
/// inline requests. A longer line is a [`RespError::Protocol`] error.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Longest bulk string the client accepts: 512 MiB, the default of Redis's
/// `proto-max-bulk-len`. A longer one is a [`RespError::Protocol`] error,
/// raised before anything is allocated for it.
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// Most arrays nested inside each other that the client accepts (Redis's
/// own replies nest a few levels at most); this bounds the stack the parser
/// uses. Deeper nesting is a [`RespError::Protocol`] error.
pub const MAX_DEPTH: usize = 32;

/// Most elements an array reply may announce. Elements are parsed one by one
/// as they arrive, so the announced length alone allocates nothing.
const MAX_ARRAY_LEN: i64 = i32::MAX as i64;

/// Most bytes reserved up front for a bulk string or elements reserved for
/// an array; beyond this, buffers grow only as data arrives.
const PREALLOC: usize = 64 * 1024;

/// The encode buffer is freed after a command bigger than this, so a single
/// large `SET` does not pin its size for the connection's lifetime.
const KEEP_OUT_BUF: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// A RESP2 reply.
///
/// An error reply at the top level is returned by
/// [`RespConnection::command`] as `Err(`[`RespError::Server`]`)`; only error
/// replies nested inside an array (e.g. in the result of `EXEC`) appear as
/// [`Value::Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`: a simple string. Bytes that are not UTF-8 (Redis never sends
    /// them here) are replaced with U+FFFD.
    Simple(String),
    /// `-ERR message`: an error reply nested in an array. The message is
    /// read like [`Value::Simple`].
    Error(String),
    /// `:42`: an integer.
    Int(i64),
    /// `$5 hello`: a binary-safe bulk string; `None` is the nil reply
    /// (`$-1`), e.g. `GET` of a missing key.
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`: an array; `None` is the nil array (`*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The text of a simple string, or of a bulk string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Simple(s) => Some(s),
            Value::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a simple or (non-nil) bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(s) => Some(s.as_bytes()),
            Value::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The integer of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of a (non-nil) array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The message of a nested error reply.
    pub fn as_error(&self) -> Option<&str> {
        match self {
            Value::Error(e) => Some(e),
            _ => None,
        }
    }

    /// True for the nil bulk string and the nil array.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Bulk(None) | Value::Array(None))
    }

    /// True for the simple string `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Value::Simple(s) if s == "OK")
    }

    /// The bytes of a simple or (non-nil) bulk string, without copying a
    /// bulk string.
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Simple(s) => Some(s.into_bytes()),
            Value::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// The elements of a (non-nil) array.
    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a Redis command (or opening a Redis connection) failed.
///
/// Only [`Io`](Self::Io) — and, through its source, a [`Pool`](Self::Pool)
/// error caused by I/O — is matched by [`ErrorSet::io`](crate::ErrorSet::io).
/// After an `Io` or `Protocol` error the connection is out of step with the
/// server (a late reply would be read as the reply to the next command), so
/// it refuses further commands and [`RespConnection::has_broken`] reports
/// it: a pool using [`RedisManager`](super::RedisManager) discards it when it is given back even
/// if the pool's error set does not match the error. After a `Server` error
/// the connection is fine.
#[derive(Debug)]
#[non_exhaustive]
pub enum RespError {
    /// Talking to the server failed: connection refused, reset or closed by
    /// the server, a read or write timeout ([`io::ErrorKind::TimedOut`]), or
    /// a command on a connection that failed earlier
    /// ([`io::ErrorKind::NotConnected`]). The message names the command and
    /// the server.
    Io(io::Error),
    /// The server answered with an error reply, e.g. `ERR unknown command`
    /// or `WRONGTYPE ...` (the text after `-`); the connection is still
    /// usable. Also a failed `AUTH` or `SELECT` while
    /// [`RedisManager`](super::RedisManager) opens a connection, with a message saying so.
    Server(String),
    /// The reply broke the protocol or a limit ([`MAX_LINE_LEN`],
    /// [`MAX_BULK_LEN`], [`MAX_DEPTH`]), the reply did not have the shape
    /// the command expects (e.g. `PING` answered with something else than
    /// `PONG`), or the command could not be sent (no arguments).
    Protocol(String),
    /// No connection could be checked out of a pool (from
    /// [`ConnectionPool::with`](crate::ConnectionPool::with)); its source is
    /// the pool's error.
    Pool(crate::Error),
}

impl RespError {
    /// True if this error leaves the connection unusable (`Io`, `Protocol`).
    pub fn is_connection_error(&self) -> bool {
        matches!(self, RespError::Io(_) | RespError::Protocol(_))
    }

    /// The error's [`io::ErrorKind`], for `Io` errors.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            RespError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Io(e) => write!(f, "redis connection error: {e}"),
            RespError::Server(msg) => write!(f, "redis error reply: {msg}"),
            RespError::Protocol(msg) => write!(f, "redis protocol error: {msg}"),
            RespError::Pool(e) => write!(f, "no redis connection: {e}"),
        }
    }
}

impl StdError for RespError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            RespError::Io(e) => Some(e),
            RespError::Pool(e) => Some(e),
            RespError::Server(_) | RespError::Protocol(_) => None,
        }
    }
}

impl From<io::Error> for RespError {
    fn from(e: io::Error) -> Self {
        RespError::Io(e)
    }
}

impl From<crate::Error> for RespError {
    fn from(e: crate::Error) -> Self {
        RespError::Pool(e)
    }
}

/// An I/O error with a prefix saying what was being done; the original error
/// stays reachable through `source()`.
#[derive(Debug)]
struct IoContext {
    what: String,
    source: io::Error,
}

impl fmt::Display for IoContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl StdError for IoContext {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

fn io_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), IoContext { what, source: e })
}

// ---------------------------------------------------------------------------
// Encoding and parsing
// ---------------------------------------------------------------------------

/// Append `args` as a RESP array of bulk strings (how clients send commands).
fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let arg = arg.as_ref();
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn eof(what: &str) -> RespError {
    RespError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, what))
}

/// Read one `\r\n`-terminated line into `buf`, without the terminator.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), RespError> {
    buf.clear();
    let limit = MAX_LINE_LEN as u64 + 2;
    let n = r.by_ref().take(limit).read_until(b'\n', buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(if n == 0 {
            eof("the server closed the connection")
        } else if buf.len() as u64 >= limit {
            RespError::Protocol(format!(
                "a reply line is longer than {MAX_LINE_LEN} bytes (MAX_LINE_LEN)"
            ))
        } else {
            eof("the server closed the connection in the middle of a reply")
        });
    }
    if buf.len() < 2 || buf[buf.len() - 2] != b'\r' {
        return Err(RespError::Protocol(
            "a reply line ends with a bare \\n instead of \\r\\n".to_owned(),
        ));
    }
    buf.truncate(buf.len() - 2);
    Ok(())
}

fn parse_int(bytes: &[u8], what: &str) -> Result<i64, RespError> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.starts_with('+'))
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            RespError::Protocol(format!(
                "{what} {:?} is not an integer",
                String::from_utf8_lossy(bytes)
            ))
        })
}

/// Read one reply. `depth` is the nesting level (0 at the top).
fn read_value<R: BufRead>(r: &mut R, depth: usize) -> Result<Value, RespError> {
    let mut line = Vec::new();
    read_line(r, &mut line)?;
    let Some((&kind, payload)) = line.split_first() else {
        return Err(RespError::Protocol("an empty reply line".to_owned()));
    };
    match kind {
        b'+' => Ok(Value::Simple(String::from_utf8_lossy(payload).into_owned())),
        b'-' => Ok(Value::Error(String::from_utf8_lossy(payload).into_owned())),
        b':' => Ok(Value::Int(parse_int(payload, "integer reply")?)),
        b'$' => {
            let len = parse_int(payload, "bulk string length")?;
            if len == -1 {
                return Ok(Value::Bulk(None));
            }
            if len < 0 {
                return Err(RespError::Protocol(format!(
                    "negative bulk string length {len}"
                )));
            }
            if len as u64 > MAX_BULK_LEN as u64 {
                return Err(RespError::Protocol(format!(
                    "a bulk string of {len} bytes exceeds the limit of {MAX_BULK_LEN} \
                     bytes (MAX_BULK_LEN)"
                )));
            }
            let len = len as usize;
            let mut data = Vec::with_capacity(len.min(PREALLOC));
            let got = r.by_ref().take(len as u64).read_to_end(&mut data)?;
            if got < len {
                return Err(eof(
                    "the server closed the connection in the middle of a bulk string",
                ));
            }
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    eof("the server closed the connection in the middle of a bulk string")
                } else {
                    RespError::Io(e)
                }
            })?;
            if &crlf != b"\r\n" {
                return Err(RespError::Protocol(format!(
                    "a bulk string of {len} bytes is not followed by \\r\\n"
                )));
            }
            Ok(Value::Bulk(Some(data)))
        }
        b'*' => {
            let len = parse_int(payload, "array length")?;
            if len == -1 {
                return Ok(Value::Array(None));
            }
            if !(0..=MAX_ARRAY_LEN).contains(&len) {
                return Err(RespError::Protocol(format!("invalid array length {len}")));
            }
            if depth >= MAX_DEPTH {
                return Err(RespError::Protocol(format!(
                    "arrays nested more than {MAX_DEPTH} levels deep (MAX_DEPTH)"
                )));
            }
            let len = len as usize;
            let mut items = Vec::with_capacity(len.min(PREALLOC / 32));
            for _ in 0..len {
                items.push(read_value(r, depth + 1)?);
            }
            Ok(Value::Array(Some(items)))
        }
        other => Err(RespError::Protocol(format!(
            "unknown reply type byte {:?} (only RESP2 is supported)",
            char::from(other)
        ))),
    }
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/// One connection to a Redis server, speaking RESP2.
///
/// Every call blocks only the calling green thread (or, outside the runtime,
/// the calling OS thread) for as long as the stream's read and write
/// timeouts allow — set them with [`ConnectOptions::read_timeout`] and
/// [`ConnectOptions::write_timeout`] when connecting; without them a
/// command waits as long as the server takes to reply.
///
/// After an I/O or protocol error the connection refuses further commands
/// (with [`io::ErrorKind::NotConnected`]): drop it and connect again, as a
/// pool does.
pub struct RespConnection {
    reader: BufReader<TcpStream>,
    /// The encoded command being sent; reused between commands.
    out: Vec<u8>,
    peer: Option<SocketAddr>,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
}

impl fmt::Debug for RespConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespConnection")
            .field("peer", &self.peer)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl RespConnection {
    /// Connect to the Redis server at `addr` (`"host:port"`), with
    /// [`greenpool::runtime::net::connect`](crate::runtime::net::connect):
    /// names are resolved off the worker threads, and `opts` gives the
    /// connect timeout (per address) and the read/write timeouts of every
    /// later command. Blocks only the calling green thread, for at most
    /// about the resolve timeout plus the connect timeout per address.
    ///
    /// Sends nothing: use [`RedisManager`](super::RedisManager) for AUTH and SELECT.
    pub fn connect(addr: &str, opts: &ConnectOptions) -> io::Result<Self> {
        Ok(Self::from_stream(connect(addr, opts)?))
    }

    /// Use an already-connected stream.
    pub fn from_stream(stream: TcpStream) -> Self {
        let peer = stream.peer_addr().ok();
        RespConnection {
            reader: BufReader::new(stream),
            out: Vec::new(),
            peer,
            broken: None,
        }
    }

    /// The underlying stream, e.g. to change its timeouts. Reading or
    /// writing it directly puts the connection out of step with the server.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// The server's address, as seen when the connection was made.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    fn peer_name(&self) -> String {
        match self.peer {
            Some(a) => format!("redis at {a}"),
            None => "redis".to_owned(),
        }
    }

    /// Send one command and read its reply. `args` are the command name and
    /// its arguments, each sent as a binary-safe bulk string:
    /// `c.command(&["SET", "key", "value"])`,
    /// `c.command(&[&b"GET"[..], key_bytes])`.
    ///
    /// Blocks the calling green thread until the reply has been read, at most
    /// the stream's write timeout for sending plus its read timeout for each
    /// read of the reply.
    ///
    /// An error reply is `Err(`[`RespError::Server`]`)`; I/O failures are
    /// [`RespError::Io`] and protocol violations [`RespError::Protocol`], and
    /// both make the connection refuse further commands.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, RespError> {
        let Some(name) = args.first() else {
            return Err(RespError::Protocol(
                "a command needs at least its name; nothing was sent".to_owned(),
            ));
        };
        // Only error messages need the name as text.
        let name = || String::from_utf8_lossy(name.as_ref()).into_owned();
        if let Some(why) = &self.broken {
            return Err(RespError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "{} not sent: this connection to {} failed earlier ({why}) and may \
                     be out of step with the server; drop it and connect again",
                    name(),
                    self.peer_name()
                ),
            )));
        }

        encode(&mut self.out, args);
        let sent = self.reader.get_mut().write_all(&self.out);
        if self.out.capacity() > KEEP_OUT_BUF {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        if let Err(e) = sent {
            return Err(self.fail(RespError::Io(e), &format!("sending {} to", name())));
        }

        match read_value(&mut self.reader, 0) {
            Ok(Value::Error(msg)) => Err(RespError::Server(msg)),
            Ok(v) => Ok(v),
            Err(e) => Err(self.fail(e, &format!("reading the reply to {} from", name()))),
        }
    }

    /// Mark the connection broken and add context to the error.
    fn fail(&mut self, e: RespError, doing: &str) -> RespError {
        let what = format!("{doing} {}", self.peer_name());
        let e = match e {
            RespError::Io(e) => RespError::Io(io_context(e, what)),
            RespError::Protocol(m) => RespError::Protocol(format!("{what}: {m}")),
            other => other,
        };
        self.broken = Some(e.to_string());
        e
    }

    /// True if this connection cannot be used: it failed earlier, the
    /// server has closed it (or reset it), or bytes are waiting that no
    /// command asked for (it is out of step).
    ///
    /// Never blocks and costs one system call:
    /// [`runtime::net::peer_status`](crate::runtime::net::peer_status), a
    /// non-blocking `MSG_PEEK` of one byte. It cannot see a server that
    /// vanished without closing (power loss, a dropped network path): that
    /// takes a command with a timeout, or TCP keepalive.
    pub fn has_broken(&self) -> bool {
        self.broken.is_some()
            || !self.reader.buffer().is_empty()
            || !peer_status(self.stream()).is_idle()
    }

    /// Say goodbye and close: send `QUIT` and drop the connection without
    /// waiting for the server's `+OK` (nothing is left to wait for, and a
    /// broken connection may never answer). The server then closes its
    /// side at once instead of keeping the client until its idle `timeout`.
    ///
    /// Never blocks: `QUIT` (14 bytes) goes out in one non-blocking write,
    /// which an idle socket's empty send buffer always takes. Nothing is
    /// sent to a server that has already closed or reset the connection
    /// (`Ok(false)`), and a socket that cannot take the bytes at once (its
    /// send buffer full of an earlier request the server never read) is an
    /// [`io::ErrorKind::WouldBlock`] error. The connection is closed in
    /// every case.
    pub fn quit(self) -> io::Result<bool> {
        const QUIT: &[u8] = b"*1\r\n$4\r\nQUIT\r\n";
        if !matches!(
            peer_status(self.stream()),
            PeerStatus::Idle | PeerStatus::Pending
        ) {
            return Ok(false);
        }
        // The runtime's sockets are non-blocking underneath: a write to the
        // inner socket returns at once.
        let mut sock = self.stream().inner();
        loop {
            return match sock.write(QUIT) {
                Ok(n) if n == QUIT.len() => Ok(true),
                Ok(n) => Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "QUIT to {}: only {n} of {} bytes went out",
                        self.peer_name(),
                        QUIT.len()
                    ),
                )),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(io_context(
                    e,
                    format!("sending QUIT to {}", self.peer_name()),
                )),
            };
        }
    }

    /// Why the connection is unusable, if an earlier command failed.
    pub fn broken_reason(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    fn unexpected(&self, cmd: &str, v: &Value) -> RespError {
        RespError::Protocol(format!(
            "unexpected reply to {cmd} from {}: {v:?}",
            self.peer_name()
        ))
    }

    /// `PING`; succeeds when the server answers `PONG`.
    pub fn ping(&mut self) -> Result<(), RespError> {
        match self.command(&["PING"])? {
            Value::Simple(s) if s == "PONG" => Ok(()),
            v => Err(self.unexpected("PING", &v)),
        }
    }

    /// `GET key`: the value, or `None` if the key does not exist.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, RespError> {
        match self.command(&[b"GET".as_slice(), key.as_ref()])? {
            Value::Bulk(b) => Ok(b),
            v => Err(self.unexpected("GET", &v)),
        }
    }

    /// `SET key value`.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), RespError> {
        match self.command(&[b"SET".as_slice(), key.as_ref(), value.as_ref()])? {
            v if v.is_ok() => Ok(()),
            v => Err(self.unexpected("SET", &v)),
        }
    }

    /// `AUTH password`.
    pub fn auth(&mut self, password: &str) -> Result<(), RespError> {
        match self.command(&["AUTH", password])? {
            v if v.is_ok() => Ok(()),
            v => Err(self.unexpected("AUTH", &v)),
        }
    }

    /// `AUTH username password`: log in as an ACL user (Redis 6 and later).
    pub fn auth_user(&mut self, username: &str, password: &str) -> Result<(), RespError> {
        match self.command(&["AUTH", username, password])? {
            v if v.is_ok() => Ok(()),
            v => Err(self.unexpected("AUTH", &v)),
        }
    }

    /// `SELECT db`.
    pub fn select(&mut self, db: u32) -> Result<(), RespError> {
        match self.command(&["SELECT", &db.to_string()])? {
            v if v.is_ok() => Ok(()),
            v => Err(self.unexpected("SELECT", &v)),
        }
    }

    /// `CONFIG GET param`: the value of one configuration parameter, or
    /// `None` if the server has no such parameter. (With a glob pattern,
    /// the value of the first parameter that matches.)
    pub fn config_get(&mut self, param: &str) -> Result<Option<String>, RespError> {
        let reply = self.command(&["CONFIG", "GET", param])?;
        let Some(items) = reply.as_array() else {
            return Err(self.unexpected("CONFIG GET", &reply));
        };
        if items.len() % 2 != 0 {
            return Err(self.unexpected("CONFIG GET", &reply));
        }
        let pairs = || items.chunks_exact(2);
        let pair = pairs()
            .find(|p| p[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(param)))
            .or_else(|| pairs().next());
        match pair {
            None => Ok(None),
            Some(p) => match p[1].as_str() {
                Some(v) => Ok(Some(v.to_owned())),
                None => Err(self.unexpected("CONFIG GET", &reply)),
            },
        }
    }

    /// `CONFIG SET param value`.
    pub fn config_set(&mut self, param: &str, value: &str) -> Result<(), RespError> {
        match self.command(&["CONFIG", "SET", param, value])? {
            v if v.is_ok() => Ok(()),
            v => Err(self.unexpected("CONFIG SET", &v)),
        }
    }

    /// `CLIENT KILL TYPE normal`: close every normal client connection to
    /// the server except this one; returns how many were closed.
    pub fn client_kill_normal(&mut self) -> Result<i64, RespError> {
        match self.command(&["CLIENT", "KILL", "TYPE", "normal"])? {
            Value::Int(n) => Ok(n),
            v => Err(self.unexpected("CLIENT KILL", &v)),
        }
    }

    /// `CLIENT ID`: the server's id for this connection.
    pub fn client_id(&mut self) -> Result<i64, RespError> {
        match self.command(&["CLIENT", "ID"])? {
            Value::Int(n) => Ok(n),
            v => Err(self.unexpected("CLIENT ID", &v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Value, RespError> {
        read_value(&mut io::Cursor::new(bytes), 0)
    }

    fn protocol_error(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(RespError::Protocol(m)) => m,
            other => panic!("expected a protocol error for {bytes:?}, got {other:?}"),
        }
    }

    fn eof_error(bytes: &[u8]) {
        match parse(bytes) {
            Err(RespError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("expected EOF for {bytes:?}, got {other:?}"),
        }
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[&b"SET"[..], b"k", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
        out.clear();
        encode(&mut out, &["GET", ""]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Value::Simple("OK".into()));
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Value::Error("ERR no".into())
        );
        assert_eq!(parse(b":-42\r\n").unwrap(), Value::Int(-42));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Value::Bulk(None));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Value::Bulk(Some(vec![])));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").unwrap(),
            Value::Bulk(Some(b"a\r\nb".to_vec()))
        );
        assert_eq!(parse(b"*-1\r\n").unwrap(), Value::Array(None));
        assert_eq!(parse(b"*0\r\n").unwrap(), Value::Array(Some(vec![])));
        let v = parse(b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n-WRONGTYPE t\r\n").unwrap();
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Int(1),
                Value::Array(Some(vec![Value::Bulk(Some(b"x".to_vec()))])),
                Value::Error("WRONGTYPE t".into()),
            ]))
        );
        assert_eq!(v.as_array().unwrap()[2].as_error(), Some("WRONGTYPE t"));
        assert!(Value::Bulk(None).is_nil() && Value::Array(None).is_nil());
        assert_eq!(Value::Bulk(Some(b"hi".to_vec())).as_str(), Some("hi"));
        assert_eq!(Value::Bulk(Some(vec![0xff])).as_str(), None);
        assert_eq!(Value::Int(7).as_int(), Some(7));
    }

    #[test]
    fn reads_one_reply_at_a_time() {
        let mut r = io::Cursor::new(&b"+PONG\r\n:5\r\n"[..]);
        assert_eq!(read_value(&mut r, 0).unwrap(), Value::Simple("PONG".into()));
        assert_eq!(read_value(&mut r, 0).unwrap(), Value::Int(5));
        match read_value(&mut r, 0) {
            Err(RespError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                assert!(e.to_string().contains("closed the connection"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_malformed_replies() {
        protocol_error(b"?what\r\n");
        protocol_error(b"\r\n");
        protocol_error(b"+OK\n");
        protocol_error(b":12a\r\n");
        protocol_error(b":+1\r\n");
        protocol_error(b"$-2\r\n");
        protocol_error(b"$abc\r\n");
        protocol_error(b"$3\r\nabcXY");
        protocol_error(b"*-5\r\n");
        protocol_error(b"%1\r\n"); // RESP3 map
    }

    #[test]
    fn truncated_replies_are_eof() {
        eof_error(b"");
        eof_error(b"+OK");
        eof_error(b"$5\r\nab");
        eof_error(b"$2\r\nab");
        eof_error(b"*2\r\n:1\r\n");
    }

    #[test]
    fn limits_are_enforced_before_allocating() {
        let m = protocol_error(b"$536870913\r\n");
        assert!(m.contains("MAX_BULK_LEN"), "{m}");
        protocol_error(b"$99999999999999999999999\r\n");
        // Announcing a huge array allocates nothing; its end is just missing.
        eof_error(b"*2147483647\r\n:1\r\n");
        protocol_error(b"*2147483648\r\n");

        let mut long = vec![b'+'; MAX_LINE_LEN + 10];
        long.extend_from_slice(b"\r\n");
        let m = protocol_error(&long);
        assert!(m.contains("MAX_LINE_LEN"), "{m}");
        let mut ok = vec![b'+'; MAX_LINE_LEN];
        ok.extend_from_slice(b"\r\n");
        assert!(parse(&ok).is_ok());

        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        let m = protocol_error(&deep);
        assert!(m.contains("MAX_DEPTH"), "{m}");
        let mut fine = b"*1\r\n".repeat(MAX_DEPTH);
        fine.extend_from_slice(b":1\r\n");
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn io_errors_are_in_the_source_chain() {
        let e = RespError::from(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(crate::ErrorSet::io().matches(&e));
        assert!(crate::ErrorSet::kind(io::ErrorKind::ConnectionReset).matches(&e));
        assert!(!crate::ErrorSet::io().matches(&RespError::Server("ERR x".into())));
        assert!(!crate::ErrorSet::io().matches(&RespError::Protocol("x".into())));
        let ctx = io_context(
            io::Error::from(io::ErrorKind::TimedOut),
            "reading".to_owned(),
        );
        assert_eq!(ctx.kind(), io::ErrorKind::TimedOut);
        assert!(crate::ErrorSet::kind(io::ErrorKind::TimedOut).matches(&RespError::Io(ctx)));
    }
}
