//! Property tests: random sequences of pool operations and backend faults,
//! run against a real pool and the embedded test server, with the pool's
//! invariants checked after every step. quickcheck shrinks a failing sequence
//! to a short, readable counterexample.
//!
//! Cases: `GREENPOOL_PROPTEST_CASES` (default 60); sequence length:
//! `GREENPOOL_PROPTEST_SIZE` (default 20). This binary holds one test only:
//! it counts the process's file descriptors.

mod common;

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use greenpool::runtime::{sleep, spawn, timeout};
use greenpool::testing::{fd_count, LineClient, LineManager, SpawnFaults, TestServer};
use greenpool::{ConnectionPool, Manager, PooledConnection};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

const SIZE: usize = 3;
const GET_TIMEOUT: Duration = Duration::from_millis(100);
/// How late a `get` may return after its timeout (a loaded CI machine).
const GET_SLACK: Duration = Duration::from_millis(700);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
enum Op {
    /// `get_timeout(100 ms)`; the guard is kept.
    Get,
    /// Drop a held guard (index modulo the number held).
    Return(usize),
    /// `discard()` a held guard.
    Discard(usize),
    /// Pass an `io::Error` (in the pool's set) through a held guard, drop it.
    ErrInSet(usize),
    /// Pass an error outside the set through a held guard, drop it.
    ErrNotInSet(usize),
    /// `detach()` a held guard; the connection is closed outside the pool.
    Detach(usize),
    /// A green thread checks out a connection and panics holding it.
    PanicInGuard,
    /// Make new connections fail (true) or work (false).
    ConnectFails(bool),
    /// The server resets every open connection.
    ResetAll,
    /// The server closes connections idle for 30 ms (true), or stops (false).
    IdleClose(bool),
    /// Time passes (milliseconds).
    Sleep(u8),
    /// `close()` the pool.
    Close,
    /// A green thread checks out a connection, works on it for 30 ms, and is
    /// cancelled after this many milliseconds (in the checkout, in a
    /// validation, or holding the connection).
    Cancel(u8),
    /// The next this many spawns of the pool's green threads fail.
    SpawnFails(u8),
    /// The server stops answering (true: requests, and so validations and
    /// keepalives, hang until their timeouts) or answers again (false).
    Stall(bool),
    /// `resize(1 + n % MAX_RESIZE)`.
    Resize(u8),
}

/// The largest size a `Resize` asks for.
const MAX_RESIZE: u8 = 4;

/// How a case's pool is built: every connection kept open (the default), or
/// `min_idle` below the size, so that it grows on demand and shrinks after
/// `SHRINK_AFTER` idle.
#[derive(Clone, Debug)]
struct Shape {
    min_idle: Option<usize>,
}

const SHRINK_AFTER: Duration = Duration::from_millis(150);

impl Arbitrary for Shape {
    fn arbitrary(g: &mut Gen) -> Self {
        let min_idle = bool::arbitrary(g).then(|| usize::arbitrary(g) % SIZE);
        Shape { min_idle }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        match self.min_idle {
            Some(_) => Box::new(std::iter::once(Shape { min_idle: None })),
            None => Box::new(std::iter::empty()),
        }
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let i = usize::arbitrary(g);
        match u8::arbitrary(g) % 26 {
            24 | 25 => Op::Resize(u8::arbitrary(g) % MAX_RESIZE),
            20 | 21 => Op::Cancel(u8::arbitrary(g) % 60),
            22 => Op::SpawnFails(u8::arbitrary(g) % 4),
            23 => Op::Stall(bool::arbitrary(g)),
            0..=4 => Op::Get,
            5..=7 => Op::Return(i),
            8 => Op::Discard(i),
            9 => Op::ErrInSet(i),
            10 => Op::Detach(i),
            11 => Op::ErrNotInSet(i),
            12 => Op::PanicInGuard,
            13 => Op::ConnectFails(bool::arbitrary(g)),
            14 => Op::ResetAll,
            15 => Op::IdleClose(bool::arbitrary(g)),
            16..=18 => Op::Sleep(u8::arbitrary(g) % 100),
            _ => Op::Close,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        match *self {
            Op::Sleep(ms) if ms > 0 => Box::new(std::iter::once(Op::Sleep(ms / 2))),
            Op::Cancel(ms) if ms > 0 => Box::new(std::iter::once(Op::Cancel(ms / 2))),
            Op::SpawnFails(n) if n > 1 => Box::new(std::iter::once(Op::SpawnFails(1))),
            Op::Resize(n) if n > 0 => Box::new(std::iter::once(Op::Resize(n - 1))),
            Op::Return(i)
            | Op::Discard(i)
            | Op::ErrInSet(i)
            | Op::ErrNotInSet(i)
            | Op::Detach(i)
                if i > 0 =>
            {
                let same_kind = match self {
                    Op::Return(_) => Op::Return(0),
                    Op::Discard(_) => Op::Discard(0),
                    Op::ErrInSet(_) => Op::ErrInSet(0),
                    Op::Detach(_) => Op::Detach(0),
                    _ => Op::ErrNotInSet(0),
                };
                Box::new(std::iter::once(same_kind))
            }
            _ => Box::new(std::iter::empty()),
        }
    }
}

/// The line manager with a switch that makes connects fail.
struct Flaky {
    inner: LineManager,
    fail: AtomicBool,
}

impl Manager for Flaky {
    type Connection = LineClient;
    type Error = io::Error;
    fn new_connection(&self) -> io::Result<LineClient> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "injected connect failure",
            ));
        }
        self.inner.new_connection()
    }
    fn keepalive(&self, c: &mut LineClient) -> io::Result<()> {
        self.inner.keepalive(c)
    }
}

#[derive(Debug)]
struct NotBroken;
impl std::fmt::Display for NotBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an application error")
    }
}
impl std::error::Error for NotBroken {}

/// Fails the case with a message (quickcheck prints it with the sequence).
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn run_case(shape: &Shape, ops: &[Op]) -> Result<(), String> {
    let base_fds = fd_count();
    let server = TestServer::start().map_err(|e| e.to_string())?;
    let faults = SpawnFaults::new();
    let mut builder = ConnectionPool::builder().size(SIZE);
    if let Some(n) = shape.min_idle {
        builder = builder.min_idle(n).idle_timeout(SHRINK_AFTER);
    }
    let pool = builder
        .spawn_faults(faults.clone())
        .validate_after(Duration::from_millis(20))
        .checkout_timeout(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(5), BACKOFF_MAX)
        .health_check_timeout(Duration::from_millis(300))
        .build(Flaky {
            inner: LineManager::new(server.addr()).timeout(Duration::from_millis(300)),
            fail: AtomicBool::new(false),
        })
        .map_err(|e| e.to_string())?;
    let mut held: Vec<PooledConnection<Flaky>> = Vec::new();
    // Connections that failed with an error in the set, were discarded, or
    // were held by a panicking green thread: never to be handed out again.
    let mut dead: HashSet<u64> = HashSet::new();
    let mut closed = false;
    let mut size = SIZE;

    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Get => {
                let t = Instant::now();
                let r = pool.get_timeout(GET_TIMEOUT);
                let took = t.elapsed();
                ensure!(
                    took <= GET_TIMEOUT + GET_SLACK,
                    "step {step}: get took {took:?}, timeout {GET_TIMEOUT:?}"
                );
                match r {
                    Ok(g) => {
                        ensure!(
                            !dead.contains(&g.id()),
                            "step {step}: dead #{} handed out",
                            g.id()
                        );
                        ensure!(
                            held.iter().all(|h| h.id() != g.id()),
                            "step {step}: #{} held by two guards",
                            g.id()
                        );
                        held.push(g);
                    }
                    Err(e) if closed => ensure!(e.is_closed(), "step {step}: {e}"),
                    // (A pool that opens on demand may have no connection
                    // open while connects fail: then it fails fast.)
                    Err(e) => ensure!(e.is_timeout() || e.is_unavailable(), "step {step}: {e}"),
                }
            }
            Op::Return(i) if !held.is_empty() => drop(held.remove(i % held.len())),
            Op::Discard(i) if !held.is_empty() => {
                let g = held.remove(i % held.len());
                dead.insert(g.id());
                g.discard();
            }
            Op::ErrInSet(i) if !held.is_empty() => {
                let mut g = held.remove(i % held.len());
                dead.insert(g.id());
                let _ = g.check(Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe)));
            }
            Op::ErrNotInSet(i) if !held.is_empty() => {
                let mut g = held.remove(i % held.len());
                let _ = g.check(Err::<(), _>(NotBroken));
                ensure!(
                    !g.is_marked_broken(),
                    "step {step}: an error outside the set marked it"
                );
            }
            Op::Detach(i) if !held.is_empty() => {
                let g = held.remove(i % held.len());
                dead.insert(g.id());
                drop(g.detach());
            }
            Op::Return(_)
            | Op::Discard(_)
            | Op::ErrInSet(_)
            | Op::ErrNotInSet(_)
            | Op::Detach(_) => {}
            Op::PanicInGuard => {
                let (p, seen) = (pool.clone(), Arc::new(Mutex::new(None)));
                let seen2 = Arc::clone(&seen);
                let joined = spawn(move || {
                    if let Ok(g) = p.get_timeout(GET_TIMEOUT) {
                        *seen2.lock().unwrap() = Some(g.id());
                        panic!("injected panic while holding #{}", g.id());
                    }
                })
                .join();
                let seen_id = *seen.lock().unwrap();
                if let Some(id) = seen_id {
                    ensure!(joined.is_err(), "step {step}: the panic was lost");
                    dead.insert(id);
                }
            }
            Op::ConnectFails(on) => pool.manager().fail.store(on, Ordering::SeqCst),
            Op::ResetAll => {
                server.reset_all();
            }
            Op::IdleClose(on) => server.set_idle_close(on.then_some(Duration::from_millis(30))),
            Op::Sleep(ms) => sleep(Duration::from_millis(u64::from(ms))),
            Op::Close => {
                pool.close();
                closed = true;
            }
            Op::Cancel(ms) => {
                let (p, seen) = (pool.clone(), Arc::new(Mutex::new(None)));
                let seen2 = Arc::clone(&seen);
                let r = timeout(Duration::from_millis(u64::from(ms)), move || {
                    if ms % 2 == 0 {
                        // A guard from get(), dropped by the unwind.
                        if let Ok(g) = p.get_timeout(GET_TIMEOUT) {
                            *seen2.lock().unwrap() = Some(g.id());
                            sleep(Duration::from_millis(30));
                            // Past its last yield, the guard goes back
                            // healthy even if the timeout gives up on this
                            // green thread now (before it sends its result).
                            *seen2.lock().unwrap() = None;
                        }
                    } else {
                        // with(), which catches the unwind itself.
                        let _: io::Result<()> = p.with(|c| {
                            sleep(Duration::from_millis(30));
                            c.ping()
                        });
                    }
                });
                // A connection held when the cancel came is never reused.
                let seen_id = *seen.lock().unwrap();
                if let (Err(_), Some(id)) = (r, seen_id) {
                    dead.insert(id);
                }
            }
            Op::SpawnFails(n) => faults.fail_next(u64::from(n)),
            Op::Stall(on) => server.set_stall(on),
            Op::Resize(n) => {
                let n = 1 + usize::from(n % MAX_RESIZE);
                pool.resize(n).map_err(|e| e.to_string())?;
                if !closed {
                    size = n;
                }
            }
        }
        let s = pool.state();
        ensure!(
            s.open + s.connecting <= SIZE.max(usize::from(MAX_RESIZE)),
            "step {step}: over any size: {s:?}"
        );
        ensure!(
            s.idle + s.in_use + s.checking == s.open,
            "step {step}: {s:?}"
        );
        // A cancelled caller's validation may still be finishing: wait (with
        // a deadline) for it to give its connection back.
        let settled = wait_for(|| pool.state().in_use == held.len());
        let s = pool.state();
        ensure!(
            settled,
            "step {step}: in_use {} but {} held: {s:?}",
            s.in_use,
            held.len()
        );
        // Once the surplus of a shrink is back, never above the size
        // (connections held by users cannot be taken from them).
        let bounded = wait_for(|| {
            let s = pool.state();
            s.open + s.connecting <= size.max(held.len())
        });
        ensure!(bounded, "step {step}: over size {size}: {:?}", pool.state());
        // No slot lost: every slot the pool wants is open or being opened
        // again (a slot given back by a failed spawn is reopened by
        // maintenance) — all of them by default, those held plus `min_idle`
        // with `min_idle`.
        if !closed {
            let min_idle = shape.min_idle.unwrap_or(size).min(size);
            let wanted = size.min(held.len() + min_idle);
            let full = wait_for(|| {
                let s = pool.state();
                s.open + s.connecting >= wanted
            });
            ensure!(
                full,
                "step {step}: slot lost (want {wanted}): {:?}",
                pool.state()
            );
        }
        // A cancelled waiter leaves the queue when it unwinds, which may be
        // just after `timeout` returned.
        ensure!(
            wait_for(|| pool.state().waiting == 0),
            "step {step}: a waiter was left behind: {:?}",
            pool.state()
        );
    }

    // Faults stop: the pool is full again within one backoff period (plus
    // the time to connect on a loaded machine).
    if !closed {
        pool.manager().fail.store(false, Ordering::SeqCst);
        server.set_idle_close(None);
        server.set_stall(false);
        let limit = BACKOFF_MAX + Duration::from_millis(900);
        if let Err(e) = pool.wait_ready(limit) {
            return Err(format!(
                "not full {limit:?} after faults stopped: {e}; {:?}",
                pool.state()
            ));
        }
    }

    // Close and drop: nothing outlives the pool. (A stalled server does not
    // notice a client's close until it answers again.)
    server.set_stall(false);
    drop(held);
    pool.close();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.state().background_tasks > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(2));
    }
    ensure!(
        pool.state().background_tasks == 0,
        "tasks outlive the pool: {:?}",
        pool.state()
    );
    drop(pool);
    ensure!(
        server.wait_open(0, Duration::from_secs(10)),
        "the server still sees {} connections",
        server.open()
    );
    drop(server);
    if let Some(base) = base_fds {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fd_count().unwrap_or(0) > base && Instant::now() < deadline {
            sleep(Duration::from_millis(2));
        }
        let now = fd_count().unwrap_or(0);
        ensure!(now <= base, "fd count {now}, was {base}");
    }
    Ok(())
}

/// How long an invariant that settles after a cancellation may take.
const SETTLE: Duration = Duration::from_secs(3);

/// Wait (with a deadline) for `cond`.
fn wait_for(cond: impl FnMut() -> bool) -> bool {
    common::wait_until(SETTLE, cond)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn pool_invariants_hold_under_random_operations_and_faults() {
    // Start the runtime (and its descriptors) before the first fd baseline.
    drop(TestServer::start().unwrap());
    let cases = env_or("GREENPOOL_PROPTEST_CASES", 60);
    let size = env_or("GREENPOOL_PROPTEST_SIZE", 20) as usize;
    fn prop(shape: Shape, ops: Vec<Op>) -> TestResult {
        match run_case(&shape, &ops) {
            Ok(()) => TestResult::passed(),
            // quickcheck names the arguments only of a failure that shrinking
            // reproduced: name them here, so a failure that does not recur
            // still says what led to it.
            Err(why) => TestResult::error(format!("{why}\n  shape: {shape:?}\n  ops: {ops:?}")),
        }
    }
    QuickCheck::new()
        .tests(cases)
        .max_tests(cases * 4)
        .rng(Gen::new(size))
        .quickcheck(prop as fn(Shape, Vec<Op>) -> TestResult);
}
