//! `stale.rs`'s table against a real redis-server (started by each run on a
//! free loopback port): after the server's idle timeout, a `CLIENT KILL` of
//! every connection, and a restart while idle, a burst of requests on a full
//! pool sees no failure with the defaults, with or without retry; the
//! negative control (keepalive and validation off) fails once per dead
//! connection. Run with `--nocapture` for the table.
//!
//! Without redis-server installed these tests say so loudly and pass, unless
//! `CI` is set (CI always installs it), where they fail.

mod common;

use common::redis;

use std::time::Duration;

use common::wait_until;
use greenpool::redis::{RedisManager, RespConnection, Value};
use greenpool::runtime::sleep;
use greenpool::{Builder, ConnectionPool};

const SIZE: usize = 16;
const BURST: usize = 64;
const LONG: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Defaults,
    DefaultsWithRetry,
    NoKeepalive,
    NothingOn,
}

const SETUPS: [Setup; 4] = [
    Setup::Defaults,
    Setup::DefaultsWithRetry,
    Setup::NoKeepalive,
    Setup::NothingOn,
];

impl Setup {
    fn builder(self) -> Builder<RedisManager> {
        let b = ConnectionPool::builder().size(SIZE);
        match self {
            Setup::Defaults | Setup::DefaultsWithRetry => b,
            Setup::NoKeepalive => b.no_keepalive(),
            Setup::NothingOn => b.no_keepalive().no_validation(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `timeout 1` set before the pool starts (so the defaults can learn
    /// it), then 2.5 s idle.
    IdleTimeout,
    /// `CLIENT KILL TYPE normal` while idle.
    KillAll,
    /// `SIGKILL` and a restart while idle.
    Restart,
}

/// Normal clients connected, the asking one included.
fn connected_clients(admin: &mut RespConnection) -> usize {
    let info = match admin.command(&["INFO", "clients"]).unwrap() {
        Value::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
        v => panic!("INFO clients: {v:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
}

/// Failures of the burst after `fault`, or `None` without redis-server.
fn run(fault: Fault, setup: Setup) -> Option<usize> {
    let mut server = redis()?;
    if let Fault::IdleTimeout = fault {
        server.client().unwrap().config_set("timeout", "1").unwrap();
    }
    let pool = setup.builder().build(server.manager()).unwrap();
    pool.wait_ready(LONG).unwrap();
    match fault {
        // The scenario is an idle spell; nothing to wait for but time.
        Fault::IdleTimeout => sleep(Duration::from_millis(2500)),
        Fault::KillAll => {
            let mut admin = server.client().unwrap();
            assert_eq!(admin.client_kill_normal().unwrap(), SIZE as i64);
            assert!(wait_until(LONG, || connected_clients(&mut admin) == 1));
        }
        Fault::Restart => server.restart().unwrap(),
    }
    let failures = match setup {
        Setup::DefaultsWithRetry => {
            common::burst(&pool, BURST, BURST, |p: &ConnectionPool<RedisManager>| {
                p.retry(|c| c.ping())
            })
        }
        _ => common::burst(&pool, BURST, BURST, |p: &ConnectionPool<RedisManager>| {
            p.with(|c| c.ping())
        }),
    };
    let s = pool.state();
    eprintln!(
        "| redis | {fault:?} | {setup:?} | {failures} | {:?}",
        s.counters.discarded
    );
    Some(failures)
}

/// Every setup of the table at once (one redis-server each).
fn check(fault: Fault) {
    let results: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = SETUPS
            .iter()
            .map(|&setup| s.spawn(move || (setup, run(fault, setup))))
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (setup, failures) in results {
        let Some(failures) = failures else { return };
        if setup == Setup::NothingOn {
            assert_eq!(failures, SIZE, "{fault:?}: the negative control");
        } else {
            assert_eq!(failures, 0, "{fault:?} with {setup:?}");
        }
    }
}

#[test]
fn redis_no_stale_connection_after_the_servers_idle_timeout() {
    check(Fault::IdleTimeout);
}

#[test]
fn redis_no_stale_connection_after_client_kill() {
    check(Fault::KillAll);
}

#[test]
fn redis_no_stale_connection_after_a_restart_while_idle() {
    check(Fault::Restart);
}
