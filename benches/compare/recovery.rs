//! Section 4: the server restarts under load. How long until the pool is
//! full of fresh connections again, and how many requests fail on the way,
//! with and without `greenpool::retry`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use greenpool::ConnectionPool;

use crate::backend::Backend;
use crate::drive::wait_until;
use crate::pools::{open_greenpool, ping, Tcp, CHECKOUT_TIMEOUT};
use crate::report::{Section, Table, Target};
use crate::settings::Settings;
use crate::stats::{fmt_ns, group_thousands, median};

const WORKERS: usize = 64;
const SIZE: usize = 16;
/// Steady load before the restart, and after the pool is full again.
const STEADY: Duration = Duration::from_millis(300);
/// Longest the pool may take to be full again.
const REFILL_LIMIT: Duration = Duration::from_secs(30);
/// Requests per worker in one episode, at most.
const MAX_PER_WORKER: u64 = 5_000_000;

/// Where in the episode a failure happened.
const STEADY_PHASE: usize = 0;
const DOWN_PHASE: usize = 1;
const BACK_PHASE: usize = 2;
const FULL_PHASE: usize = 3;

#[derive(Debug, Clone, Copy)]
struct Episode {
    /// From killing the server until the new one answers.
    down: Duration,
    /// From the server answering until every connection is a fresh one.
    refill: Duration,
    /// Failed requests per phase.
    failed: [u64; 4],
    served: u64,
}

struct Load {
    phase: AtomicUsize,
    stop: AtomicBool,
    failed: [AtomicU64; 4],
    served: AtomicU64,
}

fn episode(backend: &mut Backend, with_retry: bool) -> Result<Episode, String> {
    let pool: ConnectionPool<Tcp> = open_greenpool(backend.tcp(), SIZE, Some(CHECKOUT_TIMEOUT));
    let proto = backend.proto();
    let load = Arc::new(Load {
        phase: AtomicUsize::new(STEADY_PHASE),
        stop: AtomicBool::new(false),
        failed: Default::default(),
        served: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (pool, load) = (pool.clone(), Arc::clone(&load));
            greenpool::runtime::spawn(move || {
                let request = || pool.with(|c| ping(c, proto));
                for _ in 0..MAX_PER_WORKER {
                    if load.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = if with_retry {
                        greenpool::retry(request)
                    } else {
                        request()
                    };
                    match result {
                        Ok(()) => load.served.fetch_add(1, Ordering::Relaxed),
                        Err(_) => load.failed[load.phase.load(Ordering::Relaxed)]
                            .fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    thread::sleep(STEADY);
    let created_before = pool.state().counters.created;
    let killed = Instant::now();
    load.phase.store(DOWN_PHASE, Ordering::Relaxed);
    let restarted = backend.stop().and_then(|()| backend.restart());
    let back = Instant::now();
    load.phase.store(BACK_PHASE, Ordering::Relaxed);
    let full = restarted
        .map_err(|e| format!("restart failed: {e}"))
        .and_then(|()| {
            wait_until(REFILL_LIMIT, || {
                let st = pool.state();
                st.open == SIZE && st.counters.created >= created_before + SIZE as u64
            })
            .map(|()| Instant::now())
            .ok_or_else(|| format!("the pool was not full again within {REFILL_LIMIT:?}"))
        });
    load.phase.store(FULL_PHASE, Ordering::Relaxed);
    thread::sleep(STEADY);
    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap_or_else(|e| e.resume_unwind());
    }
    let full = full?;
    Ok(Episode {
        down: back - killed,
        refill: full - back,
        failed: load.failed.each_ref().map(|f| f.load(Ordering::Relaxed)),
        served: load.served.load(Ordering::Relaxed),
    })
}

pub fn run(settings: &Settings, backend: &mut Backend) -> (Section, Vec<Target>) {
    let mut s = Section::new("4. Recovery: the server restarts under load");
    s.text(format!(
        "{WORKERS} green threads send PINGs through a greenpool pool of {SIZE} \
         (default reconnect backoff: 50 ms doubling to 2 s, with jitter) while the \
         server is killed and started again on the same port. \"Down\": from the kill \
         until the new server answers. \"Full again\": from then until all {SIZE} \
         connections are fresh ones (`state()`: {SIZE} open and {SIZE} created since \
         the kill; `wait_ready` alone could return before the load has found every \
         dead connection). Failed requests are counted while the server is down, \
         after it is back until the pool is full, and for {} ms after that. Without \
         retry: `pool.with(..)`; with retry: `retry(|| pool.with(..))`, the default \
         policy (5 failures, no interval). Median of {} restarts.",
        STEADY.as_millis(),
        settings.recovery_runs
    ));
    let mut t = Table::new(&[
        "requests",
        "down",
        "full again after",
        "failed while down",
        "failed after it is back",
        "failed once full",
        "served",
    ]);
    for with_retry in [false, true] {
        let label = if with_retry {
            "`retry(|| pool.with(..))`"
        } else {
            "`pool.with(..)`"
        };
        let episodes: Vec<Episode> = (0..settings.recovery_runs)
            .filter_map(|run| match episode(backend, with_retry) {
                Ok(e) => {
                    eprintln!(
                        "  recovery {label} run {}: down {:?}, full again after {:?}, failed {:?}",
                        run + 1,
                        e.down,
                        e.refill,
                        e.failed
                    );
                    Some(e)
                }
                Err(e) => {
                    eprintln!("  recovery {label} run {}: {e}", run + 1);
                    None
                }
            })
            .collect();
        if episodes.is_empty() {
            t.row(vec![
                label.into(),
                "failed".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
            ]);
            continue;
        }
        let m = |f: &dyn Fn(&Episode) -> f64| median(episodes.iter().map(f));
        let failed = |phase: usize| group_thousands(m(&|e| e.failed[phase] as f64) as u64);
        t.row(vec![
            label.into(),
            fmt_ns(m(&|e| e.down.as_nanos() as f64)),
            fmt_ns(m(&|e| e.refill.as_nanos() as f64)),
            failed(DOWN_PHASE),
            failed(BACK_PHASE),
            failed(FULL_PHASE),
            group_thousands(m(&|e| e.served as f64) as u64),
        ]);
    }
    s.table(&t);
    (s, Vec::new())
}
