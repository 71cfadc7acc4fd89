//! Tests of the fault-injection kit (`greenpool::testing`) against real
//! sockets. Every wait has a deadline; nothing sleeps and hopes.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use greenpool::runtime::net::TcpStream;
use greenpool::runtime::{sleep, spawn};
use greenpool::testing::{fd_count, FaultProxy, LineClient, TestServer};

/// Generous bound for anything that should happen "at once"; only reached
/// when a test fails.
const WAIT: Duration = Duration::from_secs(5);
const IO: Duration = Duration::from_secs(5);

/// Tests run in parallel, but the file-descriptor count is process-wide:
/// the fd-leak test takes this lock exclusively, every other test shares it.
static FD_LOCK: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    FD_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    FD_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

fn client(addr: SocketAddr) -> LineClient {
    LineClient::connect(addr, IO).expect("connect")
}

fn assert_reset(r: std::io::Result<String>) {
    match r {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionReset,
            "expected a reset, got {e}"
        ),
        Ok(reply) => panic!("expected a reset, got reply {reply:?}"),
    }
}

fn assert_eof(r: std::io::Result<String>) {
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "expected EOF, got {e}"),
        Ok(reply) => panic!("expected EOF, got reply {reply:?}"),
    }
}

/// A connection accepted and reset at once: `connect` succeeds (or, if the
/// reset arrives before the handshake is reported, fails with a reset) and
/// the first request fails with a reset.
fn assert_accept_then_reset(addr: SocketAddr) {
    match LineClient::connect(addr, IO) {
        Ok(mut c) => assert_reset(c.request("PING")),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "got {e}"),
    }
}

fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, IO) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "got {e}"),
        Ok(_) => panic!("connect to {addr} succeeded; expected ConnectionRefused"),
    }
}

// ----- TestServer -----

#[test]
fn server_speaks_the_protocol() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    assert!(server.addr().ip().is_loopback());
    let mut a = client(server.addr());
    let mut b = client(server.addr());
    assert_eq!(a.request("PING").unwrap(), "PONG");
    assert_eq!(a.request("ping").unwrap(), "PONG");
    assert_eq!(a.id().unwrap(), 1);
    assert_eq!(b.id().unwrap(), 2);
    assert_eq!(a.request("ECHO hello  world").unwrap(), "hello  world");
    assert_eq!(a.request("ECHO").unwrap(), "");
    assert_eq!(a.request("SLEEP 20").unwrap(), "OK");
    assert_eq!(a.request("SLEEP soon").unwrap(), "ERR invalid milliseconds");
    assert_eq!(a.request("GET /").unwrap(), "ERR unknown command");
    a.ping().unwrap();
    // Pipelined requests are answered in order.
    b.send("ECHO 1").unwrap();
    b.send("ECHO 2").unwrap();
    assert_eq!(b.read_line().unwrap(), "1");
    assert_eq!(b.read_line().unwrap(), "2");
    assert!(matches!(
        b.request("ECHO a\nPING").unwrap_err().kind(),
        ErrorKind::InvalidInput
    ));
    assert_eq!(b.request("QUIT").unwrap(), "BYE");
    assert_eof(b.read_line());
    assert!(server.wait_open(1, WAIT));
    assert_eq!(server.accepted(), 2);
    assert_eq!(server.requests(), 13);
}

#[test]
fn server_counters() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    assert_eq!(
        (server.accepted(), server.open(), server.peak_open()),
        (0, 0, 0)
    );
    let mut clients: Vec<_> = (0..3).map(|_| client(server.addr())).collect();
    assert!(server.wait_open(3, WAIT));
    for c in &mut clients {
        c.ping().unwrap();
    }
    assert_eq!(server.requests(), 3);
    drop(clients.pop());
    assert!(server.wait_open(2, WAIT));
    let _d = client(server.addr());
    assert!(server.wait_open(3, WAIT));
    drop(clients);
    assert!(server.wait_open(1, WAIT));
    assert_eq!(server.accepted(), 4);
    assert_eq!(server.peak_open(), 3);
    assert_eq!(server.refused(), 0);
}

#[test]
fn server_reset_all_resets_clients() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let mut a = client(server.addr());
    let mut b = client(server.addr());
    a.ping().unwrap();
    b.ping().unwrap();
    assert_eq!(server.reset_all(), 2);
    assert_eq!(
        server.open(),
        0,
        "reset_all returns once the sockets are closed"
    );
    assert_reset(a.request("PING"));
    // A client that only reads sees the reset too.
    match b.read_line() {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "got {e}"),
        Ok(r) => panic!("got {r:?}"),
    }
    // The server still serves new connections.
    let mut c = client(server.addr());
    assert_eq!(c.id().unwrap(), 3);
    assert_eq!(server.reset_all(), 1);
    assert_eq!(server.reset_all(), 0);
}

#[test]
fn server_close_all_sends_eof() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let mut a = client(server.addr());
    a.ping().unwrap();
    assert_eq!(server.close_all(), 1);
    assert_eof(a.read_line());
}

#[test]
fn server_idle_close_within_bound() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let limit = Duration::from_millis(200);
    // Connections open before the setting are covered too.
    let mut early = client(server.addr());
    early.ping().unwrap();
    server.set_idle_close(Some(limit));
    let start = Instant::now();
    let mut idle = client(server.addr());
    // The client never sends anything; it only waits for the close.
    assert_eof(idle.read_line());
    let took = start.elapsed();
    assert!(
        took >= limit - Duration::from_millis(20),
        "closed too early: {took:?}"
    );
    assert!(
        took <= limit + Duration::from_millis(300),
        "closed too late: {took:?}"
    );
    assert_eof(early.read_line());
    assert!(server.wait_open(0, WAIT));

    // An active connection stays open; a connection busy in SLEEP is not idle.
    let mut busy = client(server.addr());
    let t0 = Instant::now();
    while t0.elapsed() < limit * 2 {
        busy.ping().unwrap();
        sleep(Duration::from_millis(40));
    }
    assert_eq!(busy.request("SLEEP 400").unwrap(), "OK");
    busy.ping().unwrap();

    // Turned off: nothing is closed any more.
    server.set_idle_close(None);
    let mut quiet = client(server.addr());
    quiet.set_timeout(limit * 2).unwrap();
    match quiet.read_line() {
        Err(e) => assert_eq!(e.kind(), ErrorKind::TimedOut, "got {e}"),
        Ok(r) => panic!("got {r:?}"),
    }
    assert_eq!(server.open(), 2);
}

#[test]
fn server_stop_refuses_and_restart_reuses_the_port() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let addr = server.addr();
    let mut a = client(addr);
    a.ping().unwrap();
    assert_eq!(server.stop(), 1);
    assert!(!server.is_listening());
    assert_eq!(server.open(), 0);
    assert_refused(addr);
    assert_reset(a.request("PING"));
    assert_eq!(server.stop(), 0, "stop twice is harmless");

    server.restart().unwrap();
    assert!(server.is_listening());
    assert_eq!(server.addr(), addr);
    let mut b = client(addr);
    assert_eq!(b.id().unwrap(), 2);
    server.restart().unwrap(); // already listening: nothing happens
    b.ping().unwrap();

    // Stop and restart again, from a green thread this time.
    let s = server.clone();
    spawn(move || {
        s.stop();
        assert_refused(s.addr());
        s.restart().unwrap();
    })
    .join()
    .unwrap();
    client(addr).ping().unwrap();
}

#[test]
fn server_stall_times_out_then_answers_late() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let mut c = client(server.addr());
    c.ping().unwrap();
    server.set_stall(true);
    assert!(server.is_stalled());
    c.set_timeout(Duration::from_millis(200)).unwrap();
    let start = Instant::now();
    let err = c.request("ECHO late").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "got {err}");
    assert!(start.elapsed() >= Duration::from_millis(190));
    // The server did read the request: it just does not answer.
    assert!(server.wait_requests(2, WAIT));
    // New connections are accepted but not answered either.
    let mut d = client(server.addr());
    d.set_timeout(Duration::from_millis(50)).unwrap();
    assert_eq!(d.request("PING").unwrap_err().kind(), ErrorKind::TimedOut);
    server.set_stall(false);
    // The held request is answered now: a client that reuses a timed-out
    // connection reads a stale reply.
    c.set_timeout(IO).unwrap();
    assert_eq!(c.read_line().unwrap(), "late");
    assert_eq!(c.request("PING").unwrap(), "PONG");
}

#[test]
fn server_refuse_resets_new_connections() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let mut old = client(server.addr());
    // `connect` returns once the kernel completed the handshake, possibly
    // before the server accepted: wait, or `old` would be refused too.
    assert!(server.wait_accepted(1, WAIT));
    server.set_refuse(true);
    assert_accept_then_reset(server.addr());
    assert!(server.wait_for(|s| s.refused() == 1, WAIT), "{server:?}");
    assert_eq!(server.accepted(), 2);
    old.ping().unwrap(); // existing connections are not affected
    server.set_refuse(false);
    let mut d = client(server.addr());
    assert_eq!(d.id().unwrap(), 3);
    assert_eq!(server.open(), 2);
}

#[test]
fn server_used_from_green_threads() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let addr = server.addr();
            spawn(move || {
                let mut c = LineClient::connect(addr, IO).unwrap();
                for j in 0..10 {
                    let msg = format!("ECHO {i}-{j}");
                    assert_eq!(c.request(&msg).unwrap(), msg[5..]);
                }
                c.request("SLEEP 30").unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), "OK");
    }
    assert_eq!(server.requests(), 220);
    assert_eq!(server.accepted(), 20);
    assert!(server.peak_open() >= 2);
    assert!(server.wait_open(0, WAIT));
}

#[test]
fn server_shutdown_is_final() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let addr = server.addr();
    let mut c = client(addr);
    c.ping().unwrap();
    server.shutdown();
    assert_eof(c.read_line());
    assert_refused(addr);
    assert_eq!(server.open(), 0);
    assert!(server.restart().is_err());
    server.shutdown(); // idempotent
}

#[test]
fn wait_for_gives_up_at_the_deadline() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let start = Instant::now();
    assert!(!server.wait_open(1, Duration::from_millis(100)));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(server.wait_for(|_| true, Duration::ZERO));
    assert!(!server.wait_for(|_| false, Duration::ZERO));
}

// ----- FaultProxy -----

#[test]
fn proxy_forwards_both_ways_and_passes_close_on() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    assert_eq!(proxy.upstream(), server.addr());
    let mut a = client(proxy.addr());
    assert_eq!(a.id().unwrap(), 1);
    let mut b = client(proxy.addr());
    assert_eq!(b.id().unwrap(), 2);
    let big = "x".repeat(60_000);
    let reply = a.request(&format!("ECHO {big}")).unwrap();
    assert!(
        reply == big,
        "a {} byte echo came back as {} bytes",
        big.len(),
        reply.len()
    );
    assert!(proxy.wait_open(2, WAIT));
    assert_eq!(server.open(), 2);
    // The client closes: the FIN travels through, the server closes, and
    // the proxy's pair is gone.
    drop(a);
    assert!(server.wait_open(1, WAIT));
    assert!(proxy.wait_open(1, WAIT));
    // The server closes: the client reads EOF.
    assert_eq!(b.request("QUIT").unwrap(), "BYE");
    assert_eof(b.read_line());
    drop(b);
    assert!(proxy.wait_open(0, WAIT));
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(proxy.peak_open(), 2);
}

#[test]
fn proxy_reset_all_resets_client_and_closes_upstream() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let mut c = client(proxy.addr());
    c.ping().unwrap();
    assert_eq!(proxy.reset_all(), 1);
    assert_eq!(proxy.open(), 0);
    assert_reset(c.request("PING"));
    assert!(server.wait_open(0, WAIT), "upstream connection closed");
    client(proxy.addr()).ping().unwrap();
}

#[test]
fn proxy_passes_a_server_reset_on() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let mut c = client(proxy.addr());
    c.ping().unwrap();
    assert_eq!(server.reset_all(), 1);
    assert_reset(c.read_line());
    assert!(proxy.wait_open(0, WAIT));
}

#[test]
fn proxy_refuse_resets_new_connections() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    proxy.set_refuse(true);
    assert_accept_then_reset(proxy.addr());
    assert!(proxy.wait_for(|p| p.refused() == 1, WAIT));
    assert_eq!(server.accepted(), 0, "upstream never contacted");
    proxy.set_refuse(false);
    client(proxy.addr()).ping().unwrap();
}

#[test]
fn proxy_stall_holds_data() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let mut c = client(proxy.addr());
    c.ping().unwrap();
    proxy.set_stall(true);
    c.set_timeout(Duration::from_millis(200)).unwrap();
    assert_eq!(
        c.request("ECHO held").unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert_eq!(server.requests(), 1, "the request did not reach the server");
    proxy.set_stall(false);
    c.set_timeout(IO).unwrap();
    assert_eq!(c.read_line().unwrap(), "held");
    assert_eq!(server.requests(), 2);
}

#[test]
fn proxy_idle_close() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let limit = Duration::from_millis(150);
    proxy.set_idle_close(Some(limit));
    let start = Instant::now();
    let mut c = client(proxy.addr());
    c.ping().unwrap();
    assert_eof(c.read_line());
    let took = start.elapsed();
    assert!(took >= limit - Duration::from_millis(20), "{took:?}");
    assert!(took <= limit + Duration::from_millis(300), "{took:?}");
    assert!(server.wait_open(0, WAIT), "upstream closed as well");
    assert!(proxy.wait_open(0, WAIT));
}

#[test]
fn proxy_stop_and_restart() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let addr = proxy.addr();
    let mut c = client(addr);
    c.ping().unwrap();
    assert_eq!(proxy.stop(), 1);
    assert_refused(addr);
    assert_reset(c.request("PING"));
    proxy.restart().unwrap();
    assert_eq!(proxy.addr(), addr);
    client(addr).ping().unwrap();
}

#[test]
fn proxy_resets_clients_when_upstream_is_down() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    server.stop();
    assert_accept_then_reset(proxy.addr());
    assert!(proxy.wait_open(0, WAIT));
    server.restart().unwrap();
    client(proxy.addr()).ping().unwrap();
}

// ----- cleanup -----

#[test]
fn dropping_closes_connections_and_leaks_no_fds() {
    let _g = exclusive();
    // Warm the runtime up (its event loops and timer open descriptors once).
    {
        let s = TestServer::start().unwrap();
        let p = FaultProxy::start(s.addr()).unwrap();
        client(p.addr()).ping().unwrap();
    }
    let Some(before) = fd_count() else {
        return; // not Linux: nothing to compare
    };

    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let mut direct: Vec<_> = (0..3).map(|_| client(server.addr())).collect();
    let mut proxied: Vec<_> = (0..3).map(|_| client(proxy.addr())).collect();
    for c in direct.iter_mut().chain(proxied.iter_mut()) {
        c.ping().unwrap();
    }
    server.set_idle_close(Some(Duration::from_secs(60)));
    proxy.set_stall(true);
    assert!(server.wait_open(6, WAIT));
    assert!(fd_count().unwrap() > before);

    let server_addr = server.addr();
    let proxy_addr = proxy.addr();
    drop(server);
    for c in &mut direct {
        assert_eof(c.read_line());
    }
    drop(proxy);
    for c in &mut proxied {
        assert_eof(c.read_line());
    }
    assert_refused(server_addr);
    assert_refused(proxy_addr);
    drop(direct);
    drop(proxied);

    let deadline = Instant::now() + WAIT;
    loop {
        let now = fd_count().unwrap();
        if now <= before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fd leak: {before} before, {now} after"
        );
        sleep(Duration::from_millis(5));
    }
}

#[test]
fn handles_are_shared_and_the_last_one_stops() {
    fn send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    send_sync::<TestServer>();
    send_sync::<FaultProxy>();

    let _g = shared();
    let server = TestServer::start().unwrap();
    let addr = server.addr();
    let other = server.clone();
    drop(server);
    client(addr).ping().unwrap(); // a clone keeps it running
    let in_thread = other.clone();
    std::thread::spawn(move || drop(in_thread)).join().unwrap();
    client(addr).ping().unwrap();
    assert!(format!("{other:?}").contains("accepted: 2"));
    drop(other);
    assert_refused(addr);
}

#[test]
fn reset_while_stalled_and_concurrent_shutdown() {
    let _g = shared();
    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let mut c = client(proxy.addr());
    c.ping().unwrap();
    server.set_stall(true);
    proxy.set_stall(true);
    c.send("PING").unwrap();
    // Green threads waiting on the stall are cancelled like any other.
    assert_eq!(proxy.reset_all(), 1);
    assert_reset(c.read_line());
    let mut d = client(server.addr());
    d.send("PING").unwrap();
    assert!(server.wait_requests(2, WAIT)); // read, held by the stall
    let s2 = server.clone();
    let t = std::thread::spawn(move || s2.shutdown());
    server.shutdown();
    t.join().unwrap();
    assert_eq!(
        server.open(),
        0,
        "both shutdowns return once everything is closed"
    );
    assert_eof(d.read_line());
}
