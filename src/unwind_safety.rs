//! `UnwindSafe` and `RefUnwindSafe` for the public types, so that
//! `std::panic::catch_unwind` takes a pool, a builder, a retry policy, an
//! error set or an error without `AssertUnwindSafe`.
//!
//! The compiler derives both traits from the fields, and cannot for these
//! types: trait objects (the predicates of an [`ErrorSet`], the connect error
//! an [`Error`] carries) promise nothing about interior mutability, and a
//! pool's shared state holds the manager and the idle connections, whatever
//! their types are. Each impl below says why observing the value after a
//! panic is safe anyway.

use std::panic::{RefUnwindSafe, UnwindSafe};

use crate::error::Error;
use crate::error_set::ErrorSet;
use crate::guard::PooledConnection;
use crate::manager::Manager;
use crate::pool::ConnectionPool;

// The pool is built to survive panics in the code around it: the lock is
// held for a few field updates only (and a poisoned lock is recovered), every
// slot is owned by a token whose drop gives it back, a guard dropped by an
// unwind discards its connection, and a manager method that panics counts as
// a failed connect or health check. Idle connections are never reachable
// through a `&ConnectionPool`; `manager()` gives `&M`, whose own consistency
// after one of its methods panicked is the manager's business, as with any
// shared reference it hands out.
impl<M: Manager> UnwindSafe for ConnectionPool<M> {}
impl<M: Manager> RefUnwindSafe for ConnectionPool<M> {}

// A guard moved into `catch_unwind` is dropped by the unwind, which discards
// its connection: no one sees it again. Through `&PooledConnection` a panic
// can leave the connection itself half-used only through the connection's own
// interior mutability (`impl Write for &TcpStream`, say), so that one
// follows the connection type.
impl<M: Manager> UnwindSafe for PooledConnection<M> {}
impl<M: Manager> RefUnwindSafe for PooledConnection<M> where M::Connection: RefUnwindSafe {}

// A set is immutable once built, and matching only calls its predicates
// through `&`. A predicate (`Fn + Send + Sync`) that keeps state behind
// interior mutability is its author's to keep consistent, as with any shared
// `Fn`.
impl UnwindSafe for ErrorSet {}
impl RefUnwindSafe for ErrorSet {}

// Immutable data: the connect error it carries (`Arc<dyn Error + Send +
// Sync>`) is only ever read.
impl UnwindSafe for Error {}
impl RefUnwindSafe for Error {}
