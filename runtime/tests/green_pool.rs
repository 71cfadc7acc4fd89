//! `GreenPool` (gevent's Pool) and `Group`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::run_green;
use greenpool_runtime::group::CapacityError;
use greenpool_runtime::sync::{mpsc, SyncFlag};
use greenpool_runtime::{panic_message, sleep, spawn, GreenPool, Group};

/// Concurrency never exceeds the capacity (counted with atomics inside the
/// tasks), every task runs, and `join` leaves nothing running.
#[test]
fn green_pool_never_runs_more_than_capacity() {
    const CAP: usize = 4;
    let pool = GreenPool::new(CAP);
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..64u64 {
        let (now, max, done) = (now.clone(), max.clone(), done.clone());
        pool.spawn(move || {
            let cur = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(cur, Ordering::SeqCst);
            sleep(Duration::from_millis(2 + i % 3));
            now.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
        });
        assert!(pool.running() <= CAP);
    }
    pool.join();
    assert_eq!(done.load(Ordering::SeqCst), 64);
    assert_eq!(pool.running(), 0);
    let max = max.load(Ordering::SeqCst);
    assert!(max <= CAP, "{max} tasks ran at once in a pool of {CAP}");
    assert!(
        max >= 2,
        "the pool never ran tasks concurrently (max {max})"
    );
}

/// `spawn` blocks the caller while the pool is full and proceeds as soon as a
/// slot frees; `running` reports the occupied slots.
#[test]
fn spawn_blocks_while_the_pool_is_full() {
    let pool = GreenPool::new(2);
    let gate = Arc::new(SyncFlag::new());
    let started = Arc::new(AtomicUsize::new(0));
    let mut first = Vec::new();
    for _ in 0..2 {
        let (gate, started) = (gate.clone(), started.clone());
        first.push(pool.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            gate.wait();
        }));
    }
    assert_eq!(pool.running(), 2);

    let (tx, rx) = mpsc::channel();
    let spawner = {
        let pool = pool.clone();
        spawn(move || {
            let h = pool.spawn(|| 3);
            tx.send(()).unwrap();
            h.join().unwrap()
        })
    };
    // The third spawn must still be waiting for a slot.
    assert!(
        rx.recv_timeout(Duration::from_millis(150)).is_err(),
        "spawn did not block on a full pool"
    );
    assert_eq!(pool.running(), 2);

    gate.fire();
    rx.recv_timeout(common::HANG_LIMIT)
        .expect("spawn did not resume when a slot freed");
    assert_eq!(spawner.join().unwrap(), 3);
    for h in first {
        h.join().unwrap();
    }
    pool.join();
    assert_eq!(pool.running(), 0);
    assert_eq!(started.load(Ordering::SeqCst), 2);
}

/// `map` returns results in input order even when items finish out of order.
#[test]
fn map_keeps_input_order() {
    let pool = GreenPool::new(8);
    let out = pool.map(0..200u64, |i| {
        sleep(Duration::from_millis((i * 7) % 5));
        i * 2
    });
    assert_eq!(out, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(pool.capacity(), 8);
    assert_eq!(pool.running(), 0);
}

/// A panic inside `map` is re-raised in the caller after all the other items
/// have finished, and the pool is usable afterwards.
#[test]
fn map_reraises_a_panic_after_the_others_finish() {
    let pool = GreenPool::new(3);
    let completed = Arc::new(AtomicUsize::new(0));
    let r = {
        let completed = completed.clone();
        let pool = pool.clone();
        std::panic::catch_unwind(move || {
            pool.map(0..20u64, move |i| {
                sleep(Duration::from_millis(i % 4));
                if i == 5 {
                    panic!("item 5 failed");
                }
                completed.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
    };
    let payload = r.expect_err("the panic must reach the caller");
    assert_eq!(panic_message(&*payload), Some("item 5 failed"));
    assert_eq!(completed.load(Ordering::SeqCst), 19);
    assert_eq!(pool.running(), 0);
    assert_eq!(pool.map(vec![1, 2], |x| x + 1), vec![2, 3]);
}

/// A panicking or cancelled task gives its slot back (the release runs in a
/// drop guard during the unwind), so a pool of one keeps working.
#[test]
fn panic_and_cancel_release_the_slot() {
    run_green(|| {
        let pool = GreenPool::new(1);
        let err = pool
            .spawn(|| -> u32 { panic!("task boom") })
            .join()
            .unwrap_err();
        assert!(err.is_panic());
        assert_eq!(err.panic_message(), Some("task boom"));
        assert_eq!(pool.running(), 0);

        let stuck = pool.spawn(|| sleep(Duration::from_secs(3600)));
        assert_eq!(pool.running(), 1);
        stuck.cancel();
        assert!(stuck.join().unwrap_err().is_cancelled());
        assert_eq!(pool.running(), 0);

        assert_eq!(pool.spawn(|| 5).join().unwrap(), 5);
        pool.join();
    });
}

/// `join` waits for every running task, from a green thread or an OS thread.
#[test]
fn join_waits_for_all_running_tasks() {
    let pool = GreenPool::new(5);
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..20u64 {
        let done = done.clone();
        pool.spawn(move || {
            sleep(Duration::from_millis(5 + i % 10));
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    let waiter = {
        let (pool, done) = (pool.clone(), done.clone());
        spawn(move || {
            pool.join();
            done.load(Ordering::SeqCst)
        })
    };
    pool.join();
    assert_eq!(done.load(Ordering::SeqCst), 20);
    assert_eq!(waiter.join().unwrap(), 20);
    // Joining an idle pool returns at once.
    pool.join();
}

#[test]
fn zero_capacity_is_a_clear_error() {
    let e: CapacityError = GreenPool::try_new(0).unwrap_err();
    assert_eq!(e.requested(), 0);
    assert!(e.to_string().contains("at least 1"), "{e}");
    assert!(GreenPool::try_new(1).is_ok());
}

#[test]
#[should_panic(expected = "capacity of at least 1")]
fn new_with_zero_capacity_panics() {
    let _ = GreenPool::new(0);
}

/// `join_all` returns every outcome in spawn order, a panic in its own slot;
/// `join` returns the first failure after all have finished.
#[test]
fn group_join_all_keeps_order_and_panics() {
    let mut g = Group::new();
    assert!(g.is_empty());
    for i in 0..10u64 {
        g.spawn(move || {
            sleep(Duration::from_millis(10 - i));
            if i == 4 {
                panic!("slot 4");
            }
            i
        });
    }
    assert_eq!(g.len(), 10);
    let results = g.join_all();
    assert_eq!(results.len(), 10);
    for (i, r) in results.into_iter().enumerate() {
        if i == 4 {
            assert_eq!(r.unwrap_err().panic_message(), Some("slot 4"));
        } else {
            assert_eq!(r.unwrap(), i as u64);
        }
    }

    let finished = Arc::new(AtomicUsize::new(0));
    let mut g = Group::new();
    for i in 0..6u64 {
        let finished = finished.clone();
        g.spawn(move || {
            sleep(Duration::from_millis(i * 3));
            finished.fetch_add(1, Ordering::SeqCst);
            if i == 1 || i == 3 {
                panic!("fail {i}");
            }
            i
        });
    }
    let err = g.join().unwrap_err();
    assert_eq!(err.panic_message(), Some("fail 1"));
    assert_eq!(finished.load(Ordering::SeqCst), 6);
}

/// `cancel_all` stops stuck members; handles from a pool can join a group.
#[test]
fn group_cancel_all_and_add() {
    let mut g = Group::new();
    for _ in 0..3 {
        g.spawn(|| sleep(Duration::from_secs(3600)));
    }
    let pool = GreenPool::new(2);
    g.add(pool.spawn(|| sleep(Duration::from_secs(3600))));
    g.cancel_all();
    let results = g.join_all();
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap_err().is_cancelled()));
    assert_eq!(pool.running(), 0);
}
