//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool::Manager;

/// Wait until `cond` holds, polling every 2 ms, for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        greenpool::runtime::sleep(Duration::from_millis(2));
    }
}

/// A ready pool of `size` [`Mock`] connections that discards on `set`, with a
/// 10 s checkout timeout and a reconnect backoff of a few milliseconds (a
/// test that discards several connections in a row need not wait for the
/// backoff to grow).
pub fn mock_pool(size: usize, set: greenpool::ErrorSet) -> greenpool::ConnectionPool<Mock> {
    let long = Duration::from_secs(10);
    let p = greenpool::ConnectionPool::builder()
        .size(size)
        .checkout_timeout(long)
        .discard_on(set)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .build(Mock::default())
        .unwrap();
    p.wait_ready(long).unwrap();
    p
}

/// A manager whose connections are plain values: no network, full control.
#[derive(Default)]
pub struct Mock {
    /// Connect attempts so far.
    pub attempts: AtomicU64,
    /// While set, `new_connection` fails with ConnectionRefused.
    pub fail: AtomicBool,
    /// While set, `new_connection` panics.
    pub panic: AtomicBool,
    /// While set, keepalive/validate fail.
    pub unhealthy: AtomicBool,
    /// Connections alive (opened and not yet dropped).
    pub live: Arc<AtomicI64>,
    next_id: AtomicU64,
    pub keepalives: AtomicU64,
    /// Milliseconds each successful connect takes.
    pub connect_delay_ms: AtomicU64,
    /// While set, `new_connection` hangs (a cancellable 60 s sleep).
    pub connect_hangs: AtomicBool,
    /// Milliseconds each keepalive/validation waits before answering
    /// (cancellable).
    pub check_delay_ms: AtomicU64,
    /// The next this many keepalives hang (a cancellable 60 s sleep).
    pub hang_keepalives: AtomicU64,
    /// A check that is cancelled keeps its connection this many more
    /// milliseconds (blocking its worker, as code outside the runtime does).
    pub hold_after_cancel_ms: AtomicU64,
    /// The next this many validations fail.
    pub fail_validations: AtomicU64,
    /// Validations so far.
    pub validations: AtomicU64,
    /// While set, errors from connect and keepalive panic when displayed.
    pub panicky_display: AtomicBool,
}

/// An error whose `Display` panics.
#[derive(Debug)]
pub struct PanickyDisplay;

impl std::fmt::Display for PanickyDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("this error cannot be displayed")
    }
}

impl std::error::Error for PanickyDisplay {}

/// Take one from a counter if it is above zero.
fn take_one(n: &AtomicU64) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

pub struct MockConn {
    pub id: u64,
    live: Arc<AtomicI64>,
}

impl Drop for MockConn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Manager for Mock {
    type Connection = MockConn;
    type Error = io::Error;

    fn new_connection(&self) -> io::Result<MockConn> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.panic.load(Ordering::SeqCst) {
            panic!("mock connect panicked");
        }
        if self.fail.load(Ordering::SeqCst) {
            if self.panicky_display.load(Ordering::SeqCst) {
                return Err(io::Error::other(PanickyDisplay));
            }
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "mock backend refused the connection",
            ));
        }
        if self.connect_hangs.load(Ordering::SeqCst) {
            greenpool::runtime::sleep(Duration::from_secs(60));
        }
        let delay = self.connect_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            greenpool::runtime::sleep(Duration::from_millis(delay));
        }
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(MockConn {
            id: self.next_id.fetch_add(1, Ordering::SeqCst) + 1,
            live: Arc::clone(&self.live),
        })
    }

    fn keepalive(&self, _c: &mut MockConn) -> io::Result<()> {
        self.keepalives.fetch_add(1, Ordering::SeqCst);
        let delay = if take_one(&self.hang_keepalives) {
            60_000
        } else {
            self.check_delay_ms.load(Ordering::SeqCst)
        };
        if delay > 0 {
            let waited = std::panic::catch_unwind(|| {
                greenpool::runtime::sleep(Duration::from_millis(delay))
            });
            if let Err(cancelled) = waited {
                // Code outside the runtime does not notice a cancellation
                // until it returns.
                let hold = self.hold_after_cancel_ms.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(hold));
                std::panic::resume_unwind(cancelled);
            }
        }
        if self.unhealthy.load(Ordering::SeqCst) {
            if self.panicky_display.load(Ordering::SeqCst) {
                return Err(io::Error::other(PanickyDisplay));
            }
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "mock: dead"));
        }
        Ok(())
    }

    fn validate(&self, c: &mut MockConn) -> io::Result<()> {
        self.validations.fetch_add(1, Ordering::SeqCst);
        let result = self.keepalive(c);
        if take_one(&self.fail_validations) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "mock: validation failed",
            ));
        }
        result
    }
}

impl Mock {
    pub fn live(&self) -> i64 {
        self.live.load(Ordering::SeqCst)
    }
}

/// Run `request` from `workers` green threads in a loop while `fault` runs on
/// the calling thread; returns (requests that succeeded, requests that failed).
pub fn under_load<M, E, R, F>(
    pool: &greenpool::ConnectionPool<M>,
    workers: usize,
    request: R,
    fault: F,
) -> (usize, usize)
where
    M: Manager,
    R: Fn(&greenpool::ConnectionPool<M>) -> Result<(), E> + Clone + Send + 'static,
    F: FnOnce(),
{
    use std::sync::atomic::AtomicUsize;
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (pool, done, failed, stop, request) = (
                pool.clone(),
                done.clone(),
                failed.clone(),
                stop.clone(),
                request.clone(),
            );
            greenpool::runtime::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match request(&pool) {
                        Ok(()) => done.fetch_add(1, Ordering::SeqCst),
                        Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    fault();
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().unwrap();
    }
    (done.load(Ordering::SeqCst), failed.load(Ordering::SeqCst))
}

/// Send `total` requests from `workers` green threads (enough concurrency that
/// every pooled connection is checked out at the start); returns the failures.
pub fn burst<M, E, R>(
    pool: &greenpool::ConnectionPool<M>,
    workers: usize,
    total: usize,
    request: R,
) -> usize
where
    M: Manager,
    R: Fn(&greenpool::ConnectionPool<M>) -> Result<(), E> + Clone + Send + 'static,
{
    use std::sync::atomic::AtomicUsize;
    let failures = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (pool, failures, request) = (pool.clone(), failures.clone(), request.clone());
            greenpool::runtime::spawn(move || {
                for _ in 0..total / workers {
                    if request(&pool).is_err() {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    failures.load(Ordering::SeqCst)
}

/// A redis-server on a free port, or `None` (said loudly) when it is not
/// installed, unless `CI` is set (CI always installs it): then it panics.
pub fn redis() -> Option<greenpool::testing::redis::RedisServer> {
    match greenpool::testing::redis::RedisServer::start() {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
            eprintln!("\n*** SKIPPED: {e} ***\n");
            None
        }
        Err(e) => panic!("cannot start redis-server: {e}"),
    }
}
