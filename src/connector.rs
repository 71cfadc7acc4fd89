//! Background connectors: open connections, retrying with backoff and jitter.
//!
//! Every pool slot is always either open or owned by exactly one connector, so
//! the pool never has more than `size` connections open or being opened, and
//! each failed slot is retried on its own backoff schedule: once the server is
//! back, the pool is full again within one maximum backoff period. A connector
//! whose slot the pool no longer wants (the demand that started it is gone,
//! or `resize` lowered the size) ends before its next attempt.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builder::SERVER_IDLE_MARGIN;
use crate::error::SharedError;
use crate::manager::Manager;
use crate::pool::{Conn, Shared, Task};
use crate::slot::{Memory, Role, Slot};

/// How often a pool that keeps failing to connect logs a summary.
const FAILURE_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Start a connector for a slot already counted in `connecting`. If no green
/// thread can be started the slot is given back (uncounted) and maintenance
/// reopens it on its next tick.
pub(crate) fn spawn<M: Manager>(shared: &Arc<Shared<M>>, memory: Memory) {
    // The token is made inside the new green thread: a closure that never
    // runs (the spawn failed) then owns nothing that could start another.
    let spawned = Task::spawn(shared, "connector", None, move |task| {
        let slot = Slot::adopt(&task.shared, Role::Connecting, memory);
        run(&task, slot)
    });
    if let Err(e) = spawned {
        shared.lock().connecting -= 1;
        shared.spawn_failed("connector", &e, "maintenance retries");
    }
}

fn run<M: Manager>(task: &Task<M>, mut slot: Slot<M>) {
    let shared = &task.shared;
    loop {
        if shared.is_closed() {
            return;
        }
        if slot.memory.failures > 0 {
            if unwanted(shared) {
                return;
            }
            let delay = slot.memory.backoff.next_delay();
            log::debug!(
                "pool {}: next connect attempt in {delay:?}",
                shared.cfg.name
            );
            // close() cancels this sleep. (Not a timed wait on a shared
            // SyncFlag: may 0.3.51's SyncFlag::wait_timeout leaves each
            // timed-out waiter's blocker queued and counts the flag down, and
            // with several connectors waiting at once a connector was seen
            // never to wake.)
            greenpool_runtime::sleep(delay);
            if shared.is_closed() || unwanted(shared) {
                return;
            }
        }
        let limit = shared.cfg.connect_timeout;
        let started = Instant::now();
        task.set_deadline(started.checked_add(limit));
        let attempt = panic::catch_unwind(AssertUnwindSafe(|| {
            shared
                .manager
                .new_connection()
                .map(|raw| opened(shared, raw))
        }));
        task.set_deadline(None);
        if task.cancelled() || shared.is_closed() {
            // Cancelled by close, or by maintenance for taking longer than
            // the connect timeout. Cancellation is sticky: every later
            // blocking call would unwind again, so this green thread ends
            // here and the slot's token starts a fresh connector.
            if !shared.is_closed() {
                slot.memory.failures = slot.memory.failures.saturating_add(1);
                let report =
                    shared
                        .lock()
                        .connect_failed(&shared.cfg, Arc::new(ConnectHung(limit)), false);
                report.emit(shared);
            }
            return;
        }
        let (error, permanent): (SharedError, bool) = match attempt {
            Ok(Ok(Ok(raw))) => {
                let conn = Conn::new(shared, raw);
                log::debug!("pool {}: opened connection #{}", shared.cfg.name, conn.id);
                shared.emit(|h| {
                    h.connected(&crate::events::Connected {
                        id: conn.id,
                        took: started.elapsed(),
                    })
                });
                return shared.add_connection(conn, slot);
            }
            Ok(Ok(Err(e))) => (e, false),
            Ok(Err(e)) => {
                let permanent =
                    panic::catch_unwind(AssertUnwindSafe(|| shared.manager.is_permanent(&e)))
                        .unwrap_or(false);
                (Arc::new(e), permanent)
            }
            Err(payload) => (
                Arc::new(ConnectPanic(
                    greenpool_runtime::panic_message(&*payload)
                        .unwrap_or("non-string panic payload")
                        .to_owned(),
                )),
                false,
            ),
        };
        slot.memory.failures = slot.memory.failures.saturating_add(1);
        if permanent {
            // Trying again soon cannot help (a wrong password): wait the
            // longest backoff, and do not grow the server's auth penalty.
            slot.memory.backoff.saturate();
        }
        let report = shared.lock().connect_failed(&shared.cfg, error, permanent);
        report.emit(shared);
    }
}

/// More slots are taken than the pool wants: a connector retrying can give
/// its slot up (its token then starts no replacement).
fn unwanted<M: Manager>(shared: &Shared<M>) -> bool {
    let st = shared.lock();
    st.slots() > st.wanted()
}

/// `Instant::now() + d`, or `None` if that is past what an `Instant` holds.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Finish a new connection. Fails if the connection broke while the pool
/// asked it about the server's idle timeout.
fn opened<M: Manager>(
    shared: &Arc<Shared<M>>,
    mut raw: M::Connection,
) -> Result<M::Connection, SharedError> {
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
    Ok(raw)
}

/// `new_connection` (with `server_idle_timeout`) did not finish in time.
#[derive(Debug)]
struct ConnectHung(Duration);

impl std::fmt::Display for ConnectHung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "new_connection did not finish within the connect timeout of {:?} and was \
             cancelled (Builder::connect_timeout)",
            self.0
        )
    }
}

impl std::error::Error for ConnectHung {}

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
    /// The manager said the last error will not go away by retrying.
    permanent: bool,
    last_summary: Option<Instant>,
}

/// The pool is failing to connect: since when, the last error, and whether
/// the manager called it permanent.
pub(crate) struct Failing {
    pub since: Instant,
    pub error: SharedError,
    pub permanent: bool,
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

    /// Since when and with what the pool is failing to connect, if it is.
    pub fn failing(&self) -> Option<Failing> {
        match (self.failures, self.failing_since, &self.last_error) {
            (1.., Some(since), Some(error)) => Some(Failing {
                since,
                error: Arc::clone(error),
                permanent: self.permanent,
            }),
            _ => None,
        }
    }
}

impl ConnectHealth {
    /// Count a failed attempt. Reports the change from healthy to failing
    /// (and to a permanent error), then a summary every
    /// [`FAILURE_SUMMARY_EVERY`]; single failures go to `debug`.
    pub fn failure(
        &mut self,
        name: &str,
        error: SharedError,
        permanent: bool,
        backoff_max: Duration,
    ) -> HealthReport {
        let now = Instant::now();
        self.failures += 1;
        let newly_permanent = permanent && !self.permanent;
        self.permanent = permanent;
        let report = if newly_permanent {
            if self.failures == 1 {
                self.failing_since = Some(now);
            }
            self.last_summary = Some(now);
            HealthReport::new(
                log::Level::Error,
                format!(
                    "pool {name}: cannot open a connection: {}; the manager says retrying \
                     will not fix this (Manager::is_permanent): trying again every \
                     {backoff_max:?}, and checkouts fail at once while no connection is open",
                    describe(&*error)
                ),
            )
        } else if self.failures == 1 {
            self.failing_since = Some(now);
            self.last_summary = Some(now);
            HealthReport::new(
                log::Level::Warn,
                format!(
                    "pool {name}: cannot open a connection: {}; retrying with backoff",
                    describe(&*error)
                ),
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
                     last error: {}",
                    self.failures,
                    describe(&*error)
                ),
            )
        } else if log::log_enabled!(log::Level::Debug) {
            HealthReport::new(
                log::Level::Debug,
                format!("pool {name}: connect failed: {}", describe(&*error)),
            )
        } else {
            HealthReport(None)
        };
        self.last_error = Some(error);
        report
    }

    /// A connection did useful work: the pool is healthy again. Reports the
    /// way back from failing. (A connect that succeeds is not enough: a
    /// server that accepts and then resets would look healthy.)
    pub fn recovered(&mut self, name: &str) -> HealthReport {
        let report = if self.failures > 0 {
            let since = self.failing_since.map(|t| t.elapsed()).unwrap_or_default();
            HealthReport::new(
                log::Level::Info,
                format!(
                    "pool {name}: connections work again after {} failed attempts over {since:.1?}",
                    self.failures
                ),
            )
        } else {
            HealthReport(None)
        };
        self.failures = 0;
        self.failing_since = None;
        self.last_error = None;
        self.permanent = false;
        report
    }
}

/// `e.to_string()`, even if the error's `Display` panics: a manager's error
/// must not kill the green thread that reports it.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    panic::catch_unwind(AssertUnwindSafe(|| e.to_string())).unwrap_or_else(|p| {
        format!(
            "<the error's Display panicked: {}>",
            greenpool_runtime::panic_message(&*p).unwrap_or("non-string payload")
        )
    })
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
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    min: Duration,
    next: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            next: min,
            max,
            rng: seed(),
        }
    }

    /// Start again from the shortest delay.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Go straight to the longest delay.
    pub fn saturate(&mut self) {
        self.next = self.max;
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
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
