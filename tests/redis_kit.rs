//! Tests of the Redis backend (`greenpool::redis`) and its test server
//! (`greenpool::testing::redis`) against a real `redis-server` started by
//! each test on its own ephemeral port.
//! Every wait has a deadline; nothing sleeps and hopes.
//!
//! Without `redis-server` installed these tests print a loud SKIPPED
//! message and pass, except under CI (`$CI` set), where they fail.

mod common;

use common::wait_until;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use greenpool::redis::{RedisManager, RespConnection, RespError, Value};
use greenpool::runtime::net::ConnectOptions;
use greenpool::testing::redis::{redis_available, RedisServer};
use greenpool::{ConnectionPool, ErrorSet, Manager, Retry};

/// Generous bound for anything that should happen "at once"; only reached
/// when a test fails.
const WAIT: Duration = Duration::from_secs(10);

/// A fresh server, or `None` (after a loud message) if redis-server is not
/// installed and we are not under CI.
fn server() -> Option<RedisServer> {
    match RedisServer::start() {
        Ok(s) => Some(s),
        Err(e) if e.kind() == ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
            eprintln!("\n********\n*** SKIPPED (redis-server missing): {e}\n********\n");
            None
        }
        Err(e) => panic!("cannot start redis-server: {e}"),
    }
}

fn opts() -> ConnectOptions {
    ConnectOptions::new()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Some(Duration::from_secs(5)))
        .write_timeout(Some(Duration::from_secs(5)))
}

/// True if process `pid` exists as a redis-server, running or zombie
/// (a zombie keeps its `/proc/<pid>/stat` until it is reaped).
fn redis_process_exists(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let comm = stat
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map(|(comm, _)| comm);
    comm.is_some_and(|c| c.starts_with("redis-server"))
}

fn assert_io(err: &RespError) {
    assert!(
        matches!(err, RespError::Io(_)),
        "expected an io error, got {err}"
    );
    assert!(
        ErrorSet::io().matches(err),
        "ErrorSet::io() does not match {err}"
    );
}

#[test]
fn ping_set_get_round_trip() {
    let Some(s) = server() else { return };
    assert!(redis_available());
    let mut c = s.client().unwrap();
    c.ping().unwrap();
    c.set("greeting", "hello").unwrap();
    assert_eq!(c.get("greeting").unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(c.get("missing").unwrap(), None);

    // Binary-safe and big: every byte value, CRLFs included, 1 MiB.
    let blob: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    c.set(b"blob", &blob).unwrap();
    assert_eq!(c.get(b"blob").unwrap(), Some(blob));

    // Integers, arrays, nil elements.
    let n = c.command(&["RPUSH", "list", "a", "b", "c"]).unwrap();
    assert_eq!(n, Value::Int(3));
    let items = c.command(&["LRANGE", "list", "0", "-1"]).unwrap();
    let items: Vec<_> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(items, ["a", "b", "c"]);
    let mget = c.command(&["MGET", "greeting", "missing"]).unwrap();
    assert_eq!(
        mget,
        Value::Array(Some(vec![
            Value::Bulk(Some(b"hello".to_vec())),
            Value::Bulk(None)
        ]))
    );

    // An error reply is Err(Server), not an io error, and leaves the
    // connection usable.
    let err = c.command(&["INCR", "greeting"]).unwrap_err();
    assert!(
        matches!(&err, RespError::Server(m) if m.starts_with("ERR")),
        "{err}"
    );
    assert!(!ErrorSet::io().matches(&err));
    let err = c.command(&["NO-SUCH-COMMAND"]).unwrap_err();
    assert!(matches!(err, RespError::Server(_)), "{err}");
    // An empty command is refused before anything is sent.
    let err = c.command::<&str>(&[]).unwrap_err();
    assert!(matches!(err, RespError::Protocol(_)), "{err}");
    c.ping().unwrap();
    assert!(!c.has_broken());

    // Error replies nested in an array (EXEC) are values.
    assert!(c.command(&["MULTI"]).unwrap().is_ok());
    c.command(&["SET", "x", "1"]).unwrap();
    c.command(&["INCR", "greeting"]).unwrap();
    let exec = c.command(&["EXEC"]).unwrap().into_array().unwrap();
    assert!(exec[0].is_ok());
    assert!(exec[1].as_error().unwrap().starts_with("ERR"), "{exec:?}");

    assert!(c.client_id().unwrap() > 0);
}

#[test]
fn config_set_then_get() {
    let Some(s) = server() else { return };
    let mut c = s.client().unwrap();
    assert_eq!(c.config_get("timeout").unwrap().as_deref(), Some("0"));
    c.config_set("timeout", "1").unwrap();
    assert_eq!(c.config_get("timeout").unwrap().as_deref(), Some("1"));
    assert_eq!(c.config_get("no-such-parameter").unwrap(), None);
    let err = c.config_set("no-such-parameter", "1").unwrap_err();
    assert!(matches!(err, RespError::Server(_)), "{err}");
}

#[test]
fn client_kill_closes_other_connections() {
    let Some(s) = server() else { return };
    let mut killer = s.client().unwrap();
    let mut victim = s.client().unwrap();
    let mut peeked = s.client().unwrap();
    victim.ping().unwrap();
    peeked.ping().unwrap();
    assert!(!peeked.has_broken());
    assert_ne!(killer.client_id().unwrap(), victim.client_id().unwrap());

    assert!(killer.client_kill_normal().unwrap() >= 2);
    // CLIENT KILL skips the connection that sends it.
    killer.ping().unwrap();

    // The close is visible without sending anything (a non-blocking peek).
    assert!(
        wait_until(WAIT, || peeked.has_broken()),
        "has_broken never saw the server close the connection"
    );

    // The next command fails with an io error that the pool's default error
    // set matches, so a pool would discard the connection.
    let err = victim.ping().unwrap_err();
    assert_io(&err);
    assert!(victim.has_broken());
    // Afterwards the connection refuses commands instead of desyncing.
    let again = victim.ping().unwrap_err();
    assert_io(&again);
    assert_eq!(again.io_kind(), Some(ErrorKind::NotConnected), "{again}");
    assert!(again.to_string().contains("failed earlier"), "{again}");
}

#[test]
fn kill_refuses_and_restart_serves_the_same_port() {
    let Some(mut s) = server() else { return };
    let addr = s.addr();
    let first_pid = s.pid();
    let mut c = s.client().unwrap();
    c.set("k", "v").unwrap();

    s.kill().unwrap();
    assert!(!s.is_running());
    assert!(
        !redis_process_exists(first_pid),
        "killed process not reaped"
    );
    let e = RespConnection::connect(&addr.to_string(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert_io(&c.ping().unwrap_err());
    s.kill().unwrap(); // killing twice is fine

    s.restart().unwrap();
    assert!(s.is_running());
    assert_eq!(s.addr(), addr);
    assert_ne!(s.pid(), first_pid);
    let mut c = s.client().unwrap();
    c.ping().unwrap();
    assert_eq!(c.get("k").unwrap(), None, "a restarted server starts empty");

    // Restarting a running server works too; open connections are cut.
    let second_pid = s.pid();
    s.restart().unwrap();
    assert!(!redis_process_exists(second_pid));
    assert_io(&c.ping().unwrap_err());
    s.client().unwrap().ping().unwrap();
}

#[test]
fn redis_manager_in_a_pool() {
    let Some(s) = server() else { return };
    let pool = ConnectionPool::new(s.manager(), 4).unwrap();
    pool.wait_ready(WAIT).unwrap();

    // 100 PINGs from 20 green threads over 4 connections.
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            greenpool::runtime::spawn(move || {
                for _ in 0..5 {
                    pool.with(|c| c.ping()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = pool.state();
    assert_eq!(st.open, 4);
    assert_eq!(st.counters.created, 4);
    assert_eq!(st.counters.checkouts, 100);
    assert_eq!(st.counters.discarded.total(), 0, "{st:?}");

    // The server's idle timeout, as the pool asks for it.
    let mut c = pool.get().unwrap();
    assert_eq!(pool.manager().server_idle_timeout(&mut c), None);
    c.config_set("timeout", "1").unwrap();
    assert_eq!(
        pool.manager().server_idle_timeout(&mut c),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn pool_validation_hides_killed_connections() {
    let Some(s) = server() else { return };
    let pool = ConnectionPool::builder()
        .size(4)
        .validate_after(Duration::ZERO)
        .build(s.manager())
        .unwrap();
    pool.wait_ready(WAIT).unwrap();

    // The server closes every pooled connection behind the pool's back.
    assert!(s.client().unwrap().client_kill_normal().unwrap() >= 4);

    // The checkout checks find the dead ones; no caller sees one. Holding
    // all four at once makes the pool go through every idle one (it hands
    // out the most recently returned first).
    let mut held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    for c in &mut held {
        c.ping().unwrap();
    }
    drop(held);
    for _ in 0..20 {
        pool.with(|c| c.ping()).unwrap();
    }
    let st = pool.state();
    // Killed connections are found at checkout: by the cheap has_broken
    // (the server's FIN) or by validation.
    let d = st.counters.discarded;
    assert_eq!(d.closed + d.validation, 4, "{st:?}");
    assert_eq!(st.counters.discarded.error, 0, "{st:?}");
    assert_eq!(st.counters.created, 8, "{st:?}");
}

#[test]
fn retry_rides_out_killed_connections() {
    let Some(s) = server() else { return };
    let pool = ConnectionPool::builder()
        .size(4)
        .no_validation()
        .build(s.manager())
        .unwrap();
    pool.wait_ready(WAIT).unwrap();
    assert!(s.client().unwrap().client_kill_normal().unwrap() >= 4);

    // Each failed attempt's RespError::Io is in the pool's error set, so its
    // connection is discarded and the next attempt gets another one.
    let retry = Retry::new()
        .on(ErrorSet::io())
        .max_failures(10)
        .interval(Duration::from_millis(10));
    let first = retry.run(|| pool.with(|c| c.ping()));
    first.result.unwrap();
    // The first attempt always meets a killed connection.
    assert!(first.attempts >= 2, "{} attempts", first.attempts);
    let st = pool.state();
    assert_eq!(
        st.counters.discarded.error,
        u64::from(first.attempts - 1),
        "{st:?}"
    );
    for _ in 0..10 {
        retry.call(|| pool.with(|c| c.ping())).unwrap();
    }
}

#[test]
fn learnt_keepalive_beats_the_server_idle_timeout() {
    let Some(s) = server() else { return };
    s.client().unwrap().config_set("timeout", "1").unwrap();
    // No keepalive set: the pool learns it from CONFIG GET timeout. No
    // validation: only keepalive can save the idle connections.
    let pool = ConnectionPool::builder()
        .size(2)
        .no_validation()
        .build(s.manager())
        .unwrap();
    pool.wait_ready(WAIT).unwrap();

    // A bystander connection, idle from now on, like the pool's.
    let mut bystander = s.client().unwrap();
    bystander.ping().unwrap();
    assert!(
        wait_until(WAIT, || bystander.has_broken()),
        "the server never closed an idle connection"
    );

    for _ in 0..10 {
        pool.with(|c| c.ping()).unwrap();
    }
    let st = pool.state();
    assert!(st.counters.keepalives >= 2, "{st:?}");
    assert_eq!(st.counters.discarded.total(), 0, "{st:?}");
    assert_eq!(st.counters.created, 2, "{st:?}");
}

#[test]
fn manager_auth_and_select() {
    let Some(s) = server() else { return };
    let mut admin = s.client().unwrap();
    admin.set("where", "db0").unwrap();

    let mut db3 = s.manager().db(3).connect().unwrap();
    assert_eq!(db3.get("where").unwrap(), None);
    db3.set("where", "db3").unwrap();
    assert_eq!(admin.get("where").unwrap().as_deref(), Some(&b"db0"[..]));

    let err = s.manager().db(100_000).connect().unwrap_err();
    assert!(
        matches!(&err, RespError::Server(m) if m.contains("SELECT 100000")),
        "{err}"
    );

    admin.config_set("requirepass", "s3cret").unwrap();
    let err = s.manager().password("wrong").connect().unwrap_err();
    assert!(
        matches!(&err, RespError::Server(m) if m.contains("AUTH") && m.contains("password")),
        "{err}"
    );
    let mut anonymous = s.manager().connect().unwrap();
    let err = anonymous.ping().unwrap_err();
    assert!(
        matches!(&err, RespError::Server(m) if m.starts_with("NOAUTH")),
        "{err}"
    );
    s.manager()
        .password("s3cret")
        .connect()
        .unwrap()
        .ping()
        .unwrap();

    // A pool that cannot log in says why.
    let pool = ConnectionPool::builder()
        .size(1)
        .build(s.manager().password("wrong"))
        .unwrap();
    let err = pool.wait_ready(Duration::from_millis(300)).unwrap_err();
    assert!(err.to_string().contains("AUTH"), "{err}");
}

#[test]
fn servers_start_in_parallel_on_distinct_ports() {
    if server().is_none() {
        return;
    }
    let handles: Vec<_> = (0..4)
        .map(|_| greenpool::runtime::spawn(|| RedisServer::start().unwrap()))
        .collect();
    let mut servers: Vec<RedisServer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for s in &mut servers {
        assert!(s.is_running());
        s.client().unwrap().ping().unwrap();
    }
}

#[test]
fn drop_leaves_no_process_and_no_files() {
    let Some(s) = server() else { return };
    let pid = s.pid();
    let addr = s.addr();
    let dir = s.dir().to_path_buf();
    assert!(redis_process_exists(pid));
    assert!(dir.is_dir());
    assert!(!dir.starts_with(std::env::current_dir().unwrap()));

    drop(s);
    assert!(
        !redis_process_exists(pid),
        "redis-server {pid} survived drop"
    );
    assert!(!Path::new(&dir).exists(), "{dir:?} not removed");
    let e = RespConnection::connect(&addr.to_string(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn manager_reports_no_idle_timeout_when_config_is_unavailable() {
    let Some(s) = server() else { return };
    let m: RedisManager = s.manager();
    let mut c = m.connect().unwrap();
    assert_eq!(m.server_idle_timeout(&mut c), None);
    // CONFIG GET on a server that refuses it (here: not authenticated)
    // is an error reply: reported as None, and the connection stays usable.
    s.client().unwrap().config_set("requirepass", "pw").unwrap();
    let mut locked = m.connect().unwrap();
    assert_eq!(m.server_idle_timeout(&mut locked), None);
    assert!(!locked.has_broken());
    assert!(m.keepalive(&mut locked).is_err());
}

/// The value of `field` in `INFO section`, e.g. `connected_clients` in
/// `clients`, or `cmdstat_quit` in `commandstats` (absent until the first
/// call).
fn info(c: &mut RespConnection, section: &str, field: &str) -> Option<String> {
    let text = c.command(&["INFO", section]).unwrap();
    let text = text.as_str().expect("INFO answers a bulk string");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// How many times the server has run `QUIT`.
fn quits(admin: &mut RespConnection) -> u64 {
    info(admin, "commandstats", "cmdstat_quit").map_or(0, |v| {
        let calls = v.split(',').find_map(|kv| kv.strip_prefix("calls="));
        calls.and_then(|n| n.parse().ok()).expect("calls=N")
    })
}

/// True while the server lists a client with this id (`CLIENT LIST`).
fn client_listed(admin: &mut RespConnection, id: i64) -> bool {
    let list = admin.command(&["CLIENT", "LIST"]).unwrap();
    let want = format!("id={id}");
    list.as_str()
        .expect("CLIENT LIST answers a bulk string")
        .lines()
        .any(|l| l.split(' ').any(|kv| kv == want))
}

#[test]
fn permanent_connect_errors_are_told_from_passing_ones() {
    let Some(mut s) = server() else { return };
    let m = s.manager();
    let mut admin = s.client().unwrap();
    let permanent = |m: &RedisManager| {
        let err = m.connect().unwrap_err();
        assert!(m.is_permanent(&err), "not permanent: {err}");
        err
    };

    // The server has no password, the manager sends one.
    let err = permanent(&m.clone().password("pw"));
    assert!(err.to_string().contains("without any password"), "{err}");
    // A database the server does not have (16 by default).
    let err = permanent(&m.clone().db(16));
    assert!(
        err.to_string().contains("DB index is out of range"),
        "{err}"
    );

    admin.config_set("requirepass", "s3cret").unwrap();
    admin.auth("s3cret").unwrap();
    // A wrong password, and none at all where the server wants one (found
    // by SELECT; without a database to select a connect sends nothing).
    let err = permanent(&m.clone().password("wrong"));
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    let err = permanent(&m.clone().db(1));
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    let ok = m.clone().password("s3cret").db(1).connect().unwrap();
    drop(ok);

    // An ACL user, from a URL; a wrong password for it, and a user that may
    // not SELECT.
    let url = |user: &str, pw: &str| format!("redis://{user}:{pw}@{}/2", s.addr());
    admin
        .command(&["ACL", "SETUSER", "app", "on", ">apw", "~*", "&*", "+@all"])
        .unwrap();
    let app = RedisManager::from_url(&url("app", "apw")).unwrap();
    let mut c = app.connect().unwrap();
    assert_eq!(c.command(&["ACL", "WHOAMI"]).unwrap().as_str(), Some("app"));
    c.set("k", "in db 2").unwrap();
    assert_eq!(admin.get("k").unwrap(), None, "SELECT 2 was not sent");
    let err = permanent(&RedisManager::from_url(&url("app", "nope")).unwrap());
    assert!(err.to_string().contains("AUTH as \"app\""), "{err}");
    admin
        .command(&["ACL", "SETUSER", "ro", "on", ">rpw", "+ping"])
        .unwrap();
    let err = permanent(&RedisManager::from_url(&url("ro", "rpw")).unwrap());
    assert!(err.to_string().contains("NOPERM"), "{err}");

    // A server that is down is worth waiting for.
    s.kill().unwrap();
    let err = app.connect().unwrap_err();
    assert_io(&err);
    assert!(!app.is_permanent(&err), "{err}");
    // So is one that is back.
    s.restart().unwrap();
    m.connect().unwrap().ping().unwrap();
}

#[test]
fn close_says_quit_and_the_server_lets_go() {
    let Some(s) = server() else { return };
    let m = s.manager();
    let mut admin = s.client().unwrap();
    assert_eq!(quits(&mut admin), 0);

    let mut c = m.connect().unwrap();
    let id = c.client_id().unwrap();
    assert!(client_listed(&mut admin, id));
    m.close(c);
    assert!(
        wait_until(WAIT, || quits(&mut admin) == 1),
        "the server never saw QUIT"
    );
    assert!(wait_until(WAIT, || !client_listed(&mut admin, id)));

    // A plain drop says nothing: the count above is close's doing.
    let mut c = m.connect().unwrap();
    let id = c.client_id().unwrap();
    drop(c);
    assert!(wait_until(WAIT, || !client_listed(&mut admin, id)));
    assert_eq!(quits(&mut admin), 1);

    // A connection the server has closed gets no QUIT.
    let mut victim = m.connect().unwrap();
    let id = victim.client_id().unwrap().to_string();
    admin.command(&["CLIENT", "KILL", "ID", &id]).unwrap();
    assert!(wait_until(WAIT, || victim.has_broken()));
    assert!(!victim.quit().unwrap());
    assert_eq!(quits(&mut admin), 1);
}

#[test]
fn close_never_waits_on_a_peer_that_does_not_read() {
    // A "server" that accepts and never reads: the client's send buffer and
    // the server's receive buffer fill up, as with a Redis that hangs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let c = RespConnection::connect(&addr, &opts()).unwrap();
    let (_server_side, _) = listener.accept().unwrap();
    let mut raw = c.stream().inner();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    loop {
        match std::io::Write::write(&mut raw, &chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the socket: {e}"),
        }
        assert!(sent < 1 << 30, "the socket took 1 GiB without blocking");
    }
    let started = std::time::Instant::now();
    let err = c.quit().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Through the manager, too: close returns at once (and only logs).
    let c = RespConnection::connect(&addr, &opts()).unwrap();
    let (_server_side2, _) = listener.accept().unwrap();
    let mut raw = c.stream().inner();
    while std::io::Write::write(&mut raw, &chunk).is_ok() {}
    let started = std::time::Instant::now();
    RedisManager::new(addr).close(c);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn has_broken_sees_client_kill_and_unread_bytes_without_blocking() {
    let Some(s) = server() else { return };
    let m = s.manager();
    let mut admin = s.client().unwrap();
    let mut c = m.connect().unwrap();
    c.ping().unwrap();
    assert!(!m.has_broken(&mut c));

    let id = c.client_id().unwrap().to_string();
    assert_eq!(
        admin.command(&["CLIENT", "KILL", "ID", &id]).unwrap(),
        Value::Int(1)
    );
    assert!(
        wait_until(WAIT, || m.has_broken(&mut c)),
        "has_broken never saw CLIENT KILL"
    );

    // A reply nobody asked for (a command written past the client) leaves
    // the connection out of step: broken too.
    let mut c = m.connect().unwrap();
    let mut raw = c.stream().inner();
    std::io::Write::write_all(&mut raw, b"*1\r\n$4\r\nPING\r\n").unwrap();
    assert!(
        wait_until(WAIT, || m.has_broken(&mut c)),
        "has_broken never saw the unread +PONG"
    );
    admin.ping().unwrap();
}

#[test]
fn a_pool_with_a_wrong_password_fails_checkouts_at_once() {
    let Some(s) = server() else { return };
    s.client()
        .unwrap()
        .config_set("requirepass", "s3cret")
        .unwrap();
    let pool = ConnectionPool::builder()
        .size(2)
        .checkout_timeout(Duration::from_secs(20))
        .build(s.manager().password("wrong"))
        .unwrap();
    let started = std::time::Instant::now();
    let err = pool.get().map(drop).unwrap_err();
    // Not the whole checkout timeout: the manager says WRONGPASS will not
    // go away by trying again.
    assert!(started.elapsed() < WAIT, "{:?}: {err}", started.elapsed());
    assert!(
        matches!(
            err,
            greenpool::Error::Unavailable {
                permanent: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
}

#[test]
fn the_pool_says_quit_for_every_connection_it_closes() {
    let Some(s) = server() else { return };
    let mut admin = s.client().unwrap();
    let pool = ConnectionPool::new(s.manager(), 3).unwrap();
    pool.wait_ready(WAIT).unwrap();
    assert_eq!(quits(&mut admin), 0);

    // A discarded connection says goodbye (its replacement opens meanwhile).
    let mut c = pool.get().unwrap();
    let id = c.client_id().unwrap();
    c.discard();
    assert!(
        wait_until(WAIT, || quits(&mut admin) == 1),
        "no QUIT for a discarded connection"
    );
    assert!(wait_until(WAIT, || !client_listed(&mut admin, id)));
    pool.wait_ready(WAIT).unwrap();

    // Closing the pool: one QUIT per open connection.
    pool.close();
    assert!(
        wait_until(WAIT, || quits(&mut admin) == 4),
        "{} QUITs after closing a pool of 3 (1 before)",
        quits(&mut admin)
    );
}
