//! Zero stale connections with the defaults (issue 13): after every way an
//! idle connection can die — the server's idle timeout, a kill of every
//! connection (reset or close), a restart while idle — a burst of requests
//! on a full pool sees no failure, with or without retry. The negative
//! control turns keepalive and validation off and shows the failures really
//! happen: one per dead connection.
//!
//! Each scenario runs against the embedded [`TestServer`] here and against a
//! real redis-server in `stale_redis.rs`. Every run prints one line of the
//! table `scenario × configuration → failures` (run with `--nocapture`).

mod common;

use std::time::Duration;

use common::wait_until;
use greenpool::testing::{LineManager, TestServer};
use greenpool::{Builder, ConnectionPool};

const SIZE: usize = 16;
const BURST: usize = 64;
const LONG: Duration = Duration::from_secs(10);

/// The pool configurations of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `Builder::new()`, requests without retry.
    Defaults,
    /// `Builder::new()`, requests through `pool.retry`.
    DefaultsWithRetry,
    /// No keepalive (validation and the checkout check at their defaults).
    NoKeepalive,
    /// The negative control: no keepalive, no validation, no checkout check.
    NothingOn,
}

impl Setup {
    fn builder(self) -> Builder<LineManager> {
        let b = ConnectionPool::builder().size(SIZE);
        match self {
            Setup::Defaults | Setup::DefaultsWithRetry => b,
            Setup::NoKeepalive => b.no_keepalive(),
            Setup::NothingOn => b.no_keepalive().no_validation(),
        }
    }
}

/// How the idle connections die.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The server closes connections idle for 100 ms (FIN).
    IdleTimeout,
    /// The server resets every connection (RST).
    ResetAll,
    /// The server closes every connection (FIN).
    CloseAll,
    /// The server stops (resetting every connection) and listens again.
    Restart,
}

/// A full pool, idle; `fault` kills every idle connection; then `BURST`
/// requests from `BURST` green threads at once. Returns the failures.
fn run(fault: Fault, setup: Setup) -> usize {
    let server = TestServer::start().unwrap();
    let pool = setup
        .builder()
        .build(LineManager::new(server.addr()))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    assert!(server.wait_open(SIZE, LONG));
    match fault {
        Fault::IdleTimeout => {
            server.set_idle_close(Some(Duration::from_millis(100)));
            assert!(server.wait_for(|s| s.open() == 0, LONG));
            server.set_idle_close(None);
        }
        Fault::ResetAll => assert_eq!(server.reset_all(), SIZE),
        Fault::CloseAll => assert_eq!(server.close_all(), SIZE),
        Fault::Restart => {
            assert_eq!(server.stop(), SIZE);
            server.restart().unwrap();
        }
    }
    let failures = match setup {
        Setup::DefaultsWithRetry => {
            common::burst(&pool, BURST, BURST, |p: &ConnectionPool<LineManager>| {
                p.retry(|c| c.ping())
            })
        }
        _ => common::burst(&pool, BURST, BURST, |p: &ConnectionPool<LineManager>| {
            p.with(|c| c.ping())
        }),
    };
    let s = pool.state();
    eprintln!(
        "| embedded | {fault:?} | {setup:?} | {failures} |  {:?}",
        s.counters.discarded
    );
    // Whatever happened, the pool is full of working connections again.
    assert!(wait_until(LONG, || pool.state().open == SIZE), "{s:?}");
    assert_eq!(
        common::burst(&pool, 8, 64, |p: &ConnectionPool<LineManager>| p
            .with(|c| c.ping())),
        0
    );
    failures
}

fn check(fault: Fault) {
    for setup in [
        Setup::Defaults,
        Setup::DefaultsWithRetry,
        Setup::NoKeepalive,
    ] {
        assert_eq!(run(fault, setup), 0, "{fault:?} with {setup:?}");
    }
    // The negative control: every dead idle connection fails one request.
    assert_eq!(
        run(fault, Setup::NothingOn),
        SIZE,
        "{fault:?} with nothing on"
    );
}

#[test]
fn no_stale_connection_after_the_servers_idle_timeout() {
    check(Fault::IdleTimeout);
}

#[test]
fn no_stale_connection_after_every_connection_is_reset() {
    check(Fault::ResetAll);
}

#[test]
fn no_stale_connection_after_every_connection_is_closed() {
    check(Fault::CloseAll);
}

#[test]
fn no_stale_connection_after_a_restart_while_idle() {
    check(Fault::Restart);
}

/// A manager that cannot see a closed peer without a round trip (no
/// `has_broken`): only validation finds a dead idle connection.
struct Blind(LineManager);

impl greenpool::Manager for Blind {
    type Connection = greenpool::testing::LineClient;
    type Error = std::io::Error;
    fn new_connection(&self) -> std::io::Result<Self::Connection> {
        self.0.new_connection()
    }
    fn keepalive(&self, c: &mut Self::Connection) -> std::io::Result<()> {
        c.ping()
    }
}

/// Sequential requests after every idle connection died: the failures.
fn sequential_after_close_all(builder: Builder<Blind>, retry: bool) -> usize {
    let server = TestServer::start().unwrap();
    let pool = builder
        .size(8)
        .build(Blind(LineManager::new(server.addr())))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    assert!(server.wait_open(8, LONG));
    assert_eq!(server.close_all(), 8);
    (0..8)
        .filter(|_| {
            if retry {
                pool.retry(|c| c.ping()).is_err()
            } else {
                pool.with(|c| c.ping()).is_err()
            }
        })
        .count()
}

#[test]
fn one_dead_connection_makes_every_idle_one_prove_itself() {
    // Pessimistic invalidation: the first failure makes the pool validate
    // every connection idle since before it, so one caller walking through
    // the pool meets one dead connection, not eight.
    let failures = sequential_after_close_all(ConnectionPool::builder(), false);
    assert_eq!(failures, 1);
    // With retry, none: the retry gets a validated (or new) connection.
    assert_eq!(
        sequential_after_close_all(ConnectionPool::builder(), true),
        0
    );
    // The negative control: without validation each dead one fails a request.
    let failures = sequential_after_close_all(ConnectionPool::builder().no_validation(), false);
    assert_eq!(failures, 8);
}
