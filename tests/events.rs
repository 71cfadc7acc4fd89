//! Event hooks (`Builder::event_handler`): what each event reports, that a
//! handler runs outside the pool lock, and that a panicking handler costs
//! the pool nothing.

mod common;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use common::{wait_until, Mock};
use greenpool::events::{
    CheckKind, Checkin, Checkout, CheckoutFailed, ConnectFailed, Connected, Discarded, HealthCheck,
    PoolEvents,
};
use greenpool::runtime::spawn;
use greenpool::{ConnectionPool, DiscardReason, State};

const LONG: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Ev {
    Connected(u64, Duration),
    ConnectFailed(String, bool),
    Checkout(u64, Duration),
    CheckoutFailed(String),
    Checkin(u64),
    Discarded(u64, DiscardReason),
    Check(#[allow(dead_code)] u64, CheckKind, Result<(), String>),
    State(State),
}

#[derive(Default)]
struct Record(StdMutex<Vec<Ev>>);

impl Record {
    fn push(&self, e: Ev) {
        self.0.lock().unwrap().push(e);
    }
    fn all(&self) -> Vec<Ev> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.all().iter().filter(|e| f(e)).count()
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl PoolEvents for Record {
    fn connected(&self, e: &Connected) {
        self.push(Ev::Connected(e.id, e.took));
    }
    fn connect_failed(&self, e: &ConnectFailed<'_>) {
        self.push(Ev::ConnectFailed(e.error.to_string(), e.permanent));
    }
    fn checkout(&self, e: &Checkout) {
        self.push(Ev::Checkout(e.id, e.waited));
    }
    fn checkout_failed(&self, e: &CheckoutFailed<'_>) {
        self.push(Ev::CheckoutFailed(e.reason().to_owned()));
    }
    fn checkin(&self, e: &Checkin) {
        self.push(Ev::Checkin(e.id));
    }
    fn discarded(&self, e: &Discarded) {
        self.push(Ev::Discarded(e.id, e.reason));
    }
    fn health_check(&self, e: &HealthCheck<'_>) {
        self.push(Ev::Check(e.id, e.kind, e.result.map_err(str::to_owned)));
    }
    fn state(&self, s: &State) {
        self.push(Ev::State(*s));
    }
}

#[test]
fn events_report_connects_checkouts_checkins_timeouts_and_discards() {
    let rec = Arc::new(Record::default());
    let mock = Mock::default();
    mock.connect_delay_ms.store(5, Ordering::SeqCst);
    let p = ConnectionPool::builder()
        .size(2)
        .checkout_timeout(LONG)
        .no_validation()
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .event_handler(Arc::clone(&rec))
        .build(mock)
        .unwrap();
    p.wait_ready(LONG).unwrap();
    let connected: Vec<_> = rec
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::Connected(id, took) => Some((id, took)),
            _ => None,
        })
        .collect();
    assert_eq!(connected.len(), 2, "{:?}", rec.all());
    assert!(connected
        .iter()
        .all(|(_, took)| *took >= Duration::from_millis(5)));
    rec.clear();

    // An idle connection at once: waited zero; then its checkin.
    let g = p.get().unwrap();
    let id = g.id();
    drop(g);
    let evs = rec.all();
    assert!(
        matches!(evs[..], [Ev::Checkout(a, w), Ev::Checkin(b)] if a == id && b == id && w.is_zero()),
        "{evs:?}"
    );

    // Both out: a checkout that times out, then one that waits.
    let a = p.get().unwrap();
    let b = p.get().unwrap();
    assert!(p.get_timeout(Duration::from_millis(20)).is_err());
    assert_eq!(
        rec.count(|e| matches!(e, Ev::CheckoutFailed(k) if k == "timeout")),
        1
    );
    let p2 = p.clone();
    let waiter = spawn(move || p2.get().map(|g| g.id()));
    assert!(wait_until(LONG, || p.state().waiting == 1));
    greenpool::runtime::sleep(Duration::from_millis(20));
    let a_id = a.id();
    drop(a);
    assert_eq!(waiter.join().unwrap().unwrap(), a_id);
    let waited = rec.all().into_iter().find_map(|e| match e {
        Ev::Checkout(id, w) if id == a_id && !w.is_zero() => Some(w),
        _ => None,
    });
    assert!(
        waited.is_some_and(|w| w >= Duration::from_millis(20)),
        "{:?}",
        rec.all()
    );

    // A discard says which connection and why; its replacement connects.
    let b_id = b.id();
    b.discard();
    assert_eq!(
        rec.count(|e| matches!(e, Ev::Discarded(id, DiscardReason::Explicit) if *id == b_id)),
        1
    );
    assert!(wait_until(LONG, || rec
        .count(|e| matches!(e, Ev::Connected(..)))
        == 1));

    // Connects failing: each failure is reported, with the manager's error.
    p.manager().fail.store(true, Ordering::SeqCst);
    p.get().unwrap().discard();
    assert!(wait_until(LONG, || rec.count(|e| matches!(
        e,
        Ev::ConnectFailed(msg, false) if msg.contains("refused")
    )) >= 2));
    p.manager().fail.store(false, Ordering::SeqCst);
    p.wait_ready(LONG).unwrap();

    // A closed pool: checkouts fail with Closed.
    p.close();
    assert!(p.get().is_err());
    assert_eq!(
        rec.count(|e| matches!(e, Ev::CheckoutFailed(k) if k == "closed")),
        1
    );
    // The last state report says closed.
    assert!(wait_until(LONG, || rec
        .count(|e| matches!(e, Ev::State(s) if s.closed))
        == 1));
}

#[test]
fn events_report_health_checks_and_the_pools_counts() {
    let rec = Arc::new(Record::default());
    let p = ConnectionPool::builder()
        .size(2)
        .checkout_timeout(LONG)
        .keepalive(Duration::from_millis(20))
        .validate_after(Duration::ZERO)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .event_handler(Arc::clone(&rec))
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    let passed = |kind| rec.count(|e| matches!(e, Ev::Check(_, k, Ok(())) if *k == kind));
    assert!(wait_until(LONG, || passed(CheckKind::Keepalive) >= 2));
    // Every idle checkout is validated (validate_after zero).
    assert!(wait_until(LONG, || p.state().idle == 2));
    drop(p.get().unwrap());
    assert!(passed(CheckKind::Validation) >= 1, "{:?}", rec.all());

    // Failing keepalives: reported with the error, then the discard.
    p.manager().unhealthy.store(true, Ordering::SeqCst);
    assert!(wait_until(LONG, || rec.count(|e| matches!(
        e,
        Ev::Check(_, CheckKind::Keepalive, Err(msg)) if msg.contains("mock: dead")
    )) >= 1));
    assert!(wait_until(LONG, || rec.count(|e| matches!(
        e,
        Ev::Discarded(_, DiscardReason::Keepalive)
    )) >= 1));
    p.manager().unhealthy.store(false, Ordering::SeqCst);

    // Counts arrive once per tick; they add up as State promises.
    assert!(wait_until(LONG, || rec
        .count(|e| matches!(e, Ev::State(_)))
        >= 3));
    for e in rec.all() {
        if let Ev::State(s) = e {
            assert_eq!(s.open, s.idle + s.in_use + s.checking, "{s:?}");
            assert!(s.open + s.connecting <= s.size, "{s:?}");
        }
    }
}

/// Calls `f` with the event's name on every event.
struct OnEvery<F>(F);

impl<F: Fn(&'static str) + Send + Sync + 'static> PoolEvents for OnEvery<F> {
    fn connected(&self, _: &Connected) {
        (self.0)("connected")
    }
    fn connect_failed(&self, _: &ConnectFailed<'_>) {
        (self.0)("connect_failed")
    }
    fn checkout(&self, _: &Checkout) {
        (self.0)("checkout")
    }
    fn checkout_failed(&self, _: &CheckoutFailed<'_>) {
        (self.0)("checkout_failed")
    }
    fn checkin(&self, _: &Checkin) {
        (self.0)("checkin")
    }
    fn discarded(&self, _: &Discarded) {
        (self.0)("discarded")
    }
    fn health_check(&self, _: &HealthCheck<'_>) {
        (self.0)("health_check")
    }
    fn state(&self, _: &State) {
        (self.0)("state")
    }
}

/// Calls back into the pool from every event: if any were reported under
/// the pool lock, this would deadlock (the lock is not reentrant).
#[derive(Default)]
struct Reentrant {
    pool: StdMutex<Option<ConnectionPool<Mock>>>,
    pokes: StdMutex<u64>,
}

impl Reentrant {
    fn poke(&self) {
        let pool = self.pool.lock().unwrap().clone();
        if let Some(p) = pool {
            let _ = p.state();
            *self.pokes.lock().unwrap() += 1;
        }
    }
}

#[test]
fn handlers_run_outside_the_pool_lock() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let h = Arc::new(Reentrant::default());
        let on_every = {
            let h = Arc::clone(&h);
            OnEvery(move |_| h.poke())
        };
        let p = ConnectionPool::builder()
            .size(2)
            .checkout_timeout(LONG)
            .keepalive(Duration::from_millis(10))
            .validate_after(Duration::ZERO)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
            .event_handler(on_every)
            .build(Mock::default())
            .unwrap();
        *h.pool.lock().unwrap() = Some(p.clone());
        p.wait_ready(LONG).unwrap();
        let p2 = p.clone();
        let worker = spawn(move || {
            for i in 0..200 {
                let _: io::Result<()> = p2.with(|_c| {
                    if i % 10 == 0 {
                        Err(io::Error::other("broken"))
                    } else {
                        Ok(())
                    }
                });
            }
        });
        worker.join().unwrap();
        let a = p.get().unwrap();
        let b = p.get().unwrap();
        let _ = p.try_get();
        drop((a, b));
        p.manager().fail.store(true, Ordering::SeqCst);
        p.get().unwrap().discard();
        let failed = wait_until(LONG, || p.state().counters.connect_failures > 0);
        p.manager().fail.store(false, Ordering::SeqCst);
        assert!(wait_until(LONG, || p.state().counters.keepalives > 0));
        // Break the cycle (handler -> pool) so the pool can close.
        h.pool.lock().unwrap().take();
        p.close();
        let pokes = *h.pokes.lock().unwrap();
        tx.send((failed, pokes)).unwrap();
    });
    let (failed, pokes) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("deadlock: an event was reported while the pool lock was held");
    assert!(failed);
    assert!(pokes > 400, "{pokes}");
}

#[test]
fn a_panicking_handler_costs_the_pool_nothing() {
    let p = ConnectionPool::builder()
        .size(3)
        .checkout_timeout(LONG)
        .keepalive(Duration::from_millis(10))
        .validate_after(Duration::ZERO)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .event_handler(OnEvery(|what| panic!("the {what} hook panics")))
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    for i in 0..30 {
        let r: io::Result<u64> = p.with(|c| {
            if i % 3 == 0 {
                Err(io::Error::other("broken"))
            } else {
                Ok(c.id)
            }
        });
        assert_eq!(r.is_ok(), i % 3 != 0);
    }
    // A guard dropped by an unwind: the discard hook panics inside it.
    let p2 = p.clone();
    let joined = spawn(move || {
        let _g = p2.get().unwrap();
        panic!("the caller panics holding a connection");
    })
    .join();
    assert!(joined.is_err());
    let held: Vec<_> = (0..3).map(|_| p.get().unwrap()).collect();
    assert!(p.try_get().is_err());
    drop(held);
    p.manager().fail.store(true, Ordering::SeqCst);
    p.get().unwrap().discard();
    assert!(wait_until(LONG, || p.state().counters.connect_failures >= 2));
    p.manager().fail.store(false, Ordering::SeqCst);
    assert!(wait_until(LONG, || p.state().counters.keepalives >= 3));
    // No slot or connection lost, and the pool still works.
    p.wait_ready(LONG).unwrap();
    assert!(wait_until(LONG, || {
        let s = p.state();
        s.in_use == 0 && s.open + s.connecting == 3
    }));
    assert!(p.with(|c| Ok::<_, io::Error>(c.id)).is_ok());
    p.close();
    assert!(wait_until(LONG, || p.state().background_tasks == 0));
    assert!(wait_until(LONG, || p.manager().live() == 0));
}
