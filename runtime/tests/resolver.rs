//! Name resolution runs on dedicated OS threads, never on a green-thread
//! worker. This binary runs the runtime with ONE worker thread, so a resolver
//! that blocked a worker would stop every other green thread and the tickers
//! below would stall.

mod common;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{closed_port, echo_server, run_green, Ticker};
use greenpool_runtime::net::{connect, resolve, ConnectOptions};
use greenpool_runtime::Config;

/// Every test calls this first: the first call configures one worker for the
/// whole binary. The `Once` makes the other tests wait until that is done
/// (`Config::apply` marks itself applied before it writes may's settings).
fn one_worker() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = Config::new().workers(1).apply();
    });
    assert_eq!(
        greenpool_runtime::may::config().get_workers(),
        1,
        "this binary must run with one worker to detect a blocked worker"
    );
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A resolver that takes 500 ms (std::thread::sleep, i.e. truly blocking).
fn slow_resolver(
    calls: Arc<AtomicUsize>,
) -> impl Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync {
    move |host: &str, port: u16| {
        assert_eq!(host, "slow.test");
        calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        Ok(vec![loopback(port)])
    }
}

/// While a green thread waits 500 ms for a slow resolver, a ticker green
/// thread on the same (single) worker keeps ticking; then the connection
/// works end to end.
#[test]
fn slow_resolution_does_not_stall_other_green_threads() {
    one_worker();
    let echo = echo_server();
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = ConnectOptions::new().resolver(slow_resolver(calls.clone()));
    let (elapsed, ticks) = run_green(move || {
        let ticker = Ticker::start();
        let ticks = ticker.counter();
        let start = Instant::now();
        let before = ticks.load(Ordering::SeqCst);
        let mut s = connect(&format!("slow.test:{}", echo.port()), &opts).unwrap();
        let during = ticks.load(Ordering::SeqCst) - before;
        let elapsed = start.elapsed();
        s.write_all(b"resolved\n").unwrap();
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"resolved\n");
        ticker.stop();
        (elapsed, during)
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        elapsed >= Duration::from_millis(450),
        "the resolver was not used? {elapsed:?}"
    );
    // ~50 ticks of 10 ms in 500 ms; a blocked worker would give ~0.
    assert!(
        ticks >= 10,
        "only {ticks} ticks during a {elapsed:?} resolution"
    );
}

/// A resolve timeout shorter than the resolver gives `TimedOut` naming the
/// host, close to the timeout, and the ticker keeps going meanwhile.
#[test]
fn resolve_timeout_expires_with_timed_out() {
    one_worker();
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = ConnectOptions::new()
        .resolver(slow_resolver(calls))
        .resolve_timeout(Duration::from_millis(100));
    let (elapsed, e, ticks) = run_green(move || {
        let ticker = Ticker::start();
        let start = Instant::now();
        let e = connect("slow.test:80", &opts).unwrap_err();
        let elapsed = start.elapsed();
        (elapsed, e, ticker.stop())
    });
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("slow.test"), "{e}");
    assert!(e.to_string().contains("resolve"), "{e}");
    assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(450), "{elapsed:?}");
    assert!(ticks >= 3, "ticker starved: {ticks} ticks");
}

/// Resolver errors keep their kind and name the host; a panicking resolver
/// becomes an error; an empty answer is `NotFound`.
#[test]
fn resolver_errors_are_reported_with_the_host() {
    one_worker();
    let failing = ConnectOptions::new().resolver(|host: &str, _port: u16| {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such host {host}"),
        ))
    });
    let e = connect("missing.test:80", &failing).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("resolve missing.test:80"), "{e}");
    // The original error stays reachable through source().
    let inner = std::error::Error::source(e.get_ref().unwrap()).unwrap();
    assert!(inner.to_string().contains("no such host"), "{inner}");

    let panicking = ConnectOptions::new()
        .resolver(|_: &str, _: u16| -> io::Result<Vec<SocketAddr>> { panic!("resolver bug") });
    let e = run_green(move || connect("buggy.test:80", &panicking).unwrap_err());
    assert!(e.to_string().contains("resolver bug"), "{e}");
    assert!(e.to_string().contains("buggy.test"), "{e}");

    let empty = ConnectOptions::new().resolver(|_: &str, _: u16| Ok(Vec::new()));
    let e = resolve("empty.test", 80, &empty).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("empty.test"), "{e}");
}

/// Each resolved address is tried in turn: a refused first address falls
/// through to a working second one; when all fail, the last error is
/// returned with the count of addresses tried.
#[test]
fn every_resolved_address_is_tried_in_turn() {
    one_worker();
    let echo = echo_server();
    let dead = closed_port();
    let two = ConnectOptions::new().resolver(move |_: &str, _: u16| Ok(vec![dead, echo]));
    let mut s = run_green(move || connect("two.test:1", &two).unwrap());
    assert_eq!(s.peer_addr().unwrap(), echo);
    s.write_all(b"x").unwrap();

    let dead2 = closed_port();
    let none = ConnectOptions::new().resolver(move |_: &str, _: u16| Ok(vec![dead, dead2]));
    let e = connect("none.test:1", &none).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("none.test:1"), "{msg}");
    assert!(msg.contains("all 2 resolved addresses failed"), "{msg}");
    assert!(msg.contains(&dead2.to_string()), "{msg}");
}

/// The system resolver (getaddrinfo) also runs off the workers; "localhost"
/// resolves via /etc/hosts to a loopback address.
#[test]
fn system_resolver_resolves_localhost() {
    one_worker();
    let echo = echo_server();
    let addrs = run_green(move || resolve("localhost", echo.port(), &ConnectOptions::new()));
    let addrs = addrs.expect("localhost must resolve");
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    assert!(addrs.iter().all(|a| a.port() == echo.port()), "{addrs:?}");
    // IP literals never reach a resolver.
    let lit = resolve("[::1]", 7, &ConnectOptions::new()).unwrap();
    assert_eq!(lit, vec!["[::1]:7".parse().unwrap()]);
}
