//! What the pool saves on HTTPS: pooled keep-alive TLS connections vs a new
//! TLS connection per request, without and with TLS session resumption.
//!
//! Against a real nginx (HTTPS, TLS 1.3) that the bench starts itself on a
//! free port, or the embedded `TestHttpServer` over HTTPS when nginx is not
//! installed. 64 green threads, each mode for `GREENPOOL_HTTPS_BENCH_SECS`
//! seconds (default 3).
//!
//! ```text
//! cargo bench --bench https
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool::http::HttpManager;
use greenpool::runtime::tls::{TlsConnector, HANDSHAKE_STACK_SIZE};
use greenpool::runtime::{sleep, Builder};
use greenpool::testing::nginx::{Nginx, NginxConfig};
use greenpool::testing::TestHttpServer;
use greenpool::ConnectionPool;

const GREEN_THREADS: usize = 64;
const POOL_SIZE: usize = 16;

/// Run `request` from `GREEN_THREADS` green threads for `secs`; returns
/// (requests/s, errors).
fn drive(secs: f64, request: impl Fn() -> bool + Send + Sync + 'static) -> (f64, u64) {
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let workers: Vec<_> = (0..GREEN_THREADS)
        .map(|_| {
            let (request, stop, ok, errors) = (
                Arc::clone(&request),
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&errors),
            );
            Builder::new()
                .stack_size(HANDSHAKE_STACK_SIZE)
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let c = if request() { &ok } else { &errors };
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .expect("spawn")
        })
        .collect();
    sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a worker panicked");
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    )
}

fn main() {
    greenpool::runtime::Config::new()
        .apply()
        .expect("configured first");
    let secs: f64 = std::env::var("GREENPOOL_HTTPS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);

    // The server: nginx if installed, else the embedded one.
    let config = NginxConfig {
        keepalive_timeout: Duration::from_secs(60),
        keepalive_requests: 1_000_000,
        workers: 1,
    };
    let (nginx, embedded) = match Nginx::start(config) {
        Ok(n) => (Some(n), None),
        Err(e) => {
            eprintln!("nginx unavailable ({e}); using the embedded HTTPS server");
            (
                None,
                Some(TestHttpServer::start_tls().expect("embedded server")),
            )
        }
    };
    let (url, connector, server): (String, TlsConnector, &str) = match (&nginx, &embedded) {
        (Some(n), _) => (n.url(), n.cert().connector().unwrap(), "nginx, 1 worker"),
        (_, Some(s)) => (s.url(), s.connector().unwrap(), "embedded TestHttpServer"),
        _ => unreachable!(),
    };

    println!(
        "HTTPS: GET /hello, {GREEN_THREADS} green threads, {secs} s per row, server: {server}"
    );
    println!();
    println!("| mode | requests/s | errors |");
    println!("|---|---|---|");

    let manager = HttpManager::new(&url).unwrap().tls(connector.clone());
    let pool = ConnectionPool::builder()
        .size(POOL_SIZE)
        .build(manager)
        .expect("pool");
    pool.wait_ready(Duration::from_secs(10))
        .expect("pool ready");
    let p = pool.clone();
    let (pooled, e1) = drive(secs, move || {
        p.with(|c| c.get("/hello")).is_ok_and(|r| r.status() == 200)
    });
    println!("| pooled keep-alive ({POOL_SIZE} connections) | {pooled:.0} | {e1} |");
    pool.close();

    for (label, resumption) in [
        ("new TLS connection per request, full handshake", false),
        ("new TLS connection per request, session resumption", true),
    ] {
        let m = HttpManager::new(&url)
            .unwrap()
            .tls(connector.clone().resumption(resumption));
        let resumed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&resumed);
        let (rate, errors) = drive(secs, move || {
            m.connect()
                .and_then(|mut c| {
                    if c.tls_resumed() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    c.get("/hello")
                })
                .is_ok_and(|r| r.status() == 200)
        });
        println!(
            "| {label} | {rate:.0} ({:.0}x slower; {} handshakes resumed) | {errors} |",
            pooled / rate.max(1.0),
            resumed.load(Ordering::Relaxed)
        );
    }
}
