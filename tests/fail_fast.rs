//! When the backend refuses us (issue 13): checkouts fail fast with the last
//! connect error instead of waiting out the checkout timeout, a permanent
//! error (a wrong password) slows the reconnects to the longest backoff, and
//! every connection the pool closes says goodbye (`Manager::close`).

mod common;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::wait_until;
use greenpool::testing::{LineClient, LineManager, TestServer};
use greenpool::{ConnectionPool, Error, Manager};

const LONG: Duration = Duration::from_secs(10);

/// A login the server rejects, after a real TCP connect.
#[derive(Debug)]
struct LoginRejected;

impl fmt::Display for LoginRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LOGIN rejected: wrong password")
    }
}

impl std::error::Error for LoginRejected {}

/// Connects to the test server, then fails the login while `reject` is set;
/// says whether that error is permanent.
struct Login {
    line: LineManager,
    reject: AtomicBool,
    permanent: bool,
    attempts: AtomicU64,
}

impl Login {
    fn new(server: &TestServer, permanent: bool) -> Self {
        Login {
            line: LineManager::new(server.addr()),
            reject: AtomicBool::new(true),
            permanent,
            attempts: AtomicU64::new(0),
        }
    }
}

#[derive(Debug)]
enum LoginError {
    Io(io::Error),
    Rejected(LoginRejected),
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Io(e) => e.fmt(f),
            LoginError::Rejected(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoginError {}

impl From<Error> for LoginError {
    fn from(e: Error) -> Self {
        LoginError::Io(e.into())
    }
}

impl Manager for Login {
    type Connection = LineClient;
    type Error = LoginError;

    fn new_connection(&self) -> Result<LineClient, LoginError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut c = self.line.new_connection().map_err(LoginError::Io)?;
        c.ping().map_err(LoginError::Io)?;
        if self.reject.load(Ordering::SeqCst) {
            return Err(LoginError::Rejected(LoginRejected));
        }
        Ok(c)
    }

    fn is_permanent(&self, error: &LoginError) -> bool {
        self.permanent && matches!(error, LoginError::Rejected(_))
    }
}

/// Connect attempts a pool of 4 makes in 1.5 s while every login fails.
fn attempts_in(permanent: bool) -> u64 {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(4)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_secs(2))
        .build(Login::new(&server, permanent))
        .unwrap();
    let start = Instant::now();
    // Wait out the window on the pool's own clock: the attempts are the
    // measurement, not a synchronisation.
    while start.elapsed() < Duration::from_millis(1500) {
        greenpool::runtime::sleep(Duration::from_millis(50));
    }
    pool.manager().attempts.load(Ordering::SeqCst)
}

#[test]
fn a_permanent_connect_error_slows_the_reconnects_to_the_longest_backoff() {
    // Each slot tries once, then waits 1-2 s (the longest backoff, jittered).
    let permanent = attempts_in(true);
    // Without the verdict each slot backs off 20, 40, 80, ... ms.
    let transient = attempts_in(false);
    eprintln!(
        "connect attempts in 1.5 s on a pool of 4: permanent {permanent}, transient {transient}"
    );
    assert!(permanent <= 8, "{permanent} attempts");
    assert!(
        transient > 12,
        "{transient} attempts: the control backs off from 20 ms"
    );
}

#[test]
fn checkouts_fail_at_once_with_the_permanent_error() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(2)
        .checkout_timeout(Duration::from_secs(30))
        .build(Login::new(&server, true))
        .unwrap();
    assert!(wait_until(LONG, || pool.state().counters.connect_failures >= 1));
    let start = Instant::now();
    let e = pool.get().unwrap_err();
    let waited = start.elapsed();
    assert!(e.is_unavailable(), "{e}");
    assert!(
        matches!(
            e,
            Error::Unavailable {
                permanent: true,
                ..
            }
        ),
        "{e}"
    );
    // The cause is the login's own error, not a timeout.
    assert!(e.to_string().contains("wrong password"), "{e}");
    assert!(
        waited < Duration::from_secs(10),
        "waited {waited:?} of a 30 s timeout"
    );
    assert!(pool.state().counters.unavailable >= 1);
    // The login is fixed: the pool recovers on its own.
    pool.manager().reject.store(false, Ordering::SeqCst);
    assert!(wait_until(LONG, || pool
        .with(|c| c.ping().map_err(LoginError::Io))
        .is_ok()));
}

#[test]
fn with_the_server_down_checkouts_fail_after_the_grace_not_the_timeout() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(2)
        .checkout_timeout(Duration::from_secs(30))
        .fail_fast(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(LineManager::new(server.addr()))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    // A caller already waiting when the pool goes down gives up too.
    let held: Vec<_> = (0..2).map(|_| pool.get().unwrap()).collect();
    let p = pool.clone();
    let waiter = greenpool::runtime::spawn(move || {
        let start = Instant::now();
        (p.get().map(drop), start.elapsed())
    });
    assert!(wait_until(LONG, || pool.state().waiting == 1));
    server.stop();
    // Given back, both are found reset (has_broken) and discarded; their
    // replacements are refused.
    drop(held);
    let (r, waited) = waiter.join().unwrap();
    let e = r.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    // Later callers fail at once.
    let e = pool.get().unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    server.restart().unwrap();
    assert!(wait_until(LONG, || pool.with(|c| c.ping()).is_ok()));
}

#[test]
fn without_fail_fast_a_checkout_waits_out_its_timeout() {
    // The control for the test above: the old behaviour, kept on request.
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(1)
        .checkout_timeout(Duration::from_millis(600))
        .no_fail_fast()
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build(LineManager::new(server.addr()))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    server.stop();
    let e = pool.get().unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.last_connect_error().is_some(), "{e}");
}

/// Says `QUIT` before the pool closes a connection; a stalled server makes
/// the goodbye hang (it waits for `BYE`).
struct Polite(LineManager);

impl Manager for Polite {
    type Connection = LineClient;
    type Error = io::Error;
    fn new_connection(&self) -> io::Result<LineClient> {
        self.0.new_connection()
    }
    fn close(&self, mut c: LineClient) {
        let _ = c.request("QUIT");
    }
}

#[test]
fn every_connection_the_pool_closes_says_goodbye() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(Polite(LineManager::new(server.addr())), 3).unwrap();
    pool.wait_ready(LONG).unwrap();
    let before = server.requests();
    // A discarded connection says goodbye; its replacement opens meanwhile.
    pool.get().unwrap().discard();
    assert!(server.wait_requests(before + 1, LONG));
    assert!(wait_until(LONG, || pool.state().open == 3));
    // Closing the pool: every idle one does.
    let guard = pool.get().unwrap();
    pool.close();
    assert!(server.wait_requests(before + 3, LONG));
    // And one checked out when the pool closed, once it comes back.
    drop(guard);
    assert!(server.wait_requests(before + 4, LONG));
    // The server closed each on QUIT: none is left open.
    assert!(server.wait_open(0, LONG));
    assert!(wait_until(LONG, || pool.state().background_tasks == 0));
}

#[test]
fn a_goodbye_that_hangs_is_cancelled_at_the_health_check_timeout() {
    let server = TestServer::start().unwrap();
    // Requests may wait a minute for their reply: only the pool's bound can
    // end the goodbyes within the test's 10 s.
    let manager = Polite(LineManager::new(server.addr()).timeout(Duration::from_secs(60)));
    let pool = ConnectionPool::builder()
        .size(2)
        .health_check_timeout(Duration::from_millis(200))
        .build(manager)
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    server.set_stall(true);
    pool.close();
    // Both goodbyes wait for a BYE that never comes, until cancelled.
    assert!(
        wait_until(LONG, || pool.state().background_tasks == 0),
        "{:?}",
        pool.state()
    );
    server.set_stall(false);
}

#[test]
fn a_goodbye_that_starts_after_the_pool_closed_and_went_quiet_is_still_bounded() {
    let server = TestServer::start().unwrap();
    let manager = Polite(LineManager::new(server.addr()).timeout(Duration::from_secs(60)));
    let pool = ConnectionPool::builder()
        .size(1)
        .health_check_timeout(Duration::from_millis(200))
        .build(manager)
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    let guard = pool.get().unwrap();
    pool.close();
    // Nothing was idle, so nothing said goodbye: every background green
    // thread ends, the maintenance that holds goodbyes to their deadline too.
    assert!(
        wait_until(LONG, || pool.state().background_tasks == 0),
        "{:?}",
        pool.state()
    );
    // The connection still out comes back now; its goodbye waits for a BYE
    // that never comes, and only its own bound can end it.
    server.set_stall(true);
    let before = server.requests();
    drop(guard);
    assert!(server.wait_requests(before + 1, LONG));
    assert!(
        wait_until(LONG, || pool.state().background_tasks == 0),
        "{:?}",
        pool.state()
    );
    // A stalled server reads nothing, so it sees the close once it resumes.
    server.set_stall(false);
    assert!(server.wait_open(0, LONG), "the connection was closed");
}

#[test]
fn the_default_close_just_drops_the_connection() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(LineManager::new(server.addr()), 2).unwrap();
    pool.wait_ready(LONG).unwrap();
    let before = server.requests();
    pool.close();
    assert!(server.wait_open(0, LONG));
    assert_eq!(server.requests(), before, "no request on close");
}
