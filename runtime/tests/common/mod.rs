//! Helpers shared by the runtime's integration tests. Each test binary
//! compiles its own copy; not every binary uses every helper.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greenpool_runtime::net::{serve, ServeOptions, TcpListener};
use greenpool_runtime::{sleep, spawn, JoinHandle};

/// Generous bound for "this must not hang" waits.
pub const HANG_LIMIT: Duration = Duration::from_secs(20);

/// Start an echo server on 127.0.0.1 (ephemeral port), one green thread per
/// connection, and return its address. The server lives until the test binary
/// exits.
pub fn echo_server() -> SocketAddr {
    greenpool_runtime::init();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let server = serve(listener, ServeOptions::new().name("echo"), |mut conn, _| {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    })
    .expect("start echo server");
    let addr = server.local_addr();
    // Lives as long as the test binary: dropping it would stop accepting.
    std::mem::forget(server);
    addr
}

/// A loopback port with nothing listening on it (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A green thread that counts 10 ms ticks until stopped.
pub struct Ticker {
    ticks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Ticker {
    pub fn start() -> Ticker {
        let ticks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (ticks, stop) = (ticks.clone(), stop.clone());
            spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    sleep(Duration::from_millis(10));
                    ticks.fetch_add(1, Ordering::AcqRel);
                }
            })
        };
        Ticker {
            ticks,
            stop,
            handle,
        }
    }

    /// A shareable view of the tick count.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.ticks.clone()
    }

    pub fn ticks(&self) -> usize {
        self.ticks.load(Ordering::Acquire)
    }

    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap();
        self.ticks.load(Ordering::Acquire)
    }
}

/// Run `f` in a green thread and wait for it from this OS thread with a
/// deadline, so a green thread stuck forever fails the test instead of
/// hanging it. A panic in `f` is re-raised here.
pub fn run_green<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = greenpool_runtime::sync::mpsc::channel();
    let h = spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    });
    // This runs on a plain OS thread, where may's timeouts are exact.
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(Ok(v)) => {
            h.join().unwrap();
            v
        }
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(e) => panic!("green thread did not finish within {HANG_LIMIT:?}: {e:?}"),
    }
}
