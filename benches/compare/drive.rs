//! Running a load: N workers (green threads, OS threads or tokio tasks)
//! start together on a signal, repeat one operation until a fixed time has
//! passed or each has done its share of a fixed count, and stop together.
//! None of them exits before all have stopped: a worker's exit (a green
//! thread's or an OS thread's stack handed back to the kernel) would
//! otherwise slow the last operations of those still stopping, whose
//! latencies are kept.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use greenpool::runtime::sync::SyncFlag;
use tokio::runtime::Runtime;

use crate::stats::{Outcome, Recorder};

/// Longest the workers may take to be ready to start.
const READY_LIMIT: Duration = Duration::from_secs(120);
/// Longest the workers may take to stop after the stop signal. A worker
/// stuck longer than this means the backend hangs: the bench panics, which
/// kills the redis-server it started.
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// Stack of each OS-thread worker: as much as a green thread gets.
const THREAD_STACK: usize = 128 * 1024;

/// One run of a load.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub workers: usize,
    pub duration: Duration,
    /// Keep a latency sample per operation.
    pub timed: bool,
    /// Operations in all, shared equally among the workers.
    pub max_ops: u64,
}

impl Plan {
    fn per_worker(&self) -> u64 {
        (self.max_ops / self.workers.max(1) as u64).max(1)
    }
}

/// What blocking workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// greenpool's green threads (may coroutines).
    Green,
    /// Plain OS threads.
    Os,
}

/// Shared between the controller and the workers of one run.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    ready: AtomicUsize,
    finished: AtomicUsize,
}

impl Control {
    fn keep_going(&self, rec: &Recorder) -> bool {
        !self.stop.load(Ordering::Relaxed) && !rec.is_full()
    }

    /// After each operation: one that ended after the stop signal is not
    /// counted, so a run measures what was done inside its window, not how
    /// fast thousands of workers wind down afterwards.
    fn after_op(&self, rec: &mut Recorder) {
        if self.stop.load(Ordering::Relaxed) {
            rec.uncount_last();
        }
    }

    /// Wait until `n` workers are ready, start them (`go`), let them run for
    /// `duration` (or until all have stopped on their own), stop them, wait
    /// until they have, and let them exit (`release`). Returns the start
    /// time, when the stop signal ended the run (`None`: every worker
    /// finished its share first), and the CPU time the process used until
    /// the last one stopped.
    fn conduct(
        &self,
        n: usize,
        duration: Duration,
        go: impl FnOnce(),
        release: impl FnOnce(),
    ) -> (Instant, Option<Instant>, Duration) {
        wait_until(READY_LIMIT, || self.ready.load(Ordering::Acquire) >= n)
            .unwrap_or_else(|| panic!("{n} workers not ready within {READY_LIMIT:?}"));
        let cpu = process_cpu();
        let start = Instant::now();
        go();
        let end = start + duration;
        loop {
            let now = Instant::now();
            if now >= end || self.finished.load(Ordering::Acquire) >= n {
                break;
            }
            thread::sleep((end - now).min(Duration::from_millis(10)));
        }
        let stopped = (self.finished.load(Ordering::Acquire) < n).then(Instant::now);
        self.stop.store(true, Ordering::Relaxed);
        wait_until(STOP_LIMIT, || self.finished.load(Ordering::Acquire) >= n).unwrap_or_else(
            || {
                panic!(
                    "{} of {n} workers still running {STOP_LIMIT:?} after the stop signal: \
                     the backend hangs",
                    n - self.finished.load(Ordering::Acquire)
                )
            },
        );
        let cpu = process_cpu().saturating_sub(cpu);
        release();
        (start, stopped, cpu)
    }
}

/// CPU time (user and system, all threads) this process has used so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Poll `cond` every millisecond for at most `limit`; `None` if it never held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

enum Handle {
    Green(greenpool::runtime::JoinHandle<(Recorder, Instant)>),
    Os(thread::JoinHandle<(Recorder, Instant)>),
}

impl Handle {
    fn spawn<F>(kind: Kind, f: F) -> std::io::Result<Handle>
    where
        F: FnOnce() -> (Recorder, Instant) + Send + 'static,
    {
        match kind {
            Kind::Green => greenpool::runtime::Builder::new()
                .spawn(f)
                .map(Handle::Green),
            Kind::Os => thread::Builder::new()
                .stack_size(THREAD_STACK)
                .spawn(f)
                .map(Handle::Os),
        }
    }

    fn join(self) -> (Recorder, Instant) {
        match self {
            Handle::Green(h) => h.join().unwrap_or_else(|e| e.resume_unwind()),
            Handle::Os(h) => h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        }
    }
}

/// Run `plan.workers` blocking workers of `kind`; worker `i` repeats the
/// operation `make_op(i)` returns. Fails (after stopping the workers already
/// started) if a worker cannot be started, e.g. at a thread limit.
pub fn run_blocking<F>(
    kind: Kind,
    plan: &Plan,
    mut make_op: impl FnMut(usize) -> F,
) -> Result<Outcome, String>
where
    F: FnMut(&mut Recorder) + Send + 'static,
{
    let ctl = Arc::new(Control::default());
    let go = Arc::new(SyncFlag::new());
    let exit = Arc::new(SyncFlag::new());
    let mut handles = Vec::with_capacity(plan.workers);
    for i in 0..plan.workers {
        let mut op = make_op(i);
        let body = {
            let (ctl, go, exit, plan) =
                (Arc::clone(&ctl), Arc::clone(&go), Arc::clone(&exit), *plan);
            move || {
                ctl.ready.fetch_add(1, Ordering::Release);
                go.wait();
                let mut rec = Recorder::new(plan.timed, plan.per_worker());
                while ctl.keep_going(&rec) {
                    op(&mut rec);
                    ctl.after_op(&mut rec);
                }
                let end = Instant::now();
                ctl.finished.fetch_add(1, Ordering::Release);
                exit.wait();
                (rec, end)
            }
        };
        match Handle::spawn(kind, body) {
            Ok(h) => handles.push(h),
            Err(e) => {
                ctl.stop.store(true, Ordering::Relaxed);
                go.fire();
                exit.fire();
                handles.into_iter().for_each(|h| drop(h.join()));
                return Err(format!(
                    "could not start worker {} of {}: {e}",
                    i + 1,
                    plan.workers
                ));
            }
        }
    }
    let (start, stopped, cpu) = ctl.conduct(
        plan.workers,
        plan.duration,
        || fire(kind, &go),
        || fire(kind, &exit),
    );
    let (recorders, ends): (Vec<_>, Vec<_>) = handles.into_iter().map(Handle::join).unzip();
    Ok(Outcome::collect(
        elapsed(start, stopped, &ends),
        cpu,
        recorders,
    ))
}

/// Wake the workers of `kind` waiting on `flag`.
fn fire(kind: Kind, flag: &Arc<SyncFlag>) {
    match kind {
        // Wake green threads from a green thread, as a server's accept loop
        // would: may puts them in that worker's run queue. Woken from a plain
        // thread they would go to may's global queue, which a worker only reads
        // when its own queue is empty, so a few green threads yielding to each
        // other would keep the rest from ever starting.
        Kind::Green => {
            let flag = Arc::clone(flag);
            greenpool::runtime::spawn(move || flag.fire())
                .join()
                .unwrap_or_else(|e| e.resume_unwind());
        }
        Kind::Os => flag.fire(),
    }
}

/// One operation of a tokio task (the async counterpart of the closure
/// [`run_blocking`] takes).
pub trait Step: Send + 'static {
    fn step(&mut self, rec: &mut Recorder) -> impl Future<Output = ()> + Send;
}

/// Run `plan.workers` tokio tasks on `rt`; task `i` repeats `make_step(i)`.
pub fn run_tasks<S: Step>(
    rt: &Runtime,
    plan: &Plan,
    mut make_step: impl FnMut(usize) -> S,
) -> Result<Outcome, String> {
    let ctl = Arc::new(Control::default());
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(false);
    let handles: Vec<_> = (0..plan.workers)
        .map(|i| {
            let mut step = make_step(i);
            let (ctl, mut go, mut exit, plan) =
                (Arc::clone(&ctl), go_rx.clone(), exit_rx.clone(), *plan);
            rt.spawn(async move {
                ctl.ready.fetch_add(1, Ordering::Release);
                // An error means the controller is gone; then stop at once.
                let _ = go.wait_for(|&started| started).await;
                let mut rec = Recorder::new(plan.timed, plan.per_worker());
                while ctl.keep_going(&rec) {
                    step.step(&mut rec).await;
                    ctl.after_op(&mut rec);
                }
                let end = Instant::now();
                ctl.finished.fetch_add(1, Ordering::Release);
                let _ = exit.wait_for(|&released| released).await;
                (rec, end)
            })
        })
        .collect();
    let (start, stopped, cpu) = ctl.conduct(
        plan.workers,
        plan.duration,
        || {
            let _ = go_tx.send(true);
        },
        || {
            let _ = exit_tx.send(true);
        },
    );
    let joined = rt.block_on(async {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await);
        }
        out
    });
    let mut recorders = Vec::with_capacity(joined.len());
    let mut ends = Vec::with_capacity(joined.len());
    for j in joined {
        let (rec, end) = j.map_err(|e| format!("a task failed: {e}"))?;
        recorders.push(rec);
        ends.push(end);
    }
    Ok(Outcome::collect(
        elapsed(start, stopped, &ends),
        cpu,
        recorders,
    ))
}

/// From the start until the stop signal, or, if every worker finished its
/// share first, until the last one did.
fn elapsed(start: Instant, stopped: Option<Instant>, ends: &[Instant]) -> Duration {
    match stopped {
        Some(at) => at.saturating_duration_since(start),
        None => ends
            .iter()
            .map(|&e| e.saturating_duration_since(start))
            .max()
            .unwrap_or_default(),
    }
}
