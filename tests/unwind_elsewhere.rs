//! A green thread that blocks in a destructor while it unwinds must not make
//! other green threads' healthy connections look like they were dropped by a
//! panic (`std::thread::panicking()` is per OS thread).
//!
//! Alone in its binary on purpose: a green thread that blocks mid-unwind can
//! resume on another OS thread (may's timer thread, another worker) and end
//! its unwind there, which leaves std's per-thread panic count wrong on both
//! threads for good: every later `std::thread::panicking()` on them says
//! true, and may then no longer delivers cancellations there. Tests sharing
//! the binary would run on those threads.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::Mock;
use greenpool::runtime::{self, spawn};
use greenpool::ConnectionPool;

const LONG: Duration = Duration::from_secs(10);

#[test]
fn another_green_threads_unwind_does_not_discard_a_healthy_connection() {
    let p = ConnectionPool::new(Mock::default(), 2).unwrap();
    p.wait_ready(LONG).unwrap();
    struct SlowDrop;
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            // A destructor that blocks mid-unwind: other green threads run
            // on this OS thread meanwhile, which is "panicking".
            runtime::sleep(Duration::from_millis(300));
        }
    }
    let unwinding = spawn(|| {
        let _d = SlowDrop;
        panic!("injected panic with a slow destructor");
    });
    let mut ok = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(250) {
        let p = p.clone();
        let r: io::Result<()> = spawn(move || p.with(|_| Ok(()))).join().unwrap();
        r.unwrap();
        ok += 1;
    }
    assert!(unwinding.join().is_err());
    assert!(ok > 0);
    assert_eq!(p.state().counters.discarded.panic, 0, "{:?}", p.state());
}
