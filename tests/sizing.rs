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
