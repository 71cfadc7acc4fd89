//! # greenpool-runtime
//!
//! A gevent-style green-thread runtime over the [`may`] stackful-coroutine
//! library. Code written in plain blocking style — connect, write, read,
//! sleep, lock — runs in green threads that block only themselves, so
//! thousands of them share a few OS threads.
//!
//! | gevent | here |
//! |---|---|
//! | `gevent.spawn(f)` / `.join()` | [`spawn`] / [`JoinHandle::join`] |
//! | `gevent.pool.Group` | [`Group`] |
//! | `gevent.pool.Pool(n)` | [`GreenPool`] |
//! | `gevent.sleep` | [`sleep`] |
//! | `gevent.Timeout` | [`timeout`] |
//! | `gevent.socket.create_connection` | [`net::connect`] |
//! | `gevent.server.StreamServer` | [`net::serve`] |
//!
//! Everything that blocks works both inside a green thread and from a plain
//! OS thread. Call [`Config::apply`] first thing in `main` to choose the number
//! of worker threads and the stack size; otherwise the defaults apply on first
//! use.
//!
//! ## Workers and IO timeouts
//!
//! The runtime uses one worker thread per CPU ([`config::DEFAULT_WORKERS`]).
//! Green threads move between workers, so the timer of a read, write or
//! connect timeout is armed on one thread and fired or disarmed on another.
//! may 0.3.51 raced there, and a cancelled wait left its timer armed to end
//! the next wait on the socket early; this workspace builds may with a small
//! patch (`vendor/README.md` in the repository: each change, why, and how it
//! was tested; `runtime/tests/io_timers.rs` holds the regression tests).
//!
//! The other road — never arming may's IO timers and enforcing deadlines in
//! the runtime — was rejected on two counts. It would cover only the
//! runtime's own stream type, leaving every `may::net` stream a user (or
//! `may_minihttp`) creates with a crashing `set_read_timeout`. And a runtime
//! deadline per wait means a may timer-thread timer per wait: the pool used
//! one per checkout once, and dropping it took contended PING from ~22 µs to
//! ~13 µs of CPU per request. The patch costs one uncontended lock, an `Arc`
//! and a few atomics per armed wait (BENCHMARKS.md, section 2b).
//!
//! ```
//! use greenpool_runtime::{spawn, sleep};
//! use std::time::Duration;
//! let handles: Vec<_> = (0..100)
//!     .map(|i| spawn(move || { sleep(Duration::from_millis(1)); i * 2 }))
//!     .collect();
//! let sum: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//! assert_eq!(sum, 9900);
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod group;
pub mod line;
pub mod net;
mod server;
pub mod sync;
pub mod task;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::{init, Config, ConfigError, WORKERS_ENV};
pub use group::{GreenPool, Group};
pub use task::{
    is_cancellation, is_green, panic_message, spawn, yield_now, Builder, JoinError, JoinHandle,
};
pub use time::{clamp_timeout, sleep, timeout, timeout_with, Deadline, Elapsed, Wait};

/// The underlying coroutine library, for what this crate does not wrap.
pub use may;
