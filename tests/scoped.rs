//! The pool's scoped operations: `with_guard` (the closure gets the guard),
//! `ConnectionPool::retry` / `Retry::with` (retry on the pool's own discard
//! set), and the rule that timed-out work always discards its connection.

mod common;

use std::io;
use std::time::Duration;

use common::{mock_pool as pool, wait_until, Mock};
use greenpool::runtime::Elapsed;
use greenpool::testing::{LineManager, TestServer};
use greenpool::{retry, ConnectionPool, ErrorSet, Retry};

const LONG: Duration = Duration::from_secs(10);

fn err(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, format!("{kind:?}"))
}

/// A typed error of the service's own, outside `ErrorSet::io()`.
#[derive(Debug)]
struct Expired;
impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("session expired")
    }
}
impl std::error::Error for Expired {}
impl From<greenpool::Error> for Expired {
    fn from(_: greenpool::Error) -> Self {
        Expired
    }
}

#[test]
fn with_guard_can_mark_the_connection_broken_without_an_error() {
    let p = pool(1, ErrorSet::io());
    let first = p
        .with_guard(|g| {
            g.mark_broken();
            Ok::<_, io::Error>(g.id)
        })
        .unwrap();
    assert!(wait_until(LONG, || p.state().counters.discarded.explicit == 1));
    assert_eq!(p.state().counters.discarded.total(), 1);
    let second = p.with_guard(|g| Ok::<_, io::Error>(g.id)).unwrap();
    assert_ne!(first, second, "the marked connection was replaced");

    // Otherwise it behaves as `with`: Ok and errors outside the set give the
    // connection back, errors in the set and panics discard it.
    assert_eq!(p.with_guard(|g| Ok::<_, io::Error>(g.id)).unwrap(), second);
    let r: Result<(), Expired> = p.with_guard(|_g| Err(Expired));
    assert!(r.is_err());
    assert_eq!(p.with_guard(|g| Ok::<_, io::Error>(g.id)).unwrap(), second);
    let r = p.with_guard(|g| {
        assert!(!g.is_marked_broken());
        Err::<(), _>(err(io::ErrorKind::ConnectionReset))
    });
    assert!(r.is_err());
    assert!(wait_until(LONG, || p.state().counters.discarded.error == 1));
    let r = std::panic::catch_unwind(|| p.with_guard(|_g| -> io::Result<()> { panic!("boom") }));
    assert!(r.is_err());
    assert!(wait_until(LONG, || p.state().counters.discarded.panic == 1));
    assert!(wait_until(LONG, || p.state().idle == 1));
}

#[test]
fn pool_retry_retries_the_errors_the_pool_discards_on_each_on_a_fresh_connection() {
    // The pool discards on an error type of the service's own.
    let p = pool(2, ErrorSet::of::<Expired>());
    let mut ids = Vec::new();
    let v = p.retry(|c| {
        ids.push(c.id);
        if ids.len() < 3 {
            Err(io::Error::other(Expired))
        } else {
            Ok(c.id)
        }
    });
    assert_eq!(v.unwrap(), ids[2]);
    assert_eq!(ids.len(), 3);
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    assert_eq!(p.state().counters.discarded.error, 2);

    // The free `retry` follows its own set (io::Error), not the pool's: the
    // same failure is retried there only because it is wrapped in an
    // io::Error; a bare `Expired` is not retried at all.
    let mut attempts = 0;
    let r: Result<(), Expired> = retry(|| {
        attempts += 1;
        p.with(|_c| Err(Expired))
    });
    assert!(r.is_err());
    assert_eq!(attempts, 1);
    let mut attempts = 0;
    let r: Result<(), Expired> = p.retry(|_c| {
        attempts += 1;
        Err(Expired)
    });
    assert!(r.is_err());
    assert_eq!(attempts, 6, "the default: 5 failures, then give up");
}

#[test]
fn pool_retry_never_reruns_on_a_connection_the_pool_kept() {
    // The pool discards on resets only; an InvalidData answer keeps the
    // connection.
    let p = pool(1, ErrorSet::kind(io::ErrorKind::ConnectionReset));
    let mut ids = Vec::new();
    let r = p.retry(|c| {
        ids.push(c.id);
        Err::<(), _>(err(io::ErrorKind::InvalidData))
    });
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert_eq!(ids.len(), 1, "not retried: the pool did not discard it");
    assert_eq!(p.state().counters.discarded.total(), 0);

    // What `retry(|| pool.with(..))` does with the same pool: its set (any
    // io::Error) is wider than the pool's, so it runs again and again on the
    // very connection that failed.
    let mut old_ids = Vec::new();
    let r = retry(|| {
        p.with(|c| {
            old_ids.push(c.id);
            Err::<(), _>(err(io::ErrorKind::InvalidData))
        })
    });
    assert!(r.is_err());
    assert_eq!(old_ids, vec![ids[0]; 6]);

    // A reset is discarded and retried on the replacement.
    let ids = fails_once(&p, io::ErrorKind::ConnectionReset);
    assert_ne!(ids[0], ids[1]);
}

/// `pool.retry` of an operation that fails once with `kind`, then succeeds:
/// the connection ids of the attempts.
fn fails_once(p: &ConnectionPool<Mock>, kind: io::ErrorKind) -> Vec<u64> {
    let mut ids = Vec::new();
    let v = p.retry(|c| {
        ids.push(c.id);
        if ids.len() == 1 {
            Err(err(kind))
        } else {
            Ok(c.id)
        }
    });
    assert_eq!(v.unwrap(), *ids.last().unwrap());
    ids
}

#[test]
fn retry_with_keeps_the_policy_settings_and_an_explicit_set_replaces_the_pools() {
    let p = pool(1, ErrorSet::kind(io::ErrorKind::ConnectionReset));
    let mut attempts = 0;
    let r = Retry::new().max_failures(2).with(&p, |_c| {
        attempts += 1;
        Err::<(), _>(err(io::ErrorKind::ConnectionReset))
    });
    assert!(r.is_err());
    assert_eq!(attempts, 3);

    // Asked for explicitly: retry InvalidData too (on the same connection,
    // since the pool keeps it).
    let mut ids = Vec::new();
    let r = Retry::new()
        .on(ErrorSet::kind(io::ErrorKind::InvalidData))
        .max_failures(1)
        .with(&p, |c| {
            ids.push(c.id);
            Err::<(), _>(err(io::ErrorKind::InvalidData))
        });
    assert!(r.is_err());
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}

#[test]
fn timed_out_work_is_discarded_whatever_the_set_says() {
    let p = pool(1, ErrorSet::none());
    let discards = || p.state().counters.discarded.error;

    let r = p.with(|_c| Err::<(), _>(err(io::ErrorKind::TimedOut)));
    assert!(r.is_err());
    assert!(wait_until(LONG, || discards() == 1));

    // Deep in the chain, and the runtime's Elapsed (bare or as io::Error).
    let r: Result<(), Box<dyn std::error::Error + Send + Sync>> = p.with(|_c| {
        Err(io::Error::other(io::Error::new(io::ErrorKind::TimedOut, "read timed out")).into())
    });
    assert!(r.is_err());
    assert!(wait_until(LONG, || discards() == 2));
    let r: Result<(), Box<dyn std::error::Error + Send + Sync>> =
        p.with(|_c| Err(Elapsed(Duration::from_millis(5)).into()));
    assert!(r.is_err());
    assert!(wait_until(LONG, || discards() == 3));
    let r = p.with(|_c| Err::<(), io::Error>(Elapsed(Duration::from_millis(5)).into()));
    assert!(r.is_err());
    assert!(wait_until(LONG, || discards() == 4));

    // Not a timeout of this connection: another pool's checkout timed out
    // (as an io::Error of kind TimedOut, or as it is).
    let other = pool(1, ErrorSet::io());
    let _busy = other.get().unwrap();
    let id = p.get().unwrap().id;
    let r = p.with(|_c| other.try_get().map(drop).map_err(io::Error::from));
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    let r = p.with(|_c| other.try_get().map(drop));
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(discards(), 4);
    assert_eq!(p.get().unwrap().id, id);
    // Nor any other error.
    let r = p.with(|_c| Err::<(), _>(err(io::ErrorKind::ConnectionReset)));
    assert!(r.is_err());
    assert_eq!(discards(), 4);
}

#[test]
fn pool_retry_retries_a_timeout_on_a_fresh_connection() {
    let p = pool(1, ErrorSet::kind(io::ErrorKind::ConnectionReset));
    let ids = fails_once(&p, io::ErrorKind::TimedOut);
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

/// The embedded server holds the first reply (a stall), the request times
/// out, and the reply arrives later. With a discard set that leaves timeouts
/// out, the old pool gave the connection back and the next request on it read
/// that late reply as its own: "first" for `ECHO second`.
#[test]
fn a_timed_out_request_never_leaves_its_reply_for_the_next_request() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(1)
        .checkout_timeout(LONG)
        .discard_on(ErrorSet::kind(io::ErrorKind::ConnectionReset))
        .build(LineManager::new(server.addr()))
        .unwrap();
    pool.wait_ready(LONG).unwrap();

    server.set_stall(true);
    let r = pool.with(|c| {
        c.set_timeout(Duration::from_millis(100))?;
        c.request("ECHO first")
    });
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert!(server.wait_requests(1, LONG));
    // The server now answers, late: "first" is on its way to whichever
    // connection asked for it.
    server.set_stall(false);

    let reply = pool
        .with(|c| {
            c.set_timeout(LONG)?;
            c.request("ECHO second")
        })
        .unwrap();
    assert_eq!(reply, "second", "the previous request's reply was read");
    assert_eq!(pool.state().counters.discarded.error, 1);
    assert_eq!(server.accepted(), 2);
}
