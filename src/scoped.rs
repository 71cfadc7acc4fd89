//! The scoped operations on a [`ConnectionPool`]: [`with`](ConnectionPool::with),
//! [`with_guard`](ConnectionPool::with_guard) and
//! [`retry`](ConnectionPool::retry). Each checks a connection out, runs a
//! closure on it, and gives it back or discards it by what the closure did.

use std::error::Error as StdError;
use std::panic::{self, AssertUnwindSafe};

use crate::error::Error;
use crate::error_type::AsStdError;
use crate::guard::PooledConnection;
use crate::manager::Manager;
use crate::pool::ConnectionPool;
use crate::retry::Retry;

impl<M: Manager> ConnectionPool<M> {
    /// Run `f` on a pooled connection and give the connection back, or
    /// discard it if `f` fails with an error in the pool's
    /// [`ErrorSet`](crate::ErrorSet) or with a timeout (see
    /// [`PooledConnection::check`]), or unwinds (a panic or a cancellation of
    /// this green thread, caught here and then continued).
    ///
    /// Blocks like [`get`](Self::get) first; a checkout failure is converted
    /// into `E` with `From<greenpool::Error>` (which `io::Error`,
    /// `Box<dyn Error + Send + Sync>` and `anyhow::Error` have). `E` is any
    /// error type the pool accepts: see [`AsStdError`].
    ///
    /// To decide about the connection inside the closure (say, an answer that
    /// means the session is unusable, without inventing an error), use
    /// [`with_guard`](Self::with_guard); to run `f` again on another
    /// connection when it fails, [`retry`](Self::retry).
    pub fn with<T, E, F, Via>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut M::Connection) -> Result<T, E>,
        E: From<Error> + AsStdError<Via>,
    {
        self.with_guard(|conn| f(conn))
    }

    /// [`with`](Self::with), handing `f` the guard instead of the connection:
    /// `f` reaches the connection through `Deref`/`DerefMut` and can call
    /// [`mark_broken`](PooledConnection::mark_broken) to have it discarded
    /// however it returns, or read [`id`](PooledConnection::id) and
    /// [`age`](PooledConnection::age). Errors and unwinds discard the
    /// connection exactly as in `with`.
    ///
    /// ```
    /// use greenpool::ConnectionPool;
    /// use greenpool::testing::{LineManager, TestServer};
    /// use std::time::Duration;
    ///
    /// let server = TestServer::start()?;
    /// let pool = ConnectionPool::new(LineManager::new(server.addr()), 1)?;
    /// pool.wait_ready(Duration::from_secs(5))?;
    /// // An answer that is not an error, but means this session is done.
    /// let reply = pool.with_guard(|c| {
    ///     let reply = c.request("ECHO BYE")?;
    ///     if reply == "BYE" {
    ///         c.mark_broken();
    ///     }
    ///     Ok::<_, std::io::Error>(reply)
    /// })?;
    /// assert_eq!(reply, "BYE");
    /// assert_eq!(pool.state().counters.discarded.explicit, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_guard<T, E, F, Via>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PooledConnection<M>) -> Result<T, E>,
        E: From<Error> + AsStdError<Via>,
    {
        let mut conn = self.get()?;
        // Catch an unwind here rather than ask the thread in the guard's
        // drop: `std::thread::panicking` is per OS thread, not per green
        // thread.
        match panic::catch_unwind(AssertUnwindSafe(|| f(&mut conn))) {
            Ok(result) => {
                conn.returned();
                conn.check(result)
            }
            Err(payload) => {
                conn.unwound(&*payload);
                drop(conn);
                panic::resume_unwind(payload)
            }
        }
    }

    /// Run `f` on a pooled connection like [`with`](Self::with), and run it
    /// again on another connection while it fails with an error that made
    /// the pool discard the connection: one in the pool's
    /// [`discard_on`](crate::Builder::discard_on) set, or a timeout. Any
    /// other error is returned at once (its connection went back into the
    /// pool, and a retry could get that same connection). The other settings
    /// are [`Retry`]'s defaults: at most
    /// [`DEFAULT_MAX_FAILURES`](crate::DEFAULT_MAX_FAILURES) failures, no
    /// wait in between, the pool's own checkout timeouts not retried. For
    /// other settings use [`Retry::with`]:
    /// `Retry::new().max_failures(10).with(&pool, |c| ..)`.
    ///
    /// `retry(|| pool.with(..))` differs in one thing: it retries on its own
    /// set (default any `io::Error`), whatever the pool's is. With a pool
    /// that discards on fewer errors than that, a retried error may run
    /// again on the connection it failed on; with one that discards on more
    /// (an error type of your own), those errors are not retried.
    ///
    /// ```
    /// use greenpool::{ConnectionPool, ErrorSet};
    /// use greenpool::testing::{LineManager, TestServer};
    /// use std::io;
    /// use std::time::Duration;
    ///
    /// let server = TestServer::start()?;
    /// let pool = ConnectionPool::builder()
    ///     .size(2)
    ///     .discard_on(ErrorSet::kind(io::ErrorKind::ConnectionReset))
    ///     .build(LineManager::new(server.addr()))?;
    /// pool.wait_ready(Duration::from_secs(5))?;
    /// let mut attempts = 0;
    /// let id = pool.retry(|c| {
    ///     attempts += 1;
    ///     if attempts == 1 {
    ///         return Err(io::Error::from(io::ErrorKind::ConnectionReset));
    ///     }
    ///     c.id()
    /// })?;
    /// assert_eq!(attempts, 2);
    /// assert_eq!(pool.state().counters.discarded.error, 1);
    /// # let _ = id;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retry<T, E, F, Via>(&self, f: F) -> Result<T, E>
    where
        F: FnMut(&mut M::Connection) -> Result<T, E>,
        E: From<Error> + AsStdError<Via>,
    {
        Retry::new().with(self, f)
    }

    /// True if a connection whose work failed with `e` is discarded: `e` is
    /// in the pool's error set or says the work timed out.
    pub(crate) fn discards_on(&self, e: &(dyn StdError + 'static)) -> bool {
        crate::error_set::is_stream_timeout(e) || self.shared().cfg.discard_on.matches_dyn(e)
    }
}
