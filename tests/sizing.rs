//! Sizing: taking a connection out of the pool for good (`detach`).

mod common;

use std::time::Duration;

use common::{mock_pool, wait_until};
use greenpool::ErrorSet;

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
