//! The pool's connect health: failing or not, since when, with what error,
//! and the log lines that report the changes (never a flood).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{describe, SharedError};

/// How often a pool that keeps failing to connect logs a summary.
const FAILURE_SUMMARY_EVERY: Duration = Duration::from_secs(10);

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
