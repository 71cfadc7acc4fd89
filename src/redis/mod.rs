//! Redis as a pool backend (cargo feature `redis`): a minimal, correct RESP2
//! client for green threads, and the [`Manager`](crate::Manager) that pools
//! it.
//!
//! - [`RedisManager`]: opens connections (from `host:port` or a
//!   `redis://[[user]:password@]host[:port][/db]` URL; `AUTH`, `SELECT`),
//!   keeps them alive and validates them (`PING`), spots a connection the
//!   server has closed without a round trip, tells a wrong password or
//!   database (which retrying cannot fix) from a server that is down,
//!   reports the server's idle `timeout` so that the pool's keepalive beats
//!   it, and says `QUIT` when the pool closes a connection.
//! - [`RespConnection`]: one connection to a Redis server over the runtime's
//!   [`TcpStream`](crate::runtime::net::TcpStream);
//!   [`command`](RespConnection::command) sends one command and reads its
//!   reply, blocking only the calling green thread (or the calling OS thread
//!   outside the runtime).
//! - [`Value`]: a reply.
//! - [`RespError`]: what a command fails with; an I/O failure is an
//!   [`io::Error`](std::io::Error) in its
//!   [`source`](std::error::Error::source) chain, so the pool's default
//!   [`ErrorSet::io`](crate::ErrorSet::io) discards the connection and
//!   [`retry`](crate::retry) tries again on another.
//!
//! The client speaks RESP2 only (it never sends `HELLO 3`), one command at a
//! time (no pipelining, no pub/sub, no TLS). Every read is bounded: a reply
//! line may be at most [`MAX_LINE_LEN`] bytes, a bulk string at most
//! [`MAX_BULK_LEN`] bytes (Redis's own `proto-max-bulk-len` default),
//! nesting at most [`MAX_DEPTH`] levels, and memory is only ever allocated
//! for bytes that have actually arrived — a broken or hostile server cannot
//! make the client allocate without limit or overflow a green thread's
//! stack.
//!
//! ```no_run
//! use greenpool::redis::{RedisManager, RespConnection};
//! use greenpool::runtime::net::ConnectOptions;
//! use greenpool::ConnectionPool;
//!
//! let mut c = RespConnection::connect("127.0.0.1:6379", &ConnectOptions::new())?;
//! c.set("greeting", "hello")?;
//! assert_eq!(c.get("greeting")?.as_deref(), Some(&b"hello"[..]));
//!
//! let manager = RedisManager::from_url("redis://:secret@127.0.0.1:6379/1")?;
//! let pool = ConnectionPool::new(manager, 4)?;
//! pool.with(|c| c.ping())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `greenpool::testing::redis` (features `testing` and `redis`) starts a
//! real `redis-server` on a free port for tests.

mod manager;
mod resp;

pub use manager::{RedisManager, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, DEFAULT_PORT};
pub use resp::{RespConnection, RespError, Value, MAX_BULK_LEN, MAX_DEPTH, MAX_LINE_LEN};
