//! Sleeping, deadlines and timeouts that behave the same in a green thread and
//! in a plain OS thread.
//!
//! Inside a coroutine may stores timeouts in whole milliseconds and treats 0
//! as "no timeout", so a zero or sub-millisecond timeout passed straight to may
//! waits **forever**. Everything here clamps: a remaining time of zero means
//! "already expired", anything between 0 and 1 ms waits 1 ms.

use std::fmt;
use std::time::{Duration, Instant};

use crate::task::{is_green, Builder};

const MIN_WAIT: Duration = Duration::from_millis(1);

/// Sleep for `d`, blocking only the calling green thread (or the calling OS
/// thread outside the runtime). A zero duration returns at once.
pub fn sleep(d: Duration) {
    if d.is_zero() {
        return;
    }
    if is_green() {
        may::coroutine::sleep(d);
        // A coroutine woken by a timer runs on may's single timer thread until
        // it yields; hand it back to a worker before the caller does real work.
        may::coroutine::yield_now();
    } else {
        std::thread::sleep(d);
    }
}

/// Call after a timed wait (a channel, semaphore, condvar or park with a
/// timeout) expired: may resumes the green thread on its single timer thread,
/// so yield once to continue on a worker. Does nothing on an OS thread.
pub(crate) fn after_timed_wake() {
    if is_green() {
        may::coroutine::yield_now();
    }
}

/// Turn a remaining time into a timeout may honours: `None` when nothing is
/// left (the caller must treat the wait as expired), otherwise at least 1 ms.
pub fn clamp_timeout(remaining: Duration) -> Option<Duration> {
    if remaining.is_zero() {
        None
    } else {
        Some(remaining.max(MIN_WAIT))
    }
}

/// How long a blocking call may wait, derived from a [`Deadline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// No deadline: wait until woken.
    Forever,
    /// Wait at most this long (never below 1 ms).
    For(Duration),
    /// The deadline has passed: do not wait.
    Expired,
}

/// A point in time after which a wait gives up; or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// A deadline `d` from now. `Duration::ZERO` is already expired.
    pub fn after(d: Duration) -> Self {
        Deadline(Some(
            Instant::now().checked_add(d).unwrap_or_else(far_future),
        ))
    }

    /// A deadline `d` after `start` (an instant the caller has just read,
    /// to save a second clock read).
    pub fn after_from(start: Instant, d: Duration) -> Self {
        Deadline(Some(start.checked_add(d).unwrap_or_else(far_future)))
    }

    /// No deadline.
    pub fn never() -> Self {
        Deadline(None)
    }

    /// The instant, if any.
    pub fn instant(&self) -> Option<Instant> {
        self.0
    }

    /// Time left; `None` when there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline has passed.
    pub fn is_expired(&self) -> bool {
        matches!(self.wait(), Wait::Expired)
    }

    /// How long a blocking call may wait now, clamped for may.
    pub fn wait(&self) -> Wait {
        match self.remaining() {
            None => Wait::Forever,
            Some(rem) => match clamp_timeout(rem) {
                None => Wait::Expired,
                Some(d) => Wait::For(d),
            },
        }
    }
}

fn far_future() -> Instant {
    // About 30 years; far enough to mean "never" without overflowing.
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// The operation given to [`timeout`] did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(pub Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "operation did not finish within {:?} and was cancelled",
            self.0
        )
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Run `f` with a time limit (gevent's `Timeout`).
///
/// `f` runs in a new green thread; the caller waits for it. What happens:
///
/// - `f` returns in time: its value is returned.
/// - `f` panics: the panic is re-raised in the caller.
/// - the time runs out: `Err(Elapsed)` is returned **at once** and the green
///   thread running `f` is cancelled. It unwinds at its next blocking runtime
///   call (network IO, sleep, a runtime lock or channel), dropping everything
///   it owns — a connection moved into `f` is closed, never reused. If `f` is
///   stuck in a non-runtime call (a CPU loop, `std::thread::sleep`) it unwinds
///   only when that call returns. The state of the operation is unknown:
///   whatever it was writing may be half written.
/// - `d` is zero: `Err(Elapsed)` at once, and `f` never runs. A `d` under
///   1 ms waits 1 ms.
///
/// Costs one green-thread spawn per call; prefer native IO timeouts on hot
/// paths. Panics, like [`crate::spawn`], if the green thread cannot be
/// started; [`timeout_with`] returns that as an error instead.
///
/// ```
/// use std::time::Duration;
/// use greenpool_runtime::{sleep, timeout};
/// let r = timeout(Duration::from_millis(20), || sleep(Duration::from_secs(60)));
/// assert!(r.is_err());
/// assert_eq!(timeout(Duration::from_secs(5), || 7).unwrap(), 7);
/// ```
pub fn timeout<F, T>(d: Duration, f: F) -> Result<T, Elapsed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    timeout_with(Builder::new(), d, f)
        .unwrap_or_else(|e| panic!("failed to spawn a green thread: {e}"))
}

/// [`timeout`], running `f` in a green thread made by `builder` (e.g. with a
/// bigger stack or a name). Like [`Builder::spawn`], it returns an error
/// instead of panicking when the green thread cannot be started (the
/// runtime is at its limit of green threads, or out of memory); `f` is then
/// dropped without running.
///
/// ```
/// use std::time::Duration;
/// use greenpool_runtime::{timeout_with, Builder};
/// let r = timeout_with(Builder::new().name("probe"), Duration::from_secs(5), || 7)?;
/// assert_eq!(r.unwrap(), 7);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn timeout_with<F, T>(
    builder: Builder,
    d: Duration,
    f: F,
) -> std::io::Result<Result<T, Elapsed>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(wait) = clamp_timeout(d) else {
        return Ok(Err(Elapsed(d)));
    };
    let (tx, rx) = may::sync::mpsc::channel();
    let handle = builder.spawn(move || {
        // The receiver may be gone (timed out); nothing to do then.
        let _ = tx.send(f());
    })?;
    let result = rx.recv_timeout(wait);
    after_timed_wake();
    Ok(match result {
        Ok(v) => Ok(v),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            handle.cancel();
            Err(Elapsed(d))
        }
        // The sender was dropped without sending: `f` panicked.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(e) => e.resume_unwind(),
            Ok(()) => unreachable!("green thread ended without sending its result"),
        },
    })
}
