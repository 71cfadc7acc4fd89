//! [`retry`] and [`Retry`]: run an operation again when it fails with an
//! error that means "broken connection".
//!
//! Because the pool discards a connection on the errors in its
//! [`ErrorSet`], and a retry happens on the same kind of errors, every attempt
//! of `retry(|| pool.with(..))` runs on a different connection: the failed one
//! is gone before the next attempt checks out, and if no other connection is
//! idle the attempt waits for the replacement.
//!
//! That holds only while the retry's set is no wider than the pool's discard
//! set. [`ConnectionPool::retry`] (and [`Retry::with`]) make it hold by
//! retrying on exactly the errors the pool discards on: its
//! [`discard_on`](crate::Builder::discard_on) set plus timeouts, which the
//! pool always discards. `retry(|| pool.with(..))` retries on its own set
//! (default: any `io::Error`) whatever the pool's set is; an error the
//! pool does not discard is then retried on whatever connection comes next,
//! possibly the same one.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::Duration;

use crate::error_set::ErrorSet;
use crate::error_type::AsStdError;
use crate::manager::Manager;
use crate::pool::ConnectionPool;

/// Largest backoff factor [`Retry::backoff`] keeps.
const MAX_BACKOFF_FACTOR: f64 = 1_000_000.0;

/// Default number of failures tolerated before giving up: 5 (6 attempts).
pub const DEFAULT_MAX_FAILURES: u32 = 5;
/// Default log target of retry messages.
pub const DEFAULT_LOG_TARGET: &str = "greenpool::retry";
/// Default wording of the message logged before each retry.
pub const DEFAULT_RETRY_MESSAGE: &str =
    "{name}: attempt {attempt} failed: {error}; retrying on a fresh connection";
/// Default wording of the message logged on giving up.
pub const DEFAULT_GIVE_UP_MESSAGE: &str = "{name}: giving up after {attempt} attempts: {error}";
/// Shortest wait between attempts of an unbounded retry, so that an operation
/// failing at once cannot spin.
pub const UNBOUNDED_MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Call `f`, and call it again while it fails with an error in the default
/// set (any [`std::io::Error`] in the source chain), up to
/// [`DEFAULT_MAX_FAILURES`] failures. See [`Retry`] for every option, and
/// [`ConnectionPool::retry`] for a retry that follows the pool's own discard
/// set. `E` is any error type the pool accepts ([`AsStdError`]).
///
/// ```no_run
/// # use greenpool::{retry, ConnectionPool, Manager};
/// # fn talk(_c: &mut ()) -> std::io::Result<u32> { Ok(1) }
/// # fn demo<M: Manager<Connection = ()>>(pool: &ConnectionPool<M>) -> std::io::Result<()> {
/// let v = retry(|| pool.with(|c| talk(c)))?;
/// # Ok(()) }
/// ```
pub fn retry<T, E, F, Via>(f: F) -> Result<T, E>
where
    F: FnMut() -> Result<T, E>,
    E: AsStdError<Via>,
{
    Retry::new().call(f)
}

/// A retry policy (geventconnpool's `@retry`), built once and reused.
///
/// - An error in the policy's set ([`on`](Self::on); default any
///   `io::Error`, or the pool's discard set in [`with`](Self::with)) is
///   retried, after [`interval`](Self::interval) (growing with
///   [`backoff`](Self::backoff) if set), until there have been more than
///   [`max_failures`](Self::max_failures) failures; then the last error is
///   returned as it is, so `?` keeps working.
/// - Any other error returns at once. A panic is not caught: it goes straight
///   to the caller (and a pool guard in scope discards its connection).
/// - A pool's own failure to hand out a connection — a
///   [`greenpool::Error`](crate::Error) anywhere in the source chain — is
///   not retried, even though it converts into an `io::Error`: a checkout
///   that timed out has already waited the whole checkout timeout (retrying
///   it would multiply the wait while the server is down), and a closed pool
///   stays closed. [`retry_pool_timeouts`](Self::retry_pool_timeouts) opts in
///   for timeouts, to ride out an outage longer than one checkout timeout.
/// - Each retry is logged at [`retry_level`](Self::retry_level) (default
///   `Info`), the give-up at [`give_up_level`](Self::give_up_level) (default
///   `Error`), both to [`log_target`](Self::log_target). Messages are
///   templates with the placeholders `{name}`, `{attempt}` (1-based number of
///   the attempt that failed), `{max}` (the attempt limit, or `unlimited`) and
///   `{error}`.
/// - [`run`](Self::run) also tells how many attempts were made.
///
/// ```
/// use greenpool::{ErrorSet, Retry};
/// use std::io;
/// use std::time::Duration;
///
/// let policy = Retry::new()
///     .on(ErrorSet::kind(io::ErrorKind::ConnectionReset))
///     .max_failures(2)
///     .interval(Duration::from_millis(1))
///     .name("senddata");
///
/// let mut calls = 0;
/// let outcome = policy.run(|| {
///     calls += 1;
///     if calls < 3 { Err(io::Error::from(io::ErrorKind::ConnectionReset)) } else { Ok(calls) }
/// });
/// assert_eq!(outcome.attempts, 3);
/// assert_eq!(outcome.result.unwrap(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Retry {
    on: ErrorSet,
    /// `on` was set: [`Retry::with`] uses it instead of the pool's own set.
    on_set: bool,
    max_failures: Option<u32>,
    interval: Duration,
    backoff: Option<(f64, Duration)>,
    jitter: f64,
    name: Option<Cow<'static, str>>,
    target: Cow<'static, str>,
    retry_level: log::Level,
    give_up_level: log::Level,
    retry_message: Cow<'static, str>,
    give_up_message: Cow<'static, str>,
    retry_pool_timeouts: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            on: ErrorSet::io(),
            on_set: false,
            max_failures: Some(DEFAULT_MAX_FAILURES),
            interval: Duration::ZERO,
            backoff: None,
            jitter: 0.0,
            name: None,
            target: Cow::Borrowed(DEFAULT_LOG_TARGET),
            retry_level: log::Level::Info,
            give_up_level: log::Level::Error,
            retry_message: Cow::Borrowed(DEFAULT_RETRY_MESSAGE),
            give_up_message: Cow::Borrowed(DEFAULT_GIVE_UP_MESSAGE),
            retry_pool_timeouts: false,
        }
    }
}

/// What [`Retry::run`] returns: the final result and how many attempts made it.
#[derive(Debug)]
pub struct RetryOutcome<T, E> {
    /// The last attempt's result.
    pub result: Result<T, E>,
    /// Attempts made, at least 1.
    pub attempts: u32,
}

impl Retry {
    /// The defaults: retry any `io::Error`, at most [`DEFAULT_MAX_FAILURES`]
    /// failures, no wait between attempts (a broken connection is replaced by
    /// a fresh one at once), no backoff, log target [`DEFAULT_LOG_TARGET`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The errors to retry (matched through the source chain). Default:
    /// any `io::Error`; in [`with`](Self::with), the errors the pool
    /// discards on.
    pub fn on(mut self, set: ErrorSet) -> Self {
        self.on = set;
        self.on_set = true;
        self
    }

    /// Give up when failures exceed `n`: at most `n + 1` attempts.
    /// `max_failures(0)` never retries.
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = Some(n);
        self
    }

    /// Retry for as long as the error is in the set. Attempts are then at
    /// least [`UNBOUNDED_MIN_INTERVAL`] apart, so an operation that fails at
    /// once cannot spin; through a pool, each attempt also waits for a
    /// connection.
    pub fn unbounded(mut self) -> Self {
        self.max_failures = None;
        self
    }

    /// Wait this long before each retry (default: no wait). Clamped to
    /// [`MAX_DURATION`](crate::MAX_DURATION) (one year).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d.min(crate::MAX_DURATION);
        self
    }

    /// Multiply the wait by `factor` after each failure, up to `max`
    /// (e.g. `backoff(2.0, Duration::from_secs(5))`). Needs a non-zero
    /// [`interval`](Self::interval) to start from. A factor below 1 (or
    /// NaN) is treated as 1, an infinite one as 1,000,000; `max` is clamped to
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn backoff(mut self, factor: f64, max: Duration) -> Self {
        let factor = if factor.is_nan() {
            1.0
        } else {
            factor.clamp(1.0, MAX_BACKOFF_FACTOR)
        };
        self.backoff = Some((factor, max.min(crate::MAX_DURATION)));
        self
    }

    /// Randomise each wait by up to this fraction of it (0.0 to 1.0; default
    /// 0), e.g. 0.5 waits between 50 % and 100 % of the interval. NaN is
    /// treated as 0.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The operation's name, for log messages (`{name}`; default
    /// `"operation"`, or the function's name with [`retrying!`](crate::retrying)).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The `log` target of both messages.
    pub fn log_target(mut self, target: impl Into<Cow<'static, str>>) -> Self {
        self.target = target.into();
        self
    }

    /// The level of the message logged before each retry (default `Info`).
    pub fn retry_level(mut self, level: log::Level) -> Self {
        self.retry_level = level;
        self
    }

    /// The level of the message logged on giving up (default `Error`).
    pub fn give_up_level(mut self, level: log::Level) -> Self {
        self.give_up_level = level;
        self
    }

    /// The wording of the retry message; see [`Retry`] for placeholders.
    pub fn retry_message(mut self, template: impl Into<Cow<'static, str>>) -> Self {
        self.retry_message = template.into();
        self
    }

    /// The wording of the give-up message; see [`Retry`] for placeholders.
    pub fn give_up_message(mut self, template: impl Into<Cow<'static, str>>) -> Self {
        self.give_up_message = template.into();
        self
    }

    /// Also retry a checkout that timed out
    /// ([`Error::Timeout`](crate::Error::Timeout)) or failed fast while the
    /// backend was down ([`Error::Unavailable`](crate::Error::Unavailable),
    /// unless the manager called the error permanent); default: no, see
    /// [`Retry`]. Each such attempt waits up to the pool's checkout timeout
    /// again, so the whole call can take `(max_failures + 1)` of them.
    pub fn retry_pool_timeouts(mut self, yes: bool) -> Self {
        self.retry_pool_timeouts = yes;
        self
    }

    /// Name the operation unless a name was set (used by [`retrying!`](crate::retrying)).
    #[doc(hidden)]
    pub fn default_name(mut self, name: &'static str) -> Self {
        if self.name.is_none() {
            self.name = Some(Cow::Borrowed(name));
        }
        self
    }

    /// Run `f` under this policy and return its final result. `E` is any
    /// error type the pool accepts ([`AsStdError`]).
    pub fn call<T, E, F, Via>(&self, f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: AsStdError<Via>,
    {
        self.run(f).result
    }

    /// Run `f` under this policy; the outcome also tells how many attempts
    /// were made.
    pub fn run<T, E, F, Via>(&self, f: F) -> RetryOutcome<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: AsStdError<Via>,
    {
        self.run_on(|e| self.on.matches_dyn(e), f)
    }

    /// Run `f` on a connection of `pool` (like
    /// [`ConnectionPool::with`]) under this policy, retrying by default on
    /// exactly the errors the pool discards the connection on: its
    /// [`discard_on`](crate::Builder::discard_on) set, and timeouts (see
    /// [`PooledConnection::check`](crate::PooledConnection::check)). So every
    /// retry runs on a connection other than the one that failed, and an
    /// error that leaves the connection in the pool is returned at once.
    /// [`on`](Self::on) replaces that set; an error in it that the pool does
    /// not discard on is then retried on whatever connection comes next,
    /// possibly the same one.
    ///
    /// ```no_run
    /// # use greenpool::{ConnectionPool, Manager, Retry};
    /// # use std::time::Duration;
    /// # fn talk(_c: &mut ()) -> std::io::Result<u32> { Ok(1) }
    /// # fn demo<M: Manager<Connection = ()>>(pool: &ConnectionPool<M>) -> std::io::Result<()> {
    /// let policy = Retry::new().max_failures(10).interval(Duration::from_millis(50));
    /// let v = policy.with(pool, |c| talk(c))?;
    /// # Ok(()) }
    /// ```
    pub fn with<M, T, E, F, Via>(&self, pool: &ConnectionPool<M>, mut f: F) -> Result<T, E>
    where
        M: Manager,
        F: FnMut(&mut M::Connection) -> Result<T, E>,
        E: From<crate::Error> + AsStdError<Via>,
    {
        let attempt = || pool.with(&mut f);
        if self.on_set {
            self.run_on(|e| self.on.matches_dyn(e), attempt).result
        } else {
            self.run_on(|e| pool.discards_on(e), attempt).result
        }
    }

    fn run_on<T, E, F, Via>(
        &self,
        retry_on: impl Fn(&(dyn StdError + 'static)) -> bool,
        mut f: F,
    ) -> RetryOutcome<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: AsStdError<Via>,
    {
        let mut attempt: u32 = 0;
        let mut wait = self.interval;
        loop {
            attempt += 1;
            let error = match f() {
                Ok(v) => {
                    return RetryOutcome {
                        result: Ok(v),
                        attempts: attempt,
                    }
                }
                Err(e) => e,
            };
            let e = error.as_std_error();
            if !retry_on(e) || !self.may_retry_pool_error(e) {
                return RetryOutcome {
                    result: Err(error),
                    attempts: attempt,
                };
            }
            let failures = attempt;
            if self.max_failures.is_some_and(|max| failures > max) {
                self.log(self.give_up_level, &self.give_up_message, attempt, e);
                return RetryOutcome {
                    result: Err(error),
                    attempts: attempt,
                };
            }
            self.log(self.retry_level, &self.retry_message, attempt, e);
            let mut delay = self.jittered(wait);
            if self.max_failures.is_none() {
                delay = delay.max(UNBOUNDED_MIN_INTERVAL);
            }
            greenpool_runtime::sleep(delay);
            if let Some((factor, max)) = self.backoff {
                // Saturates instead of overflowing: both ends are bounded.
                wait = Duration::try_from_secs_f64(wait.as_secs_f64() * factor)
                    .unwrap_or(max)
                    .min(max);
            }
        }
    }

    /// False for a pool error that is not to be retried (see [`Retry`]).
    fn may_retry_pool_error(&self, error: &(dyn StdError + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(pool_error) = e.downcast_ref::<crate::Error>() {
                let transient = pool_error.is_timeout()
                    || matches!(
                        pool_error,
                        crate::Error::Unavailable {
                            permanent: false,
                            ..
                        }
                    );
                return self.retry_pool_timeouts && transient;
            }
            next = crate::error_set::chain_next(e);
        }
        true
    }

    fn jittered(&self, d: Duration) -> Duration {
        if self.jitter == 0.0 || d.is_zero() {
            return d;
        }
        Duration::try_from_secs_f64(
            d.as_secs_f64() * (1.0 - self.jitter * crate::backoff::unit_random()),
        )
        .unwrap_or(d)
    }

    fn log(&self, level: log::Level, template: &str, attempt: u32, error: &dyn StdError) {
        if !log::log_enabled!(target: &self.target, level) {
            return;
        }
        let msg = self.render(template, attempt, error);
        log::log!(target: &self.target, level, "{msg}");
    }

    /// Fill in a message template.
    fn render(&self, template: &str, attempt: u32, error: &dyn StdError) -> String {
        let name = self.name.as_deref().unwrap_or("operation");
        let max = match self.max_failures {
            Some(n) => (u64::from(n) + 1).to_string(),
            None => "unlimited".to_owned(),
        };
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            let (value, len): (Option<&dyn std::fmt::Display>, usize) =
                if after.starts_with("{name}") {
                    (Some(&name), 6)
                } else if after.starts_with("{attempt}") {
                    (Some(&attempt), 9)
                } else if after.starts_with("{max}") {
                    (Some(&max), 5)
                } else if after.starts_with("{error}") {
                    (Some(&error), 7)
                } else {
                    (None, 1)
                };
            match value {
                Some(v) => {
                    let _ = write!(out, "{v}");
                }
                None => out.push('{'),
            }
            rest = &after[len..];
        }
        out.push_str(rest);
        out
    }
}

/// Declare a function whose body runs under a retry policy, the way
/// `@retry(...)` decorates a function in Python. The policy is any expression
/// giving a [`Retry`]; it is named after the function unless it has a name.
/// The arguments are reused by every attempt, so take them by reference or
/// make them `Copy`/`Clone`.
///
/// ```
/// use greenpool::{retrying, Retry};
/// use std::io;
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// fn policy() -> Retry { Retry::new().max_failures(3) }
///
/// retrying! { policy() =>
///     /// Fails twice, then succeeds.
///     fn flaky(calls: &AtomicU32) -> io::Result<u32> {
///         let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
///         if n < 3 { Err(io::Error::from(io::ErrorKind::ConnectionReset)) } else { Ok(n) }
///     }
/// }
///
/// let calls = AtomicU32::new(0);
/// assert_eq!(flaky(&calls).unwrap(), 3);
/// ```
#[macro_export]
macro_rules! retrying {
    ($policy:expr =>
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            let policy: $crate::Retry = $policy;
            policy
                .default_name(::core::stringify!($name))
                .call(|| -> $ret { $body })
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn templates_fill_every_placeholder_and_keep_other_braces() {
        let r = Retry::new().name("senddata").max_failures(2);
        let e = io::Error::other("reset");
        assert_eq!(
            r.render("{name} #{attempt}/{max}: {error} {x} {", 1, &e),
            "senddata #1/3: reset {x} {"
        );
        assert_eq!(
            Retry::new().unbounded().render("{name} {max}", 9, &e),
            "operation unlimited"
        );
    }
}
