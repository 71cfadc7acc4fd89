//! Spawning and joining green threads.
//!
//! A green thread is a may coroutine. It runs on one of the runtime's worker
//! threads and yields whenever it blocks on a runtime primitive (network IO,
//! [`crate::sleep`], the [`crate::sync`] types), so thousands of them can wait
//! at once. A panic inside a green thread unwinds its stack and is returned by
//! [`JoinHandle::join`]; it is never lost.
//!
//! Scheduling is cooperative, and two consequences matter in practice:
//!
//! - A green thread that never blocks (a CPU loop, or a loop over a pool
//!   that always has an idle connection) keeps its worker thread to itself.
//! - Green threads spawned or woken **from a plain OS thread** go to a global
//!   queue that a worker reads only when its own queue is empty; a few busy
//!   green threads that only `yield_now` can keep them from starting. Spawn
//!   large batches from inside a green thread, where they go to the local
//!   queue.
//!
//! Each green thread's stack is its own memory mapping plus a guard page:
//! two of the kernel's `vm.max_map_count` maps (65,530 by default on Linux),
//! so about 31,000 green threads can exist at once unless that limit is
//! raised (`sysctl vm.max_map_count=262144`). Resident memory is only the
//! touched part of each stack: a few KiB for a green thread blocked in a
//! pool checkout.

use std::any::Any;
use std::fmt;
use std::io;
use std::panic;

use crate::config::ensure_configured;

/// Spawn a green thread running `f` with the configured stack size.
///
/// Works from a coroutine and from a plain OS thread. Dropping the returned
/// handle detaches the green thread; it keeps running.
///
/// Panics only if the runtime cannot allocate a stack (out of memory or
/// address space), like `std::thread::spawn`. Use [`Builder::spawn`] to get
/// that failure as an error.
///
/// ```
/// let h = greenpool_runtime::spawn(|| 40 + 2);
/// assert_eq!(h.join().unwrap(), 42);
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new()
        .spawn(f)
        .unwrap_or_else(|e| panic!("failed to spawn a green thread: {e}"))
}

/// Options for a new green thread: a name (shown in may's diagnostics) and a
/// stack size.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the runtime's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Name the green thread.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Stack size in bytes for this green thread only (rounded up to whole
    /// words). See [`crate::config::DEFAULT_STACK_SIZE`].
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawn `f`. Fails only if the stack cannot be allocated.
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        ensure_configured();
        let mut b = may::coroutine::Builder::new();
        if let Some(name) = self.name {
            b = b.name(name);
        }
        if let Some(bytes) = self.stack_size {
            b = b.stack_size(bytes.div_ceil(std::mem::size_of::<usize>()));
        }
        // SAFETY: may marks spawn unsafe because a coroutine can migrate between
        // OS threads at a yield, so a thread-local reference held across a
        // blocking call may point at another thread's data, and because stack
        // overflow is not prevented. The runtime documents both: stacks default
        // to 128 KiB, and blocking calls must not hold thread-local borrows.
        let inner = unsafe { b.spawn(f)? };
        Ok(JoinHandle { inner })
    }
}

/// An owned permission to join a green thread. Dropping it detaches the
/// green thread.
pub struct JoinHandle<T> {
    inner: may::coroutine::JoinHandle<T>,
}

impl<T> JoinHandle<T> {
    /// may's handle of the green thread, to cancel it once the `JoinHandle`
    /// itself has been given away.
    pub(crate) fn coroutine(&self) -> &may::coroutine::Coroutine {
        self.inner.coroutine()
    }

    /// Wait for the green thread to finish and return its value, or the
    /// reason it did not produce one. Blocks the calling coroutine (or thread).
    pub fn join(self) -> Result<T, JoinError> {
        self.inner.join().map_err(JoinError::from_payload)
    }

    /// Wait for the green thread to finish without taking its result.
    pub fn wait(&self) {
        self.inner.wait()
    }

    /// True once the green thread has finished (returned, panicked or was
    /// cancelled).
    pub fn is_finished(&self) -> bool {
        self.inner.is_done()
    }

    /// The name given with [`Builder::name`].
    pub fn name(&self) -> Option<&str> {
        self.inner.coroutine().name()
    }

    /// Cancel the green thread: at its next blocking runtime call (or at once,
    /// if it is blocked in one now) it unwinds, running its destructors, and
    /// [`join`](Self::join) returns [`JoinError::is_cancelled`]. A green thread
    /// busy in a CPU loop, or blocked in a non-runtime call such as
    /// `std::thread::sleep`, is cancelled only when it next yields.
    ///
    /// Requires `panic = "unwind"` (the default): cancellation is an unwind,
    /// and under `panic = "abort"` it aborts the process.
    pub fn cancel(&self) {
        if self.inner.is_done() {
            return;
        }
        // SAFETY: cancellation unwinds the target coroutine at its next yield
        // point, running every destructor on its stack, so locks are released
        // and resources freed. The crate requires panic = "unwind".
        unsafe { self.inner.coroutine().cancel() }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("name", &self.name())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a green thread produced no value.
pub struct JoinError {
    payload: Box<dyn Any + Send + 'static>,
    cancelled: bool,
}

impl JoinError {
    fn from_payload(payload: Box<dyn Any + Send + 'static>) -> Self {
        let cancelled = is_cancel_payload(&*payload);
        JoinError { payload, cancelled }
    }

    /// True if the green thread was cancelled (see [`JoinHandle::cancel`]).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// True if the green thread panicked.
    pub fn is_panic(&self) -> bool {
        !self.cancelled
    }

    /// The panic message, when the payload is a string.
    pub fn panic_message(&self) -> Option<&str> {
        panic_message(&*self.payload)
    }

    /// The panic payload, e.g. to re-raise it with
    /// [`std::panic::resume_unwind`].
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.payload
    }

    /// Re-raise the green thread's panic in the caller.
    pub fn resume_unwind(self) -> ! {
        panic::resume_unwind(self.payload)
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cancelled {
            f.write_str("green thread was cancelled")
        } else {
            match self.panic_message() {
                Some(m) => write!(f, "green thread panicked: {m}"),
                None => f.write_str("green thread panicked"),
            }
        }
    }
}

impl std::error::Error for JoinError {}

/// The text of a panic payload, when it is a `&str` or a `String`.
pub fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// True if a caught unwind is a cancellation of the green thread (see
/// [`JoinHandle::cancel`]) rather than a panic: code that catches unwinds
/// (`std::panic::catch_unwind`) can tell "this work was stopped from
/// outside" from "this code has a bug". Either way the unwind should be
/// continued with `std::panic::resume_unwind`.
///
/// ```
/// use greenpool_runtime::{is_cancellation, sleep, spawn};
/// use std::time::Duration;
/// let h = spawn(|| {
///     let caught = std::panic::catch_unwind(|| sleep(Duration::from_secs(60)));
///     let payload = caught.unwrap_err();
///     assert!(is_cancellation(&*payload));
///     std::panic::resume_unwind(payload)
/// });
/// h.cancel();
/// assert!(h.join().unwrap_err().is_cancelled());
/// assert!(!is_cancellation(&"a panic message"));
/// ```
pub fn is_cancellation(payload: &(dyn Any + Send)) -> bool {
    is_cancel_payload(payload)
}

/// True if a panic payload is may's cancellation marker, `generator::Error::Cancel`
/// (may unwinds a cancelled coroutine with it).
fn is_cancel_payload(payload: &(dyn Any + Send)) -> bool {
    matches!(
        payload.downcast_ref::<generator::Error>(),
        Some(generator::Error::Cancel)
    )
}

/// True when the caller runs inside a green thread (a may coroutine), false
/// on a plain OS thread.
pub fn is_green() -> bool {
    may::coroutine::is_coroutine()
}

/// Let other green threads run. Does nothing useful on a plain OS thread.
pub fn yield_now() {
    if is_green() {
        may::coroutine::yield_now();
    } else {
        std::thread::yield_now();
    }
}
