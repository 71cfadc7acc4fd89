//! [`AsStdError`]: which error types [`ConnectionPool::with`], [`retry`],
//! [`Retry`] and [`PooledConnection::check`] accept, and how
//! [`ErrorSet`] sees into them.
//!
//! Every error a service is likely to use works, with nothing to write:
//!
//! - any type that implements [`std::error::Error`] (`io::Error`, your own
//!   error enum, `Arc<dyn Error + Send + Sync>`, ...);
//! - `Box<dyn Error>`, `Box<dyn Error + Send>` and
//!   `Box<dyn Error + Send + Sync>`;
//! - `anyhow::Error`, with greenpool's cargo feature `anyhow`.
//!
//! The pool classifies an error by looking at it as a
//! `&(dyn std::error::Error + 'static)` ([`AsStdError::as_std_error`]) and
//! walking its `source()` chain: for a box that is the boxed error, for an
//! `anyhow::Error` the outermost error (a `context` or the original), so
//! [`ErrorSet::io`], [`ErrorSet::of`] and [`ErrorSet::when`] find an
//! `io::Error` or a typed error inside either.
//!
//! ```
//! use greenpool::ErrorSet;
//! use std::error::Error;
//! use std::io;
//!
//! let boxed: Box<dyn Error + Send + Sync> = Box::new(io::Error::from(io::ErrorKind::ConnectionReset));
//! assert!(ErrorSet::io().matches(&boxed));
//! assert!(ErrorSet::kind(io::ErrorKind::ConnectionReset).matches(&boxed));
//! let text: Box<dyn Error + Send + Sync> = "not found".into();
//! assert!(!ErrorSet::io().matches(&text));
//! ```
//!
//! # The marker parameter
//!
//! `AsStdError` has a type parameter that only tells its implementations
//! apart: [`IsStdError`] for the blanket implementation over
//! `E: std::error::Error`, [`IsReport`] for the boxes and `anyhow::Error`.
//! Functions that accept errors carry it as one more generic parameter, which
//! the compiler always infers: no call site names it, and code written for
//! `E: std::error::Error` compiles unchanged. Generic code of your own that
//! forwards an error type writes `E: AsStdError<K>` with a parameter `K`, or
//! keeps `E: std::error::Error + 'static` (which picks [`IsStdError`]).
//!
//! Why a marker, and not the alternatives:
//!
//! - A blanket `impl<E: Error> AsStdError for E` together with impls for
//!   `Box<dyn Error + Send + Sync>` and `anyhow::Error` is rejected by the
//!   compiler (E0119): the standard library or anyhow may one day implement
//!   `Error` for those types, and the impls would then overlap. With a marker
//!   the impls are for different traits (`AsStdError<IsStdError>` and
//!   `AsStdError<IsReport>`), so they cannot overlap, while a call still
//!   resolves to the one impl whose bounds hold.
//! - Bounds on `AsRef<dyn Error>` or `Deref<Target = dyn Error + Send + Sync>`
//!   cover boxes and `anyhow::Error` but not `io::Error` or an own enum, so
//!   existing code would stop compiling. A blanket impl over such a `Deref`
//!   next to the `Error` one would make `Arc<dyn Error + Send + Sync>`
//!   (which is both) ambiguous; explicit impls for the boxes avoid that.
//! - Taking any `E: 'static` and classifying by `&dyn Any` downcasts finds
//!   the types it knows, but cannot see the `source()` chain of an own error
//!   enum (a `dyn Any` cannot be turned into a `dyn Error`), so
//!   `ErrorSet::io()` would stop matching an enum that wraps an `io::Error`.
//! - A wrapper the caller puts around their error (`.map_err(Wrap)`) would
//!   work without any of this, but it is exactly the boilerplate the pool's
//!   users should not need.
//!
//! # Another error type
//!
//! An error-report type that does not implement `std::error::Error` (like
//! `eyre::Report`) can be made to work in your crate, with a marker type of
//! your own (the orphan rules allow it because the marker is local):
//!
//! ```
//! use greenpool::AsStdError;
//! use std::error::Error;
//!
//! /// Someone else's report type, which (like anyhow's) is not an `Error`.
//! pub struct Report(Box<dyn Error + Send + Sync>);
//!
//! pub enum MyMarker {}
//! impl AsStdError<MyMarker> for Report {
//!     fn as_std_error(&self) -> &(dyn Error + 'static) {
//!         &*self.0
//!     }
//! }
//!
//! let r = Report(Box::new(std::io::Error::other("reset")));
//! assert!(greenpool::ErrorSet::io().matches(&r));
//! ```
//!
//! [`ConnectionPool::with`]: crate::ConnectionPool::with
//! [`retry`]: crate::retry()
//! [`Retry`]: crate::Retry
//! [`PooledConnection::check`]: crate::PooledConnection::check
//! [`ErrorSet`]: crate::ErrorSet
//! [`ErrorSet::io`]: crate::ErrorSet::io
//! [`ErrorSet::of`]: crate::ErrorSet::of
//! [`ErrorSet::when`]: crate::ErrorSet::when

use std::error::Error as StdError;

/// An error the pool can classify: anything that can be seen as a
/// `&(dyn std::error::Error + 'static)`. See the [module docs](self) for the
/// types that implement it and what `Via` is for.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as the error of a pooled operation",
    label = "the error type of this operation",
    note = "use a type that implements std::error::Error, a Box<dyn Error (+ Send + Sync)>, or \
            anyhow::Error (greenpool's `anyhow` feature); see greenpool::error_type"
)]
pub trait AsStdError<Via> {
    /// This error as a trait object, whose `source()` chain the pool walks.
    fn as_std_error(&self) -> &(dyn StdError + 'static);
}

/// Marks the implementation of [`AsStdError`] for every
/// `E: std::error::Error + 'static`. Never constructed.
#[derive(Debug)]
pub enum IsStdError {}

/// Marks the implementations of [`AsStdError`] for error boxes and error
/// reports that are not themselves a `std::error::Error`. Never constructed.
#[derive(Debug)]
pub enum IsReport {}

impl<E: StdError + 'static> AsStdError<IsStdError> for E {
    fn as_std_error(&self) -> &(dyn StdError + 'static) {
        self
    }
}

impl AsStdError<IsReport> for Box<dyn StdError + Send + Sync + 'static> {
    fn as_std_error(&self) -> &(dyn StdError + 'static) {
        &**self
    }
}

impl AsStdError<IsReport> for Box<dyn StdError + Send + 'static> {
    fn as_std_error(&self) -> &(dyn StdError + 'static) {
        &**self
    }
}

impl AsStdError<IsReport> for Box<dyn StdError + 'static> {
    fn as_std_error(&self) -> &(dyn StdError + 'static) {
        &**self
    }
}

/// With the cargo feature `anyhow`: the outermost error of the report (its
/// last `context`, or the error it was made from).
#[cfg(feature = "anyhow")]
impl AsStdError<IsReport> for anyhow::Error {
    fn as_std_error(&self) -> &(dyn StdError + 'static) {
        let e: &(dyn StdError + Send + Sync + 'static) = self.as_ref();
        e
    }
}
