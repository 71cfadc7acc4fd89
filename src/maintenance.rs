//! Connection health: keepalive on idle connections, validation at checkout,
//! idle timeout and maximum lifetime.
//!
//! One maintenance green thread per pool wakes every tick, refreshes the
//! coarse clock, closes expired idle connections, cancels connects and health
//! checks past their timeouts, reopens lost slots, and starts
//! `Manager::keepalive` on connections idle for the keepalive interval. Each
//! check runs in a green thread of its own (a few at a time), which owns the
//! connection and its slot while it runs, so neither checkouts nor the
//! maintenance pass ever wait for one. Every check runs under
//! `health_check_timeout`; an error, a panic or a timeout means broken.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool_runtime::sync::mpsc;
use greenpool_runtime::time::clamp_timeout;
use greenpool_runtime::Deadline;

use crate::clock::deadline_after;
use crate::config::DEFAULT_SHRINK_AFTER;
use crate::error::describe;
use crate::events::CheckKind;
use crate::manager::Manager;
use crate::slot::Role;
use crate::state::{Conn, Held, Shared, Task};
use crate::stats::DiscardReason;
use crate::tasks::Kind;

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
    if let Err(e) = Task::spawn(shared, Kind::Maintenance, None, run) {
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
            return finish_goodbyes(shared);
        }
        let learnt = shared.lock().learnt_keepalive;
        // A keepalive learnt after this read posts the kick: not missed.
        shared.maintenance_kick.wait_timeout(tick(shared, learnt));
        // A timed-out wait resumes on may's timer thread; go back to a worker.
        greenpool_runtime::yield_now();
        if shared.is_closed() {
            return finish_goodbyes(shared);
        }
        sweep(shared);
        shared.report_state();
    }
}

/// After the pool closed: hold every `Manager::close` still running to its
/// deadline, then end.
fn finish_goodbyes<M: Manager>(shared: &Arc<Shared<M>>) {
    while shared.goodbyes_running() > 0 {
        shared.tasks.enforce_deadlines(Instant::now());
        greenpool_runtime::sleep(MIN_TICK);
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
    // measures idle times, and of the connect and keepalive timeouts: keep
    // it well inside every interval it measures.
    [
        shared.cfg.keepalive.or(learnt_keepalive),
        shared.cfg.idle_timeout,
        shared.cfg.max_lifetime,
        shared.cfg.validate_after.filter(|d| !d.is_zero()),
        Some(shared.cfg.connect_timeout),
        Some(shared.cfg.health_check_timeout),
    ]
    .into_iter()
    .flatten()
    .map(|d| d / 4)
    .min()
    .unwrap_or(MAX_TICK)
    .clamp(MIN_TICK, MAX_TICK)
}

/// How many keepalives may run at once: a few slow ones cannot hold up the
/// rest, and the server never sees a burst of them.
fn keepalive_concurrency(size: usize) -> usize {
    (size / 4).clamp(2, 64)
}

/// One maintenance pass. It never waits for user code: keepalives run in
/// green threads of their own, so the pass (and with it the coarse clock)
/// keeps its pace whatever a check does.
fn sweep<M: Manager>(shared: &Arc<Shared<M>>) {
    let keepalive = keepalive_interval(shared);
    let now = shared.clock.refresh();
    let running_keepalives = shared.tasks.enforce_deadlines(Instant::now());
    let shrink_after = shared.cfg.idle_timeout.unwrap_or(DEFAULT_SHRINK_AFTER);
    let (expired, due, deficit) = {
        let mut st = shared.lock();
        let mut room = keepalive_concurrency(st.size).saturating_sub(running_keepalives);
        let mut expired = Vec::new();
        let mut due = Vec::new();
        // Idle connections the pool can do without: those above `min_idle`
        // (they close once idle for `shrink_after`), and those above a size
        // lowered by `resize` (they close now).
        let mut spare = st.idle.len().saturating_sub(st.min_idle());
        let mut over_size = st.slots().saturating_sub(st.size);
        let idle = std::mem::take(&mut st.idle);
        // Oldest first, so that the longest idle get their keepalive first.
        for conn in idle {
            let idle_for = now.since(conn.last_ok);
            // Surplus first: a spare past the idle timeout is not replaced,
            // so it is no expiry.
            let surplus = over_size > 0 || (spare > 0 && idle_for >= shrink_after);
            if surplus
                || conn.expires.is_some_and(|at| at <= now)
                || shared.cfg.idle_timeout.is_some_and(|t| idle_for >= t)
            {
                spare = spare.saturating_sub(1);
                over_size = over_size.saturating_sub(1);
                let reason = if surplus {
                    DiscardReason::Surplus
                } else {
                    DiscardReason::Expired
                };
                expired.push((conn, reason));
            } else if room > 0 && keepalive.is_some_and(|k| idle_for >= k) {
                room -= 1;
                due.push(conn);
            } else {
                st.idle.push_back(conn);
            }
        }
        let expired: Vec<_> = expired
            .into_iter()
            .map(|(c, reason)| st.hold_to_close(shared, c, reason))
            .collect();
        let due: Vec<_> = due
            .into_iter()
            .map(|c| st.hold(shared, c, Role::Checking))
            .collect();
        // Self-healing: a slot lost to a failed green-thread spawn is reopened.
        let deficit = if shared.is_closed() {
            0
        } else {
            st.start_all_missing()
        };
        (expired, due, deficit)
    };
    for held in expired {
        shared.discard(held);
    }
    shared.spawn_connectors(deficit);
    for held in due {
        let deadline = deadline_after(shared.cfg.health_check_timeout);
        spawn_check(shared, held, Check::Keepalive, None, deadline);
    }
}

/// What a connection needs before it is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckoutCheck {
    /// Nothing: checks are off, it was just opened, or it was handed over
    /// straight from whoever gave it back.
    None,
    /// The cheap, non-blocking [`Manager::has_broken`]: it sat idle.
    Quick,
    /// `has_broken`, then [`Manager::validate`]: it sat idle longer than
    /// `validate_after`, or since before a connection was found broken.
    Full,
}

/// What `conn` needs before it is handed out; `from_idle` says it was taken
/// from the idle list. `Builder::no_validation` turns every check off.
pub(crate) fn checkout_check<M: Manager>(
    shared: &Shared<M>,
    conn: &Conn<M::Connection>,
    from_idle: bool,
) -> CheckoutCheck {
    let Some(validate_after) = shared.cfg.validate_after else {
        return CheckoutCheck::None;
    };
    if conn.fresh {
        return CheckoutCheck::None;
    }
    if conn.epoch != shared.epoch() || shared.clock.now().since(conn.last_ok) >= validate_after {
        CheckoutCheck::Full
    } else if from_idle {
        CheckoutCheck::Quick
    } else {
        CheckoutCheck::None
    }
}

/// [`Manager::has_broken`] on a connection at checkout; a panic counts as
/// broken.
pub(crate) fn peer_closed<M: Manager>(shared: &Shared<M>, conn: &mut Conn<M::Connection>) -> bool {
    let raw = &mut conn.raw;
    panic::catch_unwind(AssertUnwindSafe(|| shared.manager.has_broken(raw))).unwrap_or(true)
}

/// Validate a checked-out connection within the health-check timeout and the
/// caller's deadline. On failure it is discarded (and replaced) and the
/// reason is returned. The check runs in a green thread of its own that owns
/// the connection and its slot until it has really ended. A caller in a
/// green thread waits without a timer of its own: the pool's deadline
/// watcher cancels a check at its deadline, and the check then answers. An
/// OS thread waits on its own timer, whatever the green threads do.
pub(crate) fn validate<M: Manager>(
    shared: &Arc<Shared<M>>,
    held: Held<M>,
    deadline: Deadline,
) -> Result<Held<M>, String> {
    let hct = shared.cfg.health_check_timeout;
    let limit = deadline.remaining().map_or(hct, |rem| rem.min(hct));
    let Some(wait) = clamp_timeout(limit) else {
        // No time left: the connection was not checked; it goes back.
        Shared::give_back_unchecked(held);
        return Err("no time left for the validation before the checkout deadline".to_owned());
    };
    let task_deadline = deadline_after(wait);
    let watched = greenpool_runtime::is_green() && shared.has_watcher();
    let (tx, rx) = mpsc::channel();
    let Some(task) = spawn_check(shared, held, Check::Validate, Some(tx), task_deadline) else {
        return Err("cannot start a green thread for the validation".to_owned());
    };
    if watched {
        if let Some(at) = task_deadline {
            shared.watch_deadline(at);
        }
        // The check always answers: with its verdict, or, cancelled at its
        // deadline or by close, with the reason.
        return rx
            .recv()
            .unwrap_or_else(|_| Err("the validation was cancelled (the pool closed)".to_owned()));
    }
    let reply = rx.recv_timeout(wait);
    // A timed-out wait resumes on may's timer thread.
    greenpool_runtime::yield_now();
    match reply {
        Ok(verdict) => verdict,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            shared.tasks.cancel(task);
            // A verdict that arrived just now is not thrown away with the
            // channel (a passed connection would be closed with it).
            rx.try_recv()
                .unwrap_or_else(|_| Err(format!("did not answer within {limit:?}")))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("the validation was cancelled (the pool closed)".to_owned())
        }
    }
}

type Reply<M> = mpsc::Sender<Result<Held<M>, String>>;

/// Start a health check on `held` in a green thread of its own, which owns
/// the connection and its slot: a timed-out check holds them until it has
/// really ended (maintenance cancels it after the health-check timeout), and
/// only then is a replacement opened. Without `reply` (a keepalive) the check
/// puts the connection back itself. Returns the task's id, or `None` if no
/// green thread could be started (the connection is then discarded).
fn spawn_check<M: Manager>(
    shared: &Arc<Shared<M>>,
    mut held: Held<M>,
    what: Check,
    reply: Option<Reply<M>>,
    deadline: Option<Instant>,
) -> Option<u64> {
    let reason = match what {
        Check::Keepalive => DiscardReason::Keepalive,
        Check::Validate => DiscardReason::Validation,
    };
    // Counted so if the check never runs or unwinds.
    held.slot.reason = Some(reason);
    let kind = match what {
        Check::Keepalive => Kind::Keepalive,
        Check::Validate => Kind::Validation,
    };
    let spawned = Task::spawn(shared, kind, deadline, move |task| {
        run_check(&task, held, what, reply)
    });
    match spawned {
        Ok(task) => Some(task),
        Err(e) => {
            shared.spawn_failed(kind.role(), &e, "discarding the connection");
            None
        }
    }
}

fn run_check<M: Manager>(task: &Task<M>, mut held: Held<M>, what: Check, reply: Option<Reply<M>>) {
    let shared = &task.shared;
    let name = &shared.cfg.name;
    let id = held.conn.id;
    let what_name = match what {
        Check::Keepalive => "keepalive",
        Check::Validate => "validation",
    };
    let started = shared.has_events().then(Instant::now);
    let report = |result: Result<(), &str>| {
        shared.emit(|h| {
            h.health_check(&crate::events::HealthCheck {
                id,
                kind: match what {
                    Check::Keepalive => CheckKind::Keepalive,
                    Check::Validate => CheckKind::Validation,
                },
                took: started.map_or(Duration::ZERO, |t| t.elapsed()),
                result,
            })
        })
    };
    let raw = &mut held.conn.raw;
    let result = panic::catch_unwind(AssertUnwindSafe(|| match what {
        Check::Keepalive => shared.manager.keepalive(raw),
        Check::Validate => shared.manager.validate(raw),
    }));
    if task.cancelled() || shared.is_closed() {
        // Cancelled: past the health-check timeout, or the pool closed. The
        // state of the connection is unknown; it is closed with the token.
        let why = format!(
            "did not answer {what_name} within {:?}",
            shared.cfg.health_check_timeout
        );
        if !shared.is_closed() {
            // Per connection: debug. The pool-wide picture (connections that
            // never work) goes through the rate-limited connect health.
            log::debug!("pool {name}: connection #{id} {why}; replacing it");
            report(Err(&why));
        }
        drop(held);
        if let Some(tx) = reply {
            let _ = tx.send(Err(why));
        }
        return;
    }
    let verdict = match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            crate::error_set::settle_after_io_timeout(&e);
            Err(describe(&e))
        }
        Err(p) => Err(format!(
            "panicked: {}",
            greenpool_runtime::panic_message(&*p).unwrap_or("non-string payload")
        )),
    };
    report(verdict.as_ref().map(|_| ()).map_err(|e| e.as_str()));
    match verdict {
        Ok(()) => match reply {
            None => shared.keepalive_passed(held),
            Some(tx) => {
                shared.proved(&mut held.conn, shared.clock.refresh());
                held.slot.memory.worked();
                held.slot.reason = None;
                // The caller gave up waiting: the connection goes back.
                if let Err(std::sync::mpsc::SendError(Ok(held))) = tx.send(Ok(held)) {
                    Shared::give_back(held);
                }
            }
        },
        Err(e) => {
            log::debug!("pool {name}: connection #{id} failed {what_name}: {e}; replacing it");
            shared.discard(held);
            if let Some(tx) = reply {
                let _ = tx.send(Err(e));
            }
        }
    }
}
