//! Recording one run and summarising several: counts, latency percentiles,
//! medians, and how figures are printed.

use std::future::Future;
use std::time::{Duration, Instant};

/// What one worker measured in one run: operations, failures, and (in a
/// timed run) how long each operation's measured part took.
pub struct Recorder {
    ops: u64,
    errors: u64,
    /// The last operation failed.
    last_failed: bool,
    max_ops: u64,
    samples: Option<Vec<u64>>,
}

impl Recorder {
    /// A recorder that stops the worker after `max_ops` operations and keeps
    /// a latency sample per operation if `timed`.
    pub fn new(timed: bool, max_ops: u64) -> Self {
        Recorder {
            ops: 0,
            errors: 0,
            last_failed: false,
            max_ops,
            samples: timed.then(Vec::new),
        }
    }

    /// True once the worker has done its share of operations.
    pub fn is_full(&self) -> bool {
        self.ops >= self.max_ops
    }

    /// Run `f` as one operation; in a timed run, record how long it took.
    #[inline]
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        self.ops += 1;
        self.last_failed = false;
        match &mut self.samples {
            Some(samples) => {
                let start = Instant::now();
                let value = f();
                samples.push(nanos(start.elapsed()));
                value
            }
            None => f(),
        }
    }

    /// [`time`](Self::time) for a future: the clock starts before its first poll.
    #[inline]
    pub async fn time_async<T>(&mut self, fut: impl Future<Output = T>) -> T {
        self.ops += 1;
        self.last_failed = false;
        match &mut self.samples {
            Some(samples) => {
                let start = Instant::now();
                let value = fut.await;
                samples.push(nanos(start.elapsed()));
                value
            }
            None => fut.await,
        }
    }

    /// Count the current operation as failed.
    pub fn error(&mut self) {
        self.errors += 1;
        self.last_failed = true;
    }

    /// Forget the last operation's count: it ended after the stop signal,
    /// outside the measured window. (Its latency sample stays: it is a
    /// real wait, and an ordinary one, since no worker exits before every
    /// worker has stopped.)
    pub fn uncount_last(&mut self) {
        if self.ops > 0 {
            self.ops -= 1;
            if self.last_failed {
                self.errors -= 1;
                self.last_failed = false;
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Everything the workers of one run measured together.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// From the start signal until the last worker stopped.
    pub elapsed: Duration,
    /// CPU time the whole process used meanwhile (user and system).
    pub cpu: Duration,
    /// Operations that succeeded.
    pub ok: u64,
    pub errors: u64,
    /// The fewest operations one worker completed, over the mean: 1.0 when
    /// every worker got the same share, near 0 when one starved.
    pub min_share: f64,
    pub latency: Option<Latency>,
}

impl Outcome {
    pub fn collect(elapsed: Duration, cpu: Duration, recorders: Vec<Recorder>) -> Outcome {
        let workers = recorders.len().max(1) as f64;
        let ok_per_worker: Vec<u64> = recorders.iter().map(|r| r.ops - r.errors).collect();
        let ok: u64 = ok_per_worker.iter().sum();
        let errors = recorders.iter().map(|r| r.errors).sum();
        let mean = ok as f64 / workers;
        let min = ok_per_worker.iter().copied().min().unwrap_or(0) as f64;
        let min_share = if mean > 0.0 { min / mean } else { 0.0 };
        let mut samples: Vec<u64> = recorders
            .into_iter()
            .filter_map(|r| r.samples)
            .flatten()
            .collect();
        let latency = Latency::of(&mut samples);
        Outcome {
            elapsed,
            cpu,
            ok,
            errors,
            min_share,
            latency,
        }
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean wall-clock time per operation across all workers, in ns.
    pub fn ns_per_op(&self) -> f64 {
        1e9 / self.rate().max(1e-9)
    }

    /// CPU time the process spent per successful operation, in ns.
    pub fn cpu_per_op(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.ok.max(1) as f64
    }
}

/// Latency distribution of one run (or the field-wise median of several), in ns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// The distribution of `samples` (sorted in place); `None` if empty.
    pub fn of(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let pick = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
            samples[i - 1] as f64
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Latency {
            mean: sum as f64 / samples.len() as f64,
            p50: pick(0.50),
            p99: pick(0.99),
            p999: pick(0.999),
            max: samples[samples.len() - 1] as f64,
        })
    }

    /// Field by field, the median over runs.
    pub fn median(runs: &[Latency]) -> Option<Latency> {
        if runs.is_empty() {
            return None;
        }
        let field = |f: fn(&Latency) -> f64| median(runs.iter().map(f));
        Some(Latency {
            mean: field(|l| l.mean),
            p50: field(|l| l.p50),
            p99: field(|l| l.p99),
            p999: field(|l| l.p999),
            max: field(|l| l.max),
        })
    }
}

/// The median of several runs of one cell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Median successful operations per second.
    pub rate: f64,
    /// Median of each run's errors.
    pub errors: u64,
    pub min_share: f64,
    /// Median CPU time of the process per operation, in ns.
    pub cpu_per_op: f64,
    pub latency: Option<Latency>,
}

impl Summary {
    pub fn of(outcomes: &[Outcome]) -> Summary {
        let latencies: Vec<Latency> = outcomes.iter().filter_map(|o| o.latency).collect();
        Summary {
            rate: median(outcomes.iter().map(Outcome::rate)),
            errors: median(outcomes.iter().map(|o| o.errors as f64)) as u64,
            min_share: median(outcomes.iter().map(|o| o.min_share)),
            cpu_per_op: median(outcomes.iter().map(Outcome::cpu_per_op)),
            latency: Latency::median(&latencies),
        }
    }

    pub fn ns_per_op(&self) -> f64 {
        1e9 / self.rate.max(1e-9)
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// NaN for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A duration given in ns, with a unit that keeps 3 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        return "–".into();
    }
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if value < 10.0 && unit != "ns" {
        format!("{value:.2} {unit}")
    } else if value < 100.0 && unit != "ns" {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// A rate per second with thousands separators.
pub fn fmt_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() {
        return "–".into();
    }
    group_thousands(per_sec.round() as u64)
}

/// `1234567` as `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio such as `2.4×`.
pub fn fmt_ratio(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x >= 10.0 {
        format!("{x:.0}×")
    } else {
        format!("{x:.2}×")
    }
}

/// A byte count in KiB or MiB.
pub fn fmt_bytes(bytes: f64) -> String {
    if bytes.abs() < 1024.0 * 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    }
}
