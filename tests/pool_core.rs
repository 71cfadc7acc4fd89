//! The pool's core behaviour against a mock manager: checkout, FIFO hand-off,
//! discard rules, backoff, close. Network behaviour is in `pool_network.rs`.

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use common::{wait_until, Mock};
use greenpool::runtime::{self, spawn};
use greenpool::{ConnectionPool, DiscardReason, Error, ErrorSet};

const LONG: Duration = Duration::from_secs(10);

fn pool(size: usize) -> ConnectionPool<Mock> {
    let p = ConnectionPool::builder()
        .size(size)
        .checkout_timeout(LONG)
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    p
}

#[test]
fn builder_rejects_bad_configuration_with_a_clear_error() {
    let e = ConnectionPool::builder()
        .size(0)
        .build(Mock::default())
        .unwrap_err();
    assert!(e.to_string().contains("size must be at least 1"), "{e}");
    let e = ConnectionPool::new(Mock::default(), 0).unwrap_err();
    assert!(e.to_string().contains("size"), "{e}");
    let e = ConnectionPool::builder()
        .checkout_timeout(Duration::ZERO)
        .build(Mock::default())
        .unwrap_err();
    assert!(
        e.to_string().contains("checkout_timeout must not be zero"),
        "{e}"
    );
    assert!(e.to_string().contains("try_get"), "{e}");
    for b in [
        ConnectionPool::builder().keepalive(Duration::ZERO),
        ConnectionPool::builder().idle_timeout(Duration::ZERO),
        ConnectionPool::builder().max_lifetime(Duration::ZERO),
        ConnectionPool::builder().health_check_timeout(Duration::ZERO),
    ] {
        let e = b.build(Mock::default()).unwrap_err();
        assert!(e.to_string().contains("must not be zero"), "{e}");
    }
    let e = ConnectionPool::builder()
        .reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1))
        .build(Mock::default())
        .unwrap_err();
    assert!(e.to_string().contains("reconnect_backoff"), "{e}");
}

#[test]
fn fills_in_the_background_and_hands_out_distinct_connections() {
    let p = ConnectionPool::new(Mock::default(), 5).unwrap();
    p.wait_ready(LONG).unwrap();
    let s = p.state();
    assert_eq!((s.open, s.idle, s.in_use, s.connecting), (5, 5, 0, 0));
    assert_eq!(p.manager().live(), 5);
    let guards: Vec<_> = (0..5).map(|_| p.get().unwrap()).collect();
    let mut ids: Vec<u64> = guards.iter().map(|g| g.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each guard holds its own connection");
    assert_eq!(p.state().in_use, 5);
    drop(guards);
    assert_eq!(p.state().idle, 5);
    assert_eq!(p.state().counters.created, 5);
}

#[test]
fn zero_timeout_and_try_get_do_not_wait() {
    let p = pool(1);
    let held = p.get().unwrap();
    let t = Instant::now();
    let e = p.try_get().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let e = p.get_timeout(Duration::ZERO).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // inside a green thread too, where may alone would wait forever
    let p2 = p.clone();
    let e = spawn(move || p2.get_timeout(Duration::from_micros(500)).map(|_| ()))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(e.is_timeout());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        e.to_string().contains("all 1 of 1 connections in use"),
        "{e}"
    );
    // A try_get that found nothing idle is a timeout too.
    assert_eq!(p.state().counters.checkout_timeouts, 3);
    drop(held);
    assert!(p.try_get().is_ok());
}

#[test]
fn checkout_timeout_is_honoured_and_counted() {
    let p = pool(1);
    let _held = p.get().unwrap();
    let t = Instant::now();
    let e = p.get_timeout(Duration::from_millis(150)).unwrap_err();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    match &e {
        Error::Timeout { waited, .. } => assert!(*waited >= Duration::from_millis(150)),
        other => panic!("unexpected {other}"),
    }
    let s = p.state();
    assert_eq!(s.counters.checkout_timeouts, 1);
    assert_eq!(s.waiting, 0, "the timed-out waiter left the queue");
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let p = pool(1);
    let held = p.get().unwrap();
    let order = Arc::new(StdMutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..8 {
        let (p2, order2) = (p.clone(), Arc::clone(&order));
        handles.push(spawn(move || {
            let c = p2.get().unwrap();
            order2.lock().unwrap().push(i);
            // Hold it across a yield so the next waiter cannot overtake.
            runtime::sleep(Duration::from_millis(1));
            drop(c);
        }));
        // Make sure waiter i is queued before waiter i+1 arrives.
        assert!(wait_until(LONG, || p.state().waiting == i + 1));
    }
    drop(held);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[test]
fn a_returned_connection_goes_to_the_oldest_waiter_not_back_to_the_returner() {
    let p = pool(1);
    let mut c = p.get().unwrap();
    let p2 = p.clone();
    let waiter = spawn(move || p2.get().map(|g| g.id));
    assert!(wait_until(LONG, || p.state().waiting == 1));
    let first_id = c.id;
    drop(c);
    // The returner asks again at once: it must queue behind the waiter.
    let p3 = p.clone();
    let barger = spawn(move || p3.get_timeout(Duration::from_millis(50)).map(|g| g.id));
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(got, first_id);
    // The barger either timed out or got it only after the waiter released it.
    let _ = barger.join().unwrap();
    c = p.get().unwrap();
    assert_eq!(c.id, first_id);
}

#[test]
fn error_in_the_set_discards_and_a_replacement_appears() {
    let p = pool(2);
    let before = p.state().counters.created;
    let r: io::Result<()> = p.with(|_c| Err(io::Error::from(io::ErrorKind::ConnectionReset)));
    assert!(r.is_err());
    let s = p.state();
    assert_eq!(s.counters.discarded.error, 1);
    assert!(wait_until(LONG, || p.state().open == 2 && p.state().connecting == 0));
    assert_eq!(p.state().counters.created, before + 1);
    assert_eq!(p.manager().live(), 2);
}

#[derive(Debug)]
struct AppError(&'static str);
impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for AppError {}

/// A user error type wrapping a cause, and convertible from pool errors.
#[derive(Debug)]
enum UserError {
    Pool(Error),
    Protocol(Box<dyn std::error::Error + Send + Sync>),
}
impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user error")
    }
}
impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UserError::Pool(e) => Some(e),
            UserError::Protocol(e) => Some(&**e),
        }
    }
}
impl From<Error> for UserError {
    fn from(e: Error) -> Self {
        UserError::Pool(e)
    }
}

#[test]
fn error_outside_the_set_gives_the_connection_back() {
    let p = pool(1);
    let id = p.get().unwrap().id;
    let r: Result<(), UserError> = p.with(|_c| Err(UserError::Protocol("not found".into())));
    assert!(r.is_err());
    let s = p.state();
    assert_eq!(s.counters.discarded.total(), 0);
    assert_eq!(p.get().unwrap().id, id, "same connection came back");
}

#[test]
fn a_type_based_set_matches_through_a_wrapped_source_chain() {
    let p = ConnectionPool::builder()
        .size(1)
        .discard_on(ErrorSet::of::<AppError>())
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    let id = p.get().unwrap().id;
    // AppError two levels down: UserError -> io::Error(Other, AppError)
    let r: Result<(), UserError> = p.with(|_c| {
        Err(UserError::Protocol(Box::new(io::Error::other(AppError(
            "bad reply",
        )))))
    });
    assert!(r.is_err());
    assert_eq!(p.state().counters.discarded.error, 1);
    let next = p.get().unwrap().id;
    assert_ne!(next, id, "the broken connection was not handed out again");
    // an io::Error is not in this set: no discard
    let r: io::Result<()> = p.with(|_c| Err(io::Error::from(io::ErrorKind::BrokenPipe)));
    assert!(r.is_err());
    assert_eq!(p.state().counters.discarded.error, 1);
}

#[test]
fn check_marks_the_guard_and_discard_is_explicit() {
    let p = pool(2);
    let mut g = p.get().unwrap();
    let r: io::Result<()> = g.check(Err(io::Error::from(io::ErrorKind::UnexpectedEof)));
    assert!(r.is_err());
    assert!(g.is_marked_broken());
    drop(g);
    let g = p.get().unwrap();
    g.discard();
    let d = p.state().counters.discarded;
    assert_eq!((d.error, d.explicit), (1, 1));
    assert!(wait_until(LONG, || p.state().open == 2));
}

#[test]
fn a_panic_discards_the_connection_and_the_panic_continues() {
    let p = pool(1);
    let id = p.get().unwrap().id;
    let p2 = p.clone();
    let r = spawn(move || {
        let _r: io::Result<()> = p2.with(|_c| panic!("boom in user code"));
    })
    .join();
    let e = r.unwrap_err();
    assert_eq!(e.panic_message(), Some("boom in user code"));
    assert_eq!(p.state().counters.discarded.panic, 1);
    let next = p.get().unwrap().id;
    assert_ne!(next, id);
}

#[test]
fn server_down_times_out_with_the_connect_error_then_refills() {
    let m = Mock::default();
    m.fail.store(true, Ordering::SeqCst);
    let p = ConnectionPool::builder()
        .size(3)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build(m)
        .unwrap();
    let e = p.get_timeout(Duration::from_millis(300)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(msg.contains("mock backend refused the connection"), "{msg}");
    assert!(e.last_connect_error().is_some());
    let ioe: io::Error = e.into();
    assert_eq!(ioe.kind(), io::ErrorKind::TimedOut);
    let e = p.wait_ready(Duration::from_millis(50)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotReady {
                open: 0,
                size: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_timeout());
    let msg = e.to_string();
    assert!(msg.contains("only 0 of 3 connections open after"), "{msg}");
    assert!(msg.contains("mock backend refused"), "{msg}");

    // Bounded attempts during an outage: 3 slots, backoff 20ms..200ms.
    let a0 = p.manager().attempts.load(Ordering::SeqCst);
    let t0 = Instant::now();
    assert!(!wait_until(Duration::from_secs(2), || false));
    let attempts = p.manager().attempts.load(Ordering::SeqCst) - a0;
    let secs = t0.elapsed().as_secs_f64();
    // At the 200 ms cap each slot tries at most once per 100 ms (jitter lower
    // bound), so 3 slots over ~2 s make at most ~60 attempts, never a spin.
    assert!(
        attempts <= (3.0 * secs / 0.1).ceil() as u64 + 6,
        "{attempts} in {secs}s"
    );
    assert!(p.state().open + p.state().connecting <= 3);

    p.manager().fail.store(false, Ordering::SeqCst);
    let t = Instant::now();
    p.wait_ready(LONG).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(p.state().open, 3);
    assert!(p.state().counters.connect_failures > 0);
}

#[test]
fn a_panicking_connect_is_a_failed_attempt_not_a_lost_slot() {
    let m = Mock::default();
    m.panic.store(true, Ordering::SeqCst);
    let p = ConnectionPool::builder()
        .size(2)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build(m)
        .unwrap();
    let e = p.get_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(
        e.to_string()
            .contains("new_connection panicked: mock connect panicked"),
        "{e}"
    );
    p.manager().panic.store(false, Ordering::SeqCst);
    p.wait_ready(LONG)
        .unwrap_or_else(|e| panic!("{e}: {:?}", p.state()));
    assert_eq!(p.state().open, 2);
}

#[test]
fn close_fails_waiters_and_later_gets_and_closes_guards_on_drop() {
    let p = pool(2);
    let g1 = p.get().unwrap();
    let g2 = p.get().unwrap();
    let p2 = p.clone();
    let waiter = spawn(move || p2.get().map(|_| ()));
    assert!(wait_until(LONG, || p.state().waiting == 1));
    p.close();
    assert!(waiter.join().unwrap().unwrap_err().is_closed());
    assert!(p.get().unwrap_err().is_closed());
    assert!(p.is_closed());
    assert_eq!(
        p.manager().live(),
        2,
        "guards still out keep their connections"
    );
    drop(g1);
    g2.discard();
    // Closed by the pool's goodbye green threads (Manager::close), at once.
    assert!(wait_until(LONG, || p.manager().live() == 0));
    let s = p.state();
    assert_eq!((s.open, s.connecting), (0, 0));
    assert_eq!(s.counters.created, 2, "no replacement after close");
}

#[test]
fn dropping_the_last_handle_closes_the_pool_even_with_guards_out() {
    let p = pool(3);
    let live = Arc::clone(&p.manager().live);
    let guard = p.get().unwrap();
    let clone = p.clone();
    drop(p);
    assert_eq!(live.load(Ordering::SeqCst), 3, "a clone keeps it open");
    drop(clone);
    assert!(
        wait_until(LONG, || live.load(Ordering::SeqCst) == 1),
        "idle connections closed"
    );
    drop(guard);
    assert!(
        wait_until(LONG, || live.load(Ordering::SeqCst) == 0),
        "the guard closed its connection"
    );
}

#[test]
fn usable_from_os_threads_and_green_threads_at_once() {
    let p = pool(4);
    let served = Arc::new(AtomicUsize::new(0));
    let in_use_max = Arc::new(AtomicUsize::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let work = {
        let (p, served, max, holding) = (
            p.clone(),
            Arc::clone(&served),
            Arc::clone(&in_use_max),
            Arc::clone(&holding),
        );
        move || {
            for _ in 0..50 {
                let g = p.get().unwrap();
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                runtime::yield_now();
                holding.fetch_sub(1, Ordering::SeqCst);
                drop(g);
                served.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(work.clone())).collect();
    let greens: Vec<_> = (0..100).map(|_| spawn(work.clone())).collect();
    for t in threads {
        t.join().unwrap();
    }
    for g in greens {
        g.join().unwrap();
    }
    assert_eq!(served.load(Ordering::SeqCst), 104 * 50);
    assert!(in_use_max.load(Ordering::SeqCst) <= 4);
    let s = p.state();
    assert_eq!((s.open, s.idle, s.waiting), (4, 4, 0));
    assert_eq!(s.counters.created, 4);
}

#[test]
fn a_cancelled_waiter_leaves_the_queue_and_loses_nothing() {
    let p = pool(1);
    let held = p.get().unwrap();
    let p2 = p.clone();
    let waiter = spawn(move || p2.get().map(|g| g.id));
    assert!(wait_until(LONG, || p.state().waiting == 1));
    waiter.cancel();
    assert!(waiter.join().unwrap_err().is_cancelled());
    assert_eq!(p.state().waiting, 0);
    drop(held);
    assert_eq!(p.state().idle, 1);
}

#[test]
fn discard_reasons_are_counted_separately() {
    let p = pool(1);
    p.get().unwrap().discard();
    assert!(wait_until(LONG, || p.state().open == 1));
    let d = p.state().counters.discarded;
    assert_eq!(d.explicit, 1);
    assert_eq!(d.total(), 1);
    assert_eq!(DiscardReason::Keepalive.to_string(), "keepalive");
}

#[test]
fn a_guard_held_by_a_cancelled_green_thread_is_discarded_not_leaked() {
    let p = pool(2);
    let p2 = p.clone();
    // `timeout` cancels the green thread while it holds a guard: the guard is
    // dropped during the unwind, which must neither park nor lose the slot.
    let r = runtime::timeout(Duration::from_millis(50), move || {
        let _r: io::Result<()> = p2.with(|_c| {
            runtime::sleep(Duration::from_secs(60));
            Ok(())
        });
    });
    assert!(r.is_err());
    // Counted as a cancellation, not as a panic: nothing in the code failed.
    assert!(wait_until(LONG, || p.state().counters.discarded.cancelled == 1));
    assert_eq!(p.state().counters.discarded.panic, 0);
    assert!(wait_until(LONG, || p.state().open == 2));
    assert_eq!(p.state().in_use, 0);
}

#[test]
fn handles_and_guards_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ConnectionPool<Mock>>();
    send_sync::<greenpool::Error>();
    send_sync::<ErrorSet>();
    send_sync::<greenpool::Retry>();
    send::<greenpool::PooledConnection<Mock>>();
}

#[test]
fn the_pool_checkout_timeout_is_enforced_for_many_waiters() {
    let p = ConnectionPool::builder()
        .size(1)
        .checkout_timeout(Duration::from_millis(150))
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    let _held = p.get().unwrap();
    let t = Instant::now();
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let p = p.clone();
            spawn(move || {
                let t = Instant::now();
                let e = p.get().map(|_| ()).unwrap_err();
                (t.elapsed(), e)
            })
        })
        .collect();
    // and one from a plain thread
    let p2 = p.clone();
    let thread = std::thread::spawn(move || p2.get().map(|_| ()).unwrap_err());
    for w in waiters {
        let (waited, e) = w.join().unwrap();
        assert!(e.is_timeout(), "{e}");
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }
    assert!(thread.join().unwrap().is_timeout());
    assert!(t.elapsed() < Duration::from_secs(3));
    let s = p.state();
    assert_eq!(s.waiting, 0);
    assert_eq!(s.counters.checkout_timeouts, 21);
}

/// A manager whose connection is not `RefUnwindSafe` (a `Cell`): the pool is
/// unwind-safe whatever `M` is.
struct CellManager;
impl greenpool::Manager for CellManager {
    type Connection = std::cell::Cell<u32>;
    type Error = io::Error;
    fn new_connection(&self) -> io::Result<Self::Connection> {
        Ok(std::cell::Cell::new(0))
    }
}

#[test]
fn public_types_are_unwind_safe() {
    use std::panic::{RefUnwindSafe, UnwindSafe};
    fn unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}
    fn unwind_safe_by_value<T: UnwindSafe>() {}
    unwind_safe::<ConnectionPool<Mock>>();
    unwind_safe::<ConnectionPool<CellManager>>();
    unwind_safe::<ConnectionPool<greenpool::testing::LineManager>>();
    unwind_safe::<ConnectionPool<greenpool::http::HttpManager>>();
    unwind_safe::<greenpool::Builder<Mock>>();
    unwind_safe::<greenpool::Builder<CellManager>>();
    unwind_safe::<greenpool::Error>();
    unwind_safe::<greenpool::BuildError>();
    unwind_safe::<ErrorSet>();
    unwind_safe::<greenpool::Retry>();
    unwind_safe::<greenpool::State>();
    unwind_safe::<greenpool::PooledConnection<Mock>>();
    // Moved into catch_unwind, a guard is dropped by the unwind (and its
    // connection discarded), whatever the connection type; by reference it
    // follows the connection type.
    unwind_safe_by_value::<greenpool::PooledConnection<CellManager>>();

    // In use: no AssertUnwindSafe needed around a pool, a policy or a set.
    let p = pool(1);
    let policy = greenpool::Retry::new().max_failures(0);
    let set = ErrorSet::io();
    let r = std::panic::catch_unwind(|| {
        let _ = policy.call(|| p.with(|_c| Err::<(), _>(io::Error::other("x"))));
        assert!(set.matches(&io::Error::other("y")));
        panic!("boom");
    });
    assert!(r.is_err());
    assert!(wait_until(LONG, || p.state().open == 1 && p.state().idle == 1));
}
