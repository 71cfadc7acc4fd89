//! A Redis client program on the pool.
//!
//! Connects to `$REDIS_URL` (`redis://[[user]:password@]host[:port][/db]`,
//! default `redis://127.0.0.1:6379`) with `greenpool::redis::RedisManager`:
//! RESP over the runtime's TCP, `AUTH` and `SELECT` when the URL asks for
//! them, `PING` as keepalive and validation, and the server's own idle
//! `timeout` (read with `CONFIG GET timeout`) to time the keepalive.
//!
//! Then 200 green threads each `SET` and `GET` their own keys through
//! `retry` (the keys expire after 60 s, so nothing is left behind), and the
//! program prints what it did and the pool's state. With `--chaos`, half-way
//! through it runs `CLIENT KILL TYPE normal`, dropping every other client of
//! the server, pooled connections included: the pool replaces them and no
//! command fails. Use `--chaos` only against a server of your own.
//!
//! When the server cannot be reached it prints one line saying why (the pool's
//! error, which carries the connect error) and exits with status 1.
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! REDIS_URL=redis://127.0.0.1:6390 cargo run --release --example redis
//! ```

mod common;

use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool::redis::{RedisManager, RespError};
use greenpool::runtime::spawn;
use greenpool::{ConnectionPool, ErrorSet, Retry};

const HELP: &str = "\
redis: a Redis client on a greenpool pool. 200 green threads SET and GET their
own keys through retry (the keys expire after 60 s); prints what it did.

USAGE: REDIS_URL=redis://[[user]:password@]host[:port][/db] cargo run --release --example redis -- [OPTIONS]

REDIS_URL defaults to redis://127.0.0.1:6379.

OPTIONS:
  --threads N          green threads (default 200)
  --ops N              SET+GET pairs per green thread (default 50)
  --size N             connections in the pool (default 8)
  --connect-timeout S  how long to wait for the pool to connect (default 2)
  --chaos              half-way, CLIENT KILL TYPE normal: drops every other
                       client of the server. Only against a server of your own!
  -h, --help           this text

Exits 1 with a one-line error when the server cannot be reached.
Set RUST_LOG=info to see the pool's own log lines.";

/// How long the example's keys live.
const KEY_TTL_SECS: &str = "60";

struct Options {
    threads: usize,
    ops: usize,
    size: usize,
    connect_timeout: Duration,
    chaos: bool,
}

fn parse_args(flags: &mut common::Flags) -> Result<Options, String> {
    let mut o = Options {
        threads: 200,
        ops: 50,
        size: 8,
        connect_timeout: Duration::from_secs(2),
        chaos: false,
    };
    while let Some(a) = flags.next() {
        let mut value = |name: &str| flags.value::<u64>(name);
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--threads" => o.threads = value("--threads")?.max(1) as usize,
            "--ops" => o.ops = value("--ops")?.max(1) as usize,
            "--size" => o.size = value("--size")?.max(1) as usize,
            "--connect-timeout" => {
                o.connect_timeout = Duration::from_secs(value("--connect-timeout")?.max(1))
            }
            "--chaos" => o.chaos = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

#[derive(Default)]
struct Tally {
    sets: AtomicU64,
    gets: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

fn main() -> ExitCode {
    let opts = match common::options("redis", HELP, parse_args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let manager = match RedisManager::from_url(&url) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("redis: REDIS_URL: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = manager.addr().to_owned();

    // While connecting, only the final error is printed (one line, carrying
    // the connect error), unless RUST_LOG asks for more; the pool's warnings
    // are shown from then on.
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).build();
    let level = logger.filter();
    log::set_boxed_logger(Box::new(logger)).expect("the only logger");
    let quiet_start = std::env::var_os("RUST_LOG").is_none();
    log::set_max_level(if quiet_start {
        log::LevelFilter::Error
    } else {
        level
    });
    common::start_runtime();

    let pool = ConnectionPool::builder()
        .name("redis")
        .size(opts.size)
        .checkout_timeout(Duration::from_secs(3))
        .build(manager)
        .expect("valid pool settings");
    let started = Instant::now();
    if let Err(e) = pool.wait_ready(opts.connect_timeout) {
        eprintln!("redis: cannot use the Redis server at {addr}: {e}");
        return ExitCode::FAILURE;
    }
    log::set_max_level(level);
    let ready_in = started.elapsed();

    // What the server is.
    let (version, idle_timeout) = pool
        .with(|c| {
            let info = c.command(&["INFO", "server"])?;
            let version = info
                .as_str()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("redis_version:")))
                .unwrap_or("unknown")
                .trim()
                .to_owned();
            let timeout = match c.config_get("timeout") {
                Ok(Some(t)) if t == "0" => "never (timeout 0)".to_owned(),
                Ok(Some(t)) => format!("after {t} s; the pool keeps connections alive within that"),
                Ok(None) => "unknown".to_owned(),
                Err(RespError::Server(e)) => format!("unknown (CONFIG GET refused: {e})"),
                Err(e) => return Err(e),
            };
            Ok::<_, RespError>((version, timeout))
        })
        .unwrap_or_else(|e| (format!("unknown ({e})"), "unknown".to_owned()));
    println!(
        "connected to redis {version} at {}{}: {} connections in {ready_in:.1?}",
        addr,
        pool.manager()
            .selected_db()
            .map(|d| format!(" db {d}"))
            .unwrap_or_default(),
        opts.size
    );
    println!("the server closes idle connections: {idle_timeout}");

    // The work.
    // Retry a command whose connection broke while in use (CLIENT KILL, a
    // server restart, an idle close): the pool discards that connection and
    // the next attempt runs on another. Not a checkout timeout: then the
    // server is unreachable, and another attempt would only wait again. (The
    // default set, any io::Error in the chain, would retry it: the timeout
    // carries the last connect error as its source.) Each attempt may meet
    // another killed connection, hence one more attempt than the pool size.
    let broken_in_use = ErrorSet::kind(io::ErrorKind::ConnectionReset)
        .or_kind(io::ErrorKind::ConnectionAborted)
        .or_kind(io::ErrorKind::BrokenPipe)
        .or_kind(io::ErrorKind::UnexpectedEof);
    let policy = Retry::new()
        .name("redis command")
        .on(broken_in_use)
        .max_failures(opts.size as u32 + 2)
        .interval(Duration::from_millis(10))
        .retry_level(log::Level::Debug);
    let prefix = format!(
        "greenpool:example:{}:{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let tally = Arc::new(Tally::default());
    let total = (opts.threads * opts.ops) as u64;
    let kill = Arc::new(std::sync::OnceLock::<Result<i64, String>>::new());
    println!(
        "{} green threads x {} SET+GET pairs on keys {prefix}:* (they expire in {KEY_TTL_SECS} s){}",
        opts.threads,
        opts.ops,
        if opts.chaos {
            "; CLIENT KILL TYPE normal half-way"
        } else {
            ""
        }
    );
    let work_started = Instant::now();
    let workers: Vec<_> = (0..opts.threads)
        .map(|t| {
            let (pool, policy, tally, prefix, kill) = (
                pool.clone(),
                policy.clone(),
                Arc::clone(&tally),
                prefix.clone(),
                Arc::clone(&kill),
            );
            let chaos = opts.chaos;
            spawn(move || {
                for i in 0..opts.ops {
                    if tally.failed.load(Ordering::Relaxed) > 0 {
                        break; // something failed for good: stop the run
                    }
                    let key = format!("{prefix}:{t}:{i}");
                    let value = format!("value {t}/{i}");
                    let set = policy.run(|| {
                        pool.with(|c| {
                            match c.command(&["SET", &key, &value, "EX", KEY_TTL_SECS])? {
                                v if v.is_ok() => Ok(()),
                                v => Err(RespError::Protocol(format!("SET answered {v:?}"))),
                            }
                        })
                    });
                    let get = set.result.and_then(|()| {
                        tally.sets.fetch_add(1, Ordering::Relaxed);
                        let get = policy.run(|| pool.with(|c| c.get(&key)));
                        tally
                            .retried
                            .fetch_add(u64::from(get.attempts - 1), Ordering::Relaxed);
                        match get.result? {
                            Some(v) if v == value.as_bytes() => Ok(()),
                            other => Err(RespError::Protocol(format!(
                                "GET {key} read back {:?}",
                                other.map(|v| String::from_utf8_lossy(&v).into_owned())
                            ))),
                        }
                    });
                    tally
                        .retried
                        .fetch_add(u64::from(set.attempts - 1), Ordering::Relaxed);
                    match get {
                        Ok(()) => {
                            let n = tally.gets.fetch_add(1, Ordering::Relaxed) + 1;
                            if chaos && n == total / 2 {
                                let killed = pool
                                    .with(|c| c.client_kill_normal())
                                    .map_err(|e| e.to_string());
                                let _ = kill.set(killed);
                            }
                        }
                        Err(e) => {
                            log::error!("SET/GET {key} failed for good: {e}");
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        if let Err(e) = w.join() {
            eprintln!("redis: a worker died: {e}");
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let elapsed = work_started.elapsed();
    if let Some(k) = kill.get() {
        match k {
            Ok(n) => {
                println!("  !! CLIENT KILL TYPE normal closed {n} pooled connections half-way")
            }
            Err(e) => println!("  !! CLIENT KILL failed: {e}"),
        }
    }

    let s = pool.state();
    let c = s.counters;
    let sets = tally.sets.load(Ordering::Relaxed);
    let gets = tally.gets.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    println!();
    println!("summary ({elapsed:.2?})");
    println!("  SET ok                 {sets:>10}");
    println!("  GET ok, value matched  {gets:>10}");
    println!("  failed                 {failed:>10}   (0 expected)");
    println!(
        "  attempts retried       {:>10}",
        tally.retried.load(Ordering::Relaxed)
    );
    println!(
        "  throughput             {:>10.0} commands/s",
        (sets + gets) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  pool                   {:>10}   open of {} (idle {}, in use {}); {} created, {} discarded, {} keepalives",
        s.open,
        s.size,
        s.idle,
        s.in_use,
        c.created,
        c.discarded.total(),
        c.keepalives
    );
    let kill_failed = matches!(kill.get(), Some(Err(_)));
    pool.close();
    if failed == 0 && gets == total && !kill_failed {
        println!(
            "\nOK: {} commands from {} green threads over {} connections, 0 failed.",
            sets + gets,
            opts.threads,
            opts.size
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "\nFAILED: {failed} failed, {gets} of {total} SET+GET pairs ok (the run stops at the first failure)."
        );
        ExitCode::FAILURE
    }
}
