//! Connection health proven against a real redis-server, started by each test
//! on a free loopback port (`--save '' --appendonly no`): the server's idle
//! timeout, connections killed with CLIENT KILL, and a server restart. The
//! same scenarios run against the embedded backend in `health.rs`.
//!
//! Without redis-server installed these tests say so loudly and pass, unless
//! `CI` is set (CI always installs it), where they fail.

mod common;

use common::redis;

use std::time::Duration;

use greenpool::redis::{RedisManager, RespError};
use greenpool::runtime::sleep;
use greenpool::{Builder, ConnectionPool, Retry, State};

const LONG: Duration = Duration::from_secs(10);

fn ping(p: &ConnectionPool<RedisManager>) -> Result<(), RespError> {
    p.with(|c| c.ping())
}

/// `CONFIG SET timeout 1`, a full pool of 4 idle for 2.5 s, then 200
/// requests from 8 green threads: the failures callers saw.
fn idle_scenario(builder: Builder<RedisManager>) -> Option<(usize, State)> {
    let server = redis()?;
    server.client().unwrap().config_set("timeout", "1").unwrap();
    let pool = builder.size(4).build(server.manager()).unwrap();
    pool.wait_ready(LONG).unwrap();
    sleep(Duration::from_millis(2500));
    let failures = common::burst(&pool, 8, 200, ping);
    Some((failures, pool.state()))
}

#[test]
fn redis_idle_timeout_with_keepalive_no_failures() {
    let Some((failures, s)) = idle_scenario(
        ConnectionPool::builder()
            .keepalive(Duration::from_millis(500))
            .no_validation(),
    ) else {
        return;
    };
    eprintln!("redis idle timeout, keepalive 500 ms: {failures} failures; {s:?}");
    assert_eq!(failures, 0, "{s:?}");
    assert!(s.counters.keepalives >= 4);
}

#[test]
fn redis_idle_timeout_with_the_learnt_keepalive_no_failures() {
    // No keepalive configured: the manager reports `timeout 1`, and the pool
    // keeps connections alive every 500 ms by itself.
    let Some((failures, s)) = idle_scenario(ConnectionPool::builder().no_validation()) else {
        return;
    };
    eprintln!("redis idle timeout, learnt keepalive: {failures} failures; {s:?}");
    assert_eq!(failures, 0, "{s:?}");
    assert!(s.counters.keepalives >= 4);
}

#[test]
fn redis_idle_timeout_with_validation_alone_no_failures() {
    let Some((failures, s)) = idle_scenario(
        ConnectionPool::builder()
            .no_keepalive()
            .validate_after(Duration::from_millis(500)),
    ) else {
        return;
    };
    eprintln!("redis idle timeout, validation only: {failures} failures; {s:?}");
    assert_eq!(failures, 0, "{s:?}");
    // Found at checkout: most by the cheap has_broken (the server's FIN),
    // any left by validation.
    let d = s.counters.discarded;
    assert_eq!(d.closed + d.validation, 4, "{s:?}");
}

#[test]
fn redis_idle_timeout_negative_control_failures_really_happen() {
    let Some((failures, s)) =
        idle_scenario(ConnectionPool::builder().no_keepalive().no_validation())
    else {
        return;
    };
    eprintln!("redis idle timeout, no health features: {failures} failures; {s:?}");
    assert_eq!(failures, 4, "every idle connection was dead: {s:?}");
}

fn retrying_ping(p: &ConnectionPool<RedisManager>) -> Result<(), RespError> {
    Retry::new()
        // Ride out the restart: a checkout may time out meanwhile.
        .retry_pool_timeouts(true)
        .max_failures(20)
        .interval(Duration::from_millis(20))
        .backoff(2.0, Duration::from_millis(200))
        .call(|| p.with(|c| c.ping()))
}

#[test]
fn redis_client_kill_under_load_loses_no_request() {
    let Some(server) = redis() else { return };
    let pool = ConnectionPool::new(server.manager(), 8).unwrap();
    pool.wait_ready(LONG).unwrap();
    let mut admin = server.client().unwrap();
    let mut killed = 0;
    let (done, failed) = common::under_load(&pool, 50, retrying_ping, || {
        for _ in 0..10 {
            let before = pool.state().counters.checkouts;
            killed += admin.client_kill_normal().unwrap();
            assert!(common::wait_until(LONG, || {
                pool.state().counters.checkouts >= before + 200
            }));
        }
    });
    let s = pool.state();
    eprintln!("redis CLIENT KILL x10 ({killed} killed): {done} ok, {failed} failed; {s:?}");
    assert_eq!(failed, 0);
    assert!(
        killed > 0 && s.counters.discarded.total() > 0,
        "kills really happened"
    );
    pool.wait_ready(LONG).unwrap();
    assert_eq!(pool.state().open, 8);
}

#[test]
fn redis_restart_recovers_and_retry_loses_no_request() {
    let Some(mut server) = redis() else { return };
    let pool = ConnectionPool::builder()
        .size(4)
        .checkout_timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(server.manager())
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    let (done, failed) = common::under_load(&pool, 50, retrying_ping, || {
        assert!(common::wait_until(LONG, || pool.state().counters.checkouts > 200));
        server.kill().unwrap();
        // During the outage a checkout times out and names the connect error.
        let mut seen = None;
        assert!(common::wait_until(LONG, || {
            match pool.get_timeout(Duration::from_millis(50)) {
                Err(e) if e.last_connect_error().is_some() => {
                    seen = Some(e);
                    true
                }
                _ => false,
            }
        }));
        let e = seen.unwrap();
        assert!(e.to_string().contains("refused"), "{e}");
        server.restart().unwrap();
        let after = pool.state().counters.checkouts;
        assert!(common::wait_until(LONG, || pool.state().counters.checkouts > after + 200));
    });
    let s = pool.state();
    eprintln!("redis restart: {done} ok, {failed} failed; {s:?}");
    assert_eq!(failed, 0);
    assert!(s.counters.connect_failures > 0, "the outage was real");
    pool.wait_ready(LONG).unwrap();
    assert_eq!(pool.state().open, 4);
}

#[test]
fn redis_restart_without_retry_recovers_on_its_own() {
    let Some(mut server) = redis() else { return };
    let pool = ConnectionPool::builder()
        .size(4)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(server.manager())
        .unwrap();
    pool.wait_ready(LONG).unwrap();
    server.kill().unwrap();
    server.restart().unwrap();
    // Without retry each dead connection fails one request, at most.
    let failures = common::burst(&pool, 8, 200, ping);
    eprintln!("redis restart, no retry: {failures} failures");
    assert!(failures <= 4, "{failures}");
    pool.wait_ready(LONG).unwrap();
    let failures = common::burst(&pool, 8, 200, ping);
    assert_eq!(failures, 0);
}
