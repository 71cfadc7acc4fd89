//! A bounded fault soak: 500 green threads send requests through `retry` over
//! a pool of 16, to the embedded backend behind a fault proxy that at random
//! resets, stalls (longer than the request timeout), idle-closes and refuses
//! connections. Every request must succeed or report its error exactly once,
//! never get another request's reply, and the pool must never hold more than
//! 16 connections; at the end nothing leaks.
//!
//! Duration: `GREENPOOL_SOAK_SECS` (default 20). One test in this binary: it
//! counts the process's file descriptors.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool::runtime::{sleep, spawn};
use greenpool::testing::{fd_count, FaultProxy, LineManager, TestServer};
use greenpool::{ConnectionPool, Retry};

const SIZE: usize = 16;
const WORKERS: usize = 500;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    wrong_reply: AtomicU64,
    attempts: AtomicU64,
}

/// A small xorshift for choosing faults; seeded from the clock and printed,
/// so a failing run can be told apart.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn soak_under_random_faults_loses_no_request_and_leaks_nothing() {
    let secs: u64 = std::env::var("GREENPOOL_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    drop(TestServer::start().unwrap()); // start the runtime before the baseline
    let base_fds = fd_count();

    let server = TestServer::start().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let pool = ConnectionPool::builder()
        .name("soak")
        .size(SIZE)
        .checkout_timeout(Duration::from_secs(1))
        .keepalive(Duration::from_millis(200))
        .health_check_timeout(REQUEST_TIMEOUT)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .build(LineManager::new(proxy.addr()).timeout(REQUEST_TIMEOUT))
        .unwrap();
    pool.wait_ready(Duration::from_secs(10)).unwrap();

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(0));
    let policy = Retry::new()
        .retry_pool_timeouts(true)
        .name("soak request")
        .max_failures(8)
        .interval(Duration::from_millis(10))
        .backoff(2.0, Duration::from_millis(400));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (pool, counts, stop, next_id, policy) = (
                pool.clone(),
                counts.clone(),
                stop.clone(),
                next_id.clone(),
                policy.clone(),
            );
            spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    let out = policy.run(|| pool.with(|c| c.request(&format!("ECHO {id}"))));
                    counts
                        .attempts
                        .fetch_add(u64::from(out.attempts), Ordering::Relaxed);
                    let outcome: io::Result<String> = out.result;
                    match outcome {
                        Ok(reply) if reply == id.to_string() => &counts.ok,
                        Ok(_) => &counts.wrong_reply,
                        Err(_) => &counts.failed,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // The pool's own count of sockets, sampled while the faults run.
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (pool, stop, peak) = (pool.clone(), stop.clone(), peak.clone());
        spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = pool.state();
                peak.fetch_max(s.open + s.connecting, Ordering::Relaxed);
                sleep(Duration::from_millis(5));
            }
        })
    };

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut faults = [0u32; 5];
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        sleep(Duration::from_millis(100 + rng.next(300)));
        let kind = rng.next(5) as usize;
        faults[kind] += 1;
        match kind {
            0 => {
                proxy.reset_all();
            }
            1 => {
                proxy.set_stall(true);
                sleep(REQUEST_TIMEOUT * 2);
                proxy.set_stall(false);
            }
            2 => {
                proxy.set_idle_close(Some(Duration::from_millis(50)));
                sleep(Duration::from_millis(300));
                proxy.set_idle_close(None);
            }
            3 => {
                proxy.set_refuse(true);
                sleep(Duration::from_millis(200));
                proxy.set_refuse(false);
            }
            _ => {
                proxy.stop();
                sleep(Duration::from_millis(200));
                proxy.restart().unwrap();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    sampler.join().unwrap();

    let c = &counts;
    let (sent, ok, failed, wrong) = (
        c.sent.load(Ordering::Relaxed),
        c.ok.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.wrong_reply.load(Ordering::Relaxed),
    );
    let s = pool.state();
    eprintln!(
        "soak {secs}s seed {seed:#x} on {} workers: sent {sent}, succeeded {ok}, failed after retries {failed}, \
         wrong replies {wrong}, attempts {}, faults [reset, stall, idle-close, refuse, restart] = \
         {faults:?}, pool peak {} of {SIZE}, proxy peak {}, created {}, discarded {:?}",
        greenpool::runtime::may::config().get_workers(),
        c.attempts.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed),
        proxy.peak_open(),
        s.counters.created,
        s.counters.discarded
    );
    assert_eq!(sent, ok + failed + wrong, "a request was lost");
    assert_eq!(wrong, 0, "a request got another request's reply");
    assert!(ok > 0);
    assert!(peak.load(Ordering::Relaxed) <= SIZE);
    assert!(
        s.counters.discarded.total() > 0,
        "the faults really happened"
    );

    pool.close();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.state().background_tasks > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5));
    }
    assert_eq!(
        pool.state().background_tasks,
        0,
        "a green thread outlived the pool"
    );
    drop(pool);
    assert!(proxy.wait_open(0, Duration::from_secs(10)));
    drop(proxy);
    drop(server);
    if let Some(base) = base_fds {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fd_count().unwrap_or(0) > base && Instant::now() < deadline {
            sleep(Duration::from_millis(5));
        }
        assert!(fd_count().unwrap() <= base, "descriptors leaked");
    }
}
