//! greenpool: a gevent-style connection pool on stackful coroutines.

#![warn(missing_docs)]

pub use greenpool_runtime as runtime;

pub mod testing;
