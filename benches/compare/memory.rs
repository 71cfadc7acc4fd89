//! Section 3: resident memory per waiting worker and per idle pooled
//! connection. Each figure comes from a fresh child process (this bench run
//! again with [`CHILD_FLAG`]), so that memory the earlier sections allocated
//! and freed does not blur it: the child measures VmRSS, does the thing,
//! measures again, prints both and exits.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::backend::Backend;
use crate::drive::wait_until;
use crate::pools::{
    open_bb8, open_deadpool, open_greenpool, open_r2d2, AsyncPool, Counter, Tcp, Which,
    CHECKOUT_TIMEOUT,
};
use crate::report::{Section, Table, Target};
use crate::settings::Settings;
use crate::stats::{fmt_bytes, group_thousands};

/// Runs this binary as a child that measures one thing.
pub const CHILD_FLAG: &str = "--memory-child";

/// Connections in the pool the waiters wait on; all are checked out.
const WAITED_POOL: usize = 16;
/// Checkout timeout while waiters wait: longer than any measurement.
const WAIT_FOREVER: Duration = Duration::from_secs(3600);
/// Longest the waiters may take to be spawned and blocked.
const PARK_LIMIT: Duration = Duration::from_secs(300);
/// Pause before reading VmRSS, for exited threads and freed memory to settle.
const SETTLE: Duration = Duration::from_millis(300);
/// Memory maps left free for everything but coroutine stacks.
const MAP_MARGIN: usize = 2_000;
/// How often (in spawns) to check the memory-map count.
const MAP_CHECK_EVERY: usize = 1_000;
/// The target of the issue: this many green threads waiting, under 1 GiB.
const TARGET_WAITERS: usize = 100_000;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Raise the soft limit on open files to the hard limit (children, and the
/// redis-server started afterwards, inherit it).
pub fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                eprintln!("cannot raise the open-file limit; keeping {}", lim.rlim_cur);
            }
        }
    }
}

/// Resident set size of this process (VmRSS), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/self/status")
}

fn read_number(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn maps_in_use() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

/// What a child measured.
#[derive(Debug, Default)]
struct Measured {
    before: u64,
    after: u64,
    count: usize,
    /// Why fewer than asked for, if so.
    note: String,
}

impl Measured {
    fn per_item(&self) -> f64 {
        (self.after as f64 - self.before as f64) / self.count.max(1) as f64
    }

    fn print(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "before {}", self.before);
        let _ = writeln!(out, "after {}", self.after);
        let _ = writeln!(out, "count {}", self.count);
        let _ = writeln!(out, "note {}", self.note);
        let _ = out.flush();
    }

    fn parse(text: &str) -> Option<Measured> {
        let mut m = Measured::default();
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "before" => m.before = value.parse().ok()?,
                "after" => m.after = value.parse().ok()?,
                "count" => m.count = value.parse().ok()?,
                "note" => m.note = value.to_string(),
                _ => {}
            }
        }
        (m.after > 0).then_some(m)
    }
}

/// The child's side: measure what `args` names, print it, exit.
pub fn child(args: &[String]) {
    greenpool::runtime::Config::new()
        .apply()
        .expect("the runtime is configured first");
    raise_open_files_limit();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let count = |i: usize| -> usize { arg(i).parse().expect("a count") };
    let which = |i: usize| Which::from_name(arg(i)).expect("a pool name");
    let measured = match arg(0) {
        "green-waiters" => green_waiters(count(1)),
        "task-waiters" => task_waiters(which(1), count(2)),
        "thread-waiters" => thread_waiters(count(1)),
        "idle" => {
            let addr: SocketAddr = arg(3).parse().expect("a server address");
            idle(which(1), count(2), addr)
        }
        other => panic!("unknown memory job {other:?}"),
    };
    measured.print();
    // The waiters are still blocked: leave without waking them.
    std::process::exit(0);
}

/// `k` green threads blocked in `get()` on a greenpool pool whose
/// connections are all checked out.
fn green_waiters(k: usize) -> Measured {
    let pool = open_greenpool(Counter, WAITED_POOL, Some(WAIT_FOREVER));
    let _held: Vec<_> = (0..WAITED_POOL)
        .map(|_| pool.get().expect("an idle connection"))
        .collect();
    // One green thread first, so one-time costs are in the baseline.
    drop(greenpool::runtime::spawn(|| ()).join());
    thread::sleep(SETTLE);
    let before = rss();

    let max_maps = read_number("/proc/sys/vm/max_map_count");
    let maps_before = maps_in_use();
    let mut note = String::new();
    let mut spawned = 0;
    while spawned < k {
        if spawned % MAP_CHECK_EVERY == 0 {
            if let Some(max) = max_maps {
                // Each stack is a mapping plus a guard page: 2 maps.
                if maps_in_use() + 2 * MAP_CHECK_EVERY + MAP_MARGIN > max {
                    let per = (maps_in_use() - maps_before) as f64 / spawned.max(1) as f64;
                    note = format!(
                        "stopped at {} of {} green threads: vm.max_map_count is {max} \
                         and every green thread's stack takes 2 memory maps (its mapping \
                         and its guard page; {per:.2} measured here), whatever its size, \
                         so a smaller stack does not help. `sysctl vm.max_map_count=262144` \
                         makes room for all of them",
                        group_thousands(spawned as u64),
                        group_thousands(k as u64)
                    );
                    break;
                }
            }
        }
        let pool = pool.clone();
        match greenpool::runtime::Builder::new().spawn(move || drop(pool.get())) {
            Ok(handle) => drop(handle), // detached: it waits on
            Err(e) => {
                note = format!("spawning failed after {spawned}: {e}");
                break;
            }
        }
        spawned += 1;
    }
    wait_until(PARK_LIMIT, || pool.state().waiting >= spawned)
        .expect("the green threads block in get()");
    thread::sleep(SETTLE);
    Measured {
        before,
        after: rss(),
        count: spawned,
        note,
    }
}

/// `k` tokio tasks blocked in `get()` on a deadpool or bb8 pool whose
/// connections are all checked out.
fn task_waiters(which: Which, k: usize) -> Measured {
    let rt = tokio_runtime();
    match which {
        Which::Deadpool => {
            let pool = open_deadpool(&rt, Counter, WAITED_POOL, WAIT_FOREVER);
            let probe = pool.clone();
            tasks_waiting(&rt, pool, k, move || probe.status().waiting)
        }
        Which::Bb8 => {
            let pool = open_bb8(&rt, Counter, WAITED_POOL, WAIT_FOREVER);
            let probe = pool.clone();
            tasks_waiting(&rt, pool, k, move || {
                let s = probe.state().statistics;
                (s.get_started - s.get_direct - s.get_waited - s.get_timed_out) as usize
            })
        }
        other => panic!("{} has no tasks", other.name()),
    }
}

fn tasks_waiting<P: AsyncPool>(
    rt: &Runtime,
    pool: P,
    k: usize,
    waiting: impl Fn() -> usize,
) -> Measured {
    let _held = rt.block_on(async {
        let mut held = Vec::with_capacity(WAITED_POOL);
        for _ in 0..WAITED_POOL {
            held.push(pool.checkout().await.expect("an idle connection"));
        }
        held
    });
    drop(rt.block_on(rt.spawn(async {})));
    thread::sleep(SETTLE);
    let before = rss();
    for _ in 0..k {
        let pool = pool.clone();
        drop(rt.spawn(async move { drop(pool.checkout().await) }));
    }
    wait_until(PARK_LIMIT, || waiting() >= k).expect("the tasks block in get()");
    thread::sleep(SETTLE);
    Measured {
        before,
        after: rss(),
        count: k,
        note: String::new(),
    }
}

/// `k` OS threads blocked in `get()` on an r2d2 pool whose connections are
/// all checked out.
fn thread_waiters(k: usize) -> Measured {
    let pool = open_r2d2(Counter, WAITED_POOL, WAIT_FOREVER);
    let _held: Vec<_> = (0..WAITED_POOL)
        .map(|_| pool.get().expect("an idle connection"))
        .collect();
    drop(thread::spawn(|| ()).join());
    thread::sleep(SETTLE);
    let before = rss();
    let started = Arc::new(AtomicUsize::new(0));
    let mut spawned = 0;
    let mut note = String::new();
    for _ in 0..k {
        let (pool, started) = (pool.clone(), Arc::clone(&started));
        let body = move || {
            started.fetch_add(1, Ordering::Release);
            drop(pool.get());
        };
        match thread::Builder::new().stack_size(128 * 1024).spawn(body) {
            Ok(handle) => drop(handle),
            Err(e) => {
                note = format!("spawning failed after {spawned} threads: {e}");
                break;
            }
        }
        spawned += 1;
    }
    wait_until(PARK_LIMIT, || started.load(Ordering::Acquire) >= spawned)
        .expect("the threads start");
    // r2d2 does not count its waiters: give the last ones time to block.
    thread::sleep(SETTLE * 2);
    Measured {
        before,
        after: rss(),
        count: spawned,
        note,
    }
}

/// A pool of `k` idle connections to `addr`. A pool of one is opened
/// first, so the one-time costs (runtime, pool machinery) are in the
/// baseline.
fn idle(which: Which, k: usize, addr: SocketAddr) -> Measured {
    let tcp = Tcp {
        addr,
        io_timeout: None,
        checks: None,
    };
    fn measure<T>(k: usize, open: impl Fn(usize) -> T) -> Measured {
        let _warm = open(1);
        thread::sleep(SETTLE);
        let before = rss();
        let _pool = open(k);
        thread::sleep(SETTLE);
        Measured {
            before,
            after: rss(),
            count: k,
            note: String::new(),
        }
    }
    match which {
        Which::Greenpool => measure(k, |n| open_greenpool(tcp, n, Some(CHECKOUT_TIMEOUT))),
        Which::R2d2 => measure(k, |n| open_r2d2(tcp, n, CHECKOUT_TIMEOUT)),
        Which::Deadpool => {
            let rt = tokio_runtime();
            measure(k, |n| open_deadpool(&rt, tcp, n, CHECKOUT_TIMEOUT))
        }
        Which::Bb8 => {
            let rt = tokio_runtime();
            measure(k, |n| open_bb8(&rt, tcp, n, CHECKOUT_TIMEOUT))
        }
    }
}

fn tokio_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// Run one child job; `None` (after saying why) if it fails.
fn run_child(args: &[String]) -> Option<Measured> {
    eprintln!("  memory: {}", args.join(" "));
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe)
        .arg(CHILD_FLAG)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let measured = Measured::parse(&text);
    if !out.status.success() || measured.is_none() {
        eprintln!(
            "  memory: {} failed ({}): {text}",
            args.join(" "),
            out.status
        );
    }
    measured
}

pub fn run(settings: &Settings, backend: &Backend) -> (Section, Vec<Target>) {
    let waiters = settings.waiters;
    let threads = (waiters / 10).min(10_000);
    let idle_count = settings.idle_connections;
    let addr = backend.addr().to_string();

    struct Job {
        what: String,
        item: &'static str,
        args: Vec<String>,
    }
    let mut jobs = vec![Job {
        what: "greenpool: green threads blocked in get()".into(),
        item: "waiter",
        args: vec!["green-waiters".into(), waiters.to_string()],
    }];
    for which in [Which::Deadpool, Which::Bb8] {
        jobs.push(Job {
            what: format!("{}: tokio tasks blocked in get()", which.name()),
            item: "waiter",
            args: vec![
                "task-waiters".into(),
                which.name().into(),
                waiters.to_string(),
            ],
        });
    }
    jobs.push(Job {
        what: "r2d2: OS threads blocked in get() (128 KiB stacks)".into(),
        item: "waiter",
        args: vec!["thread-waiters".into(), threads.to_string()],
    });
    for which in Which::ALL {
        jobs.push(Job {
            what: format!("{}: idle pooled connections", which.name()),
            item: "connection",
            args: vec![
                "idle".into(),
                which.name().into(),
                idle_count.to_string(),
                addr.clone(),
            ],
        });
    }

    let mut t = Table::new(&["what", "count", "VmRSS before", "VmRSS after", "per item"]);
    let mut notes = Vec::new();
    let mut green: Option<Measured> = None;
    for job in &jobs {
        let measured = run_child(&job.args);
        match &measured {
            Some(m) => {
                t.row(vec![
                    job.what.clone(),
                    group_thousands(m.count as u64),
                    fmt_bytes(m.before as f64),
                    fmt_bytes(m.after as f64),
                    format!("{} per {}", fmt_bytes(m.per_item()), job.item),
                ]);
                if !m.note.is_empty() {
                    notes.push(format!("- {}: {}", job.what, m.note));
                }
            }
            None => t.row(vec![
                job.what.clone(),
                "failed (see the bench's output)".into(),
                "–".into(),
                "–".into(),
                "–".into(),
            ]),
        }
        if job.args[0] == "green-waiters" {
            green = measured;
        }
    }

    let mut s = Section::new("3. Memory");
    s.text(format!(
        "Resident memory (VmRSS) of a fresh child process before and after: \
         waiters blocked in `get()` on a pool of {WAITED_POOL} whose connections are \
         all checked out, and pools of idle connections to the server (a pool of one \
         is opened before the baseline, so one-time costs are not counted). greenpool's \
         green threads have the runtime's default 128 KiB stacks (mapped lazily: a \
         waiting green thread touches a few pages of it). OS threads also cost kernel \
         memory that VmRSS does not show (a kernel stack of 16 KiB each, and more). \
         Idle greenpool connections include may's per-socket state and the \
         green-thread stacks that opened them, which may keeps for reuse."
    ));
    s.table(&t);
    if !notes.is_empty() {
        s.text(notes.join("\n"));
    }

    let target = match &green {
        Some(m) if m.count >= TARGET_WAITERS => Target::new(
            "100,000 waiting green threads under 1 GiB resident",
            format!(
                "{} waiting: {} resident in all ({} for the waiters)",
                group_thousands(m.count as u64),
                fmt_bytes(m.after as f64),
                fmt_bytes(m.after as f64 - m.before as f64)
            ),
            Some((m.after as f64) < GIB),
        ),
        Some(m) => {
            let projected = m.before as f64 + m.per_item() * TARGET_WAITERS as f64;
            let why = if m.note.is_empty() {
                format!("this run asked for {}", group_thousands(m.count as u64))
            } else {
                "see section 3".into()
            };
            Target::new(
                "100,000 waiting green threads under 1 GiB resident",
                format!(
                    "measured {} waiting ({why}): {} per waiter, so 100,000 would be \
                     about {} resident in all (extrapolated)",
                    group_thousands(m.count as u64),
                    fmt_bytes(m.per_item()),
                    fmt_bytes(projected)
                ),
                None,
            )
        }
        None => Target::new(
            "100,000 waiting green threads under 1 GiB resident",
            "the measurement failed",
            None,
        ),
    };
    (s, vec![target])
}
