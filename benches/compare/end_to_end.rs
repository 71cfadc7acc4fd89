//! Section 2: end to end, PING/PONG over loopback through each pool; and
//! section 5: what the pool saves over a connection per request.

use std::io::{self, Read, Write};
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::backend::{redis_benchmark, Backend, RedisBenchmark};
use crate::drive::{run_blocking, run_tasks, Kind, Plan, Step};

use crate::pools::{
    open_greenpool, ping, ping_async, tokio_connect, AsyncPool, BlockingPool, Pools, Proto, Tcp,
    Which, CHECKOUT_TIMEOUT,
};
use crate::report::{Section, Table, Target};
use crate::settings::Settings;
use crate::stats::{
    fmt_ns, fmt_rate, fmt_ratio, group_thousands, median, Latency, Outcome, Recorder, Summary,
};

const WORKERS: [usize; 3] = [8, 64, 512];
const CONNECTIONS: [usize; 2] = [8, 32];
/// Requests in one run, at most (a bound; runs end on time first).
const MAX_OPS: u64 = 20_000_000;
/// New connections in one connect-per-request run, at most: each leaves a
/// socket in TIME_WAIT for a minute.
const MAX_CONNECTS: u64 = 60_000;

/// One request by a blocking worker: from asking for a connection to
/// having the reply.
fn request<P: BlockingPool>(pool: &P, proto: &Proto, rec: &mut Recorder)
where
    P::Conn: std::io::Read + std::io::Write,
{
    if rec.time(|| pool.with_conn(|c| ping(c, proto))).is_err() {
        rec.error();
    }
}

/// One request by a tokio task.
struct Request<P> {
    pool: P,
    proto: &'static Proto,
}

impl<P> Step for Request<P>
where
    P: AsyncPool,
    P::Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn step(&mut self, rec: &mut Recorder) {
        let (pool, proto) = (&self.pool, self.proto);
        let result = rec
            .time_async(async {
                let mut conn = pool.checkout().await?;
                ping_async(&mut *conn, proto).await
            })
            .await;
        if result.is_err() {
            rec.error();
        }
    }
}

fn measure(
    which: Which,
    pools: &Pools<Tcp>,
    rt: &Runtime,
    plan: &Plan,
    proto: &'static Proto,
) -> Result<Outcome, String> {
    match which {
        Which::Greenpool => run_blocking(Kind::Green, plan, |_| {
            let pool = pools.greenpool.clone();
            move |rec: &mut Recorder| request(&pool, proto, rec)
        }),
        Which::R2d2 => run_blocking(Kind::Os, plan, |_| {
            let pool = pools.r2d2.clone();
            move |rec: &mut Recorder| request(&pool, proto, rec)
        }),
        Which::Deadpool => run_tasks(rt, plan, |_| Request {
            pool: pools.deadpool.clone(),
            proto,
        }),
        Which::Bb8 => run_tasks(rt, plan, |_| Request {
            pool: pools.bb8.clone(),
            proto,
        }),
    }
}

/// What the workers of a reference without a pool run on.
#[derive(Debug, Clone, Copy)]
enum Runner {
    Green,
    Os,
    Tokio,
}

impl Runner {
    const ALL: [Runner; 3] = [Runner::Green, Runner::Os, Runner::Tokio];

    fn label(self) -> &'static str {
        match self {
            Runner::Green => "green threads (may's TcpStream)",
            Runner::Os => "OS threads (std's TcpStream)",
            Runner::Tokio => "tokio tasks (tokio's TcpStream)",
        }
    }
}

fn connect_all<S>(n: usize, mut connect: impl FnMut() -> io::Result<S>) -> Result<Vec<S>, String> {
    (0..n)
        .map(|_| connect().map_err(|e| format!("connect: {e}")))
        .collect()
}

/// A blocking worker's request on a connection of its own.
fn own_connection<S: Read + Write>(
    mut conn: S,
    proto: &'static Proto,
) -> impl FnMut(&mut Recorder) {
    move |rec: &mut Recorder| {
        if rec.time(|| ping(&mut conn, proto)).is_err() {
            rec.error();
        }
    }
}

/// A tokio task's request on a connection of its own.
struct OwnConnection {
    conn: tokio::net::TcpStream,
    proto: &'static Proto,
}

impl Step for OwnConnection {
    async fn step(&mut self, rec: &mut Recorder) {
        if rec
            .time_async(ping_async(&mut self.conn, self.proto))
            .await
            .is_err()
        {
            rec.error();
        }
    }
}

/// A dedicated connection per worker, no pool.
fn dedicated(
    backend: &Backend,
    rt: &Runtime,
    plan: &Plan,
    runner: Runner,
) -> Result<Outcome, String> {
    let (tcp, proto) = (backend.tcp(), backend.proto());
    let n = plan.workers;
    match runner {
        Runner::Green => {
            let mut conns =
                connect_all(n, || greenpool::Manager::new_connection(&tcp))?.into_iter();
            run_blocking(Kind::Green, plan, |_| {
                own_connection(conns.next().expect("one per worker"), proto)
            })
        }
        Runner::Os => {
            let mut conns = connect_all(n, || r2d2::ManageConnection::connect(&tcp))?.into_iter();
            run_blocking(Kind::Os, plan, |_| {
                own_connection(conns.next().expect("one per worker"), proto)
            })
        }
        Runner::Tokio => {
            let conns = rt.block_on(async {
                let mut conns = Vec::with_capacity(n);
                for _ in 0..n {
                    conns.push(
                        tokio_connect(tcp.addr)
                            .await
                            .map_err(|e| format!("connect: {e}"))?,
                    );
                }
                Ok::<_, String>(conns)
            })?;
            let mut conns = conns.into_iter();
            run_tasks(rt, plan, |_| OwnConnection {
                conn: conns.next().expect("one per worker"),
                proto,
            })
        }
    }
}

/// A new connection for every request, closed after the reply.
fn connect_per_request(backend: &Backend, plan: &Plan) -> Result<Outcome, String> {
    let (tcp, proto) = (backend.tcp(), backend.proto());
    run_blocking(Kind::Green, plan, |_| {
        move |rec: &mut Recorder| {
            let result = rec.time(|| {
                let mut conn = greenpool::Manager::new_connection(&tcp)?;
                ping(&mut conn, proto)
            });
            if result.is_err() {
                rec.error();
            }
        }
    })
}

/// Results of one cell: per pool, the summary over runs (or why it failed).
struct Cell {
    workers: usize,
    connections: usize,
    results: Vec<(Which, Result<Summary, String>)>,
}

impl Cell {
    fn get(&self, which: Which) -> Option<&Summary> {
        self.results
            .iter()
            .find(|(w, _)| *w == which)
            .and_then(|(_, r)| r.as_ref().ok())
    }
}

fn log_run(what: &str, run: usize, runs: usize, o: &Outcome) {
    let l = o.latency.unwrap_or_default();
    eprintln!(
        "  {what} run {}/{runs}: {} req/s, CPU {}/req, p99 {}, max {}, errors {}, \
         slowest worker {:.2}",
        run + 1,
        fmt_rate(o.rate()),
        fmt_ns(o.cpu_per_op()),
        fmt_ns(l.p99),
        fmt_ns(l.max),
        o.errors,
        o.min_share
    );
}

pub fn run(settings: &Settings, rt: &Runtime, backend: &Backend) -> (Section, Vec<Target>) {
    let proto = backend.proto();
    let runs = settings.e2e_runs;
    let plan = |workers| Plan {
        workers,
        duration: settings.e2e_duration,
        timed: true,
        max_ops: MAX_OPS,
    };
    let mut cells = Vec::new();
    for connections in CONNECTIONS {
        let pools = Pools::open(rt, backend.tcp(), connections);
        for workers in WORKERS {
            let mut outcomes: Vec<(Which, Result<Vec<Outcome>, String>)> =
                Which::ALL.iter().map(|&w| (w, Ok(Vec::new()))).collect();
            for run in 0..runs {
                for k in 0..outcomes.len() {
                    let (which, acc) = &mut outcomes[(k + run) % Which::ALL.len()];
                    let Ok(list) = acc else { continue };
                    let what = format!("end-to-end {workers} / {connections} {}", which.name());
                    match measure(*which, &pools, rt, &plan(workers), proto) {
                        Ok(o) => {
                            log_run(&what, run, runs, &o);
                            list.push(o);
                        }
                        Err(e) => {
                            eprintln!("  {what}: {e}");
                            *acc = Err(e);
                        }
                    }
                }
            }
            cells.push(Cell {
                workers,
                connections,
                results: outcomes
                    .into_iter()
                    .map(|(w, r)| (w, r.map(|l| Summary::of(&l))))
                    .collect(),
            });
        }
    }

    let mut dedicated_rows = Vec::new();
    // (workers, summary) of the dedicated green-thread reference, for the
    // pool-overhead target.
    let mut dedicated_green = Vec::new();
    for workers in WORKERS {
        let mut lists = vec![Vec::new(); Runner::ALL.len()];
        for run in 0..runs {
            for (runner, list) in Runner::ALL.iter().zip(&mut lists) {
                let what = format!("dedicated {workers} {}", runner.label());
                match dedicated(backend, rt, &plan(workers), *runner) {
                    Ok(o) => {
                        log_run(&what, run, runs, &o);
                        list.push(o);
                    }
                    Err(e) => eprintln!("  {what}: {e}"),
                }
            }
        }
        for (runner, list) in Runner::ALL.iter().zip(lists) {
            let summary = Summary::of(&list);
            if matches!(runner, Runner::Green) && !list.is_empty() {
                dedicated_green.push((workers, summary));
            }
            dedicated_rows.push((
                format!("dedicated, {workers} {}", runner.label()),
                workers,
                summary,
            ));
        }
    }

    let mut benchmark_rows = Vec::new();
    if backend.is_redis() {
        for connections in CONNECTIONS {
            let list: Vec<RedisBenchmark> = (0..runs)
                .filter_map(|_| {
                    redis_benchmark(
                        backend.addr(),
                        connections,
                        settings.redis_benchmark_requests,
                    )
                })
                .collect();
            if let Some(first) = list.first() {
                eprintln!(
                    "  redis-benchmark -c {connections}: {} req/s",
                    fmt_rate(first.rate)
                );
                let m = |f: fn(&RedisBenchmark) -> f64| median(list.iter().map(f));
                benchmark_rows.push((
                    connections,
                    m(|b| b.rate),
                    Latency {
                        mean: m(|b| b.mean),
                        p50: m(|b| b.p50),
                        p99: m(|b| b.p99),
                        p999: f64::NAN,
                        max: m(|b| b.max),
                    },
                ));
            }
        }
    }

    let timeout_rows = checkout_timeout_cost(settings, backend);
    let mut section = section(settings, backend, &cells, &dedicated_rows, &benchmark_rows);
    timeout_section(&mut section, settings, &timeout_rows);
    (section, targets(&cells, &dedicated_green))
}

/// greenpool at 512 workers with its 30 s checkout timeout and without one,
/// interleaved: what a timed wait costs. (A runtime timer per wait used to
/// cost more than the rest of a contended checkout: may wakes its timer
/// thread for every timer cancelled before it fires. The pool now times its
/// waiters out with one watcher green thread instead; this keeps it honest.)
fn checkout_timeout_cost(settings: &Settings, backend: &Backend) -> Vec<(String, Summary)> {
    const WORKERS: usize = 512;
    let runs = settings.e2e_runs;
    let plan = Plan {
        workers: WORKERS,
        duration: settings.e2e_duration,
        timed: true,
        max_ops: MAX_OPS,
    };
    let mut rows = Vec::new();
    for connections in CONNECTIONS {
        let variants = [
            ("30 s checkout timeout", Some(CHECKOUT_TIMEOUT)),
            ("`no_checkout_timeout()`", None),
        ];
        let pools: Vec<_> = variants
            .iter()
            .map(|(_, t)| open_greenpool(backend.tcp(), connections, *t))
            .collect();
        let labels: Vec<String> = variants
            .iter()
            .map(|(label, _)| format!("greenpool {WORKERS} / {connections}, {label}"))
            .collect();
        let lists = alternate_runs(&plan, runs, backend, &pools, &labels);
        for ((label, _), list) in variants.iter().zip(lists) {
            rows.push((
                format!("{WORKERS} / {connections}, {label}"),
                Summary::of(&list),
            ));
        }
    }
    rows
}

/// `runs` rounds of the same greenpool workload over each of `pools` in turn
/// (interleaved, so that a noisy moment hits every variant alike); the
/// outcomes per pool, in `pools`' order.
fn alternate_runs(
    plan: &Plan,
    runs: usize,
    backend: &Backend,
    pools: &[greenpool::ConnectionPool<Tcp>],
    labels: &[String],
) -> Vec<Vec<Outcome>> {
    let mut lists = vec![Vec::new(); pools.len()];
    for run in 0..runs {
        for ((pool, list), what) in pools.iter().zip(&mut lists).zip(labels) {
            let outcome = run_blocking(Kind::Green, plan, |_| {
                let pool = pool.clone();
                let proto = backend.proto();
                move |rec: &mut Recorder| request(&pool, proto, rec)
            });
            match outcome {
                Ok(o) => {
                    log_run(what, run, runs, &o);
                    list.push(o);
                }
                Err(e) => eprintln!("  {what}: {e}"),
            }
        }
    }
    lists
}

fn timeout_section(s: &mut Section, settings: &Settings, rows: &[(String, Summary)]) {
    s.text(format!(
        "**What greenpool's checkout timeout costs.** The same greenpool workload at \
         512 workers, with the 30 s checkout timeout every pool above has, and with \
         `no_checkout_timeout()`, in alternating runs (median of {}). Waiting with a \
         timeout should cost next to nothing: waiters park without a runtime timer \
         and one watcher green thread per pool times them out (a may timer per wait \
         would wake may's timer thread every time a connection arrives first).",
        settings.e2e_runs
    ));
    let mut header = vec!["workers / connections", "requests/s", "CPU/req"];
    header.extend(LATENCY_HEADER);
    let mut t = Table::new(&header);
    for (what, sm) in rows {
        let mut row = vec![what.clone(), fmt_rate(sm.rate), fmt_ns(sm.cpu_per_op)];
        row.extend(latency_cells(sm.latency));
        t.row(row);
    }
    s.table(&t);
}

fn latency_cells(l: Option<Latency>) -> Vec<String> {
    let l = l.unwrap_or(Latency {
        mean: f64::NAN,
        p50: f64::NAN,
        p99: f64::NAN,
        p999: f64::NAN,
        max: f64::NAN,
    });
    vec![
        fmt_ns(l.mean),
        fmt_ns(l.p50),
        fmt_ns(l.p99),
        fmt_ns(l.p999),
        fmt_ns(l.max),
    ]
}

const LATENCY_HEADER: [&str; 5] = ["mean", "p50", "p99", "p99.9", "max"];

fn section(
    settings: &Settings,
    backend: &Backend,
    cells: &[Cell],
    dedicated: &[(String, usize, Summary)],
    benchmark: &[(usize, f64, Latency)],
) -> Section {
    let mut s = Section::new("2. End to end: PING over loopback");
    let server = if backend.is_redis() {
        "a redis-server the bench starts on 127.0.0.1"
    } else {
        "greenpool's embedded TestServer (redis-server is not installed; the \
         server shares the bench's process and may worker threads)"
    };
    s.text(format!(
        "W workers share N pooled connections to {server}. Every pool runs the same \
         hand-written exchange: write `PING\\r\\n`, read the reply (over may's \
         `TcpStream` for greenpool, std's for r2d2, tokio's for deadpool and bb8; \
         `TCP_NODELAY`, no I/O timeouts). Latency runs from asking the pool for a \
         connection to having the reply; every request is timed. Each figure is the \
         median of {} runs of {:.1} s. \"gp ÷\" is greenpool's requests/s divided \
         by that pool's. \"CPU/req\" is the CPU time (user and system, all threads) \
         the bench process used per request: the client's cost, whatever the server \
         and the machine let through. \"Slowest worker\": the fewest requests one \
         worker completed over the mean per worker (1.00: all got an equal share; \
         near 0: one starved).",
        settings.e2e_runs,
        settings.e2e_duration.as_secs_f64()
    ));
    for connections in CONNECTIONS {
        s.text(format!("**{connections} connections**"));
        let mut header = vec!["workers", "pool", "requests/s", "gp ÷", "CPU/req"];
        header.extend(LATENCY_HEADER);
        header.extend(["slowest worker", "errors"]);
        let mut t = Table::new(&header);
        for cell in cells.iter().filter(|c| c.connections == connections) {
            let gp = cell.get(Which::Greenpool).map(|s| s.rate);
            for (which, result) in &cell.results {
                let mut row = vec![cell.workers.to_string(), which.name().to_string()];
                match result {
                    Ok(sm) => {
                        row.push(fmt_rate(sm.rate));
                        row.push(if *which == Which::Greenpool {
                            "".into()
                        } else {
                            fmt_ratio(gp.unwrap_or(f64::NAN) / sm.rate)
                        });
                        row.push(fmt_ns(sm.cpu_per_op));
                        row.extend(latency_cells(sm.latency));
                        row.push(format!("{:.2}", sm.min_share));
                        row.push(group_thousands(sm.errors));
                    }
                    Err(e) => {
                        row.push(format!("failed: {e}"));
                        row.extend(vec!["–".to_string(); 9]);
                    }
                }
                t.row(row);
            }
        }
        s.table(&t);
    }

    s.text(
        "**References without a pool.** \"Dedicated\": W workers, each with its own \
         connection (W connections, no pool), the same exchange: the cost of the \
         network, the server and each runtime's I/O path, without any pool. \
         `redis-benchmark -c N -t ping_inline`: redis's own C client, N connections, \
         one event loop, in a process of its own (its latencies are whole \
         microseconds; it reports no p99.9, and its CPU is not counted).",
    );
    let mut header = vec!["reference", "connections", "requests/s", "CPU/req"];
    header.extend(LATENCY_HEADER);
    let mut t = Table::new(&header);
    for (what, workers, sm) in dedicated {
        let mut row = vec![
            what.clone(),
            workers.to_string(),
            fmt_rate(sm.rate),
            fmt_ns(sm.cpu_per_op),
        ];
        row.extend(latency_cells(sm.latency));
        t.row(row);
    }
    for (connections, rate, latency) in benchmark {
        let mut row = vec![
            format!(
                "`redis-benchmark -c {connections} -n {}`",
                settings.redis_benchmark_requests
            ),
            connections.to_string(),
            fmt_rate(*rate),
            "–".into(),
        ];
        row.extend(latency_cells(Some(*latency)));
        t.row(row);
    }
    if benchmark.is_empty() {
        s.text("(redis-benchmark did not run: no redis-server, or it is not installed.)");
    }
    s.table(&t);
    s
}

/// The end-to-end targets, for every cell: requests/s at least
/// every peer's with a worst latency no worse than the fairest peer's; and
/// the pool's overhead, against W green threads with a connection each,
/// under 5 %.
fn targets(cells: &[Cell], dedicated_green: &[(usize, Summary)]) -> Vec<Target> {
    const MAX_OVERHEAD: f64 = 0.05;
    let max = |s: &Summary| s.latency.map_or(f64::NAN, |l| l.max);
    let mut out = Vec::new();
    for cell in cells {
        let label = format!("{} / {}", cell.workers, cell.connections);
        let Some(gp) = cell.get(Which::Greenpool) else {
            out.push(Target::new(
                format!("end to end at {label}"),
                "greenpool failed",
                Some(false),
            ));
            continue;
        };
        let peers: Vec<(Which, &Summary)> = Which::PEERS
            .iter()
            .filter_map(|&w| cell.get(w).map(|s| (w, s)))
            .collect();
        let all_ran = peers.len() == Which::PEERS.len();
        let fastest = peers
            .iter()
            .max_by(|a, b| a.1.rate.total_cmp(&b.1.rate))
            .copied();
        let fairest = peers
            .iter()
            .min_by(|a, b| max(a.1).total_cmp(&max(b.1)))
            .copied();
        let describe = |(w, s): (Which, &Summary)| format!("{} {}", w.name(), fmt_rate(s.rate));
        out.push(Target::new(
            format!("end to end at {label}: requests/s ≥ every peer's"),
            format!(
                "greenpool {}; {}{}",
                fmt_rate(gp.rate),
                peers
                    .iter()
                    .map(|&p| describe(p))
                    .collect::<Vec<_>>()
                    .join(", "),
                fastest
                    .map(|(w, s)| format!(" ({} of {})", fmt_ratio(gp.rate / s.rate), w.name()))
                    .unwrap_or_default()
            ),
            Some(all_ran && peers.iter().all(|(_, s)| gp.rate >= s.rate)),
        ));
        out.push(Target::new(
            format!("end to end at {label}: worst latency no worse than the fairest peer's"),
            match fairest {
                Some((w, s)) => format!(
                    "greenpool max {}; the fairest peer (lowest max) is {} with {} \
                     (greenpool's is {} of it)",
                    fmt_ns(max(gp)),
                    w.name(),
                    fmt_ns(max(s)),
                    fmt_ratio(max(gp) / max(s))
                ),
                None => "no peer ran".into(),
            },
            fairest.map(|(_, s)| max(gp) <= max(s)),
        ));
        let dedicated = dedicated_green
            .iter()
            .find(|(w, _)| *w == cell.workers)
            .map(|(_, s)| s);
        let overhead = dedicated.map(|d| 1.0 - gp.rate / d.rate);
        out.push(Target::new(
            format!(
                "end to end at {label}: the pool's overhead (against {} green threads \
                 with a connection each) under 5 %",
                cell.workers
            ),
            match (dedicated, overhead) {
                (Some(d), Some(o)) => format!(
                    "pooled {} against dedicated {}: {:+.1} %",
                    fmt_rate(gp.rate),
                    fmt_rate(d.rate),
                    o * 100.0
                ),
                _ => "the dedicated reference did not run".into(),
            },
            overhead.map(|o| o < MAX_OVERHEAD),
        ));
    }
    out
}

/// Section 5: connect per request at 64 green threads, against the same
/// green threads through a pool, in the same runs.
pub fn no_pool(settings: &Settings, backend: &Backend) -> (Section, Vec<Target>) {
    const WORKERS: usize = 64;
    let runs = settings.e2e_runs;
    let pooled_plan = Plan {
        workers: WORKERS,
        duration: settings.e2e_duration,
        timed: true,
        max_ops: MAX_OPS,
    };
    let connect_plan = Plan {
        max_ops: MAX_CONNECTS,
        ..pooled_plan
    };
    let mut rows: Vec<(String, Vec<Outcome>)> = CONNECTIONS
        .iter()
        .map(|n| (format!("greenpool, {n} pooled connections"), Vec::new()))
        .collect();
    rows.push(("a new connection per request".into(), Vec::new()));
    let pools: Vec<_> = CONNECTIONS
        .iter()
        .map(|&n| open_greenpool(backend.tcp(), n, Some(CHECKOUT_TIMEOUT)))
        .collect();
    for run in 0..runs {
        for (i, (what, list)) in rows.iter_mut().enumerate() {
            let outcome = match pools.get(i) {
                Some(pool) => run_blocking(Kind::Green, &pooled_plan, |_| {
                    let pool = pool.clone();
                    let proto = backend.proto();
                    move |rec: &mut Recorder| request(&pool, proto, rec)
                }),
                None => connect_per_request(backend, &connect_plan),
            };
            match outcome {
                Ok(o) => {
                    log_run(&format!("no pool: {what}"), run, runs, &o);
                    list.push(o);
                }
                Err(e) => eprintln!("  no pool: {what}: {e}"),
            }
        }
    }
    let summaries: Vec<(String, Summary)> = rows
        .into_iter()
        .map(|(what, list)| (what, Summary::of(&list)))
        .collect();

    let mut s = Section::new("5. No pool: a connection per request");
    s.text(format!(
        "{WORKERS} green threads; each request either goes through a greenpool pool \
         or opens a new TCP connection, sends `PING`, reads the reply and closes it \
         (at most {} connections per run: each leaves a socket in TIME_WAIT). Median \
         of {runs} runs of {:.1} s, the three interleaved. \"Pool ÷\" is the pooled \
         requests/s divided by the connect-per-request figure: what the pool saves.",
        group_thousands(MAX_CONNECTS),
        settings.e2e_duration.as_secs_f64()
    ));
    let connect_rate = summaries.last().map_or(f64::NAN, |(_, s)| s.rate);
    let mut header = vec!["requests", "requests/s", "pool ÷", "CPU/req"];
    header.extend(LATENCY_HEADER);
    header.push("errors");
    let mut t = Table::new(&header);
    for (i, (what, sm)) in summaries.iter().enumerate() {
        let mut row = vec![what.clone(), fmt_rate(sm.rate)];
        row.push(if i < CONNECTIONS.len() {
            fmt_ratio(sm.rate / connect_rate)
        } else {
            "".into()
        });
        row.push(fmt_ns(sm.cpu_per_op));
        row.extend(latency_cells(sm.latency));
        row.push(group_thousands(sm.errors));
        t.row(row);
    }
    s.table(&t);
    (s, Vec::new())
}

/// Section 2b: what armed IO timeouts cost. greenpool at 64 workers over 8
/// connections, streams without read/write timeouts and with 5 s ones (they
/// never fire; each read and write that waits arms and disarms a timer), in
/// alternating runs. Run it on patched and unpatched may, with 1 and with 2
/// workers (`GREENPOOL_WORKERS`), to see what the IO-timer fix costs.
pub fn io_timeout_cost(settings: &Settings, backend: &Backend) -> Section {
    const WORKERS: usize = 64;
    const CONNS: usize = 8;
    let runs = settings.e2e_runs;
    let plan = Plan {
        workers: WORKERS,
        duration: settings.e2e_duration,
        timed: true,
        max_ops: MAX_OPS,
    };
    let variants = [
        ("no IO timeouts", None),
        ("5 s read and write timeouts", Some(Duration::from_secs(5))),
    ];
    let pools: Vec<_> = variants
        .iter()
        .map(|(_, t)| {
            let mut tcp = backend.tcp();
            tcp.io_timeout = *t;
            open_greenpool(tcp, CONNS, Some(CHECKOUT_TIMEOUT))
        })
        .collect();
    let labels: Vec<String> = variants
        .iter()
        .map(|(label, _)| format!("greenpool {WORKERS} / {CONNS}, {label}"))
        .collect();
    let lists = alternate_runs(&plan, runs, backend, &pools, &labels);
    let workers = greenpool::runtime::may::config().get_workers();
    let mut s = Section::new("2b. What armed IO timeouts cost");
    s.text(format!(
        "greenpool end to end at {WORKERS} workers over {CONNS} connections on {workers} \
         worker thread(s), with and without 5 s read and write timeouts on every stream \
         (they never fire: each read or write that has to wait arms a timer and disarms \
         it), in alternating runs (median of {runs}). BENCHMARKS.md's run uses the patched \
         may in `vendor/may`; the closing note of the change that added it compares the \
         same rows on unpatched may and on 1 and 2 workers."
    ));
    s.table(&variants_table(
        "streams",
        variants.iter().map(|(l, _)| *l),
        lists,
    ));
    s
}

/// Section 2c: what checks at checkout cost. greenpool at 64 workers over 8
/// connections to the same backend: nothing checked; the cheap peer check
/// (`has_broken` on the socket) on every checkout of an idle connection with
/// validation after the default idle time (what a manager with checks gets
/// by default); and a full validation (one more round trip) on every
/// checkout (`validate_after(ZERO)`), in alternating runs.
pub fn checkout_check_cost(settings: &Settings, backend: &Backend) -> Section {
    const WORKERS: usize = 64;
    const CONNS: usize = 8;
    let runs = settings.e2e_runs;
    let plan = Plan {
        workers: WORKERS,
        duration: settings.e2e_duration,
        timed: true,
        max_ops: MAX_OPS,
    };
    type Configure = fn(greenpool::Builder<Tcp>) -> greenpool::Builder<Tcp>;
    let variants: [(&str, Configure); 3] = [
        ("nothing checked (`no_validation`)", |b| b.no_validation()),
        (
            "peer check on each checkout, validation after the default idle time",
            |b| b,
        ),
        ("validation (a PING) on every checkout", |b| {
            b.validate_after(Duration::ZERO)
        }),
    ];
    let pools: Vec<_> = variants
        .iter()
        .map(|(_, configure)| {
            let mut tcp = backend.tcp();
            tcp.checks = Some(backend.proto());
            let builder = greenpool::ConnectionPool::builder()
                .size(CONNS)
                .checkout_timeout(CHECKOUT_TIMEOUT);
            let pool = configure(builder).build(tcp).expect("valid settings");
            pool.wait_ready(Duration::from_secs(10))
                .expect("greenpool opens its connections");
            pool
        })
        .collect();
    let labels: Vec<String> = variants
        .iter()
        .map(|(label, _)| format!("greenpool {WORKERS} / {CONNS}, {label}"))
        .collect();
    let lists = alternate_runs(&plan, runs, backend, &pools, &labels);
    let workers = greenpool::runtime::may::config().get_workers();
    let mut s = Section::new("2c. What checks at checkout cost");
    s.text(format!(
        "greenpool end to end at {WORKERS} workers over {CONNS} connections on {workers} \
         worker thread(s), with a manager whose `has_broken` asks the socket \
         (`runtime::net::peer_status`, one non-blocking `recv(MSG_PEEK)`) and whose \
         `validate` sends the benchmark's own request, in alternating runs (median of \
         {runs}). The validation runs in a green thread of its own; its caller waits \
         for it without a timer (the pool's deadline watcher enforces the deadline)."
    ));
    s.table(&variants_table(
        "checkout checks",
        variants.iter().map(|(l, _)| *l),
        lists,
    ));
    s
}

/// One row per variant of an alternating run: its label, requests/s,
/// CPU per request and the latency cells.
fn variants_table<'a>(
    first: &str,
    labels: impl Iterator<Item = &'a str>,
    lists: Vec<Vec<Outcome>>,
) -> Table {
    let mut header = vec![first, "requests/s", "CPU/req"];
    header.extend(LATENCY_HEADER);
    let mut t = Table::new(&header);
    for (label, list) in labels.zip(lists) {
        let sm = Summary::of(&list);
        let mut row = vec![label.to_string(), fmt_rate(sm.rate), fmt_ns(sm.cpu_per_op)];
        row.extend(latency_cells(sm.latency));
        t.row(row);
    }
    t
}
