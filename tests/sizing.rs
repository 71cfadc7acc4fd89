//! Sizing: growth on demand between `min_idle` and `size`, `resize`,
//! `retain`, `detach` and `close_timeout`.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{mock_pool, wait_until, Mock};
use greenpool::{ConnectionPool, ErrorSet};

const LONG: Duration = Duration::from_secs(10);

#[test]
fn detach_takes_a_connection_out_for_good_and_refills_its_slot() {
    let p = mock_pool(2, ErrorSet::io());
    // (`g.id()` is the pool's id; `.id` the mock's, through Deref.)
    let g = p.get().unwrap();
    let mock_id = g.id;
    let mine = g.detach();
    assert_eq!(mine.id, mock_id);
    // The slot is refilled; the detached connection is still alive, ours.
    p.wait_ready(LONG).unwrap();
    let s = p.state();
    assert_eq!((s.open, s.in_use, s.connecting), (2, 0, 0), "{s:?}");
    assert_eq!(s.counters.detached, 1);
    assert_eq!(s.counters.discarded.total(), 0, "a detach is no discard");
    assert_eq!(p.manager().live(), 3);
    // The pool never hands it out again.
    let both = [p.get().unwrap(), p.get().unwrap()];
    assert!(both.iter().all(|g| g.id != mock_id));
    drop(both);
    // Dropping it closes it; the pool does not notice.
    drop(mine);
    assert_eq!(p.manager().live(), 2);
    assert_eq!(p.state().open, 2);
    // A detached connection outlives its pool.
    let kept = p.get().unwrap().detach();
    p.close();
    assert!(wait_until(LONG, || p.state().background_tasks == 0));
    assert_eq!(p.manager().live(), 1);
    drop(kept);
    assert_eq!(p.manager().live(), 0);
}

#[test]
fn retain_evicts_idle_connections_by_a_predicate_and_replaces_them() {
    let p = mock_pool(4, ErrorSet::io());
    p.wait_ready(LONG).unwrap();
    let held = p.get().unwrap();
    let held_id = held.id();
    let mut seen = Vec::new();
    // Evict every idle one; the one checked out is not seen.
    let closed = p.retain(|_conn, info| {
        seen.push(info.id);
        false
    });
    assert_eq!(closed, 3);
    assert!(!seen.contains(&held_id), "{seen:?}");
    // Replaced: the pool is full again, with new ids.
    assert!(wait_until(LONG, || p.state().open == 4));
    drop(held);
    let s = p.state();
    assert_eq!(s.counters.discarded.explicit, 3, "{s:?}");
    assert_eq!(s.counters.created, 7, "{s:?}");
    // A predicate that keeps everything closes nothing.
    p.wait_ready(LONG).unwrap();
    assert_eq!(p.retain(|_, _| true), 0);
    assert_eq!(p.state().open, 4);
}

#[test]
fn a_panicking_retain_predicate_loses_no_slot() {
    let p = mock_pool(3, ErrorSet::io());
    p.wait_ready(LONG).unwrap();
    let p2 = p.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        p2.retain(|_, _| panic!("bad predicate"))
    }));
    assert!(r.is_err());
    assert!(wait_until(LONG, || p.state().open == 3), "{:?}", p.state());
}

#[test]
fn close_timeout_waits_for_guards_and_background_work() {
    let p = mock_pool(2, ErrorSet::io());
    p.wait_ready(LONG).unwrap();
    let guard = p.get().unwrap();
    // A guard is still out: not everything ends in time.
    assert!(!p.close_timeout(Duration::from_millis(50)));
    assert_eq!(p.state().in_use, 1);
    // Given back from another green thread while close_timeout waits.
    let h = greenpool::runtime::spawn(move || {
        greenpool::runtime::sleep(Duration::from_millis(20));
        drop(guard);
    });
    assert!(p.close_timeout(LONG), "{:?}", p.state());
    h.join().unwrap();
    let s = p.state();
    assert_eq!(
        (s.open, s.connecting, s.background_tasks),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(p.manager().live(), 0);
}

/// A pool of [`Mock`] connections with `min_idle` below `size`; surplus idle
/// connections close after `shrink_after`.
fn elastic(size: usize, min_idle: usize, shrink_after: Duration) -> ConnectionPool<Mock> {
    ConnectionPool::builder()
        .size(size)
        .min_idle(min_idle)
        .idle_timeout(shrink_after)
        .checkout_timeout(LONG)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .build(Mock::default())
        .unwrap()
}

#[test]
fn min_idle_opens_ahead_of_demand_grows_to_size_and_shrinks_back() {
    let p = elastic(5, 1, Duration::from_millis(200));
    p.wait_ready(LONG).unwrap();
    let s = p.state();
    assert_eq!(
        (s.size, s.min_idle, s.open, s.connecting),
        (5, 1, 1, 0),
        "{s:?}"
    );
    // Taking the spare opens another, so one stays idle: the connect starts
    // in the checkout itself.
    let first = p.get().unwrap();
    let s = p.state();
    assert_eq!(s.open + s.connecting, 2, "{s:?}");
    assert!(wait_until(LONG, || p.state().idle == 1), "{:?}", p.state());
    assert_eq!(p.state().open, 2);
    // Growth stops at size: five held, none idle, the sixth caller waits.
    let mut held = vec![first];
    for _ in 0..4 {
        held.push(p.get().unwrap());
    }
    let s = p.state();
    assert_eq!((s.open, s.in_use, s.connecting), (5, 5, 0), "{s:?}");
    assert!(p
        .get_timeout(Duration::from_millis(50))
        .unwrap_err()
        .is_timeout());
    assert_eq!(p.manager().live(), 5);
    // Given back, the four above min_idle close once idle for 200 ms, are
    // counted as surplus, and are not replaced. (The one kept expires and
    // is replaced every 200 ms idle, as the idle timeout says.)
    drop(held);
    let mut s = p.state();
    assert!(
        wait_until(LONG, || {
            s = p.state();
            s.counters.discarded.surplus == 4 && (s.open, s.connecting) == (1, 0)
        }),
        "{s:?}"
    );
    let d = s.counters.discarded;
    assert_eq!(d.total(), d.surplus + d.expired, "{s:?}");
    assert_eq!(s.counters.created, 5 + d.expired, "{s:?}");
}

#[test]
fn min_idle_zero_opens_nothing_until_asked_then_serves_the_waiter() {
    let p = elastic(3, 0, LONG);
    p.wait_ready(LONG).unwrap();
    assert_eq!(p.state().open + p.state().connecting, 0);
    assert_eq!(p.manager().attempts.load(Ordering::SeqCst), 0);
    // The first caller waits for a connect started on its behalf.
    let g = p.get().unwrap();
    let s = p.state();
    assert_eq!((s.open, s.in_use, s.idle), (1, 1, 0), "{s:?}");
    assert_eq!(s.counters.waited_checkouts, 1, "{s:?}");
    drop(g);
    // Given back, it stays (idle for less than the shrink time).
    assert_eq!(p.state().idle, 1);
    assert_eq!(p.get().unwrap().id, 1, "the same connection");
}

#[test]
fn a_broken_connection_above_min_idle_is_not_replaced() {
    let p = elastic(4, 1, LONG);
    p.wait_ready(LONG).unwrap();
    let a = p.get().unwrap();
    let b = p.get().unwrap();
    assert!(wait_until(LONG, || p.state().idle == 1), "{:?}", p.state());
    assert_eq!(p.state().open, 3);
    // The pool still has a spare: a discard leaves it at two, one idle.
    a.discard();
    assert!(wait_until(LONG, || p.manager().live() == 2));
    let s = p.state();
    assert_eq!((s.open, s.idle, s.connecting), (2, 1, 0), "{s:?}");
    // With no spare left, a discard is replaced.
    let c = p.get().unwrap();
    assert!(wait_until(LONG, || p.state().idle == 1), "{:?}", p.state());
    drop((b, c));
}

#[test]
fn connectors_started_for_a_waiter_stop_when_it_leaves() {
    let p = elastic(4, 0, LONG);
    p.manager().fail.store(true, Ordering::SeqCst);
    let e = p.get_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(e.is_timeout() || e.is_unavailable(), "{e}");
    // Nobody wants the slot any more: its connector ends at its next
    // attempt instead of retrying forever.
    assert!(
        wait_until(LONG, || p.state().connecting == 0),
        "{:?}",
        p.state()
    );
    assert_eq!(p.state().open, 0);
    // Demand comes back: a new connector serves it.
    p.manager().fail.store(false, Ordering::SeqCst);
    drop(p.get().unwrap());
    assert_eq!(p.state().open, 1);
}

#[test]
fn resize_up_opens_the_new_slots() {
    let p = mock_pool(2, ErrorSet::io());
    p.resize(5).unwrap();
    assert_eq!(p.size(), 5);
    p.wait_ready(LONG).unwrap();
    let s = p.state();
    assert_eq!((s.size, s.min_idle, s.open), (5, 5, 5), "{s:?}");
    assert_eq!(p.manager().live(), 5);
}

#[test]
fn resize_down_closes_idle_now_and_the_rest_as_they_come_back() {
    let p = mock_pool(4, ErrorSet::io());
    let held = [p.get().unwrap(), p.get().unwrap(), p.get().unwrap()];
    p.resize(1).unwrap();
    // The idle one closed at once; three are out, over the new size.
    assert!(wait_until(LONG, || p.manager().live() == 3));
    let s = p.state();
    assert_eq!((s.size, s.open, s.idle, s.in_use), (1, 3, 0, 3), "{s:?}");
    // The first two back close (counted as surplus, not replaced); the last
    // one stays.
    let [a, b, c] = held;
    drop(a);
    drop(b);
    assert!(wait_until(LONG, || p.manager().live() == 1));
    let s = p.state();
    assert_eq!((s.open, s.in_use, s.connecting), (1, 1, 0), "{s:?}");
    assert_eq!(s.counters.discarded.surplus, 3, "{s:?}");
    drop(c);
    let s = p.state();
    assert_eq!((s.open, s.idle), (1, 1), "{s:?}");
    assert_eq!(s.counters.created, 4, "nothing replaced: {s:?}");
    // A connection discarded at the new size is replaced as usual.
    p.get().unwrap().discard();
    p.wait_ready(LONG).unwrap();
    assert_eq!(p.state().counters.created, 5);
}

#[test]
fn resize_down_stops_connectors_above_the_new_size() {
    // Every connect fails from the start: four connectors retry.
    let failing = Mock::default();
    failing.fail.store(true, Ordering::SeqCst);
    let p = ConnectionPool::builder()
        .size(4)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
        .build(failing)
        .unwrap();
    let attempts = || p.manager().attempts.load(Ordering::SeqCst);
    assert!(wait_until(LONG, || attempts() >= 4));
    p.resize(1).unwrap();
    // Three give their slots up at their next attempt.
    assert!(
        wait_until(LONG, || p.state().connecting == 1),
        "{:?}",
        p.state()
    );
    assert_eq!(p.state().open, 0);
    p.manager().fail.store(false, Ordering::SeqCst);
    p.wait_ready(LONG).unwrap();
    let s = p.state();
    assert_eq!((s.open, s.connecting), (1, 0), "{s:?}");
    assert_eq!(p.manager().live(), 1);
}

#[test]
fn bad_sizes_are_refused_and_change_nothing() {
    let p = mock_pool(2, ErrorSet::io());
    let e = p.resize(0).unwrap_err();
    assert!(e.to_string().contains("size"), "{e}");
    assert!(p.resize(greenpool::MAX_SIZE + 1).is_err());
    assert_eq!(p.size(), 2);
    assert_eq!(p.state().open, 2);
    let e = ConnectionPool::builder()
        .size(2)
        .min_idle(3)
        .build(Mock::default())
        .unwrap_err();
    assert!(e.to_string().contains("min_idle"), "{e}");
    // Resizing a closed pool does nothing.
    p.close();
    p.resize(3).unwrap();
    assert!(wait_until(LONG, || p.state().background_tasks == 0));
    assert_eq!(p.state().open + p.state().connecting, 0);
}

#[test]
fn a_min_idle_above_a_lowered_size_acts_as_the_size() {
    let p = elastic(4, 3, LONG);
    p.wait_ready(LONG).unwrap();
    p.resize(2).unwrap();
    assert!(wait_until(LONG, || p.state().open == 2), "{:?}", p.state());
    let s = p.state();
    assert_eq!((s.size, s.min_idle, s.connecting), (2, 2, 0), "{s:?}");
    p.resize(4).unwrap();
    assert!(wait_until(LONG, || p.state().open == 3), "{:?}", p.state());
}
