//! # greenpool
//!
//! A gevent-style connection pool on stackful green threads (the `may`
//! coroutine runtime, wrapped by [`runtime`]). Code written in plain blocking
//! style runs concurrently in green threads, and the pool keeps `size` live,
//! healthy connections to a backend for them: it opens them in the
//! background, discards any that fail (with an error from a configurable
//! [`ErrorSet`], or a panic), replaces them, keeps idle ones alive, and
//! [`retry`] runs an operation again on a fresh one.
//!
//! You "subclass the pool" by implementing [`Manager`]: how to open a
//! connection (any set-up; the connection can be any value) and, optionally,
//! how to prove an idle one is alive.
//!
//! ```
//! use greenpool::{retry, ConnectionPool, Manager};
//! use greenpool::runtime::{net::{connect, ConnectOptions, TcpStream}, spawn};
//! use greenpool::testing::TestServer;
//! use std::io::{self, BufRead, BufReader, Write};
//! use std::time::Duration;
//!
//! struct Line { addr: String }
//!
//! impl Manager for Line {
//!     type Connection = BufReader<TcpStream>;
//!     type Error = io::Error;
//!     fn new_connection(&self) -> io::Result<Self::Connection> {
//!         Ok(BufReader::new(connect(&self.addr, &ConnectOptions::default())?))
//!     }
//!     fn keepalive(&self, c: &mut Self::Connection) -> io::Result<()> {
//!         request(c, "PING").map(drop)
//!     }
//! }
//!
//! fn request(c: &mut BufReader<TcpStream>, line: &str) -> io::Result<String> {
//!     writeln!(c.get_mut(), "{line}")?;
//!     let mut reply = String::new();
//!     c.read_line(&mut reply)?;
//!     Ok(reply.trim_end().to_owned())
//! }
//!
//! // An embedded server for the example; a real program connects elsewhere.
//! let server = TestServer::start()?;
//! let pool = ConnectionPool::builder()
//!     .size(4)
//!     .keepalive(Duration::from_secs(30))
//!     .build(Line { addr: server.addr().to_string() })?;
//!
//! // 100 green threads share the 4 connections.
//! let workers: Vec<_> = (0..100)
//!     .map(|i| {
//!         let pool = pool.clone();
//!         spawn(move || retry(|| pool.with(|c| request(c, &format!("ECHO {i}")))))
//!     })
//!     .collect();
//! for (i, w) in workers.into_iter().enumerate() {
//!     assert_eq!(w.join().unwrap()?, i.to_string());
//! }
//!
//! // The server resets every connection: the pool discards them as they fail,
//! // and retry runs each request again on a fresh connection.
//! server.reset_all();
//! for _ in 0..10 {
//!     assert_eq!(retry(|| pool.with(|c| request(c, "PING")))?, "PONG");
//! }
//! assert!(server.accepted() <= 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What blocks: [`ConnectionPool::get`] and [`ConnectionPool::with`] (and
//! [`with_guard`](ConnectionPool::with_guard),
//! [`retry`](ConnectionPool::retry)) block the calling green thread (or OS
//! thread) until a connection is free, up to the checkout timeout; everything
//! else returns at once. See [`Builder`] for every option and its default.
//!
//! Errors: the closures may fail with any `std::error::Error`, a
//! `Box<dyn Error + Send + Sync>` or (feature `anyhow`) an `anyhow::Error`;
//! see [`error_type`].
//!
//! # What is where
//!
//! - The pool, always compiled: [`Manager`] (how to open and check a
//!   connection), [`ConnectionPool`] and its [`Builder`], the guard
//!   [`PooledConnection`], [`ErrorSet`], [`retry`] and [`Retry`], the
//!   error types a closure may use ([`error_type`]; `anyhow::Error` with the
//!   feature `anyhow`), and the pool's [`State`] and [`Counters`]; the
//!   background work (connecting with backoff, keepalive and validation,
//!   checkout deadlines) is private to it. Inside, the modules form layers
//!   that only point down: foundations (settings, errors, the clock), the
//!   state (the slot token, the books and hand-off, the task registry), the
//!   checkout wait, the background work, and the public types on top.
//! - [`runtime`]: the gevent-style runtime over `may` (spawn, groups,
//!   timeouts, `net::connect`, `net::serve`, `tls` with its feature). The
//!   pool uses nothing of it but its public API.
//! - Backends, each behind a cargo feature: `http` (`greenpool::http`, an
//!   HTTP/1.1 keep-alive manager for one origin; `https://` with `tls`) and
//!   `redis` (`greenpool::redis`, a RESP2 client and `RedisManager`).
//! - `testing` (feature `testing`): the kit to test your own manager against
//!   servers that fail (fault servers, a fault proxy, a real `redis-server`
//!   or nginx on a free port) and `Builder::spawn_faults`. The example above
//!   uses its `TestServer`; a real program connects to its own backend.
//!
//! A default build (`greenpool = "0.1"`, no features) compiles the pool
//! and the runtime only. The examples in these docs run as the crate's
//! tests, which turn every feature on.

#![warn(missing_docs)]

pub use greenpool_runtime as runtime;

// The pool's modules, in layers that only point down: no module imports one
// that imports it (each module's docs say what it owns).
//
// Foundations: plain types and helpers that know nothing of a pool.
mod backoff;
mod clock;
mod config;
mod error;
mod error_set;
pub mod error_type;
pub mod events;
mod handoff;
mod health;
mod lock;
mod manager;
mod stats;
// The state: the slot token, the pool's books and hand-off, and the registry
// of its background green threads.
mod slot;
mod state;
mod tasks;
// The checkout wait, above the state.
mod checkout;
// Background work, each knowing only the state: connecting, health checks
// and expiry, checkout deadlines.
mod connector;
mod deadlines;
mod maintenance;
// The public surface, on top.
mod builder;
mod guard;
mod pool;
mod retry;
mod scoped;
mod sizing;
mod unwind_safety;
// Optional: backends and the test kit, behind features.
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "testing")]
pub mod testing;

pub use builder::Builder;
pub use config::{
    DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FAIL_FAST, DEFAULT_HEALTH_CHECK_TIMEOUT, DEFAULT_SHRINK_AFTER, DEFAULT_SIZE,
    DEFAULT_VALIDATE_AFTER, MAX_DURATION, MAX_SIZE,
};
pub use error::{BuildError, Error};
pub use error_set::ErrorSet;
pub use error_type::AsStdError;
pub use guard::PooledConnection;
pub use manager::Manager;
pub use pool::ConnectionPool;
pub use retry::{
    retry, Retry, RetryOutcome, DEFAULT_GIVE_UP_MESSAGE, DEFAULT_LOG_TARGET, DEFAULT_MAX_FAILURES,
    DEFAULT_RETRY_MESSAGE, UNBOUNDED_MIN_INTERVAL,
};
pub use sizing::ConnInfo;
pub use stats::{Counters, DiscardReason, Discards, State};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
