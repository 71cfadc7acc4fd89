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
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "mock backend refused the connection",
            ));
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
        if self.unhealthy.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "mock: dead"));
        }
        Ok(())
    }
}

impl Mock {
    pub fn live(&self) -> i64 {
        self.live.load(Ordering::SeqCst)
    }
}
