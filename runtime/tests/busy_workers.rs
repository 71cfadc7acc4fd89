//! Busy workers still serve everything else: the regression tests for the
//! starvation that `vendor/may` fixes (see `vendor/README.md`).
//!
//! Unpatched, a may worker ran its local queue until it was empty before it
//! looked at anything else. Green threads that keep yielding to each other
//! (or hand work back and forth, like a pool's waiters) keep it from ever
//! being empty, so for as long as they do:
//!
//! - a new green thread, or one woken by a timer (both arrive through the
//!   worker's global queue), never runs;
//! - the worker never polls its epoll, so a green thread waiting for IO on a
//!   socket that worker owns never wakes, however long the data has been
//!   there.
//!
//! Each test keeps every worker busy with yielding green threads until
//! either the thing under test has happened or a generous deadline has
//! passed, and fails in the second case. (Before the patch, a pool's waiter
//! could wait out a whole benchmark run: 64 green threads over 8
//! connections, one got no connection for 1.4 s.)
//!
//! Runs on the default runtime (one worker per CPU); `GREENPOOL_WORKERS=n`
//! overrides it.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool_runtime::net::TcpStream;
use greenpool_runtime::{sleep, spawn, yield_now, JoinHandle};

/// Far longer than anything here takes when it works.
const LIMIT: Duration = Duration::from_secs(10);

/// Yielding green threads per worker: enough that every worker always has
/// one ready to run.
const BUSY_PER_WORKER: usize = 4;

/// Keep every worker busy, yielding, until `done` is set or [`LIMIT`] has
/// passed. The busy green threads are started (and running) when this
/// returns; each answers whether it saw `done` (rather than running out of
/// time).
fn keep_workers_busy(done: &Arc<AtomicBool>) -> Vec<JoinHandle<bool>> {
    let workers = greenpool_runtime::may::config().get_workers();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = workers * BUSY_PER_WORKER;
    let busy: Vec<_> = (0..n)
        .map(|_| {
            let (done, started) = (Arc::clone(done), Arc::clone(&started));
            spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + LIMIT;
                while Instant::now() < deadline {
                    if done.load(Ordering::SeqCst) {
                        return true;
                    }
                    yield_now();
                }
                false
            })
        })
        .collect();
    let deadline = Instant::now() + LIMIT;
    while started.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    busy
}

/// True if every busy green thread saw `done` while it was still busy: the
/// thing under test happened while the workers were kept busy, not after
/// they gave up.
fn happened_while_busy(busy: Vec<JoinHandle<bool>>) -> bool {
    busy.into_iter().all(|b| b.join().unwrap())
}

#[test]
fn a_green_thread_started_while_every_worker_is_busy_runs() {
    let done = Arc::new(AtomicBool::new(false));
    let busy = keep_workers_busy(&done);
    let h = {
        let done = Arc::clone(&done);
        spawn(move || done.store(true, Ordering::SeqCst))
    };
    let in_time = happened_while_busy(busy);
    h.join().unwrap();
    assert!(
        in_time,
        "the new green thread did not run while the others kept yielding"
    );
}

#[test]
fn a_sleeping_green_thread_wakes_while_every_worker_is_busy() {
    let done = Arc::new(AtomicBool::new(false));
    // Asleep before the workers get busy; its timer fires during.
    let h = {
        let done = Arc::clone(&done);
        spawn(move || {
            sleep(Duration::from_millis(20));
            done.store(true, Ordering::SeqCst);
        })
    };
    let busy = keep_workers_busy(&done);
    let in_time = happened_while_busy(busy);
    h.join().unwrap();
    assert!(
        in_time,
        "the sleeper did not wake while the others kept yielding"
    );
}

#[test]
fn a_green_thread_waiting_for_io_wakes_while_every_worker_is_busy() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, reading) = (Arc::clone(&done), Arc::clone(&reading));
        spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut buf = [0u8; 4];
            reading.store(true, Ordering::SeqCst);
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut peer, _) = listener.accept().unwrap();
    let deadline = Instant::now() + LIMIT;
    while !reading.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let busy = keep_workers_busy(&done);
    // The reader is parked on its socket (or about to be); the data arrives
    // while every worker is busy.
    peer.write_all(b"ping").unwrap();
    let in_time = happened_while_busy(busy);
    reader.join().unwrap();
    assert!(
        in_time,
        "the reader did not wake for its data while the others kept yielding"
    );
}
