//! The pool's events as metrics, through the [`metrics`](https://docs.rs/metrics)
//! facade (cargo feature `metrics`): [`MetricsEvents`] is a
//! [`PoolEvents`] handler that reports to whatever recorder the program
//! installs (a Prometheus exporter, statsd, a test's debugging recorder).
//!
//! Every metric carries the label `pool` (the name given to
//! [`MetricsEvents::new`]):
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | [`SIZE`] | gauge | | the pool's size |
//! | [`OPEN`], [`IDLE`], [`IN_USE`], [`CONNECTING`] | gauge | | connections by state (in use counts health checks too) |
//! | [`WAITING`] | gauge | | callers waiting for a connection |
//! | [`CONNECTS`] | counter | | connections opened |
//! | [`CONNECT_FAILURES`] | counter | `permanent` | failed connect attempts |
//! | [`CHECKOUTS`] | counter | | successful checkouts |
//! | [`CHECKOUT_FAILURES`] | counter | `reason`: `timeout`, `unavailable`, `closed` | failed checkouts |
//! | [`CHECKINS`] | counter | | connections handed back |
//! | [`DISCARDS`] | counter | `reason`: [`DiscardReason::label`] | connections discarded |
//! | [`HEALTH_CHECKS`] | counter | `kind`: `keepalive`, `validation`; `result`: `ok`, `failed` | health checks |
//! | [`CHECKOUT_WAIT`] | histogram (seconds) | | how long checkouts waited (zero when a connection was idle) |
//! | [`CONNECT_TIME`] | histogram (seconds) | | how long connects took |
//!
//! Gauges are updated once per maintenance tick (at most a second apart),
//! counters and histograms at each event.
//!
//! ```
//! use greenpool::metrics::MetricsEvents;
//! use greenpool::testing::{LineManager, TestServer};
//! use greenpool::ConnectionPool;
//!
//! let server = TestServer::start()?;
//! let pool = ConnectionPool::builder()
//!     .size(4)
//!     .name("backend")
//!     .event_handler(MetricsEvents::new("backend"))
//!     .build(LineManager::new(server.addr()))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`DiscardReason::label`]: crate::DiscardReason::label

use std::sync::{Arc, Once};

use metrics::{Recorder, SharedString, Unit};

use crate::events::{
    Checkin, Checkout, CheckoutFailed, ConnectFailed, Connected, Discarded, HealthCheck, PoolEvents,
};
use crate::stats::State;

/// Gauge: the pool's size.
pub const SIZE: &str = "greenpool_size";
/// Gauge: connections open.
pub const OPEN: &str = "greenpool_connections_open";
/// Gauge: connections open and idle in the pool.
pub const IDLE: &str = "greenpool_connections_idle";
/// Gauge: connections open and held by a caller or a health check.
pub const IN_USE: &str = "greenpool_connections_in_use";
/// Gauge: connections being opened (or waiting out a backoff).
pub const CONNECTING: &str = "greenpool_connections_connecting";
/// Gauge: callers waiting for a connection.
pub const WAITING: &str = "greenpool_waiting";
/// Counter: connections opened.
pub const CONNECTS: &str = "greenpool_connects_total";
/// Counter: failed connect attempts, labelled `permanent` (`true`/`false`).
pub const CONNECT_FAILURES: &str = "greenpool_connect_failures_total";
/// Counter: successful checkouts.
pub const CHECKOUTS: &str = "greenpool_checkouts_total";
/// Counter: failed checkouts, labelled `reason` (`timeout`, `unavailable`,
/// `closed`).
pub const CHECKOUT_FAILURES: &str = "greenpool_checkout_failures_total";
/// Counter: connections handed back by callers.
pub const CHECKINS: &str = "greenpool_checkins_total";
/// Counter: connections discarded, labelled `reason`
/// ([`DiscardReason::label`](crate::DiscardReason::label)).
pub const DISCARDS: &str = "greenpool_discards_total";
/// Counter: health checks, labelled `kind` (`keepalive`, `validation`) and
/// `result` (`ok`, `failed`).
pub const HEALTH_CHECKS: &str = "greenpool_health_checks_total";
/// Histogram: seconds a checkout waited.
pub const CHECKOUT_WAIT: &str = "greenpool_checkout_wait_seconds";
/// Histogram: seconds a connect took.
pub const CONNECT_TIME: &str = "greenpool_connect_seconds";

/// A [`PoolEvents`] handler that reports through the `metrics` facade; see
/// the [module docs](self) for the metrics.
pub struct MetricsEvents {
    pool: SharedString,
    recorder: Option<Arc<dyn Recorder + Send + Sync>>,
    described: Once,
}

impl MetricsEvents {
    /// Report to the program's global recorder, labelling every metric
    /// `pool = name`.
    pub fn new(name: impl AsRef<str>) -> Self {
        MetricsEvents {
            pool: SharedString::from(Arc::<str>::from(name.as_ref())),
            recorder: None,
            described: Once::new(),
        }
    }

    /// Report to `recorder` instead of the global one (say, one recorder
    /// per pool, or a test's).
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Run `f` with this handler's recorder in place.
    fn record(&self, f: impl FnOnce()) {
        let f = || {
            self.described.call_once(describe);
            f()
        };
        match &self.recorder {
            // `f` never blocks, so the green thread stays on this OS thread
            // (the local recorder is per thread).
            Some(r) => metrics::with_local_recorder(&**r, f),
            None => f(),
        }
    }

    fn pool(&self) -> SharedString {
        self.pool.clone()
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(SIZE, "the pool's size");
    describe_gauge!(OPEN, "connections open");
    describe_gauge!(IDLE, "connections open and idle in the pool");
    describe_gauge!(IN_USE, "connections held by callers or health checks");
    describe_gauge!(CONNECTING, "connections being opened");
    describe_gauge!(WAITING, "callers waiting for a connection");
    describe_counter!(CONNECTS, "connections opened");
    describe_counter!(CONNECT_FAILURES, "failed connect attempts");
    describe_counter!(CHECKOUTS, "successful checkouts");
    describe_counter!(CHECKOUT_FAILURES, "failed checkouts, by reason");
    describe_counter!(CHECKINS, "connections handed back");
    describe_counter!(DISCARDS, "connections discarded, by reason");
    describe_counter!(HEALTH_CHECKS, "keepalives and validations, by result");
    describe_histogram!(CHECKOUT_WAIT, Unit::Seconds, "how long checkouts waited");
    describe_histogram!(CONNECT_TIME, Unit::Seconds, "how long connects took");
}

impl PoolEvents for MetricsEvents {
    fn connected(&self, e: &Connected) {
        self.record(|| {
            metrics::counter!(CONNECTS, "pool" => self.pool()).increment(1);
            metrics::histogram!(CONNECT_TIME, "pool" => self.pool()).record(e.took.as_secs_f64());
        })
    }

    fn connect_failed(&self, e: &ConnectFailed<'_>) {
        let permanent = if e.permanent { "true" } else { "false" };
        self.record(|| {
            metrics::counter!(CONNECT_FAILURES, "pool" => self.pool(), "permanent" => permanent)
                .increment(1)
        })
    }

    fn checkout(&self, e: &Checkout) {
        self.record(|| {
            metrics::counter!(CHECKOUTS, "pool" => self.pool()).increment(1);
            metrics::histogram!(CHECKOUT_WAIT, "pool" => self.pool())
                .record(e.waited.as_secs_f64());
        })
    }

    fn checkout_failed(&self, e: &CheckoutFailed<'_>) {
        let reason = e.reason();
        self.record(|| {
            metrics::counter!(CHECKOUT_FAILURES, "pool" => self.pool(), "reason" => reason)
                .increment(1)
        })
    }

    fn checkin(&self, _: &Checkin) {
        self.record(|| metrics::counter!(CHECKINS, "pool" => self.pool()).increment(1))
    }

    fn discarded(&self, e: &Discarded) {
        let reason = e.reason.label();
        self.record(|| {
            metrics::counter!(DISCARDS, "pool" => self.pool(), "reason" => reason).increment(1)
        })
    }

    fn health_check(&self, e: &HealthCheck<'_>) {
        let kind = e.kind.as_str();
        let result = if e.result.is_ok() { "ok" } else { "failed" };
        self.record(|| {
            metrics::counter!(
                HEALTH_CHECKS, "pool" => self.pool(), "kind" => kind, "result" => result
            )
            .increment(1)
        })
    }

    fn state(&self, s: &State) {
        self.record(|| {
            let gauges = [
                (SIZE, s.size),
                (OPEN, s.open),
                (IDLE, s.idle),
                (IN_USE, s.in_use + s.checking),
                (CONNECTING, s.connecting),
                (WAITING, s.waiting),
            ];
            for (name, value) in gauges {
                metrics::gauge!(name, "pool" => self.pool()).set(value as f64);
            }
        })
    }
}
