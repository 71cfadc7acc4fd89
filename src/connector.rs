//! Background connectors: open connections, retrying with backoff and jitter.
//!
//! Every pool slot is always either open or owned by exactly one connector, so
//! the pool never has more than `size` connections open or being opened, and
//! each failed slot is retried on its own backoff schedule: once the server is
//! back, the pool is full again within one maximum backoff period. A connector
//! whose slot the pool no longer wants (the demand that started it is gone,
//! or `resize` lowered the size) ends before its next attempt.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::SERVER_IDLE_MARGIN;
use crate::error::SharedError;
use crate::manager::Manager;
use crate::slot::{Memory, Role, Slot};
use crate::state::{Conn, PoolSlot, Shared, Task};
use crate::tasks::Kind;

/// Start a connector for a slot already counted in `connecting`. If no green
/// thread can be started the slot is given back (uncounted) and maintenance
/// reopens it on its next tick.
pub(crate) fn spawn<M: Manager>(shared: &Arc<Shared<M>>, memory: Memory) {
    // The token is made inside the new green thread: a closure that never
    // runs (the spawn failed) then owns nothing that could start another.
    let spawned = Task::spawn(shared, Kind::Connector, None, move |task| {
        let slot = Slot::adopt(Arc::clone(&task.shared), Role::Connecting, memory);
        run(&task, slot)
    });
    if let Err(e) = spawned {
        shared.lock().connecting -= 1;
        shared.spawn_failed("connector", &e, "maintenance retries");
    }
}

fn run<M: Manager>(task: &Task<M>, mut slot: PoolSlot<M>) {
    let shared = &task.shared;
    loop {
        if shared.is_closed() {
            return;
        }
        if slot.memory.failures > 0 {
            if unwanted(shared) {
                return;
            }
            let delay = slot.memory.backoff.next_delay();
            log::debug!(
                "pool {}: next connect attempt in {delay:?}",
                shared.cfg.name
            );
            // close() cancels this sleep. (Not a timed wait on a shared
            // SyncFlag: may 0.3.51's SyncFlag::wait_timeout leaves each
            // timed-out waiter's blocker queued and counts the flag down, and
            // with several connectors waiting at once a connector was seen
            // never to wake.)
            greenpool_runtime::sleep(delay);
            if shared.is_closed() || unwanted(shared) {
                return;
            }
        }
        let limit = shared.cfg.connect_timeout;
        let started = Instant::now();
        task.set_deadline(started.checked_add(limit));
        let attempt = panic::catch_unwind(AssertUnwindSafe(|| {
            shared
                .manager
                .new_connection()
                .map(|raw| opened(shared, raw))
        }));
        task.set_deadline(None);
        if task.cancelled() || shared.is_closed() {
            // Cancelled by close, or by maintenance for taking longer than
            // the connect timeout. Cancellation is sticky: every later
            // blocking call would unwind again, so this green thread ends
            // here and the slot's token starts a fresh connector.
            if !shared.is_closed() {
                slot.memory.failures = slot.memory.failures.saturating_add(1);
                let report =
                    shared
                        .lock()
                        .connect_failed(&shared.cfg, Arc::new(ConnectHung(limit)), false);
                report.emit(shared);
            }
            return;
        }
        let (error, permanent): (SharedError, bool) = match attempt {
            Ok(Ok(Ok(raw))) => {
                let conn = Conn::new(shared, raw);
                log::debug!("pool {}: opened connection #{}", shared.cfg.name, conn.id);
                shared.emit(|h| {
                    h.connected(&crate::events::Connected {
                        id: conn.id,
                        took: started.elapsed(),
                    })
                });
                return shared.add_connection(conn, slot);
            }
            Ok(Ok(Err(e))) => (e, false),
            Ok(Err(e)) => {
                let permanent =
                    panic::catch_unwind(AssertUnwindSafe(|| shared.manager.is_permanent(&e)))
                        .unwrap_or(false);
                (Arc::new(e), permanent)
            }
            Err(payload) => (
                Arc::new(ConnectPanic(
                    greenpool_runtime::panic_message(&*payload)
                        .unwrap_or("non-string panic payload")
                        .to_owned(),
                )),
                false,
            ),
        };
        slot.memory.failures = slot.memory.failures.saturating_add(1);
        if permanent {
            // Trying again soon cannot help (a wrong password): wait the
            // longest backoff, and do not grow the server's auth penalty.
            slot.memory.backoff.saturate();
        }
        let report = shared.lock().connect_failed(&shared.cfg, error, permanent);
        report.emit(shared);
    }
}

/// More slots are taken than the pool wants: a connector retrying can give
/// its slot up (its token then starts no replacement).
fn unwanted<M: Manager>(shared: &Shared<M>) -> bool {
    let st = shared.lock();
    st.slots() > st.wanted()
}

/// Finish a new connection. Fails if the connection broke while the pool
/// asked it about the server's idle timeout.
fn opened<M: Manager>(
    shared: &Arc<Shared<M>>,
    mut raw: M::Connection,
) -> Result<M::Connection, SharedError> {
    let learn = {
        let mut st = shared.lock();
        let ask = shared.cfg.keepalive.is_none()
            && shared.cfg.learn_keepalive
            && !st.asked_server_idle_timeout;
        st.asked_server_idle_timeout = true;
        ask
    };
    if learn {
        learn_server_idle_timeout(shared, &mut raw);
        let broken = panic::catch_unwind(AssertUnwindSafe(|| shared.manager.has_broken(&mut raw)))
            .unwrap_or(true);
        if broken {
            shared.lock().asked_server_idle_timeout = false;
            return Err(Arc::new(BrokenAtStart));
        }
    }
    Ok(raw)
}

/// `new_connection` (with `server_idle_timeout`) did not finish in time.
#[derive(Debug)]
struct ConnectHung(Duration);

impl std::fmt::Display for ConnectHung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "new_connection did not finish within the connect timeout of {:?} and was \
             cancelled (Builder::connect_timeout)",
            self.0
        )
    }
}

impl std::error::Error for ConnectHung {}

/// The new connection broke while the pool asked for the server's idle timeout.
#[derive(Debug)]
struct BrokenAtStart;

impl std::fmt::Display for BrokenAtStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the new connection broke while asking the server for its idle timeout \
             (Manager::server_idle_timeout); has_broken reported it",
        )
    }
}

impl std::error::Error for BrokenAtStart {}

fn learn_server_idle_timeout<M: Manager>(shared: &Arc<Shared<M>>, raw: &mut M::Connection) {
    let reported =
        panic::catch_unwind(AssertUnwindSafe(|| shared.manager.server_idle_timeout(raw)));
    if let Ok(Some(t)) = reported {
        if !t.is_zero() {
            let interval = t.mul_f64(SERVER_IDLE_MARGIN).max(Duration::from_millis(1));
            log::info!(
                "pool {}: server closes idle connections after {t:?}; keepalive every {interval:?}",
                shared.cfg.name
            );
            shared.lock().learnt_keepalive = Some(interval);
            shared.maintenance_kick.post();
        }
    }
}

/// `new_connection` panicked.
#[derive(Debug)]
struct ConnectPanic(String);

impl std::fmt::Display for ConnectPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "new_connection panicked: {}", self.0)
    }
}

impl std::error::Error for ConnectPanic {}
