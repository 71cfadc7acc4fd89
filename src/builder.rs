//! [`Builder`]: every option of a [`ConnectionPool`], validated before use.

use std::marker::PhantomData;
use std::time::Duration;

use crate::config::{Config, MAX_DURATION, MAX_SIZE};
use crate::error::BuildError;
use crate::error_set::ErrorSet;
use crate::events::{EventHandler, PoolEvents};
use crate::manager::Manager;
use crate::pool::ConnectionPool;

/// Configures and builds a [`ConnectionPool`]. Obtain one with
/// [`ConnectionPool::builder`].
///
/// [`build`](Builder::build) checks the settings and rejects a configuration
/// that would make a broken pool (a size of 0 or above [`MAX_SIZE`], a zero
/// timeout or interval, a backoff whose minimum exceeds its maximum) with a
/// [`BuildError`] saying which setting is wrong. Durations longer than
/// [`MAX_DURATION`] (one year, e.g. `Duration::MAX`) are clamped to it.
///
/// Defaults: size [`DEFAULT_SIZE`](crate::DEFAULT_SIZE); checkout timeout
/// [`DEFAULT_CHECKOUT_TIMEOUT`](crate::DEFAULT_CHECKOUT_TIMEOUT); connect timeout [`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT);
/// health-check timeout [`DEFAULT_HEALTH_CHECK_TIMEOUT`](crate::DEFAULT_HEALTH_CHECK_TIMEOUT); validation after
/// [`DEFAULT_VALIDATE_AFTER`](crate::DEFAULT_VALIDATE_AFTER) idle; reconnect backoff
/// [`DEFAULT_BACKOFF_MIN`](crate::DEFAULT_BACKOFF_MIN)..[`DEFAULT_BACKOFF_MAX`](crate::DEFAULT_BACKOFF_MAX); no keepalive unless
/// learnt from the server; fail fast after [`DEFAULT_FAIL_FAST`](crate::DEFAULT_FAIL_FAST) while the
/// backend is down; no idle timeout; no maximum lifetime.
///
/// ```
/// use greenpool::{ConnectionPool, ErrorSet, Manager};
/// use std::time::Duration;
/// # struct Noop;
/// # impl Manager for Noop {
/// #     type Connection = ();
/// #     type Error = std::io::Error;
/// #     fn new_connection(&self) -> std::io::Result<()> { Ok(()) }
/// # }
/// let pool = ConnectionPool::builder()
///     .size(4)
///     .checkout_timeout(Duration::from_secs(5))
///     .keepalive(Duration::from_secs(30))
///     .discard_on(ErrorSet::io())
///     .build(Noop)?;
///
/// let err = ConnectionPool::builder().size(0).build(Noop).unwrap_err();
/// assert!(err.to_string().contains("size"));
/// # Ok::<(), greenpool::BuildError>(())
/// ```
#[must_use = "a builder does nothing until .build(manager) is called"]
pub struct Builder<M: Manager> {
    cfg: Config,
    _manager: PhantomData<fn() -> M>,
}

impl<M: Manager> Default for Builder<M> {
    fn default() -> Self {
        Builder {
            cfg: Config::default(),
            _manager: PhantomData,
        }
    }
}

impl<M: Manager> Clone for Builder<M> {
    fn clone(&self) -> Self {
        Builder {
            cfg: self.cfg.clone(),
            _manager: PhantomData,
        }
    }
}

impl<M: Manager> std::fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.cfg)
            .finish()
    }
}

impl<M: Manager> Builder<M> {
    /// A builder with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of connections the pool keeps open (default
    /// [`DEFAULT_SIZE`](crate::DEFAULT_SIZE)). The pool opens them in the background at start and
    /// replaces each one it discards; it never has more than `size` open or
    /// being opened. Must be at least 1. With [`min_idle`](Self::min_idle)
    /// below it, `size` is the most the pool grows to; it can be changed
    /// later with [`ConnectionPool::resize`].
    pub fn size(mut self, size: usize) -> Self {
        self.cfg.size = size;
        self
    }

    /// Keep at least `n` connections idle, open ahead of demand, and open
    /// more on demand up to [`size`](Self::size) (r2d2's `min_idle`).
    /// Default: `size`, so that every connection is opened at start and kept
    /// open.
    ///
    /// With `n` below `size` the pool starts with `n` connections. Whenever
    /// a checkout leaves fewer than `n` idle, or a caller has to wait, a
    /// connection is opened in the background (one per missing idle
    /// connection and per waiter, never more than `size` in all). A
    /// connection above `n` that sits idle for [`idle_timeout`](Self::idle_timeout)
    /// (or [`DEFAULT_SHRINK_AFTER`](crate::DEFAULT_SHRINK_AFTER) when that is unset) is closed and not
    /// replaced, counted as [`DiscardReason::Surplus`](crate::DiscardReason::Surplus).
    /// `min_idle(0)` opens nothing until the first checkout, which then
    /// waits for a connect. Must not exceed `size`.
    pub fn min_idle(mut self, n: usize) -> Self {
        self.cfg.min_idle = Some(n);
        self
    }

    /// How long [`get`](ConnectionPool::get) waits for a connection before
    /// failing with [`Error::Timeout`](crate::Error::Timeout) (default
    /// [`DEFAULT_CHECKOUT_TIMEOUT`](crate::DEFAULT_CHECKOUT_TIMEOUT)). Must not be zero; use
    /// [`try_get`](ConnectionPool::try_get) for a checkout that never waits.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.checkout_timeout = Some(timeout);
        self
    }

    /// Make [`get`](ConnectionPool::get) wait as long as it takes, like
    /// geventconnpool. Not recommended: a caller then hangs for as long as the
    /// server is down.
    pub fn no_checkout_timeout(mut self) -> Self {
        self.cfg.checkout_timeout = None;
        self
    }

    /// Errors that mean "this connection is broken" (default [`ErrorSet::io`]).
    /// A `Result` passed through [`PooledConnection::check`](crate::PooledConnection::check)
    /// or returned from [`with`](ConnectionPool::with) whose error is in this
    /// set discards the connection; any other error gives it back, except a
    /// timeout (an `io::Error` of kind `TimedOut` in the chain, or
    /// [`runtime::Elapsed`](crate::runtime::Elapsed)), which always discards
    /// it: its stream is out of step. [`ConnectionPool::retry`] retries on
    /// the same errors.
    pub fn discard_on(mut self, set: ErrorSet) -> Self {
        self.cfg.discard_on = set;
        self
    }

    /// Delay between failed connect attempts: starts at `min`, doubles on each
    /// further failure up to `max`, with random jitter of up to half the delay
    /// so that pools restarted together do not reconnect in lockstep (defaults
    /// [`DEFAULT_BACKOFF_MIN`](crate::DEFAULT_BACKOFF_MIN), [`DEFAULT_BACKOFF_MAX`](crate::DEFAULT_BACKOFF_MAX)). Once the server is
    /// back the pool is full again within about `max`. Both must be at least
    /// 1 ms and `min <= max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.cfg.backoff_min = min;
        self.cfg.backoff_max = max;
        self
    }

    /// A name for log messages (default `"greenpool"`); use it to tell pools
    /// apart.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.name = name.into();
        self
    }

    /// Stack size in bytes of the pool's background green threads, among
    /// them those that run [`Manager::new_connection`], [`Manager::keepalive`]
    /// and [`Manager::validate`] (default: the
    /// runtime's, 128 KiB). Raise it for deep handshakes such as TLS.
    pub fn connector_stack_size(mut self, bytes: usize) -> Self {
        self.cfg.connector_stack_size = Some(bytes);
        self
    }

    /// Run [`Manager::keepalive`] on every connection that has been idle for
    /// `interval`. Set it a little shorter than the server's or the network's
    /// idle timeout. Must not be zero.
    ///
    /// Default: off, unless the manager reports the server's idle timeout
    /// ([`Manager::server_idle_timeout`], asked once, on the first connection);
    /// then every half of that timeout. [`no_keepalive`](Self::no_keepalive)
    /// turns even that off.
    ///
    /// For a protocol with no cheap request to send, TCP keepalive is the
    /// alternative: open connections with
    /// [`runtime::net::connect`](crate::runtime::net::connect) and
    /// `ConnectOptions::tcp_keepalive` (idle, interval, probe count per socket)
    /// and `ConnectOptions::user_timeout`; the kernel then probes idle
    /// connections and fails a dead one with an error on its next use, which
    /// the pool discards.
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.cfg.keepalive = Some(interval);
        self
    }

    /// No keepalive at all, not even one learnt from
    /// [`Manager::server_idle_timeout`]. Idle connections are then only
    /// checked by validation at checkout, if that is on.
    pub fn no_keepalive(mut self) -> Self {
        self.cfg.keepalive = None;
        self.cfg.learn_keepalive = false;
        self
    }

    /// Longest a single [`Manager::keepalive`] or [`Manager::validate`] call
    /// may take (default [`DEFAULT_HEALTH_CHECK_TIMEOUT`](crate::DEFAULT_HEALTH_CHECK_TIMEOUT)); a slower check
    /// counts as failed and the connection is discarded. Must not be zero.
    pub fn health_check_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.health_check_timeout = timeout;
        self
    }

    /// Longest a connect may take: [`Manager::new_connection`] and, on the
    /// first connection, [`Manager::server_idle_timeout`] (default
    /// [`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT)). A slower connect is cancelled (it
    /// unwinds at its next blocking runtime call; one stuck outside the
    /// runtime, e.g. in `std::thread::sleep`, only when that returns) and
    /// counts as a failed attempt, retried with backoff. Enforced by the
    /// maintenance green thread, so to within its tick (a quarter of the
    /// shortest interval, at most 1 s). Must not be zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.connect_timeout = timeout;
        self
    }

    /// Check connections before handing them out. Three defences, all on
    /// with this setting (and all off with [`no_validation`](Self::no_validation)):
    ///
    /// - every connection taken from the idle list gets the cheap,
    ///   non-blocking [`Manager::has_broken`] first (for a socket: has the
    ///   peer closed or reset it?), inline in the caller, so a connection the
    ///   server closed while idle (its idle timeout, a restart, a kill) is
    ///   replaced before anyone sends a request on it;
    /// - a connection idle at least `idle` (default
    ///   [`DEFAULT_VALIDATE_AFTER`](crate::DEFAULT_VALIDATE_AFTER)) is validated with [`Manager::validate`]
    ///   (a round trip) before use;
    /// - once any connection has been found broken (it failed with an error
    ///   in the error set, failed a health check, or its peer closed it),
    ///   every connection idle since before then is validated before use too
    ///   (pessimistic invalidation): when all idle connections died at once,
    ///   a caller meets at most one of them, not one per connection.
    ///
    /// A connection that fails is discarded and the caller gets another,
    /// within the same checkout deadline and keeping its place in line; a
    /// connection handed straight from its connect to a waiting caller is not
    /// checked (it was just opened). `Duration::ZERO` validates on every
    /// checkout.
    ///
    /// Why 500 ms: a connection in steady use is never idle that long, so
    /// validation costs nothing under load (BENCHMARKS.md, section 2c, has
    /// the price of validating on every checkout), while a connection that
    /// sat idle longer — the ones a NAT, a firewall or a server's timeout
    /// kills without a FIN that `has_broken` could see — costs one round
    /// trip before use. HikariCP chose the same window.
    ///
    /// Idle times (here, for keepalive and for the idle timeout) are measured
    /// on the pool's coarse clock, so that a checkout reads no system clock.
    /// Its resolution is the maintenance tick: a quarter of the shortest of
    /// these intervals, between 10 ms and 1 s.
    pub fn validate_after(mut self, idle: Duration) -> Self {
        self.cfg.validate_after = Some(idle);
        self
    }

    /// Never check a connection at checkout: no `has_broken`, no
    /// validation, no pessimistic invalidation (see
    /// [`validate_after`](Self::validate_after)). `has_broken` still runs
    /// when a connection is given back.
    pub fn no_validation(mut self) -> Self {
        self.cfg.validate_after = None;
        self
    }

    /// Close connections idle longer than `timeout` and open fresh ones in
    /// their place (default: off). Must not be zero.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.idle_timeout = Some(timeout);
        self
    }

    /// Replace every connection after it has been open for about `lifetime`
    /// (minus up to 10 % random jitter, so they do not all go at once); a
    /// connection in use is replaced when it is given back (default: off).
    /// Must not be zero.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.cfg.max_lifetime = Some(lifetime);
        self
    }

    /// Fail checkouts fast while the backend is down (default
    /// [`DEFAULT_FAIL_FAST`](crate::DEFAULT_FAIL_FAST)): when no connection is open and the pool's
    /// connects have been failing for `grace`, a checkout fails at once with
    /// [`Error::Unavailable`](crate::Error::Unavailable), carrying the last
    /// connect error, instead of waiting out the checkout timeout; callers
    /// already waiting give up too (at the next failed connect, so within
    /// about the reconnect backoff after `grace`). With an error the manager
    /// calls permanent ([`Manager::is_permanent`]: a wrong password) they
    /// fail at once, without the grace. `Duration::ZERO` fails as soon as a
    /// connect has failed with nothing open.
    ///
    /// The pool keeps reconnecting in the background either way, and a
    /// checkout succeeds again as soon as a connection opens.
    pub fn fail_fast(mut self, grace: Duration) -> Self {
        self.cfg.fail_fast = Some(grace);
        self
    }

    /// Never fail fast: while the backend is down, checkouts wait out their
    /// whole timeout (geventconnpool's and r2d2's behaviour).
    pub fn no_fail_fast(mut self) -> Self {
        self.cfg.fail_fast = None;
        self
    }

    /// Report the pool's events to `handler` (see [`PoolEvents`]: connects
    /// and connect failures, checkouts with their wait, failed checkouts,
    /// checkins, discards with their reason, health checks, and the pool's
    /// counts once per maintenance tick). Pass an `Arc` to keep a handle on
    /// the handler; with the `metrics` feature,
    /// `greenpool::metrics::MetricsEvents` reports them through
    /// the `metrics` crate. Default: none (the pool then pays one branch per
    /// event). Handlers run outside the pool's lock, and a panicking one
    /// costs the pool nothing.
    pub fn event_handler(mut self, handler: impl PoolEvents) -> Self {
        self.cfg.events = Some(EventHandler::new(handler));
        self
    }

    /// For tests: make the pool's green-thread spawns fail when `faults`
    /// says so, to prove that a runtime at its limit costs no slot. A failed
    /// spawn is handled as a real one: a connector that cannot start gives
    /// its slot back for maintenance to reopen, a health check that cannot
    /// start counts as failed. Only with the cargo feature `testing`.
    #[cfg(feature = "testing")]
    pub fn spawn_faults(mut self, faults: crate::testing::SpawnFaults) -> Self {
        self.cfg.spawn_faults = Some(faults);
        self
    }

    /// Check the settings and start the pool: it returns at once and opens its
    /// connections in the background. Use
    /// [`wait_ready`](ConnectionPool::wait_ready) to wait until they are open.
    pub fn build(mut self, manager: M) -> Result<ConnectionPool<M>, BuildError> {
        self.validate()?;
        self.clamp();
        Ok(ConnectionPool::start(manager, self.cfg))
    }

    /// Clamp every duration to [`MAX_DURATION`].
    fn clamp(&mut self) {
        let c = &mut self.cfg;
        for d in [
            &mut c.backoff_min,
            &mut c.backoff_max,
            &mut c.health_check_timeout,
            &mut c.connect_timeout,
        ] {
            *d = (*d).min(MAX_DURATION);
        }
        for d in [
            &mut c.checkout_timeout,
            &mut c.keepalive,
            &mut c.validate_after,
            &mut c.idle_timeout,
            &mut c.max_lifetime,
            &mut c.fail_fast,
        ]
        .into_iter()
        .flatten()
        {
            *d = (*d).min(MAX_DURATION);
        }
    }

    fn validate(&self) -> Result<(), BuildError> {
        let c = &self.cfg;
        if c.size == 0 {
            return Err(BuildError::new(
                "size must be at least 1 (it is the number of connections the pool keeps open)",
            ));
        }
        if c.size > MAX_SIZE {
            return Err(BuildError::new(format!(
                "size {} is above the maximum of {MAX_SIZE} (every slot may need a green \
                 thread of its own)",
                c.size
            )));
        }
        if let Some(n) = c.min_idle.filter(|&n| n > c.size) {
            return Err(BuildError::new(format!(
                "min_idle {n} is above size {} (size is the most connections the pool opens)",
                c.size
            )));
        }
        let nonzero = [
            ("checkout_timeout", c.checkout_timeout),
            ("keepalive interval", c.keepalive),
            ("health_check_timeout", Some(c.health_check_timeout)),
            ("connect_timeout", Some(c.connect_timeout)),
            ("idle_timeout", c.idle_timeout),
            ("max_lifetime", c.max_lifetime),
        ];
        for (what, d) in nonzero {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(BuildError::new(format!(
                    "{what} must not be zero{}",
                    if what == "checkout_timeout" {
                        "; use try_get() for a checkout that never waits"
                    } else {
                        ""
                    }
                )));
            }
        }
        if c.backoff_min < Duration::from_millis(1) || c.backoff_min > c.backoff_max {
            return Err(BuildError::new(format!(
                "reconnect_backoff needs 1 ms <= min <= max, got min {:?} max {:?}",
                c.backoff_min, c.backoff_max
            )));
        }
        if let Some(bytes) = c.connector_stack_size {
            if bytes < greenpool_runtime::config::MIN_STACK_SIZE {
                return Err(BuildError::new(format!(
                    "connector_stack_size {bytes} is below the runtime's minimum of {} bytes",
                    greenpool_runtime::config::MIN_STACK_SIZE
                )));
            }
        }
        Ok(())
    }
}

impl<M: Manager> ConnectionPool<M> {
    /// A pool that keeps `size` connections open, with every other setting at
    /// its default (see [`Builder`]). Returns at once; connections open in the
    /// background. Fails only if `size` is 0.
    pub fn new(manager: M, size: usize) -> Result<Self, crate::BuildError> {
        Builder::new().size(size).build(manager)
    }

    /// A [`Builder`] for every option.
    pub fn builder() -> Builder<M> {
        Builder::new()
    }
}
