//! IO timeouts across worker threads: the regression tests for the race in
//! may 0.3.51's IO timers that `vendor/may` fixes (see `vendor/README.md`).
//!
//! may keeps the timer of a read/write/connect timeout in the timer list of
//! the worker that owns the socket (`fd % workers`). Unpatched, three things
//! go wrong:
//!
//! 1. a green thread running on another worker unlinks that timer while the
//!    owner walks the list (`RefCell already borrowed`, `Node value is None`,
//!    a segfault);
//! 2. a cancelled wait leaves its timer armed, and when it fires it ends the
//!    *next* wait on the same socket early with `TimedOut`;
//! 3. after that, the socket can be closed with a timer still pointing at its
//!    freed event data (a use after free when the timer fires).
//!
//! This binary runs on several workers (`GREENPOOL_IO_RACE_WORKERS`, default
//! `max(4, CPUs)`; 4 workers on 2 cores preempt each other inside the race
//! windows) for `GREENPOOL_IO_RACE_SECS` seconds (default 8), with
//! `GREENPOOL_IO_RACE_CLIENTS` clients (default 96);
//! `GREENPOOL_IO_RACE_CANCELS=0` leaves out the cancelled waits, to measure
//! the cross-worker race (1.) alone.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use greenpool_runtime::net::{TcpListener, TcpStream};
use greenpool_runtime::sync::Mutex;
use greenpool_runtime::{spawn, yield_now, Config};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Configure this binary's runtime once: several workers, whatever the default.
fn workers() -> usize {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = env_u64("GREENPOOL_IO_RACE_WORKERS", cpus.max(4) as u64) as usize;
        Config::new()
            .workers(n)
            .apply()
            .expect("this test binary configures the runtime first");
    });
    greenpool_runtime::may::config().get_workers()
}

/// A connected pair on loopback: (client side, server side).
fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// A client-side stream whose fd belongs to another worker's event loop than
/// `other`'s (when there are several workers).
fn pair_on_other_worker(
    listener: &TcpListener,
    other: &TcpStream,
    workers: usize,
) -> (TcpStream, TcpStream) {
    let mut spare = Vec::new();
    loop {
        let p = pair(listener);
        if workers < 2 || p.0.as_raw_fd() as usize % workers != other.as_raw_fd() as usize % workers
        {
            return p;
        }
        spare.push(p);
    }
}

/// Read one byte with a read timeout of `limit`. Returns `None` on a timeout,
/// and panics if the timeout fired before `limit` had passed: only a timer
/// left behind by an earlier wait can do that.
fn read_byte(s: &mut TcpStream, limit: Duration) -> Option<u8> {
    s.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Some(b[0]),
        Ok(_) => panic!("unexpected end of stream"),
        Err(e) if e.kind() == ErrorKind::TimedOut => {
            let waited = started.elapsed();
            assert!(
                waited >= limit,
                "a read with a {limit:?} timeout timed out after {waited:?}: \
                 a stale IO timer fired on it"
            );
            None
        }
        Err(e) => panic!("read failed: {e}"),
    }
}

/// A wait that was cancelled leaves no timer behind: the next read on the
/// same socket waits its own full timeout. (Unpatched may: the old timer ends
/// the new wait after the old wait's 30 ms.) Fails with one worker too.
#[test]
fn a_cancelled_read_leaves_no_timer_for_the_next_read() {
    workers();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (client, _server) = pair(&listener);
    let client = Arc::new(Mutex::new(client));
    for _ in 0..3 {
        let shared = Arc::clone(&client);
        let reader = spawn(move || {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            read_byte(&mut s, Duration::from_millis(30))
        });
        // Cancelled before or while it waits: either way its timer is armed.
        yield_now();
        reader.cancel();
        let err = reader.join().expect_err("the reader was cancelled");
        assert!(err.is_cancelled(), "{err}");

        let shared = Arc::clone(&client);
        let next = spawn(move || {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            read_byte(&mut s, Duration::from_millis(300))
        });
        assert_eq!(next.join().unwrap(), None, "nothing was ever sent");
    }
}

/// A socket closed while a cancelled wait's timer is still armed, and many
/// sockets opened and closed after it: the old timer must not touch freed or
/// reused event data when it fires.
#[test]
fn closing_a_socket_with_a_cancelled_wait_is_safe() {
    workers();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        let (client, server) = pair(&listener);
        let reader = spawn(move || {
            let mut s = client;
            read_byte(&mut s, Duration::from_millis(5))
        });
        yield_now();
        reader.cancel();
        let _ = reader.join();
        drop(server);
    }
    // New sockets reuse the freed memory while the old timers fire; each of
    // these reads must see only its own timeout.
    let (mut client, _server) = pair(&listener);
    for _ in 0..10 {
        assert_eq!(read_byte(&mut client, Duration::from_millis(10)), None);
    }
}

/// Load that lands IO timeouts on sockets owned by other workers while their
/// data arrives, with cancelled waits and sockets closed behind them.
///
/// Each client green thread owns a request stream `A`, a burst stream `B` on
/// another worker, and a quiet stream `Q` nothing is ever written to. Per
/// round it sends a request on `A`; the server answers after 0..3 ms and then
/// sends a burst on `B`; the client reads both with 1–3 ms read timeouts
/// (retrying timed-out reads), so timers expire while data arrives and the
/// client, resumed on `A`'s worker, races `B`'s worker for `B`'s timer. One
/// round in eight it starts a helper that waits on `Q` with a short timeout,
/// cancels it, and then waits on `Q` itself: that wait must last its whole
/// timeout. One round in 32 it closes `Q` (a cancelled wait's timer may still
/// be queued) and opens a new one.
///
/// The test fails on a panic anywhere (the hook aborts the process, so a
/// panic in may's event loop is not lost), wrong data, a timeout that fired
/// early, or no progress for 5 s.
#[test]
fn io_timeouts_under_load_across_workers() {
    let workers = workers();
    let secs = env_u64("GREENPOOL_IO_RACE_SECS", 8);
    let clients = env_u64("GREENPOOL_IO_RACE_CLIENTS", 96);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Cancellation unwinds with may's own payload; that is expected here.
        let cancel = info.payload().downcast_ref::<generator::Error>().is_some();
        default_hook(info);
        if !cancel {
            eprintln!("io_timers: a panic under load; aborting so it cannot be missed");
            std::process::abort();
        }
    }));

    let hogs_stop = Arc::new(AtomicBool::new(false));
    // Plain threads that burn CPU, so that the OS preempts the workers, also
    // inside may's race windows (a preempted worker lets timers expire).
    let hogs: Vec<_> = (0..env_u64("GREENPOOL_IO_RACE_HOGS", 0))
        .map(|_| {
            let stop = Arc::clone(&hogs_stop);
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let rounds = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for id in 0..clients {
        let (rounds, timeouts, stop) = (
            Arc::clone(&rounds),
            Arc::clone(&timeouts),
            Arc::clone(&stop),
        );
        handles.push(spawn(move || {
            client(id, workers, &rounds, &timeouts, &stop)
        }));
    }

    let started = Instant::now();
    let (mut last, mut still_since) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
        let now = rounds.load(Relaxed);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
        assert!(
            still_since.elapsed() < Duration::from_secs(5),
            "no progress for 5 s after {now} rounds: a lost IO wake-up"
        );
    }
    stop.store(true, Relaxed);
    for h in handles {
        h.join().expect("client green thread");
    }
    hogs_stop.store(true, Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    eprintln!(
        "io_timers: {workers} workers, {clients} clients, {} rounds, {} read timeouts in {secs} s",
        rounds.load(Relaxed),
        timeouts.load(Relaxed)
    );
    assert!(rounds.load(Relaxed) > 0);
}

fn client(id: u64, workers: usize, rounds: &AtomicU64, timeouts: &AtomicU64, stop: &AtomicBool) {
    let cancels = env_u64("GREENPOOL_IO_RACE_CANCELS", 1) != 0;
    // A listener of its own: `pair` accepts the connection it just made.
    let listener = &TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut a, a_srv) = pair(listener);
    let (mut b, b_srv) = pair_on_other_worker(listener, &a, workers);
    let server = spawn(move || serve(a_srv, b_srv));
    let (q, mut q_srv) = pair(listener);
    let mut q = Arc::new(Mutex::new(q));
    let mut rng = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seq = 0u8;
    let read = |s: &mut TcpStream, r: u64| loop {
        let limit = Duration::from_millis(1 + r % 3);
        match read_byte(s, limit) {
            Some(v) => return v,
            None => {
                timeouts.fetch_add(1, Relaxed);
            }
        }
    };
    while !stop.load(Relaxed) {
        seq = seq.wrapping_add(1);
        let r = next();
        a.write_all(&[seq, (r % 4) as u8]).unwrap();
        assert_eq!(read(&mut a, r >> 8), seq, "reply out of order on A");
        for _ in 0..BURST {
            assert_eq!(read(&mut b, r >> 16), seq, "burst out of order on B");
        }
        if cancels && r >> 24 & 7 == 0 {
            cancelled_wait_then_full_wait(&q, r >> 32);
        }
        if r >> 40 & 31 == 0 {
            // Close Q, perhaps with a cancelled wait's timer still queued.
            let (new_q, new_srv) = pair(listener);
            (q, q_srv) = (Arc::new(Mutex::new(new_q)), new_srv);
        }
        rounds.fetch_add(1, Relaxed);
    }
    drop((a, b, q, q_srv));
    let _ = server.join();
}

const BURST: usize = 3;

/// A helper waits on `q` and is cancelled; then a full wait on `q` must not
/// end early.
fn cancelled_wait_then_full_wait(q: &Arc<Mutex<TcpStream>>, r: u64) {
    let shared = Arc::clone(q);
    let helper = spawn(move || {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        read_byte(&mut s, Duration::from_millis(1 + r % 4))
    });
    for _ in 0..r % 3 {
        yield_now();
    }
    helper.cancel();
    let _ = helper.join();
    let mut s = q.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(read_byte(&mut s, Duration::from_millis(8)), None);
}

/// The server side of one client: per request `[seq, delay_ms]`, wait the
/// delay, answer `seq` on A, then write the burst on B byte by byte.
fn serve(mut a: TcpStream, mut b: TcpStream) {
    let mut req = [0u8; 2];
    while a.read_exact(&mut req).is_ok() {
        if req[1] > 0 {
            greenpool_runtime::sleep(Duration::from_millis(req[1] as u64));
        }
        if a.write_all(&req[..1]).is_err() {
            return;
        }
        for _ in 0..BURST {
            if b.write_all(&req[..1]).is_err() {
                return;
            }
            yield_now();
        }
    }
}
