//! greenpool::http against the embedded TestHttpServer: bodies (length,
//! chunked, to close), Connection: close, limits, timeouts, a reset in the
//! middle of a response, the server's keep-alive timeout, HTTPS.

mod common;

use std::time::{Duration, Instant};

use common::{burst, wait_until};
use greenpool::http::{HttpError, HttpManager};
use greenpool::testing::TestHttpServer;
use greenpool::{retry, ConnectionPool};

fn pool(m: HttpManager, size: usize) -> ConnectionPool<HttpManager> {
    let pool = ConnectionPool::builder().size(size).build(m).unwrap();
    pool.wait_ready(Duration::from_secs(5)).unwrap();
    pool
}

#[test]
fn bodies_by_length_chunked_and_close() {
    let server = TestHttpServer::start().unwrap();
    let mut c = HttpManager::new(&server.url()).unwrap().connect().unwrap();
    let r = c.get("/hello").unwrap();
    assert_eq!(
        (r.status().as_u16(), r.body().as_slice()),
        (200, &b"hello"[..])
    );
    let r = c.get("/chunked?n=12").unwrap();
    assert_eq!(r.body(), b"01234567891011");
    let r = c.get("/bytes?n=100000").unwrap();
    assert_eq!(r.body().len(), 100_000);
    let r = c
        .send(
            greenpool::http::Request::post("/echo")
                .body(b"payload".to_vec())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(r.body(), b"payload");
    let r = c
        .send(
            greenpool::http::Request::head("/hello")
                .body(Vec::<u8>::new())
                .unwrap(),
        )
        .unwrap();
    assert_eq!(r.headers()["content-length"], "5");
    assert!(r.body().is_empty());
    assert_eq!(c.get("/nope").unwrap().status(), 404);
    // All of that on one connection.
    assert_eq!(server.accepted(), 1);
    assert!(c.is_reusable());
    // A body that ends at close: fine, and the connection is done.
    let r = c.get("/eof?n=10").unwrap();
    assert_eq!(r.body(), b"xxxxxxxxxx");
    assert!(!c.is_reusable());
}

#[test]
fn connection_close_is_never_reused_and_costs_no_failure() {
    let server = TestHttpServer::start().unwrap();
    let pool = pool(HttpManager::new(&server.url()).unwrap(), 2);
    let failures = burst(&pool, 10, 200, |p| {
        p.with(|c| {
            let r = c.get("/close")?;
            assert!(!c.is_reusable());
            Ok::<_, HttpError>(r)
        })
        .map(drop)
    });
    assert_eq!(failures, 0);
    // One connection per request (plus the pool's own): none was reused.
    assert!(server.accepted() >= 200, "{}", server.accepted());
    let discarded = pool.state().counters.discarded.broken;
    assert!(discarded >= 200, "{discarded}");
}

#[test]
fn response_size_limits() {
    let server = TestHttpServer::start().unwrap();
    let m = HttpManager::new(&server.url())
        .unwrap()
        .max_response_body(1000)
        .max_response_head(200);
    let mut c = m.connect().unwrap();
    for path in ["/bytes?n=1001", "/chunked?n=1000", "/eof?n=5000"] {
        let e = c.get(path).unwrap_err();
        assert!(
            matches!(e, HttpError::TooLarge { limit: 1000, .. }),
            "{path}: {e}"
        );
        assert!(e.to_string().contains(path), "{e}");
        assert!(!c.is_reusable());
    }
    // Within the limit, on a fresh stream.
    assert_eq!(c.get("/bytes?n=1000").unwrap().body().len(), 1000);
    // The 404's head is 71 bytes.
    let m = HttpManager::new(&server.url())
        .unwrap()
        .max_response_head(64);
    let e = m.connect().unwrap().get("/nope").unwrap_err();
    assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
}

#[test]
fn read_timeouts_fail_the_request_and_the_connection() {
    let server = TestHttpServer::start().unwrap();
    let m = HttpManager::new(&server.url())
        .unwrap()
        .timeout(Some(Duration::from_millis(200)));
    let mut c = m.connect().unwrap();
    let started = Instant::now();
    let e = c.get("/slow?ms=3000").unwrap_err();
    let took = started.elapsed();
    assert!(e.is_timeout(), "{e}");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(!c.is_reusable());
    assert_eq!(c.get("/slow?ms=10").unwrap().body(), b"slow");
}

#[test]
fn a_reset_in_the_middle_of_a_response_is_an_io_error_and_discards() {
    let server = TestHttpServer::start().unwrap();
    let pool = pool(HttpManager::new(&server.url()).unwrap(), 1);
    let e = pool.with(|c| c.get("/reset")).unwrap_err();
    let HttpError::Io { source, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert!(e.to_string().contains("GET"), "{e}");
    assert!(wait_until(Duration::from_secs(5), || pool
        .state()
        .counters
        .discarded
        .total()
        == 1));
    // And the pool carries on with a new connection.
    assert_eq!(pool.with(|c| c.get("/hello")).unwrap().body(), b"hello");
}

#[test]
fn keep_alive_timeout_is_reported_and_an_idle_burst_has_no_failures() {
    let server = TestHttpServer::start().unwrap();
    server.keep_alive(Some(Duration::from_secs(1)));
    let pool = pool(HttpManager::new(&server.url()).unwrap(), 4);
    {
        let mut c = pool.get().unwrap();
        assert_eq!(c.get("/hello").unwrap().status(), 200);
        assert_eq!(c.server_keep_alive(), Some(Duration::from_secs(1)));
    }
    // The server closes every idle connection; the pool learnt its timeout
    // and replaces them; a burst right after sees none of it.
    let accepted = server.accepted();
    assert!(wait_until(Duration::from_secs(10), || server.accepted()
        >= accepted + 4));
    let failures = burst(&pool, 40, 400, |p| p.with(|c| c.get("/hello")).map(drop));
    assert_eq!(failures, 0);
}

#[test]
fn a_keepalive_path_keeps_idle_connections_open_inside_the_servers_timeout() {
    let server = TestHttpServer::start().unwrap();
    server.keep_alive(Some(Duration::from_secs(1)));
    let m = HttpManager::new(&server.url())
        .unwrap()
        .keepalive_path(Some("/hello"));
    let pool = pool(m, 2);
    let requests = server.requests();
    // Two of the server's 1 s idle timeouts pass (a HEAD every half timeout
    // on each of the 2 connections: 8 HEADs); the HEADs keep both open.
    assert!(wait_until(Duration::from_secs(10), || server.requests()
        >= requests + 8));
    assert_eq!(server.accepted(), 2);
    assert_eq!(pool.state().counters.discarded.total(), 0);
}

#[test]
fn no_probe_sends_nothing_before_the_first_request() {
    let server = TestHttpServer::start().unwrap();
    let m = HttpManager::new(&server.url())
        .unwrap()
        .idle_timeout_probe(None);
    let pool = pool(m, 2);
    assert!(wait_until(Duration::from_secs(5), || server.open() == 2));
    assert_eq!(server.requests(), 0);
    drop(pool);
}

#[test]
fn an_idle_connection_the_server_closed_is_reopened_in_place() {
    let server = TestHttpServer::start().unwrap();
    let mut c = HttpManager::new(&server.url()).unwrap().connect().unwrap();
    assert_eq!(c.get("/id").unwrap().body(), b"1");
    assert_eq!(server.close_all(), 1);
    assert!(wait_until(Duration::from_secs(5), || !c
        .peer_status()
        .is_idle()));
    assert_eq!(c.get("/id").unwrap().body(), b"2");
    assert_eq!(c.reconnects(), 1);
}

#[test]
fn an_idempotent_request_that_loses_the_keep_alive_race_is_sent_again_once() {
    let server = TestHttpServer::start().unwrap();
    let mut c = HttpManager::new(&server.url()).unwrap().connect().unwrap();
    // The server answers, then closes the connection as the next request
    // arrives: the request is sent again, once, on a new connection.
    assert_eq!(c.get("/race").unwrap().body(), b"race");
    assert!(c.peer_status().is_idle());
    assert_eq!(c.get("/id").unwrap().body(), b"2");
    assert_eq!(c.reconnects(), 1);
    // A POST is not idempotent: it may have been acted on, so it fails.
    assert_eq!(c.get("/race").unwrap().body(), b"race");
    let post = greenpool::http::Request::post("/echo")
        .body(b"x".to_vec())
        .unwrap();
    let e = c.send(post).unwrap_err();
    // EOF, or a reset when the server closed with the body unread.
    let HttpError::Io { source, .. } = &e else {
        panic!("{e}")
    };
    assert!(
        matches!(
            source.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
    assert!(!c.is_reusable());
    // And the next request opens a new connection.
    assert_eq!(c.get("/id").unwrap().body(), b"3");
}

#[test]
fn https_through_the_pool() {
    let server = TestHttpServer::start_tls().unwrap();
    let m = HttpManager::new(&server.url())
        .unwrap()
        .tls(server.connector().unwrap());
    let pool = pool(m, 2);
    let v = retry(|| pool.with(|c| c.get("/chunked?n=3"))).unwrap();
    assert_eq!(v.body(), b"012");
    let failures = burst(&pool, 20, 200, |p| p.with(|c| c.get("/hello")).map(drop));
    assert_eq!(failures, 0);
    assert_eq!(server.accepted(), 2);
    // A client that does not trust the certificate says why.
    let e = HttpManager::new(&server.url())
        .unwrap()
        .tls(
            greenpool::testing::tls::SelfSigned::new(&["localhost"])
                .unwrap()
                .connector()
                .unwrap(),
        )
        .connect()
        .unwrap_err();
    assert!(e.to_string().contains("certificate was rejected"), "{e}");
}
