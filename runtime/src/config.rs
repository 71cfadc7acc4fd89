//! Runtime configuration: worker threads and coroutine stack size.
//!
//! may reads its configuration once, when its scheduler starts (on the first
//! spawn or the first `may::net` object). [`Config::apply`] must therefore run
//! before anything else touches the runtime; [`crate::spawn`] applies the
//! defaults on first use if nobody did.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Default coroutine stack size in bytes: 128 KiB.
///
/// may's own default is 32 KiB, which a TLS handshake, a serde parse or a deep
/// `log` formatter can overflow. On overflow a release build prints
/// `stack overflow detected` and **exits the process**; a debug build fails
/// the coroutine without unwinding it. Stacks are mapped lazily, so the
/// untouched part of a stack costs address space, not resident memory.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;

/// Default number of worker threads: **0, one per CPU** (as may counts them:
/// `num_cpus`, which honours the process's CPU affinity mask).
///
/// Every worker runs its own event loop and green threads move between
/// workers, so IO timeouts (connect, read and write timeouts, health-check
/// timeouts) are armed on one thread and fired or disarmed on another. may
/// 0.3.51 raced there (crashes in about 1 of 25 quickstart runs with two
/// workers), and a cancelled wait left its timer armed to end the next wait
/// early; greenpool builds may with a patch that fixes both
/// (`vendor/README.md` in the repository; regression tests in
/// `runtime/tests/io_timers.rs`). Use `Config::new().workers(1)` for a
/// single-threaded runtime (no cross-thread wake-ups: lower latency per
/// hand-off, one core).
pub const DEFAULT_WORKERS: usize = 0;

/// Smallest stack size [`Config::stack_size`] accepts: 16 KiB.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

static APPLIED: AtomicBool = AtomicBool::new(false);
static APPLY_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Settings for the green-thread runtime. Build one, then call [`Config::apply`]
/// first thing in `main`.
///
/// ```
/// use greenpool_runtime::Config;
/// // Ok the first time; an error if the runtime was configured already.
/// let _ = Config::new().workers(2).stack_size(256 * 1024).apply();
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    workers: usize,
    stack_size: usize,
    pin_workers: bool,
}

/// Environment variable that overrides [`DEFAULT_WORKERS`] (like Go's
/// `GOMAXPROCS` or tokio's `TOKIO_WORKER_THREADS`): a whole number, 0 for one
/// per CPU. Read by [`Config::new`]; [`Config::workers`] overrides it. A value
/// that is not a number is ignored with a warning in the log.
pub const WORKERS_ENV: &str = "GREENPOOL_WORKERS";

fn default_workers() -> usize {
    let Some(raw) = std::env::var_os(WORKERS_ENV) else {
        return DEFAULT_WORKERS;
    };
    match raw.to_str().map(str::trim).and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => {
            log::warn!(
                "greenpool runtime: ignoring {WORKERS_ENV}={raw:?}: not a whole number \
                 (0 = one worker per CPU); using one worker per CPU"
            );
            DEFAULT_WORKERS
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: default_workers(),
            stack_size: DEFAULT_STACK_SIZE,
            pin_workers: false,
        }
    }
}

/// [`Config::apply`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The runtime was configured already (by an earlier `apply`, or by the
    /// defaults on the first spawn). may cannot be reconfigured once started.
    AlreadyApplied,
    /// The stack size is below [`MIN_STACK_SIZE`].
    StackTooSmall(usize),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::AlreadyApplied => f.write_str(
                "the green-thread runtime is already configured; call Config::apply \
                 before the first spawn or network call",
            ),
            ConfigError::StackTooSmall(n) => write!(
                f,
                "coroutine stack size {n} bytes is below the minimum of {MIN_STACK_SIZE} bytes"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The defaults: one worker per CPU ([`DEFAULT_WORKERS`], or what
    /// [`WORKERS_ENV`] says), [`DEFAULT_STACK_SIZE`] stacks, workers not
    /// pinned to cores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of worker threads that run coroutines; 0 (the default,
    /// [`DEFAULT_WORKERS`]) means one per CPU. Each worker runs its own epoll
    /// loop. Overrides [`WORKERS_ENV`].
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Stack size of each coroutine in bytes (rounded up to whole words).
    /// See [`DEFAULT_STACK_SIZE`] for what an overflow does.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Pin each worker thread to a core. Off by default: pinning only helps on
    /// dedicated cores and hurts on a shared machine or under a CPU quota.
    pub fn pin_workers(mut self, pin: bool) -> Self {
        self.pin_workers = pin;
        self
    }

    /// Install this configuration. Fails if the runtime was configured already.
    pub fn apply(self) -> Result<(), ConfigError> {
        if self.stack_size < MIN_STACK_SIZE {
            return Err(ConfigError::StackTooSmall(self.stack_size));
        }
        // A plain std mutex is right here: it is held for a few stores, never
        // across a yield, and it makes a concurrent first spawn wait until the
        // settings are written instead of starting may with its defaults.
        let _lock = APPLY_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if APPLIED.load(Ordering::Acquire) {
            return Err(ConfigError::AlreadyApplied);
        }
        let words = self.stack_size.div_ceil(std::mem::size_of::<usize>());
        may::config()
            .set_workers(self.workers)
            .set_stack_size(words)
            .set_worker_pin(self.pin_workers);
        log::debug!(
            "greenpool runtime configured: workers={} stack={}B pinned={}",
            may::config().get_workers(),
            self.stack_size,
            self.pin_workers
        );
        // Published only after may's settings are written.
        APPLIED.store(true, Ordering::Release);
        Ok(())
    }
}

/// Apply the default configuration now, unless a configuration was applied
/// already. Idempotent and cheap after the first call.
///
/// may sizes its pool of reusable coroutine stacks when its scheduler starts,
/// which happens on the first spawn **or the first `may::net` object**. Every
/// entry point of this crate calls `init` first; call it yourself (or
/// [`Config::apply`]) before using may's types directly — for example
/// [`crate::net::TcpListener::bind`] — as the very first thing, or coroutines
/// may get may's 32 KiB stacks instead of the configured size.
pub fn init() {
    ensure_configured()
}

/// Apply the default configuration unless someone applied one already.
pub(crate) fn ensure_configured() {
    if !APPLIED.load(Ordering::Acquire) {
        let _ = Config::new().apply();
    }
}
