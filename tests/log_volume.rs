//! Logging stays at "changed state + a summary every 10 s" under a fault
//! that makes every connection fail: a server that accepts and then resets.
//!
//! Alone in its binary: it installs a process-wide logger that counts the
//! pool's log lines.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::under_load;
use greenpool::testing::{LineManager, TestServer};
use greenpool::ConnectionPool;

/// Counts (and keeps) the pool's lines at info and above.
struct Counting {
    lines: Mutex<Vec<String>>,
    count: AtomicUsize,
}

impl log::Log for Counting {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info && m.target().starts_with("greenpool")
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.count.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut lines) = self.lines.lock() {
                lines.push(format!("{} {}", r.level(), r.args()));
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: Counting = Counting {
    lines: Mutex::new(Vec::new()),
    count: AtomicUsize::new(0),
};

#[test]
fn a_server_that_accepts_and_resets_logs_a_few_lines_not_a_flood() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(4)
        .checkout_timeout(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .build(LineManager::new(server.addr()).timeout(Duration::from_millis(500)))
        .unwrap();
    pool.wait_ready(Duration::from_secs(10)).unwrap();
    server.set_refuse(true);
    server.reset_all();
    let before = LOGGER.count.load(Ordering::SeqCst);
    // 8 green threads keep asking; every request fails.
    under_load(
        &pool,
        8,
        |p| p.with(|c| c.ping()),
        || greenpool::runtime::sleep(Duration::from_millis(1500)),
    );
    let lines = LOGGER.count.load(Ordering::SeqCst) - before;
    let text = LOGGER.lines.lock().unwrap().join("\n");
    // The change to failing, maybe one summary: not one line per connection.
    assert!(lines <= 3, "{lines} log lines in 1.5 s:\n{text}");
    assert!(pool.state().counters.connect_failures > 0);
}
