//! Background connectors: open connections, retrying with backoff and jitter.
//!
//! Every pool slot is always either open or owned by exactly one connector, so
//! the pool never has more than `size` connections open or being opened, and
//! each failed slot is retried on its own backoff schedule: once the server is
//! back, the pool is full again within one maximum backoff period.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builder::SERVER_IDLE_MARGIN;
use crate::error::SharedError;
use crate::manager::Manager;
use crate::pool::{Conn, Shared, Task};

/// How often a pool that keeps failing to connect logs a summary.
const FAILURE_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Start a connector for a slot already counted in `connecting`.
pub(crate) fn spawn<M: Manager>(shared: &Arc<Shared<M>>) {
    if let Err(e) = Task::spawn(shared, "connector", run) {
        // Out of memory for a stack: give the slot back rather than lose it
        // silently; the next discard or maintenance tick tries again.
        log::error!(
            "pool {}: cannot start a connector green thread: {e}",
            shared.cfg.name
        );
        shared.connector_exit();
    }
}

fn run<M: Manager>(task: Task<M>) {
    let shared = &task.shared;
    let mut backoff = Backoff::new(shared.cfg.backoff_min, shared.cfg.backoff_max);
    loop {
        if shared.is_closed() {
            return shared.connector_exit();
        }
        let attempt = panic::catch_unwind(AssertUnwindSafe(|| shared.manager.new_connection()));
        let error: SharedError = match attempt {
            Ok(Ok(raw)) => match opened(shared, raw) {
                Ok(()) => return,
                Err(e) => e,
            },
            Ok(Err(e)) => Arc::new(e),
            Err(payload) => Arc::new(ConnectPanic(
                greenpool_runtime::panic_message(&*payload)
                    .unwrap_or("non-string panic payload")
                    .to_owned(),
            )),
        };
        let delay = backoff.next_delay();
        let report = {
            let mut st = shared.lock();
            st.counters.connect_failures += 1;
            st.health.failure(&shared.cfg.name, error, delay)
        };
        report.emit();
        // Sleep, but wake at once if the pool closes.
        shared.close_flag.wait_timeout(delay);
        greenpool_runtime::yield_now();
    }
}

/// Finish a new connection and hand it out. Fails if the connection broke
/// while the pool asked it about the server's idle timeout.
fn opened<M: Manager>(shared: &Arc<Shared<M>>, mut raw: M::Connection) -> Result<(), SharedError> {
    let learn = {
        let mut st = shared.lock();
        let ask = shared.cfg.keepalive.is_none()
            && shared.cfg.learn_keepalive
            && !st.asked_server_idle_timeout;
        st.asked_server_idle_timeout = true;
        ask
    };
    if learn {
        learn_server_idle_timeout(shared, &mut raw);
        let broken = panic::catch_unwind(AssertUnwindSafe(|| shared.manager.has_broken(&mut raw)))
            .unwrap_or(true);
        if broken {
            shared.lock().asked_server_idle_timeout = false;
            return Err(Arc::new(BrokenAtStart));
        }
    }
    let now = shared.clock.refresh();
    let expires = shared
        .cfg
        .max_lifetime
        .map(|life| now.plus(life.mul_f64(1.0 - 0.1 * unit_random())));
    let conn = Conn {
        raw,
        id: shared.next_id(),
        created: Instant::now(),
        last_ok: now,
        expires,
    };
    log::debug!("pool {}: opened connection #{}", shared.cfg.name, conn.id);
    shared.add_connection(conn);
    Ok(())
}

/// The new connection broke while the pool asked for the server's idle timeout.
#[derive(Debug)]
struct BrokenAtStart;

impl std::fmt::Display for BrokenAtStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the new connection broke while asking the server for its idle timeout \
             (Manager::server_idle_timeout); has_broken reported it",
        )
    }
}

impl std::error::Error for BrokenAtStart {}

fn learn_server_idle_timeout<M: Manager>(shared: &Arc<Shared<M>>, raw: &mut M::Connection) {
    let reported =
        panic::catch_unwind(AssertUnwindSafe(|| shared.manager.server_idle_timeout(raw)));
    if let Ok(Some(t)) = reported {
        if !t.is_zero() {
            let interval = t.mul_f64(SERVER_IDLE_MARGIN).max(Duration::from_millis(1));
            log::info!(
                "pool {}: server closes idle connections after {t:?}; keepalive every {interval:?}",
                shared.cfg.name
            );
            shared.lock().learnt_keepalive = Some(interval);
            shared.maintenance_kick.post();
        }
    }
}

/// `new_connection` panicked.
#[derive(Debug)]
struct ConnectPanic(String);

impl std::fmt::Display for ConnectPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "new_connection panicked: {}", self.0)
    }
}

impl std::error::Error for ConnectPanic {}

/// Pool-wide connect health, for log messages and timeout errors.
#[derive(Default)]
pub(crate) struct ConnectHealth {
    /// Failed attempts since the last success.
    failures: u64,
    failing_since: Option<Instant>,
    last_error: Option<SharedError>,
    last_summary: Option<Instant>,
}

impl ConnectHealth {
    /// The last connect error, while the pool is failing to connect.
    pub fn current_error(&self) -> Option<SharedError> {
        if self.failures > 0 {
            self.last_error.clone()
        } else {
            None
        }
    }
}

impl ConnectHealth {
    /// Count a failed attempt. Reports the change from healthy to failing,
    /// then a summary every [`FAILURE_SUMMARY_EVERY`]; single failures go to
    /// `debug`.
    pub fn failure(&mut self, name: &str, error: SharedError, retry_in: Duration) -> HealthReport {
        let now = Instant::now();
        self.failures += 1;
        let report = if self.failures == 1 {
            self.failing_since = Some(now);
            self.last_summary = Some(now);
            HealthReport::new(
                log::Level::Warn,
                format!("pool {name}: cannot open a connection: {error}; retrying with backoff"),
            )
        } else if self
            .last_summary
            .is_none_or(|t| now - t >= FAILURE_SUMMARY_EVERY)
        {
            self.last_summary = Some(now);
            let since = self.failing_since.map(|t| now - t).unwrap_or_default();
            HealthReport::new(
                log::Level::Warn,
                format!(
                    "pool {name}: still cannot connect: {} failed attempts in {since:.1?}; \
                     last error: {error}",
                    self.failures
                ),
            )
        } else if log::log_enabled!(log::Level::Debug) {
            HealthReport::new(
                log::Level::Debug,
                format!("pool {name}: connect failed: {error}; next attempt in {retry_in:?}"),
            )
        } else {
            HealthReport(None)
        };
        self.last_error = Some(error);
        report
    }

    /// Count a successful connect; reports the way back from failing.
    pub fn success(&mut self, name: &str) -> HealthReport {
        let report = if self.failures > 0 {
            let since = self.failing_since.map(|t| t.elapsed()).unwrap_or_default();
            HealthReport::new(
                log::Level::Info,
                format!(
                    "pool {name}: connected again after {} failed attempts over {since:.1?}",
                    self.failures
                ),
            )
        } else {
            HealthReport(None)
        };
        self.failures = 0;
        self.failing_since = None;
        self.last_error = None;
        report
    }
}

/// A log line decided under the pool lock and written after it is released
/// (a logger may block; the pool lock is never held across a blocking call).
#[must_use = "call emit() once the pool lock is released"]
pub(crate) struct HealthReport(Option<(log::Level, String)>);

impl HealthReport {
    fn new(level: log::Level, message: String) -> Self {
        HealthReport(Some((level, message)))
    }

    pub fn emit(self) {
        if let Some((level, message)) = self.0 {
            log::log!(level, "{message}");
        }
    }
}

/// Exponential backoff with jitter: the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(max, min * 2^n)`.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            max,
            rng: seed(),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = split_mix(&mut self.rng) as f64 / u64::MAX as f64;
        d.mul_f64(0.5 + 0.5 * jitter).max(Duration::from_millis(1))
    }
}

/// A uniform random number in `[0, 1)`, for jitter only.
pub(crate) fn unit_random() -> f64 {
    let mut s = seed();
    (split_mix(&mut s) >> 11) as f64 / (1u64 << 53) as f64
}

fn seed() -> u64 {
    // RandomState is seeded per process and bumped per instance.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_range() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let mut b = Backoff::new(min, max);
        let bounds = [100, 200, 400, 800, 800, 800];
        for hi in bounds {
            let d = b.next_delay();
            let hi = Duration::from_millis(hi);
            assert!(
                d >= hi / 2 && d <= hi,
                "{d:?} not in [{:?}, {hi:?}]",
                hi / 2
            );
        }
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..1000 {
            let x = unit_random();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
