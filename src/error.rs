//! The pool's own errors.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

/// A connect error kept by the pool to explain later checkout failures.
pub(crate) type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// Why [`ConnectionPool::get`](crate::ConnectionPool::get) gave no connection.
///
/// Converts into [`std::io::Error`] (kind `TimedOut` or `NotConnected`), so a
/// function returning `io::Result` can write `pool.get()?`; give your own error
/// type a `From<greenpool::Error>` to do the same.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// No connection became free within the checkout timeout.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// The pool's size.
        size: usize,
        /// Open connections when the wait ended (all of them in use).
        open: usize,
        /// The last connect error, when the pool was failing to connect at the
        /// time: usually the real reason nothing was free. (A connection that
        /// was discarded before it did any useful work counts as a failed
        /// connect, and a connect cancelled for taking longer than the
        /// connect timeout as well.)
        last_connect_error: Option<SharedError>,
        /// Connections being opened when the wait ended (including those
        /// waiting out a backoff).
        connecting: usize,
        /// Connections that failed validation while this caller waited (each
        /// was discarded and the caller tried the next).
        validation_failures: u32,
        /// The last of those validation errors.
        last_validation_error: Option<String>,
    },
    /// The backend is down: no connection is open and the pool's connects
    /// have been failing for longer than the fail-fast grace
    /// ([`Builder::fail_fast`](crate::Builder::fail_fast)), or with an error
    /// the manager calls permanent
    /// ([`Manager::is_permanent`](crate::Manager::is_permanent)). The checkout
    /// failed at once instead of waiting out its timeout; the pool keeps
    /// reconnecting in the background.
    Unavailable {
        /// How long the caller waited.
        waited: Duration,
        /// The pool's size.
        size: usize,
        /// How long the connects have been failing.
        failing_for: Duration,
        /// The manager said the error will not go away by retrying.
        permanent: bool,
        /// The last connect error: the cause.
        last_connect_error: SharedError,
    },
    /// [`ConnectionPool::wait_ready`](crate::ConnectionPool::wait_ready) gave
    /// up: not all connections were open in time.
    NotReady {
        /// How long the caller waited.
        waited: Duration,
        /// The pool's size.
        size: usize,
        /// Open connections when the wait ended.
        open: usize,
        /// The last connect error, if the pool was failing to connect.
        last_connect_error: Option<SharedError>,
    },
    /// The pool was closed ([`ConnectionPool::close`](crate::ConnectionPool::close),
    /// or its last handle was dropped).
    Closed,
}

impl Error {
    /// True for [`Error::Timeout`] and [`Error::NotReady`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::NotReady { .. })
    }

    /// True for [`Error::Unavailable`]: the backend is down.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// True for [`Error::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// The last connect error carried by a timeout, if any.
    pub fn last_connect_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match self {
            Error::Timeout {
                last_connect_error: Some(e),
                ..
            }
            | Error::NotReady {
                last_connect_error: Some(e),
                ..
            }
            | Error::Unavailable {
                last_connect_error: e,
                ..
            } => Some(&**e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout {
                waited,
                size,
                open,
                last_connect_error,
                connecting,
                validation_failures,
                last_validation_error,
            } => {
                write!(f, "no pooled connection became free within {waited:.1?}")?;
                if *validation_failures > 0 {
                    write!(
                        f,
                        ": {validation_failures} connection(s) failed validation and were \
                         replaced"
                    )?;
                    if let Some(e) = last_validation_error {
                        write!(f, "; last validation error: {e}")?;
                    }
                    if let Some(e) = last_connect_error {
                        write!(f, "; the pool also cannot connect: {e}")?;
                    }
                    return Ok(());
                }
                match last_connect_error {
                    Some(e) => write!(
                        f,
                        ": the pool cannot connect ({open} of {size} connections open; \
                         it keeps trying in the background); last connect error: {e}"
                    ),
                    None if *open < *size && *connecting > 0 => write!(
                        f,
                        ": {open} of {size} connections open and {connecting} still being \
                         opened (the connects have not finished yet: a slow or hanging \
                         server; see Builder::connect_timeout)"
                    ),
                    None => write!(
                        f,
                        " (all {open} of {size} connections in use); raise the pool size \
                         or the checkout timeout, or hold connections for less time"
                    ),
                }
            }
            Error::NotReady {
                waited,
                size,
                open,
                last_connect_error,
            } => {
                write!(
                    f,
                    "only {open} of {size} connections open after {waited:.1?}"
                )?;
                match last_connect_error {
                    Some(e) => write!(
                        f,
                        "; the pool keeps trying in the background; last connect error: {e}"
                    ),
                    None => f.write_str("; the others are still connecting"),
                }
            }
            Error::Unavailable {
                waited,
                size,
                failing_for,
                permanent,
                last_connect_error,
            } => {
                write!(
                    f,
                    "no connection to the backend: none of {size} is open and every connect \
                     for {failing_for:.1?} failed"
                )?;
                if *permanent {
                    f.write_str(" with an error that retrying will not fix")?;
                }
                write!(
                    f,
                    "; gave up after {waited:.1?} instead of waiting out the checkout timeout \
                     (Builder::fail_fast); the pool keeps trying in the background; last \
                     connect error: {last_connect_error}"
                )
            }
            Error::Closed => f.write_str("the connection pool is closed"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.last_connect_error()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e {
            Error::Timeout { .. } | Error::NotReady { .. } => io::ErrorKind::TimedOut,
            Error::Unavailable { .. } | Error::Closed => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

/// The builder rejected a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    message: String,
}

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid connection pool configuration: {}", self.message)
    }
}

impl StdError for BuildError {}

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
