//! greenpool's main job, with no server to install.
//!
//! Starts the embedded test backend, a pool of 8 connections and 1,000 green
//! threads that send requests through `retry` while the backend misbehaves:
//! it resets every connection, closes connections that sit idle (during a
//! quiet spell in the traffic), and restarts. Prints a status line per second
//! and a summary; exits with status 1 if any request failed.
//!
//! ```text
//! cargo run --release --example quickstart -- --help
//! ```

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use greenpool::runtime::{sleep, spawn};
use greenpool::testing::{LineManager, TestServer};
use greenpool::{ConnectionPool, Retry};

const HELP: &str = "\
quickstart: 1,000 green threads share a pool of 8 connections to a backend that
resets connections, closes idle ones and restarts; every request must succeed.

USAGE: cargo run --release --example quickstart -- [OPTIONS]

OPTIONS:
  --duration SECS     how long to run (default 6, at least 4: the faults need time)
  --concurrency N     green threads sending requests (default 1000)
  --size N            connections in the pool (default 8)
  -h, --help          this text

Set RUST_LOG=info to see the pool's own log lines.";

struct Options {
    duration: Duration,
    concurrency: usize,
    size: usize,
}

fn parse_args(flags: &mut common::Flags) -> Result<Options, String> {
    let mut o = Options {
        duration: Duration::from_secs(6),
        concurrency: 1000,
        size: 8,
    };
    while let Some(a) = flags.next() {
        let mut value = |name: &str| flags.value::<u64>(name);
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--duration" => o.duration = Duration::from_secs(value("--duration")?.max(4)),
            "--concurrency" => o.concurrency = value("--concurrency")?.max(1) as usize,
            "--size" => o.size = value("--size")?.max(1) as usize,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

fn main() -> ExitCode {
    let opts = match common::options("quickstart", HELP, parse_args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    common::init_logging("warn");
    common::start_runtime();

    let server = TestServer::start().expect("start the embedded backend");
    let pool = ConnectionPool::builder()
        .name("quickstart")
        .size(opts.size)
        .checkout_timeout(Duration::from_secs(2))
        .keepalive(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .build(LineManager::new(server.addr()).timeout(Duration::from_secs(1)))
        .expect("valid pool settings");
    pool.wait_ready(Duration::from_secs(5)).expect("pool ready");

    let policy = Retry::new()
        .name("PING")
        .max_failures(10)
        .interval(Duration::from_millis(20))
        .backoff(2.0, Duration::from_millis(500))
        .retry_level(log::Level::Debug);
    let tally = Arc::new(Tally::default());
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let quiet = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + opts.duration;

    println!(
        "backend on {}; pool of {}; {} green threads for {:?}",
        server.addr(),
        opts.size,
        opts.concurrency,
        opts.duration
    );

    let workers: Vec<_> = (0..opts.concurrency)
        .map(|_| {
            let (pool, policy, tally, latencies, quiet) = (
                pool.clone(),
                policy.clone(),
                tally.clone(),
                latencies.clone(),
                quiet.clone(),
            );
            spawn(move || {
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    if quiet.load(Ordering::Relaxed) {
                        sleep(Duration::from_millis(20));
                        continue;
                    }
                    let t = Instant::now();
                    let outcome = policy.run(|| pool.with(|c| c.ping()));
                    mine.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    tally
                        .retried
                        .fetch_add(u64::from(outcome.attempts - 1), Ordering::Relaxed);
                    match outcome.result {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            log::error!("request failed for good: {e}");
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();

    // The faults, spread over the run, with a status line every second.
    let d = opts.duration;
    let mut faults: Vec<(Duration, &str)> = vec![
        (d.mul_f64(0.15), "reset"),
        (d.mul_f64(0.30), "quiet"),
        (d.mul_f64(0.55), "loud"),
        (d.mul_f64(0.65), "stop"),
        (d.mul_f64(0.72), "restart"),
    ];
    faults.reverse();
    let mut next_status = Duration::from_secs(1);
    while Instant::now() < deadline {
        let now = start.elapsed();
        while faults.last().is_some_and(|(at, _)| *at <= now) {
            let (_, what) = faults.pop().unwrap();
            match what {
                "reset" => println!("  !! backend resets all {} connections", server.reset_all()),
                "quiet" => {
                    server.set_idle_close(Some(Duration::from_millis(500)));
                    quiet.store(true, Ordering::Relaxed);
                    println!("  !! traffic pauses; backend now closes connections idle for 500 ms");
                }
                "loud" => {
                    quiet.store(false, Ordering::Relaxed);
                    println!("  !! traffic resumes");
                }
                "stop" => {
                    println!("  !! backend stops: refuses connections, drops the open ones");
                    server.stop();
                }
                _ => {
                    server.restart().expect("restart the backend");
                    println!("  !! backend restarts on the same port");
                }
            }
        }
        if now >= next_status {
            next_status += Duration::from_secs(1);
            let s = pool.state();
            println!(
                "t={:>2}s requests={:>8} failures={} | pool open={} idle={} in_use={} connecting={} waiting={}",
                now.as_secs(),
                tally.ok.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                s.open,
                s.idle,
                s.in_use,
                s.connecting,
                s.waiting
            );
        }
        sleep(Duration::from_millis(10));
    }
    for w in workers {
        w.join().expect("worker finished");
    }
    let elapsed = start.elapsed();
    let s = pool.state();
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        f64::from(lat[i]) / 1000.0
    };
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let c = s.counters;
    println!();
    println!("summary ({elapsed:.1?})");
    println!("  requests ok            {ok:>10}");
    println!("  requests failed        {failed:>10}   (0 expected)");
    println!(
        "  attempts retried       {:>10}",
        tally.retried.load(Ordering::Relaxed)
    );
    println!(
        "  throughput             {:>10.0} req/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("  latency p50            {:>10.2} ms", pct(0.50));
    println!("  latency p99            {:>10.2} ms", pct(0.99));
    println!("  latency max            {:>10.2} ms", pct(1.0));
    println!("  connections created    {:>10}", c.created);
    println!("  connect failures       {:>10}", c.connect_failures);
    println!(
        "  discarded              {:>10}   (error {}, keepalive {}, validation {}, expired {}, panic {})",
        c.discarded.total(),
        c.discarded.error,
        c.discarded.keepalive,
        c.discarded.validation,
        c.discarded.expired,
        c.discarded.panic
    );
    println!("  keepalives passed      {:>10}", c.keepalives);
    println!(
        "  pool at the end        {:>10}   open of {}",
        s.open, s.size
    );
    if failed == 0 {
        println!("\nOK: every request succeeded despite the faults.");
        ExitCode::SUCCESS
    } else {
        println!("\nFAILED: {failed} requests failed.");
        ExitCode::FAILURE
    }
}
