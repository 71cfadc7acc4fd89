//! Groups of green threads ([`Group`], gevent's `Group`) and bounded green
//! pools ([`GreenPool`], gevent's `Pool`).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sync::{Semaphore, SyncFlag};
use crate::task::{spawn, JoinError, JoinHandle};

// ---------------------------------------------------------------------------
// Group
// ---------------------------------------------------------------------------

/// A set of green threads started together and joined together (gevent's
/// `gevent.pool.Group`).
///
/// Dropping a `Group` without joining **detaches** its green threads: they
/// keep running and their results are thrown away. Call
/// [`cancel_all`](Self::cancel_all) first if they should stop.
///
/// ```
/// use greenpool_runtime::Group;
/// let mut g = Group::new();
/// for i in 0..10 {
///     g.spawn(move || i * i);
/// }
/// assert_eq!(g.len(), 10);
/// let squares = g.join().unwrap();
/// assert_eq!(squares[3], 9);
/// ```
pub struct Group<T> {
    handles: Vec<JoinHandle<T>>,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            handles: Vec::new(),
        }
    }
}

impl<T> fmt::Debug for Group<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("len", &self.len())
            .field("finished", &self.finished())
            .finish()
    }
}

impl<T: Send + 'static> Group<T> {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Start `f` in a new green thread and add it to the group.
    pub fn spawn<F>(&mut self, f: F)
    where
        F: FnOnce() -> T + Send + 'static,
    {
        self.handles.push(spawn(f));
    }
}

impl<T> Group<T> {
    /// Add a green thread started elsewhere, e.g. by [`GreenPool::spawn`].
    pub fn add(&mut self, handle: JoinHandle<T>) {
        self.handles.push(handle);
    }

    /// Number of green threads in the group, finished or not.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True if nothing was spawned into the group.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Number of green threads in the group that have finished.
    pub fn finished(&self) -> usize {
        self.handles.iter().filter(|h| h.is_finished()).count()
    }

    /// Cancel every green thread of the group that is still running (see
    /// [`JoinHandle::cancel`]). Their slots in [`join_all`](Self::join_all)
    /// then hold a cancelled [`JoinError`].
    pub fn cancel_all(&self) {
        for h in &self.handles {
            h.cancel();
        }
    }

    /// Wait for every green thread and return their outcomes in spawn order.
    /// A panic or cancellation is returned in its own slot; it does not stop
    /// the others.
    pub fn join_all(self) -> Vec<Result<T, JoinError>> {
        self.handles.into_iter().map(JoinHandle::join).collect()
    }

    /// Wait for every green thread, then return their values in spawn order,
    /// or the first failure (in spawn order) if any failed.
    pub fn join(self) -> Result<Vec<T>, JoinError> {
        self.join_all().into_iter().collect()
    }
}

// ---------------------------------------------------------------------------
// GreenPool
// ---------------------------------------------------------------------------

/// [`GreenPool::try_new`] was given an impossible capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError {
    requested: usize,
}

impl CapacityError {
    /// The capacity that was asked for.
    pub fn requested(&self) -> usize {
        self.requested
    }
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requested == 0 {
            f.write_str(
                "a GreenPool needs a capacity of at least 1 (got 0): \
                 it could never run anything",
            )
        } else {
            write!(
                f,
                "GreenPool capacity {} is too large (at most {})",
                self.requested,
                isize::MAX
            )
        }
    }
}

impl std::error::Error for CapacityError {}

struct Inner {
    capacity: usize,
    /// One permit per green thread that may run.
    slots: Semaphore,
    /// Green threads holding a permit.
    running: AtomicUsize,
    /// Fired when `running` drops to zero; created by the first `join` that
    /// has to wait. A std mutex is fine: it is only held to swap an `Option`,
    /// never across a yield. (A may lock must not be used here: `Slot::drop`
    /// also runs while a cancelled green thread unwinds, and a contended may
    /// lock would re-trigger the cancellation inside the unwind and abort.)
    idle: std::sync::Mutex<Option<Arc<SyncFlag>>>,
}

impl Inner {
    fn release(&self) {
        let before = self.running.fetch_sub(1, Ordering::AcqRel);
        self.slots.post();
        if before == 1 {
            let flag = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(flag) = flag {
                flag.fire();
            }
        }
    }
}

/// A permit held by one running green thread; dropping it (on return, panic
/// or cancellation) frees the slot. Drop only does non-blocking work.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A bounded pool of green threads (gevent's `gevent.pool.Pool`): at most
/// `capacity` of the green threads it starts run at once.
///
/// [`spawn`](Self::spawn) blocks the caller (the green thread or OS thread
/// calling it) while the pool is full. Cloning a `GreenPool` gives another
/// handle to the same pool. Dropping every handle does not stop the green
/// threads already started.
///
/// Do not call `spawn`, [`map`](Self::map) or [`join`](Self::join) from a
/// green thread of the same pool when it may be full: it would wait for its
/// own slot and deadlock.
///
/// ```
/// use greenpool_runtime::GreenPool;
/// let pool = GreenPool::new(4);
/// let lengths = pool.map(vec!["a", "bb", "ccc"], |s| s.len());
/// assert_eq!(lengths, vec![1, 2, 3]);
///
/// let h = pool.spawn(|| 6 * 7);
/// assert_eq!(h.join().unwrap(), 42);
/// pool.join();
/// assert_eq!(pool.running(), 0);
/// ```
#[derive(Clone)]
pub struct GreenPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for GreenPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GreenPool")
            .field("capacity", &self.capacity())
            .field("running", &self.running())
            .finish()
    }
}

impl GreenPool {
    /// A pool that runs at most `capacity` green threads at once.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (such a pool could never run anything) or above
    /// `isize::MAX`. Use [`try_new`](Self::try_new) to get an error instead.
    pub fn new(capacity: usize) -> Self {
        Self::try_new(capacity).unwrap_or_else(|e| panic!("GreenPool::new: {e}"))
    }

    /// A pool that runs at most `capacity` green threads at once, or an error
    /// if `capacity` is 0 or above `isize::MAX`.
    pub fn try_new(capacity: usize) -> Result<Self, CapacityError> {
        if capacity == 0 || capacity >= isize::MAX as usize {
            return Err(CapacityError {
                requested: capacity,
            });
        }
        Ok(GreenPool {
            inner: Arc::new(Inner {
                capacity,
                slots: Semaphore::new(capacity),
                running: AtomicUsize::new(0),
                idle: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The most green threads that run at once.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Green threads of this pool that are running (or about to start) now.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Start `f` in a green thread of this pool. While `capacity` green
    /// threads of the pool are running, this blocks the caller until one
    /// finishes. The slot is freed when
    /// `f` returns, panics or is cancelled.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.inner.slots.wait();
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&self.inner));
        // If spawning panics, the closure (and the slot in it) is dropped,
        // which frees the slot.
        spawn(move || {
            let _slot = slot;
            f()
        })
    }

    /// Run `f` over every item with at most `capacity` calls at once, and
    /// return the results in input order. Blocks the caller until all are
    /// done.
    ///
    /// If a call panics, the others still run to completion, then the first
    /// panic (in input order) is re-raised in the caller.
    pub fn map<I, F, T>(&self, items: I, f: F) -> Vec<T>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let f = Arc::new(f);
        let handles: Vec<JoinHandle<T>> = items
            .into_iter()
            .map(|item| {
                let f = Arc::clone(&f);
                self.spawn(move || f(item))
            })
            .collect();
        let results: Vec<Result<T, JoinError>> =
            handles.into_iter().map(JoinHandle::join).collect();
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(v) => out.push(v),
                Err(e) => e.resume_unwind(),
            }
        }
        out
    }

    /// Wait until no green thread of this pool is running. Green threads
    /// spawned while waiting are waited for too. Blocks only the caller.
    pub fn join(&self) {
        loop {
            let flag = {
                let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                // Checked under the lock: `release` decrements before taking
                // the lock, so either we see zero or it sees our flag.
                if self.inner.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                Arc::clone(idle.get_or_insert_with(|| Arc::new(SyncFlag::new())))
            };
            flag.wait();
        }
    }
}
