//! How long and how often: the full run, or a quick smoke run with
//! `GREENPOOL_BENCH_QUICK=1`.

use std::time::Duration;

/// Set to `1` for a smoke run: every section, far shorter, fewer runs.
pub const QUICK_VAR: &str = "GREENPOOL_BENCH_QUICK";

#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    /// Section 1: length of one run, runs for the rate, runs timing each checkout.
    pub overhead_duration: Duration,
    pub overhead_runs: usize,
    pub overhead_timed_runs: usize,
    /// Sections 2 and 5: length of one run and runs per cell.
    pub e2e_duration: Duration,
    pub e2e_runs: usize,
    /// `redis-benchmark -n`: requests per run.
    pub redis_benchmark_requests: u64,
    /// Section 3: green threads (and tasks) waiting, idle pooled connections.
    pub waiters: usize,
    pub idle_connections: usize,
    /// Section 4: restarts per variant.
    pub recovery_runs: usize,
}

impl Settings {
    pub fn from_env() -> Settings {
        let quick = std::env::var(QUICK_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Settings {
                quick,
                overhead_duration: Duration::from_millis(100),
                overhead_runs: 1,
                overhead_timed_runs: 1,
                e2e_duration: Duration::from_millis(300),
                e2e_runs: 1,
                redis_benchmark_requests: 20_000,
                waiters: 10_000,
                idle_connections: 100,
                recovery_runs: 1,
            }
        } else {
            Settings {
                quick,
                overhead_duration: Duration::from_millis(500),
                overhead_runs: 5,
                overhead_timed_runs: 3,
                e2e_duration: Duration::from_secs(2),
                e2e_runs: 3,
                redis_benchmark_requests: 200_000,
                waiters: 100_000,
                idle_connections: 1_000,
                recovery_runs: 3,
            }
        }
    }
}
