//! [`ErrorSet`]: which errors mean "this connection is broken".

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

use crate::error_type::AsStdError;

type Predicate = Arc<dyn Fn(&(dyn StdError + 'static)) -> bool + Send + Sync>;

#[derive(Clone)]
enum Matcher {
    Any,
    Type(fn(&(dyn StdError + 'static)) -> bool, &'static str),
    Kind(io::ErrorKind),
    Predicate(Predicate),
}

impl Matcher {
    fn matches_one(&self, e: &(dyn StdError + 'static)) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Type(is_type, _) => is_type(e),
            Matcher::Kind(kind) => e
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == *kind),
            Matcher::Predicate(p) => p(e),
        }
    }
}

/// A set of errors, matched against an error and every error in its
/// `source()` chain (geventconnpool's `exc_classes`).
///
/// The pool discards a connection when work on it fails with an error in the
/// pool's set; [`Retry`](crate::Retry) tries again when an attempt fails with
/// an error in its set. The default, [`ErrorSet::io`], is any
/// [`std::io::Error`], the analogue of Python's `socket.error`.
///
/// An `io::Error` made with `io::Error::new(kind, inner)` is looked through:
/// `inner` and its own sources are part of the chain, and so are a boxed
/// error and an `anyhow::Error` (see [`AsStdError`]).
///
/// Whatever the pool's set, a connection whose work timed out is discarded
/// too (see [`PooledConnection::check`](crate::PooledConnection::check)).
///
/// ```
/// use greenpool::ErrorSet;
/// use std::io;
///
/// #[derive(Debug)]
/// struct ProtocolError;
/// impl std::fmt::Display for ProtocolError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("bad reply") }
/// }
/// impl std::error::Error for ProtocolError {}
///
/// let set = ErrorSet::io().or_type::<ProtocolError>();
/// assert!(set.matches(&ProtocolError));
/// assert!(set.matches(&io::Error::from(io::ErrorKind::ConnectionReset)));
///
/// let resets_only = ErrorSet::kind(io::ErrorKind::ConnectionReset);
/// assert!(!resets_only.matches(&io::Error::from(io::ErrorKind::NotFound)));
/// // looked through: an io::Error wrapping a ProtocolError
/// assert!(ErrorSet::of::<ProtocolError>()
///     .matches(&io::Error::new(io::ErrorKind::Other, ProtocolError)));
/// ```
#[derive(Clone)]
pub struct ErrorSet {
    matchers: Vec<Matcher>,
}

impl ErrorSet {
    /// The empty set: matches nothing.
    pub fn none() -> Self {
        ErrorSet {
            matchers: Vec::new(),
        }
    }

    /// Every error.
    pub fn all() -> Self {
        ErrorSet {
            matchers: vec![Matcher::Any],
        }
    }

    /// Any [`std::io::Error`] (the default).
    pub fn io() -> Self {
        Self::of::<io::Error>()
    }

    /// Errors of type `T`.
    pub fn of<T: StdError + 'static>() -> Self {
        ErrorSet {
            matchers: vec![Matcher::Type(is_type::<T>, std::any::type_name::<T>())],
        }
    }

    /// [`std::io::Error`]s of this kind.
    pub fn kind(kind: io::ErrorKind) -> Self {
        ErrorSet {
            matchers: vec![Matcher::Kind(kind)],
        }
    }

    /// Errors for which `f` returns true. `f` sees each error of the chain in
    /// turn.
    pub fn predicate<F>(f: F) -> Self
    where
        F: Fn(&(dyn StdError + 'static)) -> bool + Send + Sync + 'static,
    {
        ErrorSet {
            matchers: vec![Matcher::Predicate(Arc::new(f))],
        }
    }

    /// Errors of type `T` for which `f` returns true: one variant of your own
    /// error enum, say, without a hand-written downcast. `f` sees each error
    /// of the chain that is a `T`.
    ///
    /// ```
    /// use greenpool::ErrorSet;
    ///
    /// #[derive(Debug)]
    /// enum ImapError { Bye, No(String) }
    /// impl std::fmt::Display for ImapError {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
    /// }
    /// impl std::error::Error for ImapError {}
    ///
    /// // BYE means the server is closing the connection; NO is an answer.
    /// let set = ErrorSet::io().or(ErrorSet::when(|e: &ImapError| matches!(e, ImapError::Bye)));
    /// assert!(set.matches(&ImapError::Bye));
    /// assert!(!set.matches(&ImapError::No("over quota".into())));
    /// // looked for through the chain, like every matcher, and into boxes
    /// let bye = ErrorSet::when(|e: &ImapError| matches!(e, ImapError::Bye));
    /// assert!(bye.matches(&std::io::Error::other(ImapError::Bye)));
    /// assert!(!bye.matches(&std::io::Error::other("bye")));
    /// let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(ImapError::Bye);
    /// assert!(bye.matches(&boxed));
    /// ```
    pub fn when<T, F>(f: F) -> Self
    where
        T: StdError + 'static,
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        Self::predicate(move |e| e.downcast_ref::<T>().is_some_and(&f))
    }

    /// The union of two sets.
    pub fn or(mut self, other: ErrorSet) -> Self {
        self.matchers.extend(other.matchers);
        self
    }

    /// This set plus errors of type `T`.
    pub fn or_type<T: StdError + 'static>(self) -> Self {
        self.or(Self::of::<T>())
    }

    /// This set plus `io::Error`s of this kind.
    pub fn or_kind(self, kind: io::ErrorKind) -> Self {
        self.or(Self::kind(kind))
    }

    /// This set plus errors for which `f` returns true.
    pub fn or_predicate<F>(self, f: F) -> Self
    where
        F: Fn(&(dyn StdError + 'static)) -> bool + Send + Sync + 'static,
    {
        self.or(Self::predicate(f))
    }

    /// True if this set matches nothing.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// True if `err`, or any error in its source chain, is in the set.
    ///
    /// `err` is any error type the pool accepts (see [`AsStdError`]): a
    /// `std::error::Error`, a `Box<dyn Error + Send + Sync>` (the boxed error
    /// and its chain are looked at), or an `anyhow::Error` (feature
    /// `anyhow`).
    pub fn matches<E, Via>(&self, err: &E) -> bool
    where
        E: AsStdError<Via>,
    {
        self.matches_dyn(err.as_std_error())
    }

    /// [`matches`](Self::matches) for a trait object.
    pub fn matches_dyn(&self, err: &(dyn StdError + 'static)) -> bool {
        if self.matchers.is_empty() {
            return false;
        }
        let mut next = Some(err);
        while let Some(e) = next {
            if self.matchers.iter().any(|m| m.matches_one(e)) {
                return true;
            }
            next = chain_next(e);
        }
        false
    }
}

/// After an error that contains an IO timeout, let the runtime settle before
/// this green thread wakes anyone: may resumes a coroutine whose IO timed out
/// from inside its event loop, and whatever it wakes from there can wait
/// seconds for that worker's next wake-up (see
/// [`greenpool_runtime::net::after_io_timeout`]). Costs 1 ms, on error paths
/// only.
pub(crate) fn settle_after_io_timeout(err: &(dyn StdError + 'static)) {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            greenpool_runtime::net::after_io_timeout();
            return;
        }
        next = chain_next(e);
    }
}

/// True if `err` says that an operation on a connection timed out: an
/// `io::Error` of kind `TimedOut`, or a [`greenpool_runtime::Elapsed`],
/// anywhere in its source chain. Such a connection is out of step (the reply
/// to the request that timed out may still arrive and would be read as the
/// next request's), so the pool discards it whatever its error set says.
///
/// The walk stops at a [`crate::Error`]: a checkout of some pool that timed
/// out (converted into an `io::Error` of kind `TimedOut`) says nothing about
/// the connection in hand, and what it carries (the last connect error) is
/// about other connections.
pub(crate) fn is_stream_timeout(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<crate::Error>() {
            return false;
        }
        if e.is::<greenpool_runtime::Elapsed>()
            || e.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut && !wraps_pool_error(io))
        {
            return true;
        }
        next = chain_next(e);
    }
    false
}

/// `io::Error::from(greenpool::Error)`: the pool's own failure, not an IO one.
fn wraps_pool_error(io: &io::Error) -> bool {
    io.get_ref().is_some_and(|inner| inner.is::<crate::Error>())
}

fn is_type<T: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    e.is::<T>()
}

/// The next error in the chain. `io::Error::source` skips the error it wraps
/// (it returns the wrapped error's source), so look at the wrapped one first.
pub(crate) fn chain_next<'a>(
    e: &'a (dyn StdError + 'static),
) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        if let Some(inner) = io.get_ref() {
            return Some(inner as &(dyn StdError + 'static));
        }
    }
    e.source()
}

impl Default for ErrorSet {
    /// [`ErrorSet::io`].
    fn default() -> Self {
        Self::io()
    }
}

impl fmt::Debug for ErrorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for m in &self.matchers {
            match m {
                Matcher::Any => l.entry(&"any error"),
                Matcher::Type(_, name) => l.entry(name),
                Matcher::Kind(k) => l.entry(k),
                Matcher::Predicate(_) => l.entry(&"<predicate>"),
            };
        }
        l.finish()
    }
}
