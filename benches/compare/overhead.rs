//! Section 1: what the pool itself costs. The "connection" is a counter, so
//! a get+return is nothing but the pool's bookkeeping and, when the pool is
//! empty, the hand-off from the worker giving a connection back to the one
//! waiting for it.

use std::hint::black_box;

use tokio::runtime::Runtime;

use crate::drive::{run_blocking, run_tasks, Kind, Plan, Step};
use crate::pools::{AsyncPool, BlockingPool, Counter, Pools, Which};
use crate::report::{Section, Table, Target};
use crate::settings::Settings;
use crate::stats::{fmt_ns, fmt_ratio, Outcome, Recorder, Summary};

/// The bound on an uncontended get+return.
const UNCONTENDED_TARGET_NS: u32 = 60;
/// Operations in one run, at most (a bound; runs end on time first).
const MAX_OPS: u64 = 400_000_000;

/// What a worker does between getting a connection and giving it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Nothing: give it straight back.
    Nothing,
    /// Yield to the scheduler once, as real work would at its first I/O.
    Yield,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    workers: usize,
    connections: usize,
    hold: Hold,
}

impl Cell {
    fn label(&self) -> String {
        let hold = match self.hold {
            Hold::Nothing => "returned at once",
            Hold::Yield => "held across a yield",
        };
        format!(
            "{} / {}, {hold}",
            crate::stats::group_thousands(self.workers as u64),
            self.connections
        )
    }

    fn contended(&self) -> bool {
        self.workers > self.connections
    }
}

const CELLS: [Cell; 5] = [
    Cell {
        workers: 1,
        connections: 1,
        hold: Hold::Nothing,
    },
    Cell {
        workers: 64,
        connections: 8,
        hold: Hold::Nothing,
    },
    Cell {
        workers: 64,
        connections: 8,
        hold: Hold::Yield,
    },
    Cell {
        workers: 10_000,
        connections: 16,
        hold: Hold::Nothing,
    },
    Cell {
        workers: 10_000,
        connections: 16,
        hold: Hold::Yield,
    },
];

/// One get+return by a blocking worker (greenpool, r2d2).
fn get_return<P: BlockingPool<Conn = u64>>(pool: &P, hold: Hold, rec: &mut Recorder) {
    match rec.time(|| pool.checkout()) {
        Ok(mut conn) => {
            *conn = black_box(*conn + 1);
            if hold == Hold::Yield {
                // A green thread yields to its scheduler, an OS thread to the kernel's.
                greenpool::runtime::yield_now();
            }
        }
        Err(_) => rec.error(),
    }
}

/// One get+return by a tokio task (deadpool, bb8).
struct GetReturn<P> {
    pool: P,
    hold: Hold,
}

impl<P: AsyncPool<Conn = u64>> Step for GetReturn<P> {
    async fn step(&mut self, rec: &mut Recorder) {
        match rec.time_async(self.pool.checkout()).await {
            Ok(mut conn) => {
                *conn = black_box(*conn + 1);
                if self.hold == Hold::Yield {
                    tokio::task::yield_now().await;
                }
            }
            Err(_) => rec.error(),
        }
    }
}

fn measure(
    which: Which,
    pools: &Pools<Counter>,
    rt: &Runtime,
    plan: &Plan,
    hold: Hold,
) -> Result<Outcome, String> {
    match which {
        Which::Greenpool => run_blocking(Kind::Green, plan, |_| {
            let pool = pools.greenpool.clone();
            move |rec: &mut Recorder| get_return(&pool, hold, rec)
        }),
        Which::R2d2 => run_blocking(Kind::Os, plan, |_| {
            let pool = pools.r2d2.clone();
            move |rec: &mut Recorder| get_return(&pool, hold, rec)
        }),
        Which::Deadpool => run_tasks(rt, plan, |_| GetReturn {
            pool: pools.deadpool.clone(),
            hold,
        }),
        Which::Bb8 => run_tasks(rt, plan, |_| GetReturn {
            pool: pools.bb8.clone(),
            hold,
        }),
    }
}

/// Rate runs and timed runs of one cell, per pool.
struct CellResult {
    cell: Cell,
    /// Per pool: the summary of its rate runs and of its timed runs, or why
    /// it could not run.
    rates: Vec<(Which, Result<Summary, String>)>,
    waits: Vec<(Which, Result<Summary, String>)>,
}

impl CellResult {
    fn rate(&self, which: Which) -> Option<&Summary> {
        self.rates
            .iter()
            .find(|(w, _)| *w == which)
            .and_then(|(_, r)| r.as_ref().ok())
    }
}

/// Runs `runs` rounds; each round runs every pool once, starting with a
/// different one each time so no pool always goes first.
fn rounds(
    cell: &Cell,
    pools: &Pools<Counter>,
    rt: &Runtime,
    plan: Plan,
    runs: usize,
) -> Vec<(Which, Result<Summary, String>)> {
    let mut outcomes: Vec<(Which, Result<Vec<Outcome>, String>)> =
        Which::ALL.iter().map(|&w| (w, Ok(Vec::new()))).collect();
    for run in 0..runs {
        for k in 0..outcomes.len() {
            let (which, acc) = &mut outcomes[(k + run) % Which::ALL.len()];
            let Ok(list) = acc else { continue };
            match measure(*which, pools, rt, &plan, cell.hold) {
                Ok(o) => {
                    eprintln!(
                        "  overhead {} {:<9} run {}/{runs}{}: {} per op{}",
                        cell.label(),
                        which.name(),
                        run + 1,
                        if plan.timed { " (timed)" } else { "" },
                        fmt_ns(o.ns_per_op()),
                        o.latency
                            .map(|l| format!(", wait p99 {} max {}", fmt_ns(l.p99), fmt_ns(l.max)))
                            .unwrap_or_default()
                    );
                    list.push(o);
                }
                Err(e) => {
                    eprintln!("  overhead {} {}: {e}", cell.label(), which.name());
                    *acc = Err(e);
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|(w, r)| (w, r.map(|list| Summary::of(&list))))
        .collect()
}

pub fn run(settings: &Settings, rt: &Runtime) -> (Section, Vec<Target>) {
    let mut results = Vec::new();
    for cell in CELLS {
        let pools = Pools::open(rt, Counter, cell.connections);
        let plan = Plan {
            workers: cell.workers,
            duration: settings.overhead_duration,
            timed: false,
            max_ops: MAX_OPS,
        };
        let rates = rounds(&cell, &pools, rt, plan, settings.overhead_runs);
        let waits = if cell.contended() {
            let timed = Plan {
                timed: true,
                ..plan
            };
            rounds(&cell, &pools, rt, timed, settings.overhead_timed_runs)
        } else {
            Vec::new()
        };
        results.push(CellResult { cell, rates, waits });
    }
    (section(settings, &results), targets(&results))
}

fn section(settings: &Settings, results: &[CellResult]) -> Section {
    let mut s = Section::new("1. Pool overhead, no I/O");
    s.text(format!(
        "The pooled \"connection\" is a counter: a get+return is the pool's own \
         bookkeeping, plus the hand-off to a waiting worker when the pool is empty. \
         Each figure is the median of {} runs of {:.1} s: wall-clock time divided by \
         the get+returns all workers completed together within it (lower is better; \
         an operation that ends after the stop signal is not counted, and the time \
         the workers take to wind down is not either). In \
         brackets: greenpool's throughput divided by that pool's (above 1 = greenpool \
         is faster). \"Held across a yield\": the worker yields to its scheduler once \
         while it holds the connection (`greenpool::runtime::yield_now`, \
         `tokio::task::yield_now`, `std::thread::yield_now`), as real work does at its \
         first I/O; without it a green thread or a task never gives up its worker \
         thread while it holds a connection, so on 2 worker threads the pool is never \
         empty and nobody waits.",
        settings.overhead_runs,
        settings.overhead_duration.as_secs_f64()
    ));
    let mut header = vec!["workers / connections"];
    header.extend(Which::ALL.iter().map(|w| w.name()));
    let mut t = Table::new(&header);
    for r in results {
        let gp = r.rate(Which::Greenpool).map(|s| s.rate);
        let mut row = vec![r.cell.label()];
        for (which, summary) in &r.rates {
            row.push(match summary {
                Ok(sm) if *which == Which::Greenpool => fmt_ns(sm.ns_per_op()),
                Ok(sm) => format!(
                    "{} ({})",
                    fmt_ns(sm.ns_per_op()),
                    fmt_ratio(gp.unwrap_or(f64::NAN) / sm.rate)
                ),
                Err(_) => "could not run (see below)".into(),
            });
        }
        t.row(row);
    }
    s.table(&t);

    s.text(format!(
        "**Checkout wait** in the contended cells: the time from asking the pool \
         for a connection to holding one, every checkout timed (median of {} \
         separate runs, so the clock reads do not slow the figures above). \
         \"Slowest worker\" is the fewest get+returns one worker completed, divided \
         by the mean per worker: 1.00 means every worker got an equal share, 0 \
         means one got nothing in the whole run.",
        settings.overhead_timed_runs
    ));
    let mut t = Table::new(&[
        "workers / connections",
        "pool",
        "p50",
        "p99",
        "max",
        "slowest worker",
    ]);
    for r in results.iter().filter(|r| !r.waits.is_empty()) {
        for (which, summary) in &r.waits {
            let cells = match summary {
                Ok(sm) => {
                    let l = sm.latency.unwrap_or_default();
                    vec![
                        fmt_ns(l.p50),
                        fmt_ns(l.p99),
                        fmt_ns(l.max),
                        format!("{:.2}", sm.min_share),
                    ]
                }
                Err(_) => vec!["–".into(); 4],
            };
            let mut row = vec![r.cell.label(), which.name().into()];
            row.extend(cells);
            t.row(row);
        }
    }
    s.table(&t);

    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.rates.iter().filter_map(move |(w, res)| {
                res.as_ref()
                    .err()
                    .map(|e| format!("- {} with {}: {e}", w.name(), r.cell.label()))
            })
        })
        .collect();
    if !failures.is_empty() {
        s.text(format!("Could not run:\n\n{}", failures.join("\n")));
    }
    s.text(
        "r2d2's workers are OS threads with 128 KiB stacks (10,000 of them is possible \
         here but is not how anyone would use r2d2: every waiting thread costs a \
         kernel thread, and every hand-off is a futex wake-up and a context switch).",
    );
    s
}

fn targets(results: &[CellResult]) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(r) = results.iter().find(|r| r.cell.workers == 1) {
        let gp = r.rate(Which::Greenpool).map(Summary::ns_per_op);
        let peers: Vec<String> = Which::PEERS
            .iter()
            .filter_map(|&w| {
                r.rate(w)
                    .map(|s| format!("{} {}", w.name(), fmt_ns(s.ns_per_op())))
            })
            .collect();
        out.push(Target::new(
            format!(
                "uncontended get+return under {UNCONTENDED_TARGET_NS} ns \
                 (1 worker, 1 connection)"
            ),
            format!(
                "greenpool {}; {}",
                gp.map(fmt_ns).unwrap_or_else(|| "–".into()),
                peers.join(", ")
            ),
            gp.map(|ns| ns < UNCONTENDED_TARGET_NS as f64),
        ));
    }
    for r in results.iter().filter(|r| r.cell.contended()) {
        let gp = r.rate(Which::Greenpool).map(|s| s.rate);
        let ratios: Vec<(Which, Option<f64>)> = Which::PEERS
            .iter()
            .map(|&w| (w, gp.zip(r.rate(w).map(|s| s.rate)).map(|(g, p)| g / p)))
            .collect();
        let measured = ratios
            .iter()
            .map(|(w, x)| format!("{} {}", fmt_ratio(x.unwrap_or(f64::NAN)), w.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let held = ratios
            .iter()
            .map(|(_, x)| x.map(|x| x >= 2.0))
            .collect::<Option<Vec<bool>>>()
            .map(|v| v.into_iter().all(|b| b));
        out.push(Target::new(
            format!(
                "≥ 2× every peer's get+return throughput at {}",
                r.cell.label()
            ),
            format!("greenpool's throughput is {measured}"),
            held,
        ));
    }
    out
}
