//! Connection health against the embedded backend: a server idle timeout,
//! connection kills and a restart. The same scenarios run against a real
//! redis-server in `health_redis.rs`.

mod common;

use std::io;
use std::time::Duration;

use greenpool::runtime::sleep;
use greenpool::testing::{LineManager, TestServer};
use greenpool::{ConnectionPool, Retry};

const LONG: Duration = Duration::from_secs(10);
const SERVER_IDLE: Duration = Duration::from_secs(1);

/// Idle 2.5 s behind a 1 s server idle timeout, then 200 requests from 8
/// green threads; returns the failures seen by callers.
fn idle_scenario(builder: greenpool::Builder<LineManager>) -> (usize, greenpool::State) {
    let server = TestServer::start().unwrap();
    server.set_idle_close(Some(SERVER_IDLE));
    let pool = builder
        .size(4)
        .build(LineManager::new(server.addr()))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    sleep(Duration::from_millis(2500));
    let failures = common::burst(&pool, 8, 200, |p| p.with(|c| c.ping()));
    (failures, pool.state())
}

#[test]
fn idle_timeout_with_keepalive_no_failures() {
    let (failures, s) = idle_scenario(
        ConnectionPool::builder()
            .keepalive(Duration::from_millis(500))
            .no_validation(),
    );
    assert_eq!(failures, 0, "{s:?}");
    assert!(s.counters.keepalives >= 4, "{s:?}");
    assert_eq!(s.counters.discarded.total(), 0, "{s:?}");
}

#[test]
fn idle_timeout_with_validation_alone_no_failures() {
    let (failures, s) =
        idle_scenario(ConnectionPool::builder().validate_after(Duration::from_millis(500)));
    assert_eq!(failures, 0, "{s:?}");
    // Found at checkout: by has_broken (the server's FIN) or by validation.
    let d = s.counters.discarded;
    assert!(d.closed + d.validation >= 4, "{s:?}");
    // Closed for idling, a second after they opened: not failed connects,
    // so no slot backs off.
    assert_eq!(s.counters.connect_failures, 0, "{s:?}");
}

#[test]
fn idle_timeout_negative_control_failures_really_happen() {
    let (failures, s) = idle_scenario(ConnectionPool::builder().no_validation());
    // Every pooled connection was closed by the server: the first use of
    // each fails. This is what keepalive and validation prevent.
    assert_eq!(failures, 4, "{s:?}");
    assert_eq!(s.counters.discarded.error, 4);
}

#[test]
fn keepalive_failure_discards_and_replaces_without_a_user_seeing_it() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(2)
        .keepalive(Duration::from_millis(100))
        .health_check_timeout(Duration::from_millis(300))
        .no_validation()
        .build(LineManager::new(server.addr()).timeout(Duration::from_secs(5)))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    // A stalled server: keepalives time out and the connections are replaced.
    server.set_stall(true);
    let ok = server.wait_for(|_| pool.state().counters.discarded.keepalive >= 2, LONG);
    assert!(ok, "{:?}", pool.state());
    server.set_stall(false);
    pool.wait_ready(LONG).unwrap();
    pool.with(|c| c.ping()).unwrap();
}

#[test]
fn idle_timeout_and_max_lifetime_recycle_while_the_pool_stays_full() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(3)
        .max_lifetime(Duration::from_millis(300))
        .build(LineManager::new(server.addr()))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    // The pool side never exceeds its size (the server may briefly count a
    // closed connection whose FIN it has not read yet, so it is not asked).
    let within_size = |p: &ConnectionPool<LineManager>, size| {
        let s = p.state();
        assert!(s.open + s.connecting <= size, "{s:?}");
    };
    assert!(
        server.wait_for(
            |s| {
                within_size(&pool, 3);
                s.accepted() >= 9
            },
            LONG
        ),
        "recycled"
    );
    assert!(pool.state().counters.discarded.expired >= 6);
    pool.wait_ready(LONG).unwrap();

    let server2 = TestServer::start().unwrap();
    let pool2 = ConnectionPool::builder()
        .size(2)
        .idle_timeout(Duration::from_millis(200))
        .build(LineManager::new(server2.addr()))
        .unwrap();
    assert!(server2.wait_for(
        |s| {
            within_size(&pool2, 2);
            s.accepted() >= 6
        },
        LONG
    ));
    assert!(pool2.state().counters.discarded.expired >= 4);
}

/// Requests from 50 green threads through `retry` while `fault` runs;
/// returns the failed requests.
fn under_faults(pool: &ConnectionPool<LineManager>, fault: impl FnOnce()) -> usize {
    let (done, failed) = common::under_load(
        pool,
        50,
        |p: &ConnectionPool<LineManager>| -> io::Result<()> {
            Retry::new()
                // Ride out the restart: a checkout may time out meanwhile.
                .retry_pool_timeouts(true)
                .max_failures(20)
                .interval(Duration::from_millis(20))
                .call(|| p.with(|c| c.ping()))
        },
        fault,
    );
    assert!(done > 0);
    failed
}

#[test]
fn connection_kills_under_load_lose_no_request() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::new(LineManager::new(server.addr()), 8).unwrap();
    pool.wait_ready(LONG).unwrap();
    let failed = under_faults(&pool, || {
        for _ in 0..10 {
            let before = server.requests();
            server.reset_all();
            assert!(server.wait_requests(before + 100, LONG));
        }
    });
    assert_eq!(failed, 0);
    pool.wait_ready(LONG).unwrap();
    assert!(
        pool.state().counters.discarded.error > 0,
        "faults really happened"
    );
    assert!(server.wait_open(8, LONG));
}

#[test]
fn a_restart_shorter_than_the_retry_budget_loses_no_request() {
    let server = TestServer::start().unwrap();
    let pool = ConnectionPool::builder()
        .size(4)
        .checkout_timeout(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(LineManager::new(server.addr()))
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    let failed = under_faults(&pool, || {
        assert!(server.wait_requests(200, LONG));
        server.stop();
        // During the outage a checkout times out with the connect error.
        let e = loop {
            match pool.get_timeout(Duration::from_millis(100)) {
                Err(e) if e.last_connect_error().is_some() => break e,
                _ => sleep(Duration::from_millis(5)),
            }
        };
        assert!(e.to_string().contains("refused"), "{e}");
        server.restart().unwrap();
        let after = server.requests();
        assert!(server.wait_requests(after + 200, LONG));
    });
    assert_eq!(failed, 0);
    pool.wait_ready(LONG).unwrap();
    assert!(
        pool.state().counters.connect_failures > 0,
        "the outage was real"
    );
}
