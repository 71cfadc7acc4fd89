//! greenpool: a gevent-style connection pool on stackful coroutines.

#![warn(missing_docs)]

pub use greenpool_runtime as runtime;

mod builder;
mod connector;
mod error;
mod error_set;
mod guard;
mod maintenance;
mod manager;
mod pool;
mod retry;
mod stats;
pub mod testing;

pub use builder::{
    Builder, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_CHECKOUT_TIMEOUT,
    DEFAULT_HEALTH_CHECK_TIMEOUT, DEFAULT_SIZE, DEFAULT_VALIDATE_AFTER,
};
pub use error::{BuildError, Error};
pub use error_set::ErrorSet;
pub use guard::PooledConnection;
pub use manager::Manager;
pub use pool::ConnectionPool;
pub use retry::{
    retry, Retry, RetryOutcome, DEFAULT_GIVE_UP_MESSAGE, DEFAULT_LOG_TARGET, DEFAULT_MAX_FAILURES,
    DEFAULT_RETRY_MESSAGE, UNBOUNDED_MIN_INTERVAL,
};
pub use stats::{Counters, DiscardReason, Discards, State};
