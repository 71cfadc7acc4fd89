//! A pool's settings and their defaults; [`Builder`](crate::Builder) fills
//! and checks them.

use std::sync::Arc;
use std::time::Duration;

use crate::error_set::ErrorSet;
use crate::events::EventHandler;

/// Default number of connections: 10.
pub const DEFAULT_SIZE: usize = 10;
/// Default checkout timeout: 30 s (r2d2's). Long enough to ride out a brief
/// reconnect, short enough that a caller learns the backend is down.
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default first reconnect delay after a failed connect: 50 ms.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Default longest reconnect delay: 2 s. This bounds how long the pool takes to
/// notice that the server is back.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default limit on one keepalive or validation call: 5 s.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default idle time after which a connection is validated before it is
/// handed out: 500 ms, HikariCP's (see [`Builder::validate_after`](crate::Builder::validate_after) for why).
pub const DEFAULT_VALIDATE_AFTER: Duration = Duration::from_millis(500);
/// Default limit on one connect (`Manager::new_connection`, plus
/// `Manager::server_idle_timeout` on the first connection): 10 s. A connect
/// that takes longer is cancelled and counts as a failed attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default fail-fast grace: 1 s (see [`Builder::fail_fast`](crate::Builder::fail_fast)). A backend
/// restart shorter than this costs callers a wait, not an error.
pub const DEFAULT_FAIL_FAST: Duration = Duration::from_secs(1);
/// Default idle time after which a connection above
/// [`Builder::min_idle`](crate::Builder::min_idle) is closed when no [`Builder::idle_timeout`](crate::Builder::idle_timeout) is set:
/// 60 s. Only a pool with `min_idle` below `size` has such connections.
pub const DEFAULT_SHRINK_AFTER: Duration = Duration::from_secs(60);
/// Largest pool [`Builder::size`](crate::Builder::size) accepted: 10,000. Every slot may need a
/// green thread of its own (a connector or a health check), and the runtime
/// holds about 31,000 at once.
pub const MAX_SIZE: usize = 10_000;
/// Longest duration any setting accepts: one year. Longer values (up to
/// `Duration::MAX`) are clamped to it, so no deadline arithmetic can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Fraction of a server-reported idle timeout used as the keepalive interval.
pub(crate) const SERVER_IDLE_MARGIN: f64 = 0.5;

/// Settings of a pool; see [`Builder`] for each one's meaning and default.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub size: usize,
    /// Idle connections kept open (`None`: `size`, all of them).
    pub min_idle: Option<usize>,
    pub checkout_timeout: Option<Duration>,
    pub discard_on: ErrorSet,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub name: String,
    pub connector_stack_size: Option<usize>,
    pub keepalive: Option<Duration>,
    /// Ask the manager for the server's idle timeout when `keepalive` is unset.
    pub learn_keepalive: bool,
    pub health_check_timeout: Duration,
    pub connect_timeout: Duration,
    pub validate_after: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    /// How long a checkout waits while the backend is down (`None`: the
    /// whole checkout timeout).
    pub fail_fast: Option<Duration>,
    /// Injected spawn failures (tests).
    #[cfg(feature = "testing")]
    pub spawn_faults: Option<crate::testing::SpawnFaults>,
    /// The event handler, if any.
    pub events: Option<Arc<EventHandler>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            size: DEFAULT_SIZE,
            min_idle: None,
            checkout_timeout: Some(DEFAULT_CHECKOUT_TIMEOUT),
            discard_on: ErrorSet::io(),
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            name: "greenpool".to_owned(),
            connector_stack_size: None,
            keepalive: None,
            learn_keepalive: true,
            health_check_timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            validate_after: Some(DEFAULT_VALIDATE_AFTER),
            idle_timeout: None,
            max_lifetime: None,
            fail_fast: Some(DEFAULT_FAIL_FAST),
            #[cfg(feature = "testing")]
            spawn_faults: None,
            events: None,
        }
    }
}
