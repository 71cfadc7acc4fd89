//! The registry of a pool's background green threads (connectors, health
//! checks, goodbyes, maintenance, the deadline watcher): how many are alive,
//! which deadline each runs under, and cancelling them, past their deadline
//! or when the pool closes.
//!
//! It knows nothing of the pool's state and has a lock of its own, never
//! held together with the pool's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use greenpool_runtime::JoinHandle;

use crate::lock::lock;

/// What a background green thread is, for the rules that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Opens a connection.
    Connector,
    /// A keepalive: counted, so that only a few run at once.
    Keepalive,
    /// A validation a caller waits for.
    Validation,
    /// A `Manager::close` call: not cancelled when the pool closes (a
    /// closing pool says goodbye too), only past its deadline.
    Goodbye,
    /// The maintenance green thread: not cancelled when the pool closes
    /// either, because it holds the goodbyes to their deadlines and then
    /// ends by itself.
    Maintenance,
    /// The checkout deadline watcher.
    Deadlines,
}

impl Kind {
    /// The green thread's name, after the pool's: `<pool>-<role>`.
    pub fn role(self) -> &'static str {
        match self {
            Kind::Connector => "connector",
            Kind::Keepalive => "keepalive",
            Kind::Validation => "validation",
            Kind::Goodbye => "goodbye",
            Kind::Maintenance => "maintenance",
            Kind::Deadlines => "deadlines",
        }
    }

    fn outlives_close(self) -> bool {
        matches!(self, Kind::Goodbye | Kind::Maintenance)
    }
}

struct Running {
    kind: Kind,
    handle: Option<JoinHandle<()>>,
    deadline: Option<Instant>,
    cancelled: bool,
}

impl Running {
    fn cancel(&mut self) {
        self.cancelled = true;
        if let Some(h) = &self.handle {
            h.cancel();
        }
    }
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Tasks {
    running: Mutex<HashMap<u64, Running>>,
    /// Registered and not yet finished (a spawn that failed is finished).
    alive: AtomicUsize,
    next_id: AtomicU64,
}

impl Tasks {
    /// Count and register a task about to be spawned; returns its id.
    pub fn register(&self, kind: Kind, deadline: Option<Instant>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.running).insert(
            id,
            Running {
                kind,
                handle: None,
                deadline,
                cancelled: false,
            },
        );
        self.alive.fetch_add(1, Ordering::AcqRel);
        id
    }

    /// Keep the handle of task `id`, now spawned, to cancel it later;
    /// cancel it at once if that was asked before it had a handle, or if
    /// the pool has `closed` meanwhile (and it does not outlive a close).
    pub fn attach(&self, id: u64, handle: JoinHandle<()>, closed: bool) {
        let mut running = lock(&self.running);
        match running.get_mut(&id) {
            Some(r) => {
                if r.cancelled || (closed && !r.kind.outlives_close()) {
                    r.cancelled = true;
                    handle.cancel();
                }
                r.handle = Some(handle);
            }
            // Finished already: dropping the handle detaches, outside the lock.
            None => {
                drop(running);
                drop(handle);
            }
        }
    }

    /// Task `id` ended (or never started).
    pub fn finish(&self, id: u64) {
        let entry = lock(&self.running).remove(&id);
        // Dropping our own handle detaches; done outside the lock.
        drop(entry);
        self.alive.fetch_sub(1, Ordering::AcqRel);
    }

    /// Tasks registered and not finished.
    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::Acquire)
    }

    /// Set or clear the time after which task `id` is cancelled.
    pub fn set_deadline(&self, id: u64, deadline: Option<Instant>) {
        if let Some(r) = lock(&self.running).get_mut(&id) {
            r.deadline = deadline;
        }
    }

    /// True once task `id` was cancelled (close, or past its deadline).
    pub fn cancelled(&self, id: u64) -> bool {
        lock(&self.running).get(&id).is_some_and(|r| r.cancelled)
    }

    /// Cancel task `id`, if it still runs.
    pub fn cancel(&self, id: u64) {
        if let Some(r) = lock(&self.running).get_mut(&id) {
            r.cancel();
        }
    }

    /// The pool closed: cancel every task but those that outlive a close
    /// (each stops at its next blocking call, even in a hung connect).
    pub fn cancel_on_close(&self) {
        for r in lock(&self.running).values_mut() {
            if !r.kind.outlives_close() {
                r.cancel();
            }
        }
    }

    /// The earliest deadline of a task not yet cancelled.
    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.running)
            .values()
            .filter(|r| !r.cancelled)
            .filter_map(|r| r.deadline)
            .min()
    }

    /// Cancel every task past its deadline; returns how many keepalives run.
    pub fn enforce_deadlines(&self, now: Instant) -> usize {
        let mut keepalives = 0;
        for r in lock(&self.running).values_mut() {
            if r.kind == Kind::Keepalive {
                keepalives += 1;
            }
            if !r.cancelled && r.deadline.is_some_and(|at| at <= now) {
                r.cancel();
            }
        }
        keepalives
    }

    /// Goodbyes (`Manager::close` calls) still running.
    pub fn goodbyes(&self) -> usize {
        lock(&self.running)
            .values()
            .filter(|r| r.kind == Kind::Goodbye)
            .count()
    }
}
