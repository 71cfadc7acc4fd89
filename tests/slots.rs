//! Slot accounting that cannot leak (issue 12): every way a green thread can
//! end — a cancellation, a panic, a failed spawn, a hung connect or check —
//! gives its slot back and never lets the pool exceed its size; checkouts
//! keep their deadline and their place in line; a failing server is retried
//! with a backoff that remembers.
//!
//! `GREENPOOL_WORKERS=n` runs these on `n` runtime workers.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use common::{wait_until, Mock};
use greenpool::runtime::{self, spawn};
use greenpool::testing::SpawnFaults;
use greenpool::{Builder, ConnectionPool, Error, Retry};

const LONG: Duration = Duration::from_secs(10);

fn builder(size: usize) -> Builder<Mock> {
    ConnectionPool::builder()
        .size(size)
        .checkout_timeout(LONG)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(50))
}

/// Check out every connection once (and give it back), so that each has
/// done useful work and sits idle.
fn use_each_once(p: &ConnectionPool<Mock>) {
    let all: Vec<_> = (0..p.size()).map(|_| p.get().unwrap()).collect();
    drop(all);
}

/// A pool from `b` that validates every idle connection it hands out, full,
/// with each connection used once.
fn validated_pool(b: Builder<Mock>) -> ConnectionPool<Mock> {
    let p = b
        .validate_after(Duration::ZERO)
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    use_each_once(&p);
    p
}

fn assert_no_slot_lost(p: &ConnectionPool<Mock>) {
    let size = p.size();
    assert!(
        wait_until(LONG, || {
            let s = p.state();
            s.open + s.connecting == size && s.open == size
        }),
        "slots lost: {:?}",
        p.state()
    );
}

#[test]
fn cancelling_a_caller_while_its_connection_is_validated_loses_no_slot() {
    let p = validated_pool(builder(4));
    p.manager().check_delay_ms.store(300, Ordering::SeqCst);
    // Four callers cancelled in the middle of validation.
    for _ in 0..4 {
        let p2 = p.clone();
        let r = runtime::timeout(Duration::from_millis(50), move || {
            let _: io::Result<()> = p2.with(|_| Ok(()));
        });
        assert!(r.is_err());
    }
    p.manager().check_delay_ms.store(0, Ordering::SeqCst);
    assert_no_slot_lost(&p);
    // All four can be checked out at once again.
    let held: Vec<_> = (0..4)
        .map(|_| p.get_timeout(LONG).expect("a slot was lost"))
        .collect();
    assert_eq!(p.state().in_use, 4);
    drop(held);
}

#[test]
fn a_check_that_outlives_its_timeout_holds_its_slot_until_it_ends() {
    // The keepalive hangs, is cancelled after 50 ms, and keeps its connection
    // 300 ms more (code outside the runtime notices a cancel late): the
    // replacement must not open before the old connection is gone.
    let m = Mock::default();
    m.hang_keepalives.store(2, Ordering::SeqCst);
    m.hold_after_cancel_ms.store(300, Ordering::SeqCst);
    let live = Arc::clone(&m.live);
    let p = builder(2)
        .keepalive(Duration::from_millis(40))
        .health_check_timeout(Duration::from_millis(50))
        .build(m)
        .unwrap();
    let max_live = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (live, max_live, stop) = (live.clone(), max_live.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                max_live.fetch_max(live.load(Ordering::SeqCst), Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let discarded = |p: &ConnectionPool<Mock>| p.state().counters.discarded.keepalive;
    assert!(wait_until(LONG, || discarded(&p) >= 2), "{:?}", p.state());
    assert_no_slot_lost(&p);
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let max = max_live.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} live connections on a pool of 2");
    let s = p.state();
    assert!(s.open + s.connecting <= 2, "{s:?}");
}

#[test]
fn get_keeps_its_deadline_when_validation_hangs() {
    let p = validated_pool(builder(1).checkout_timeout(Duration::from_millis(300)));
    // A server that accepts and never answers.
    p.manager().check_delay_ms.store(60_000, Ordering::SeqCst);
    let t = Instant::now();
    let e = p.get().map(|_| ()).unwrap_err();
    let took = t.elapsed();
    assert!(e.is_timeout(), "{e}");
    assert!(took < Duration::from_millis(1500), "get took {took:?}");
    assert!(e.to_string().contains("failed validation"), "{e}");
    p.manager().check_delay_ms.store(0, Ordering::SeqCst);
}

#[test]
fn get_keeps_its_deadline_and_reconnects_slowly_when_validations_keep_failing() {
    // Every validation fails: each checked connection is discarded, and the
    // replacements fail too. The caller gets its timeout, with the reason,
    // and the pool does not reconnect in a tight loop.
    let p = validated_pool(
        builder(2)
            .checkout_timeout(Duration::from_millis(400))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    );
    p.manager()
        .fail_validations
        .store(u64::MAX, Ordering::SeqCst);
    p.manager().unhealthy.store(true, Ordering::SeqCst);
    let before = p.manager().attempts.load(Ordering::SeqCst);
    let t = Instant::now();
    let mut failures = 0;
    while t.elapsed() < Duration::from_secs(1) {
        // Fresh connections are handed out unvalidated; the work on them
        // fails too (the server is broken), so each dies young.
        let call = Instant::now();
        let r: Result<(), io::Error> = p.with(|_| Err(io::ErrorKind::ConnectionReset.into()));
        let took = call.elapsed();
        assert!(
            took < Duration::from_millis(1200),
            "a checkout took {took:?}"
        );
        if r.is_err() {
            failures += 1;
        }
    }
    let connects = p.manager().attempts.load(Ordering::SeqCst) - before;
    assert!(failures > 0);
    assert!(
        connects < 60,
        "{connects} connects in 1 s on a pool of 2 with a 20..200 ms backoff"
    );
    // Connections that died young count as failed connects.
    assert!(p.state().counters.connect_failures >= 2, "{:?}", p.state());
    p.manager().unhealthy.store(false, Ordering::SeqCst);
    p.manager().fail_validations.store(0, Ordering::SeqCst);
}

#[test]
fn a_caller_whose_connection_failed_validation_keeps_its_place() {
    let p = validated_pool(builder(1));
    let m = p.manager();
    m.check_delay_ms.store(200, Ordering::SeqCst);
    m.fail_validations.store(1, Ordering::SeqCst);
    // The replacement takes a while to open: long enough for the first
    // caller to be back in line.
    m.connect_delay_ms.store(200, Ordering::SeqCst);
    let order = Arc::new(StdMutex::new(Vec::new()));
    let validations = m.validations.load(Ordering::SeqCst);
    let first = {
        let (p, order) = (p.clone(), order.clone());
        spawn(move || {
            let g = p.get().unwrap();
            order.lock().unwrap().push("first");
            drop(g);
        })
    };
    assert!(wait_until(LONG, || {
        m.validations.load(Ordering::SeqCst) == validations + 1
    }));
    let second = {
        let (p, order) = (p.clone(), order.clone());
        spawn(move || {
            let g = p.get().unwrap();
            order.lock().unwrap().push("second");
            drop(g);
        })
    };
    first.join().unwrap();
    second.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["first", "second"]);
}

#[test]
fn a_hung_connect_is_cancelled_by_the_connect_timeout_and_by_close() {
    let m = Mock::default();
    m.connect_hangs.store(true, Ordering::SeqCst);
    let p = builder(4)
        .connect_timeout(Duration::from_millis(150))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build(m)
        .unwrap();
    // Connects time out and are tried again.
    assert!(
        wait_until(LONG, || p.manager().attempts.load(Ordering::SeqCst) >= 8),
        "{:?}",
        p.state()
    );
    let e = p.get_timeout(Duration::from_millis(100)).unwrap_err();
    let text = e.to_string();
    assert!(!text.contains("raise the pool size"), "{text}");
    assert!(text.contains("connect"), "{text}");
    let s = p.state();
    assert!(s.open + s.connecting <= 4, "{s:?}");
    // close() cancels the hung connects at once.
    p.close();
    assert!(
        wait_until(Duration::from_secs(3), || p.state().background_tasks == 0),
        "{:?}",
        p.state()
    );
}

#[test]
fn the_timeout_error_says_connects_are_still_running() {
    let m = Mock::default();
    m.connect_hangs.store(true, Ordering::SeqCst);
    let p = builder(2).build(m).unwrap();
    let e = p.get_timeout(Duration::from_millis(100)).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("still being opened"), "{text}");
    assert!(!text.contains("raise the pool size"), "{text}");
    match e {
        Error::Timeout { connecting, .. } => assert_eq!(connecting, 2),
        other => panic!("{other}"),
    }
    p.close();
}

#[test]
fn one_slow_keepalive_does_not_stall_the_others_or_the_clock() {
    let m = Mock::default();
    m.hang_keepalives.store(1, Ordering::SeqCst);
    let p = builder(4)
        .keepalive(Duration::from_millis(30))
        .build(m)
        .unwrap();
    p.wait_ready(LONG).unwrap();
    // One keepalive hangs for the 5 s health-check timeout; the other three
    // connections keep being kept alive meanwhile.
    assert!(
        wait_until(Duration::from_millis(2000), || {
            p.manager().keepalives.load(Ordering::SeqCst) >= 10
        }),
        "{:?}",
        p.state()
    );
}

/// Run `f` while four green threads do nothing but yield: they keep the
/// runtime's global queue (and everything spawned or woken from an OS
/// thread) waiting.
fn with_busy_green_threads<T>(f: impl FnOnce() -> T) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    runtime::yield_now();
                }
            })
        })
        .collect();
    let r = f();
    stop.store(true, Ordering::SeqCst);
    for b in busy {
        b.join().unwrap();
    }
    r
}

#[test]
fn a_caller_on_an_os_thread_times_out_on_its_own_timer() {
    let p = builder(1)
        .checkout_timeout(Duration::from_millis(300))
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    let held = p.get().unwrap();
    let (took, r) = with_busy_green_threads(|| {
        let t = Instant::now();
        let r = p.get().map(|_| ());
        (t.elapsed(), r)
    });
    let e = r.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    drop(held);
}

#[test]
fn a_validation_from_an_os_thread_returns_by_the_deadline() {
    let p = validated_pool(builder(1).checkout_timeout(Duration::from_millis(300)));
    let (took, r) = with_busy_green_threads(|| {
        let t = Instant::now();
        let r = p.get().map(|_| ());
        (t.elapsed(), r)
    });
    // Validated in time, or a timeout that says so: never a hang.
    if let Err(e) = r {
        assert!(e.is_timeout(), "{e}");
    }
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn a_panicking_display_of_a_manager_error_kills_nothing() {
    let m = Mock::default();
    m.panicky_display.store(true, Ordering::SeqCst);
    m.fail.store(true, Ordering::SeqCst);
    let p = builder(2)
        .keepalive(Duration::from_millis(30))
        .build(m)
        .unwrap();
    assert!(wait_until(LONG, || {
        p.manager().attempts.load(Ordering::SeqCst) >= 6
    }));
    p.manager().fail.store(false, Ordering::SeqCst);
    p.wait_ready(LONG).unwrap();
    // Keepalives fail with such an error: discarded and replaced, and
    // maintenance goes on keeping the replacements alive.
    p.manager().unhealthy.store(true, Ordering::SeqCst);
    assert!(wait_until(LONG, || {
        p.state().counters.discarded.keepalive >= 2
    }));
    p.manager().unhealthy.store(false, Ordering::SeqCst);
    let k = p.state().counters.keepalives;
    assert!(wait_until(LONG, || p.state().counters.keepalives > k + 2));
    assert_no_slot_lost(&p);
}

#[test]
fn failed_spawns_return_errors_and_lose_no_slot_for_good() {
    let faults = SpawnFaults::new();
    let p = validated_pool(builder(3).spawn_faults(faults.clone()));
    // Validations and replacements cannot start.
    faults.fail_next(5);
    for _ in 0..3 {
        let r: io::Result<()> = p.with(|_| Err(io::ErrorKind::BrokenPipe.into()));
        assert!(r.is_err());
        let s = p.state();
        assert!(s.open + s.connecting <= 3, "{s:?}");
    }
    // Maintenance reopens what the failed spawns gave back.
    faults.fail_next(0);
    assert_no_slot_lost(&p);
}

#[test]
fn extreme_settings_are_clamped_or_rejected() {
    let e = ConnectionPool::builder()
        .size(usize::MAX)
        .build(Mock::default())
        .unwrap_err();
    assert!(e.to_string().contains("size"), "{e}");
    // Duration::MAX everywhere: clamped, and every path still works.
    let p = ConnectionPool::builder()
        .size(1)
        .health_check_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .checkout_timeout(Duration::MAX)
        .idle_timeout(Duration::MAX)
        .max_lifetime(Duration::MAX)
        .keepalive(Duration::MAX)
        .reconnect_backoff(Duration::MAX, Duration::MAX)
        .validate_after(Duration::ZERO)
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    use_each_once(&p);
    let before = p.manager().validations.load(Ordering::SeqCst);
    let r: io::Result<()> = p.with(|_| Ok(()));
    r.unwrap();
    assert_eq!(p.manager().validations.load(Ordering::SeqCst), before + 1);
    assert_no_slot_lost(&p);
}

#[test]
fn retry_survives_extreme_intervals_and_factors() {
    let calls = Arc::new(AtomicU64::new(0));
    let fail_twice = {
        let calls = calls.clone();
        move || -> io::Result<u32> {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(io::ErrorKind::BrokenPipe.into())
            } else {
                Ok(7)
            }
        }
    };
    let policies = [
        Retry::new()
            .interval(Duration::from_millis(1))
            .jitter(f64::NAN),
        Retry::new()
            .interval(Duration::from_millis(1))
            .backoff(f64::INFINITY, Duration::from_millis(5)),
        Retry::new()
            .interval(Duration::from_millis(1))
            .backoff(f64::NAN, Duration::MAX)
            .jitter(f64::INFINITY),
    ];
    for policy in policies {
        calls.store(0, Ordering::SeqCst);
        assert_eq!(policy.call(fail_twice.clone()).unwrap(), 7);
    }
    // A huge interval waits (it neither panics nor skips the wait).
    let f = fail_twice.clone();
    calls.store(0, Ordering::SeqCst);
    let r = runtime::timeout(Duration::from_millis(200), move || {
        Retry::new().interval(Duration::MAX).call(f)
    });
    assert!(r.is_err(), "returned instead of waiting: {r:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Waiters on their own short timers give up while connections are being
/// handed over (and, rarely, just as a giver took one of them off the queue:
/// then the giver passes the connection on). Nothing is discarded, no slot
/// is lost, and every checkout counted is one a caller got.
#[test]
fn waiters_timing_out_while_connections_are_handed_over_lose_nothing() {
    const WORKERS: usize = 40;
    const ROUNDS: usize = 50;
    let p = builder(2).build(Mock::default()).unwrap();
    p.wait_ready(LONG).unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let timed_out = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (p, got, timed_out) = (p.clone(), Arc::clone(&got), Arc::clone(&timed_out));
            spawn(move || {
                for round in 0..ROUNDS {
                    // Connections are held for 1 ms, 40 callers share 2: the
                    // 1 ms waits mostly time out, the 5 ms ones often not.
                    let timeout = Duration::from_millis(if round % 2 == 0 { 1 } else { 5 });
                    match p.get_timeout(timeout) {
                        Ok(c) => {
                            got.fetch_add(1, Ordering::Relaxed);
                            runtime::sleep(Duration::from_millis(1));
                            drop(c);
                        }
                        Err(Error::Timeout { .. }) => {
                            timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let s = p.state();
    assert!(
        timed_out.load(Ordering::Relaxed) > 0,
        "no waiter timed out: the test did not race anything ({s:?})"
    );
    assert!(
        got.load(Ordering::Relaxed) > 0,
        "no caller got a connection ({s:?})"
    );
    assert_eq!(s.counters.discarded.total(), 0, "{s:?}");
    assert_eq!(s.counters.checkouts, got.load(Ordering::Relaxed), "{s:?}");
    assert_eq!((s.open, s.idle, s.waiting), (2, 2, 0), "{s:?}");
}
