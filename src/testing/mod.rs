//! The kit to test your own [`Manager`](crate::Manager) (cargo feature
//! `testing`): fault injection for code that talks to servers over TCP.
//!
//! A connection pool is only as good as its behaviour when things break:
//! a server that resets every connection, closes idle ones behind your back,
//! goes away and comes back on the same port, or accepts and never answers.
//! greenpool's own tests prove its pool survives all of these with this kit;
//! use it to give your own [`Manager`](crate::Manager) — your protocol, your
//! validation, your retry policy — the same proof, against real sockets and
//! without root, `iptables` or sleeps.
//!
//! - [`TestServer`]: an embedded line-protocol server on `127.0.0.1`
//!   (`PING`, `ID`, `ECHO`, `SLEEP`, `QUIT`) with knobs: [`reset_all`],
//!   [`set_idle_close`], [`stop`] / [`restart`] on the same port,
//!   [`set_stall`], [`set_refuse`]; and counters ([`accepted`], [`open`],
//!   [`peak_open`], [`requests`]) with waits that take a deadline
//!   ([`wait_for`], [`wait_open`]), so tests wait for a condition instead of
//!   sleeping and hoping.
//! - [`FaultProxy`]: the same knobs as a TCP proxy in front of any server,
//!   for protocols the embedded server does not speak.
//! - [`LineClient`]: a small blocking client for the line protocol.
//! - [`LineManager`]: a [`Manager`](crate::Manager) whose connections are
//!   [`LineClient`]s, for pool tests against the embedded server.
//! - [`fd_count`]: open file descriptors of the process (Linux), to check
//!   that nothing leaks.
//! - `redis` (feature `redis` too): `RedisServer`, a
//!   real `redis-server` on a free port, killed and restarted at will; the
//!   client and manager it hands out are `greenpool::redis`'s.
//! - `TestHttpServer` (feature `http`), `tls::SelfSigned` (feature `tls`)
//!   and `nginx::Nginx` (both): an embedded HTTP/HTTPS server with faults,
//!   certificates made at run time, and a real nginx on a free port.
//! - [`SpawnFaults`]: make the pool's own green-thread spawns fail
//!   ([`Builder::spawn_faults`](crate::Builder::spawn_faults)).
//!
//! Everything runs on the green-thread runtime ([`crate::runtime`]) and can
//! be driven from a plain `#[test]` thread or from green threads. Servers and
//! proxies listen on ephemeral ports and keep no global state, so tests using
//! them can run in parallel. Dropping the last handle of a server or proxy
//! stops it and closes all its sockets before the drop returns.
//!
//! # Example
//!
//! ```
//! use std::io::ErrorKind;
//! use std::time::Duration;
//! use greenpool::testing::{LineClient, TestServer};
//!
//! let server = TestServer::start()?;
//! let mut client = LineClient::connect(server.addr(), Duration::from_secs(5))?;
//! assert_eq!(client.request("PING")?, "PONG");
//!
//! // The server resets every open connection (RST, no FIN) ...
//! assert_eq!(server.reset_all(), 1);
//! // ... and the client finds out on its next request.
//! let err = client.request("PING").unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::ConnectionReset);
//!
//! // New connections are served as usual.
//! let mut again = LineClient::connect(server.addr(), Duration::from_secs(5))?;
//! assert_eq!(again.request("ID")?, "2");
//! assert!(server.wait_open(1, Duration::from_secs(5)));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`reset_all`]: TestServer::reset_all
//! [`set_idle_close`]: TestServer::set_idle_close
//! [`stop`]: TestServer::stop
//! [`restart`]: TestServer::restart
//! [`set_stall`]: TestServer::set_stall
//! [`set_refuse`]: TestServer::set_refuse
//! [`accepted`]: TestServer::accepted
//! [`open`]: TestServer::open
//! [`peak_open`]: TestServer::peak_open
//! [`requests`]: TestServer::requests
//! [`wait_for`]: TestServer::wait_for
//! [`wait_open`]: TestServer::wait_open

mod client;
mod endpoint;
#[cfg(feature = "http")]
mod http_server;
mod line_manager;
#[cfg(all(feature = "http", feature = "tls"))]
pub mod nginx;
mod proxy;
#[cfg(feature = "redis")]
pub mod redis;
mod server;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::LineClient;
pub use line_manager::LineManager;
pub use proxy::{FaultProxy, UPSTREAM_CONNECT_TIMEOUT};
pub use server::{TestServer, MAX_LINE};

#[cfg(feature = "http")]
pub use http_server::TestHttpServer;

/// The number of file descriptors the process has open, from
/// `/proc/self/fd`; `None` where that is not available (any OS but Linux,
/// or `/proc` not mounted). Never blocks.
///
/// The count covers the whole process: tests that compare it before and
/// after must not run beside other tests that open or close descriptors, and
/// should wait (with a deadline) for it to come back down rather than read
/// it once.
///
/// ```
/// if let Some(n) = greenpool::testing::fd_count() {
///     assert!(n >= 3); // stdin, stdout, stderr
/// }
/// ```
pub fn fd_count() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let dir = std::fs::read_dir("/proc/self/fd").ok()?;
        // The directory handle being read is itself listed.
        Some(dir.count().saturating_sub(1))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Makes a pool's green-thread spawns fail on demand, as they do when the
/// runtime is near its limit (about 31,000 green threads, or no memory for a
/// stack): give it to [`Builder::spawn_faults`](crate::Builder::spawn_faults),
/// then [`fail_next`](Self::fail_next). Clones share one counter.
///
/// ```
/// use greenpool::testing::SpawnFaults;
/// let faults = SpawnFaults::new();
/// faults.fail_next(2);
/// assert_eq!(faults.pending(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SpawnFaults {
    fail_next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SpawnFaults {
    /// No failures pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make the next `n` spawns of the pool's background green threads
    /// (connectors, health checks) fail with an `io::Error`.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Failures still to come.
    pub fn pending(&self) -> u64 {
        self.fail_next.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Consume one pending failure, if any: the spawn is to fail.
    pub(crate) fn take(&self) -> bool {
        self.fail_next
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
    }
}
