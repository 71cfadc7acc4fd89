//! Connection health: keepalive on idle connections, validation at checkout,
//! idle timeout and maximum lifetime.
//!
//! One maintenance green thread per pool wakes every tick, closes expired idle
//! connections, and runs `Manager::keepalive` on connections idle for the
//! keepalive interval — one at a time, each taken out of the idle list only
//! while it is being checked, so checkouts are never held up. Every check runs
//! under `health_check_timeout`; an error, a panic or a timeout means broken.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::manager::Manager;
use crate::pool::{Conn, Shared, Task};
use crate::stats::DiscardReason;

/// Longest sleep of the maintenance green thread.
const MAX_TICK: Duration = Duration::from_secs(1);
const MIN_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Keepalive,
    Validate,
}

/// Start the pool's maintenance green thread. It stops when the pool closes.
pub(crate) fn spawn<M: Manager>(shared: &Arc<Shared<M>>) {
    if let Err(e) = Task::spawn(shared, "maintenance", run) {
        log::error!(
            "pool {}: cannot start the maintenance green thread: {e}; keepalive, idle \
             timeout and lifetime are off",
            shared.cfg.name
        );
    }
}

fn run<M: Manager>(task: Task<M>) {
    let shared = &task.shared;
    loop {
        if shared.is_closed() {
            return;
        }
        let learnt = shared.lock().learnt_keepalive;
        // A keepalive learnt after this read posts the kick: not missed.
        shared.maintenance_kick.wait_timeout(tick(shared, learnt));
        // A timed-out wait resumes on may's timer thread; go back to a worker.
        greenpool_runtime::yield_now();
        if shared.is_closed() {
            return;
        }
        sweep(shared);
    }
}

fn keepalive_interval<M: Manager>(shared: &Shared<M>) -> Option<Duration> {
    shared
        .cfg
        .keepalive
        .or_else(|| shared.lock().learnt_keepalive)
}

fn tick<M: Manager>(shared: &Shared<M>, learnt_keepalive: Option<Duration>) -> Duration {
    // The tick is also the resolution of the pool's coarse clock, which
    // measures idle times: keep it well inside every interval it measures.
    [
        shared.cfg.keepalive.or(learnt_keepalive),
        shared.cfg.idle_timeout,
        shared.cfg.max_lifetime,
        shared.cfg.validate_after.filter(|d| !d.is_zero()),
    ]
    .into_iter()
    .flatten()
    .map(|d| d / 4)
    .min()
    .unwrap_or(MAX_TICK)
    .clamp(MIN_TICK, MAX_TICK)
}

/// One maintenance pass.
fn sweep<M: Manager>(shared: &Arc<Shared<M>>) {
    let keepalive = keepalive_interval(shared);
    let now = shared.clock.refresh();
    let (expired, due, deficit) = {
        let mut st = shared.lock();
        let mut expired = Vec::new();
        let mut due = Vec::new();
        let idle = std::mem::take(&mut st.idle);
        for conn in idle {
            let idle_for = now.since(conn.last_ok);
            if conn.expires.is_some_and(|at| at <= now)
                || shared.cfg.idle_timeout.is_some_and(|t| idle_for >= t)
            {
                expired.push(conn);
            } else {
                if keepalive.is_some_and(|k| idle_for >= k) {
                    due.push(conn.id);
                }
                st.idle.push_back(conn);
            }
        }
        st.checking += expired.len();
        // Self-healing: a slot lost to a failed green-thread spawn is reopened.
        let deficit = shared.cfg.size.saturating_sub(st.open() + st.connecting);
        st.connecting += deficit;
        (expired, due, deficit)
    };
    for conn in expired {
        shared.discard_counted(Some(conn), DiscardReason::Expired, true);
    }
    for _ in 0..deficit {
        crate::connector::spawn(shared);
    }
    for id in due {
        let Some(conn) = take_idle(shared, id, keepalive) else {
            continue;
        };
        match check(shared, conn, Check::Keepalive) {
            Ok(conn) => shared.keepalive_passed(conn),
            Err(conn) => shared.discard_counted(conn, DiscardReason::Keepalive, true),
        }
    }
}

/// Take connection `id` out of the idle list for a keepalive, if it is still
/// idle and still due.
fn take_idle<M: Manager>(
    shared: &Shared<M>,
    id: u64,
    keepalive: Option<Duration>,
) -> Option<Conn<M::Connection>> {
    let k = keepalive?;
    let mut st = shared.lock();
    let pos = st
        .idle
        .iter()
        .position(|c| c.id == id && shared.clock.now().since(c.last_ok) >= k)?;
    let conn = st.idle.remove(pos)?;
    st.checking += 1;
    Some(conn)
}

/// True if `conn` has been idle long enough to be validated before use.
pub(crate) fn needs_validation<M: Manager>(shared: &Shared<M>, conn: &Conn<M::Connection>) -> bool {
    shared
        .cfg
        .validate_after
        .is_some_and(|t| shared.clock.now().since(conn.last_ok) >= t)
}

/// Validate a checked-out connection. On failure it is discarded (and
/// replaced) and `Err(())` is returned.
pub(crate) fn validate<M: Manager>(
    shared: &Arc<Shared<M>>,
    conn: Conn<M::Connection>,
) -> Result<Conn<M::Connection>, ()> {
    match check(shared, conn, Check::Validate) {
        Ok(mut conn) => {
            conn.last_ok = shared.clock.refresh();
            Ok(conn)
        }
        Err(conn) => {
            shared.discard_counted(conn, DiscardReason::Validation, false);
            Err(())
        }
    }
}

/// Run a health check under the pool's health-check timeout. `Err` carries
/// the connection back when there is one to close (a timed-out check loses it
/// with its cancelled green thread, which closes it).
fn check<M: Manager>(
    shared: &Arc<Shared<M>>,
    conn: Conn<M::Connection>,
    what: Check,
) -> Result<Conn<M::Connection>, Option<Conn<M::Connection>>> {
    let name = &shared.cfg.name;
    let id = conn.id;
    let task = Task::new(shared);
    let builder = shared.task_builder("health-check");
    let limit = shared.cfg.health_check_timeout;
    let outcome = greenpool_runtime::timeout_with(builder, limit, move || {
        let mut conn = conn;
        let raw = &mut conn.raw;
        let result = panic::catch_unwind(AssertUnwindSafe(|| match what {
            Check::Keepalive => task.shared.manager.keepalive(raw),
            Check::Validate => task.shared.manager.validate(raw),
        }));
        let verdict = match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                crate::error_set::settle_after_io_timeout(&e);
                Err(e.to_string())
            }
            Err(p) => Err(format!(
                "panicked: {}",
                greenpool_runtime::panic_message(&*p).unwrap_or("non-string payload")
            )),
        };
        (conn, verdict)
    });
    let what = match what {
        Check::Keepalive => "keepalive",
        Check::Validate => "validation",
    };
    match outcome {
        Ok((conn, Ok(()))) => Ok(conn),
        Ok((conn, Err(e))) => {
            log::info!("pool {name}: connection #{id} failed {what}: {e}; replacing it");
            Err(Some(conn))
        }
        Err(_) => {
            log::info!(
                "pool {name}: connection #{id} did not answer {what} within {limit:?}; replacing it"
            );
            Err(None)
        }
    }
}
