//! The pool against real sockets: the embedded test server counts what the
//! pool really does on the wire.

mod common;

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::under_load;
use greenpool::runtime::spawn;
use greenpool::testing::{LineClient, LineManager, TestServer};
use greenpool::{ConnectionPool, Manager};

const LONG: Duration = Duration::from_secs(10);

#[test]
fn fills_to_size_and_the_server_sees_exactly_size_connections() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(LineManager::new(server.addr()), 6).unwrap();
    pool.wait_ready(LONG).unwrap();
    assert!(server.wait_open(6, LONG));
    // Nothing more arrives: use the pool, and check the counts again.
    for _ in 0..50 {
        pool.with(|c| c.ping()).unwrap();
    }
    assert_eq!(server.accepted(), 6);
    assert_eq!(server.open(), 6);
    assert_eq!(server.peak_open(), 6);
}

#[test]
fn a_thousand_green_threads_over_four_connections() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(LineManager::new(server.addr()), 4).unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            let (pool, ok) = (pool.clone(), Arc::clone(&ok));
            spawn(move || {
                let reply = pool.with(|c| c.request(&format!("ECHO {i}"))).unwrap();
                assert_eq!(reply, i.to_string());
                ok.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::SeqCst), 1000);
    assert!(server.peak_open() <= 4, "peak {}", server.peak_open());
    assert_eq!(server.accepted(), 4);
    assert_eq!(server.requests(), 1000);
}

/// Counts connect attempts on the way to the real manager.
struct Counting {
    inner: LineManager,
    attempts: AtomicU64,
}

impl Manager for Counting {
    type Connection = LineClient;
    type Error = io::Error;
    fn new_connection(&self) -> io::Result<LineClient> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.inner.new_connection()
    }
}

#[test]
fn server_down_gives_a_timeout_naming_the_connect_error_then_the_pool_refills() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(4)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build(Counting {
            inner: LineManager::new(server.addr()).timeout(Duration::from_secs(1)),
            attempts: AtomicU64::new(0),
        })
        .unwrap();
    pool.wait_ready(LONG).unwrap();

    server.stop();
    // Each connection finds out it is dead on use, and is replaced; the
    // replacements cannot connect.
    for _ in 0..4 {
        let r: io::Result<()> = pool.with(|c| c.ping());
        assert!(r.is_err());
    }
    let e = pool.get_timeout(Duration::from_millis(300)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(msg.contains("refused"), "{msg}");

    // Attempts during a 2 s outage are bounded: 4 slots, each at most once
    // per 250 ms (the jittered cap), plus the first few fast ones.
    let before = pool.manager().attempts.load(Ordering::SeqCst);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        let s = pool.state();
        assert!(s.open + s.connecting <= 4, "{s:?}");
        greenpool::runtime::sleep(Duration::from_millis(20));
    }
    let during = pool.manager().attempts.load(Ordering::SeqCst) - before;
    assert!(during <= 4 * 9 + 8, "{during} connect attempts in 2 s");
    assert!(during >= 4, "the pool kept trying: {during}");

    server.restart().unwrap();
    let t = Instant::now();
    pool.wait_ready(LONG).unwrap();
    assert!(
        t.elapsed() <= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(server.wait_open(4, LONG));
    pool.with(|c| c.ping()).unwrap();
}

#[test]
fn close_closes_every_connection_at_the_server() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(LineManager::new(server.addr()), 5).unwrap();
    pool.wait_ready(LONG).unwrap();
    let held = pool.get().unwrap();
    assert!(server.wait_open(5, LONG));
    pool.close();
    assert!(
        server.wait_open(1, LONG),
        "idle ones closed, the held one open"
    );
    drop(held);
    assert!(server.wait_open(0, LONG), "open: {}", server.open());
    assert_eq!(server.accepted(), 5, "nothing reopened after close");
}

#[test]
fn dropping_the_pool_closes_every_connection_at_the_server() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(LineManager::new(server.addr()), 3).unwrap();
    pool.wait_ready(LONG).unwrap();
    drop(pool);
    assert!(server.wait_open(0, LONG), "open: {}", server.open());
}

#[test]
fn a_server_that_accepts_and_never_answers_gives_a_clear_error_and_loses_nothing() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(2)
        .build(LineManager::new(server.addr()).timeout(Duration::from_millis(200)))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    server.set_stall(true);
    let e = pool.with(|c| c.ping()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert_eq!(pool.state().counters.discarded.error, 1);
    server.set_stall(false);
    // The timed-out connection is gone; the pool is full again and works.
    pool.wait_ready(LONG).unwrap();
    for _ in 0..10 {
        pool.with(|c| c.ping()).unwrap();
    }
}

#[test]
fn a_reset_mid_request_discards_only_the_broken_connections() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(LineManager::new(server.addr()), 3).unwrap();
    pool.wait_ready(LONG).unwrap();
    // The client side is ready before the server has accepted everything.
    assert!(server.wait_open(3, LONG));
    // Hold all three, then the server resets them: each request finds its
    // connection reset. (Reset while idle, they would not get this far: the
    // checkout's has_broken sees the RST and hands out a new connection.)
    let mut guards: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    assert_eq!(server.reset_all(), 3);
    for g in &mut guards {
        let r = g.ping();
        assert!(g.check(r).is_err());
    }
    drop(guards);
    assert_eq!(pool.state().counters.discarded.error, 3);
    // The replacements work; nothing else is discarded.
    pool.wait_ready(LONG).unwrap();
    for _ in 0..20 {
        pool.with(|c| c.ping()).unwrap();
    }
    assert_eq!(pool.state().counters.discarded.total(), 3);
    assert!(server.wait_open(3, LONG));
}

#[test]
fn a_server_that_accepts_and_resets_gets_a_few_connects_not_a_storm() {
    // A proxy whose backend is dead: every connect succeeds and the first
    // request on it fails with a reset. Each discarded connection died
    // young, so its slot backs off as if the connect had failed.
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(4)
        .checkout_timeout(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .build(LineManager::new(server.addr()).timeout(Duration::from_millis(500)))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    server.set_refuse(true);
    server.reset_all();
    let before = server.accepted();
    // 8 green threads keep asking; every request fails.
    under_load(
        &pool,
        8,
        |p| p.with(|c| c.ping()),
        || greenpool::runtime::sleep(Duration::from_secs(1)),
    );
    let connects = server.accepted() - before;
    // 4 slots, each backing off 20, 40, 80, ... ms: a few dozen at most.
    assert!(connects <= 80, "{connects} connects in 1 s on a pool of 4");
    // Connections that died young count as failed connects.
    assert!(
        pool.state().counters.connect_failures >= 4,
        "{:?}",
        pool.state()
    );
    // The backend comes back: the pool recovers. (Meanwhile checkouts fail
    // fast, so this polls rather than counting attempts.)
    server.set_refuse(false);
    assert!(
        common::wait_until(LONG, || pool.with(|c| c.ping()).is_ok()),
        "{:?}",
        pool.state()
    );
}
