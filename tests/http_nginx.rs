//! greenpool::http against a real nginx (HTTPS, TLS 1.3, self-signed
//! certificate, `keepalive_timeout 2s`, `keepalive_requests 20`), started by
//! each test on a free port. Skipped, loudly, where nginx is not installed
//! (`apt-get install nginx`).
//!
//! Run with `--nocapture` to see each scenario's counts.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{burst, under_load, wait_until};
use greenpool::http::{HttpError, HttpManager};
use greenpool::testing::nginx::{Nginx, NginxConfig};
use greenpool::{retry, ConnectionPool, ErrorSet, Retry};

fn start() -> Option<Nginx> {
    let config = NginxConfig {
        keepalive_timeout: Duration::from_secs(2),
        keepalive_requests: 20,
        workers: 1,
    };
    match Nginx::start(config) {
        Ok(n) => Some(n),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("cannot start nginx: {e}"),
    }
}

fn pool(nginx: &Nginx, size: usize) -> ConnectionPool<HttpManager> {
    let m = HttpManager::new(&nginx.url())
        .unwrap()
        .tls(nginx.cert().connector().unwrap());
    let pool = ConnectionPool::builder().size(size).build(m).unwrap();
    pool.wait_ready(Duration::from_secs(10)).unwrap();
    pool
}

fn hello(p: &ConnectionPool<HttpManager>) -> Result<(), HttpError> {
    let r = p.with(|c| c.get("/hello"))?;
    if r.status() == 200 && r.body() == b"hello" {
        Ok(())
    } else {
        Err(HttpError::Protocol(format!("unexpected {r:?}")))
    }
}

#[test]
fn idle_past_the_keepalive_timeout_then_a_burst_has_no_failures_with_defaults() {
    let Some(nginx) = start() else { return };
    let pool = pool(&nginx, 8);
    {
        let mut c = pool.get().unwrap();
        c.get("/hello").unwrap();
        assert_eq!(c.server_keep_alive(), Some(Duration::from_secs(2)));
    }
    assert_eq!(burst(&pool, 64, 640, hello), 0);
    // The scenario is the passage of time: every connection idles past
    // nginx's 2 s, and nginx closes them all.
    greenpool::runtime::sleep(Duration::from_millis(3000));
    let failures = burst(&pool, 64, 6400, hello);
    let s = pool.state();
    eprintln!(
        "nginx idle-then-burst: 6400 requests, {failures} failures; {} connections opened, \
         {} discarded",
        s.counters.created,
        s.counters.discarded.total()
    );
    assert_eq!(failures, 0);
}

#[test]
fn connection_close_responses_have_no_failures() {
    let Some(nginx) = start() else { return };
    let pool = pool(&nginx, 4);
    let failures = burst(&pool, 16, 800, |p| {
        let r = p.with(|c| c.get("/close"))?;
        assert_eq!(r.headers()["connection"], "close");
        Ok::<(), HttpError>(())
    });
    eprintln!("nginx Connection: close: 800 requests, {failures} failures");
    assert_eq!(failures, 0);
    // nginx's keepalive_requests 20 closes the others too: still no failure.
    assert_eq!(burst(&pool, 16, 1600, hello), 0);
}

#[test]
fn reload_under_load_has_no_failures_with_retry() {
    let Some(nginx) = start() else { return };
    let pool = pool(&nginx, 8);
    let done = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&done);
    let (ok, failed) = under_load(
        &pool,
        64,
        move |p| {
            let r = retry(|| hello(p));
            counter.fetch_add(1, Ordering::Relaxed);
            r
        },
        || {
            for _ in 0..3 {
                let before = done.load(Ordering::Relaxed);
                nginx.reload().unwrap();
                // Wait for traffic to flow after each reload.
                assert!(wait_until(Duration::from_secs(10), || {
                    done.load(Ordering::Relaxed) > before + 2000
                }));
            }
        },
    );
    eprintln!("nginx reload x3 under load: {ok} requests, {failed} failures");
    assert_eq!(failed, 0);
    assert!(ok > 6000);
}

#[test]
fn restart_under_load_has_no_failures_with_retry() {
    let Some(mut nginx) = start() else { return };
    let pool = pool(&nginx, 8);
    let done = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&done);
    let policy = Retry::new()
        .on(ErrorSet::io())
        .max_failures(100)
        .interval(Duration::from_millis(20));
    let (ok, failed) = under_load(
        &pool,
        64,
        move |p| {
            let r = policy.call(|| hello(p));
            counter.fetch_add(1, Ordering::Relaxed);
            r
        },
        || {
            for _ in 0..2 {
                let before = done.load(Ordering::Relaxed);
                assert!(wait_until(Duration::from_secs(10), || {
                    done.load(Ordering::Relaxed) > before + 1000
                }));
                nginx.restart().unwrap();
            }
            let before = done.load(Ordering::Relaxed);
            assert!(wait_until(Duration::from_secs(10), || {
                done.load(Ordering::Relaxed) > before + 1000
            }));
        },
    );
    eprintln!("nginx restart x2 under load: {ok} requests, {failed} failures");
    assert_eq!(failed, 0);
}
