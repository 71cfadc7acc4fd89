//! `net::serve` (gevent's StreamServer): the bound on concurrent connections,
//! graceful stop, cancellation of handlers that outlive the grace period,
//! panicking handlers, socket options.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::HANG_LIMIT;
use greenpool_runtime::net::{
    connect_addr, serve, Accepted, ConnectOptions, ServeOptions, Server, TcpListener, TcpStream,
};

fn listener() -> TcpListener {
    greenpool_runtime::init();
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn client(server: &Server) -> TcpStream {
    connect_addr(server.local_addr(), &ConnectOptions::new()).unwrap()
}

/// Wait until `cond` holds, at most `HANG_LIMIT`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG_LIMIT, "timed out waiting for {what}");
        greenpool_runtime::sleep(Duration::from_millis(1));
    }
}

/// Echo one line-less exchange: write `msg`, read as many bytes back.
fn echo(c: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    c.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    c.read_exact(&mut buf).unwrap();
    buf
}

fn echo_handler(mut s: TcpStream, _: Accepted) {
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        if s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// With `max_connections(2)`, a third client is not accepted (it waits in the
/// backlog) until one of the first two leaves; then it is served.
#[test]
fn the_bound_holds_back_a_third_connection_until_one_ends() {
    let server = serve(
        listener(),
        ServeOptions::new().max_connections(2),
        echo_handler,
    )
    .unwrap();
    let mut a = client(&server);
    let mut b = client(&server);
    assert_eq!(echo(&mut a, b"a"), b"a");
    assert_eq!(echo(&mut b, b"b"), b"b");
    assert_eq!(server.active(), 2);

    let mut c = client(&server); // connected by the kernel, not accepted
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c.write_all(b"c").unwrap();
    let mut one = [0u8; 1];
    let e = c.read(&mut one).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert_eq!(server.accepted(), 2);

    drop(a);
    c.set_read_timeout(Some(HANG_LIMIT)).unwrap();
    c.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"c");
    assert_eq!(server.accepted(), 3);
    drop((b, c));
    assert_eq!(server.stop(HANG_LIMIT), 0);
}

/// `stop` closes the listener at once and waits for a handler that is still
/// working to finish by itself.
#[test]
fn stop_refuses_new_connections_and_waits_for_running_handlers() {
    let release = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (rel, fin) = (Arc::clone(&release), Arc::clone(&finished));
    let server = serve(listener(), ServeOptions::new(), move |mut s, _| {
        let _ = s.write_all(b"hi");
        while !rel.load(Ordering::Acquire) {
            greenpool_runtime::sleep(Duration::from_millis(1));
        }
        fin.store(true, Ordering::Release);
    })
    .unwrap();
    let addr = server.local_addr();
    let mut c = client(&server);
    let mut hi = [0u8; 2];
    c.read_exact(&mut hi).unwrap();

    let stopper = std::thread::spawn(move || server.stop(HANG_LIMIT));
    // The listener closes while the handler still runs.
    wait_for("the listener to close", || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
    });
    assert!(!finished.load(Ordering::Acquire));
    release.store(true, Ordering::Release);
    assert_eq!(
        stopper.join().unwrap(),
        0,
        "the handler ended within the grace"
    );
    assert!(finished.load(Ordering::Acquire));
}

/// A handler still blocked when the grace runs out is cancelled: its stream is
/// closed (the client sees the end of the stream) and `stop` counts it.
#[test]
fn stop_cancels_handlers_that_outlive_the_grace() {
    let server = serve(listener(), ServeOptions::new(), |mut s, _| {
        let _ = s.write_all(b"hi");
        let mut buf = [0u8; 1];
        let _ = s.read(&mut buf); // the client never sends
    })
    .unwrap();
    let mut c = client(&server);
    let mut hi = [0u8; 2];
    c.read_exact(&mut hi).unwrap();
    wait_for("one active handler", || server.active() == 1);
    assert_eq!(server.stop(Duration::from_millis(50)), 1);
    c.set_read_timeout(Some(HANG_LIMIT)).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// A panicking handler ends its own connection only; the slot comes back and
/// the next connection is served.
#[test]
fn a_panicking_handler_costs_only_its_connection() {
    let server = serve(
        listener(),
        ServeOptions::new().max_connections(1),
        |mut s, _| {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            if b[0] == b'!' {
                panic!("handler panics on purpose");
            }
            s.write_all(&b).unwrap();
        },
    )
    .unwrap();
    let mut bad = client(&server);
    bad.write_all(b"!").unwrap();
    let mut rest = Vec::new();
    bad.set_read_timeout(Some(HANG_LIMIT)).unwrap();
    let _ = bad.read_to_end(&mut rest); // closed by the unwinding handler
    wait_for("the slot to come back", || server.active() == 0);
    let mut good = client(&server);
    assert_eq!(echo(&mut good, b"x"), b"x");
    assert_eq!(server.stop(HANG_LIMIT), 0);
}

/// Handlers learn the peer's address and the accept order.
#[test]
fn handlers_learn_the_peer_and_the_accept_order() {
    let server = serve(listener(), ServeOptions::new(), |mut s, a: Accepted| {
        let line = format!("{} {}\n", a.id, a.peer);
        let _ = s.write_all(line.as_bytes());
    })
    .unwrap();
    for want in 1..=3u64 {
        let mut c = client(&server);
        let local = c.local_addr().unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, format!("{want} {local}\n"));
    }
    assert_eq!(server.stop(HANG_LIMIT), 0);
}

/// Accepted streams get TCP_NODELAY by default, and not when asked not to.
#[test]
fn accepted_streams_get_nodelay_unless_told_otherwise() {
    for on in [true, false] {
        let server = serve(listener(), ServeOptions::new().nodelay(on), |mut s, _| {
            let nodelay = s.inner().nodelay().unwrap();
            let _ = s.write_all(&[nodelay as u8]);
        })
        .unwrap();
        let mut c = client(&server);
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b[0] == 1, on);
        assert_eq!(server.stop(HANG_LIMIT), 0);
    }
}

#[test]
fn zero_max_connections_is_a_clear_error() {
    let e = serve(
        listener(),
        ServeOptions::new().max_connections(0),
        echo_handler,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("max_connections"), "{e}");
}

/// Dropping the server without `stop` closes the listener and leaves the
/// handler that is serving a connection running.
#[test]
fn dropping_the_server_stops_accepting_and_detaches_handlers() {
    let server = serve(listener(), ServeOptions::new(), echo_handler).unwrap();
    let addr = server.local_addr();
    let mut c = client(&server);
    assert_eq!(echo(&mut c, b"1"), b"1");
    drop(server);
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    assert_eq!(echo(&mut c, b"2"), b"2", "the running handler goes on");
}
