//! The retry combinator: what it retries, how often, how it logs, and that
//! every attempt through a pool runs on a fresh connection.

mod common;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::Mock;
use greenpool::runtime::spawn;
use greenpool::{retry, retrying, ConnectionPool, ErrorSet, Retry};

/// Captures every log record; each test filters by its own unique target, so
/// tests running in parallel do not see each other's records.
struct Capture(Mutex<Vec<(String, log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push((r.target().to_owned(), r.level(), r.args().to_string()));
    }
    fn flush(&self) {}
}

/// Install the capturing logger (once per test binary); call before logging.
fn capture() -> &'static Capture {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let l: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(l);
        log::set_max_level(log::LevelFilter::Trace);
        l
    })
}

fn records(target: &str) -> Vec<(log::Level, String)> {
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| t == target)
        .map(|(_, l, m)| (*l, m.clone()))
        .collect()
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "peer reset")
}

#[derive(Debug)]
struct NotFound;
impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("key not found")
    }
}
impl std::error::Error for NotFound {}

#[test]
fn retries_errors_in_the_set_only() {
    let mut calls = 0;
    let r: io::Result<u32> = retry(|| {
        calls += 1;
        if calls < 3 {
            Err(reset())
        } else {
            Ok(calls)
        }
    });
    assert_eq!(r.unwrap(), 3);

    let mut calls = 0;
    let r: Result<(), NotFound> = retry(|| {
        calls += 1;
        Err(NotFound)
    });
    assert!(r.is_err());
    assert_eq!(calls, 1, "an error outside the set is not retried");

    let out = Retry::new()
        .on(ErrorSet::kind(io::ErrorKind::ConnectionReset))
        .run(|| Err::<(), _>(io::Error::from(io::ErrorKind::PermissionDenied)));
    assert_eq!(out.attempts, 1);
}

#[test]
fn max_failures_two_makes_exactly_three_attempts_and_returns_the_last_error() {
    let mut calls = 0;
    let out = Retry::new().max_failures(2).run(|| {
        calls += 1;
        Err::<(), _>(io::Error::other(format!("failure {calls}")))
    });
    assert_eq!(calls, 3);
    assert_eq!(out.attempts, 3);
    let e: io::Error = out.result.unwrap_err(); // the type is unchanged
    assert_eq!(e.to_string(), "failure 3");

    let mut calls = 0;
    let _ = Retry::new().max_failures(0).call(|| {
        calls += 1;
        Err::<(), _>(reset())
    });
    assert_eq!(calls, 1);
}

#[test]
fn the_default_gives_up_after_six_attempts() {
    let mut calls = 0;
    let _ = retry(|| {
        calls += 1;
        Err::<(), _>(reset())
    });
    assert_eq!(calls, greenpool::DEFAULT_MAX_FAILURES + 1);
}

#[test]
fn interval_and_backoff_are_honoured() {
    let t = Instant::now();
    let _ = Retry::new()
        .max_failures(3)
        .interval(Duration::from_millis(40))
        .call(|| Err::<(), _>(reset()));
    // 3 waits of 40 ms
    assert!(
        t.elapsed() >= Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );

    let t = Instant::now();
    let _ = Retry::new()
        .max_failures(3)
        .interval(Duration::from_millis(20))
        .backoff(2.0, Duration::from_millis(60))
        .call(|| Err::<(), _>(reset()));
    // 20 + 40 + 60 (capped)
    assert!(
        t.elapsed() >= Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn an_unbounded_retry_cannot_spin() {
    let mut calls = 0u32;
    let t = Instant::now();
    let _ = Retry::new().unbounded().on(ErrorSet::all()).call(|| {
        calls += 1;
        if calls < 6 {
            Err(reset())
        } else {
            Ok(())
        }
    });
    assert!(t.elapsed() >= greenpool::UNBOUNDED_MIN_INTERVAL * 5);
}

#[test]
fn logs_each_retry_and_the_give_up_with_level_target_and_wording() {
    let target = "test::retry::default_wording";
    capture();
    let _ = Retry::new()
        .name("senddata")
        .max_failures(1)
        .log_target(target)
        .call(|| Err::<(), _>(reset()));
    let recs = records(target);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].0, log::Level::Info);
    assert_eq!(
        recs[0].1,
        "senddata: attempt 1 failed: peer reset; retrying on a fresh connection"
    );
    assert_eq!(recs[1].0, log::Level::Error);
    assert_eq!(
        recs[1].1,
        "senddata: giving up after 2 attempts: peer reset"
    );
}

#[test]
fn custom_messages_and_levels() {
    let target = "test::retry::custom";
    capture();
    let _ = Retry::new()
        .name("fetch")
        .max_failures(1)
        .log_target(target)
        .retry_level(log::Level::Warn)
        .give_up_level(log::Level::Debug)
        .retry_message("[{name}] try {attempt} of {max} broke ({error})")
        .give_up_message("[{name}] abandoned at {attempt}")
        .call(|| Err::<(), _>(reset()));
    let recs = records(target);
    assert_eq!(
        recs,
        vec![
            (
                log::Level::Warn,
                "[fetch] try 1 of 2 broke (peer reset)".to_owned()
            ),
            (log::Level::Debug, "[fetch] abandoned at 2".to_owned()),
        ]
    );
}

fn shared_policy() -> Retry {
    Retry::new()
        .max_failures(4)
        .log_target("test::retry::macro")
}

retrying! { shared_policy() =>
    /// Fails `fail` times with a reset, then returns the call count.
    fn flaky(calls: &AtomicU32, fail: u32) -> io::Result<u32> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= fail { Err(reset()) } else { Ok(n) }
    }
}

#[test]
fn the_decorator_form_and_a_reused_policy_behave_the_same() {
    capture();
    let calls = AtomicU32::new(0);
    assert_eq!(flaky(&calls, 2).unwrap(), 3);
    let calls2 = AtomicU32::new(0);
    let direct = shared_policy().call(|| {
        let n = calls2.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= 2 {
            Err(reset())
        } else {
            Ok(n)
        }
    });
    assert_eq!(direct.unwrap(), 3);
    // gives up the same way: 4 failures allowed, 5 attempts
    let calls = AtomicU32::new(0);
    assert!(flaky(&calls, 100).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // the macro names the policy after the function
    assert!(records("test::retry::macro")
        .iter()
        .any(|(_, m)| m.starts_with("flaky: attempt 1 failed")));
}

#[test]
fn every_attempt_through_the_pool_runs_on_a_different_connection() {
    let pool = ConnectionPool::new(Mock::default(), 3).unwrap();
    pool.wait_ready(Duration::from_secs(10)).unwrap();
    let mut seen = Vec::new();
    let r: io::Result<()> = Retry::new().max_failures(5).call(|| {
        pool.with(|c| {
            seen.push(c.id);
            Err(reset())
        })
    });
    assert!(r.is_err());
    assert_eq!(seen.len(), 6);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "attempts reused a connection: {seen:?}");
}

#[test]
fn with_one_connection_the_next_attempt_waits_for_the_replacement() {
    let m = Mock::default();
    m.connect_delay_ms.store(50, Ordering::SeqCst);
    let pool = ConnectionPool::new(m, 1).unwrap();
    pool.wait_ready(Duration::from_secs(10)).unwrap();
    let mut seen = Vec::new();
    let r: io::Result<u64> = retry(|| {
        pool.with(|c| {
            seen.push(c.id);
            if seen.len() < 3 {
                Err(reset())
            } else {
                Ok(c.id)
            }
        })
    });
    assert_eq!(r.unwrap(), 3);
    assert_eq!(seen, vec![1, 2, 3]);
    assert_eq!(pool.state().counters.discarded.error, 2);
}

#[test]
fn a_panic_is_not_retried_and_the_connection_is_discarded() {
    let pool = ConnectionPool::new(Mock::default(), 1).unwrap();
    pool.wait_ready(Duration::from_secs(10)).unwrap();
    let p = pool.clone();
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let joined = spawn(move || {
        let _: io::Result<()> = retry(|| {
            c2.fetch_add(1, Ordering::SeqCst);
            p.with(|_c| panic!("bug in the closure"))
        });
    })
    .join();
    assert_eq!(
        joined.unwrap_err().panic_message(),
        Some("bug in the closure")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(pool.state().counters.discarded.panic, 1);
}

#[test]
fn a_checkout_timeout_is_not_retried_unless_asked_and_a_closed_pool_never() {
    let m = Mock::default();
    m.fail.store(true, Ordering::SeqCst);
    let pool = ConnectionPool::builder()
        .size(1)
        .checkout_timeout(Duration::from_millis(50))
        .build(m)
        .unwrap();
    let op = || pool.with(|_c| Ok::<_, io::Error>(()));
    // The default set matches io::Error, and a checkout timeout converts into
    // one; it is still not retried: it already waited a whole timeout.
    let out = Retry::new().max_failures(3).run(op);
    assert_eq!(out.attempts, 1);
    assert_eq!(out.result.unwrap_err().kind(), io::ErrorKind::TimedOut);
    let out = Retry::new()
        .max_failures(3)
        .retry_pool_timeouts(true)
        .run(op);
    assert_eq!(out.attempts, 4);
    pool.close();
    let out = Retry::new()
        .max_failures(3)
        .retry_pool_timeouts(true)
        .run(op);
    assert_eq!(out.attempts, 1, "a closed pool is never retried");
    assert_eq!(out.result.unwrap_err().kind(), io::ErrorKind::NotConnected);
}
