//! The pooled "connection" does not have to be a socket.
//!
//! Like geventconnpool's AWS example, a connection here is a *session
//! handle*: an authenticated session token plus the table it works on, made
//! by `new_connection` (log in, then check the table exists). Logging in is
//! slow, so sessions are worth pooling; and the service expires a session
//! after a number of calls or after a time, rejecting it with the typed error
//! [`SessionExpired`].
//!
//! The service is fake and in-process (a struct behind an `Arc`, its state
//! behind the runtime's `Mutex`, each call taking a little time as a network
//! call would), but the pool is used exactly as with a real one:
//!
//! - `discard_on(ErrorSet::of::<SessionExpired>())`: a call that fails with
//!   `SessionExpired` discards that session, and the pool logs in again in
//!   the background;
//! - `Retry::new().on(ErrorSet::of::<SessionExpired>())`: the call runs
//!   again on another session, so callers never see the expiry;
//! - any other error (here: an invalid key) is returned as it is, and the
//!   session stays in the pool.
//!
//! The program prints a summary and checks its books: every expiry the
//! service reported was retried once and cost exactly one session. It exits
//! with status 1 on any failure.
//!
//! ```text
//! cargo run --release --example non_socket
//! ```

mod common;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool::runtime::sync::Mutex;
use greenpool::runtime::{sleep, spawn};
use greenpool::{ConnectionPool, ErrorSet, Manager, Retry};

const HELP: &str = "\
non_socket: a pool of authenticated sessions (not sockets) to an in-process
fake table service that expires sessions; callers never see an expiry.

USAGE: cargo run --release --example non_socket -- [OPTIONS]

OPTIONS:
  --threads N       green threads making calls (default 300)
  --calls N         calls per green thread (default 40)
  --size N          sessions in the pool (default 8)
  --max-uses N      the service expires a session after N calls (default 100)
  --ttl-ms MS       ... or after MS milliseconds (default 500)
  -h, --help        this text

Set RUST_LOG=debug to see every discard and retry.";

const TABLE: &str = "users";
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG";

// ---------------------------------------------------------------------------
// The fake service and its errors.
// ---------------------------------------------------------------------------

/// Why a session stopped being valid.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    Uses(u32),
    Age(Duration),
}

/// The service rejected a call because its session token has expired. This
/// is the error the pool is told to treat as "connection broken".
#[derive(Debug, Clone)]
pub struct SessionExpired {
    token: u64,
    why: Expiry,
}

impl fmt::Display for SessionExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Expiry::Uses(n) => write!(
                f,
                "session {} expired: used {n} times, the limit",
                self.token
            ),
            Expiry::Age(d) => write!(f, "session {} expired: older than {d:?}", self.token),
        }
    }
}

impl StdError for SessionExpired {}

/// Everything a call can fail with.
#[derive(Debug)]
enum TableError {
    /// The session expired; log in again.
    Expired(SessionExpired),
    /// Wrong access key or secret.
    AccessDenied,
    /// The table does not exist.
    NoSuchTable(String),
    /// The request itself is wrong (the caller's mistake, not the session's).
    InvalidRequest(String),
    /// No session could be checked out of the pool.
    Pool(greenpool::Error),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Expired(e) => write!(f, "{e}"),
            TableError::AccessDenied => {
                f.write_str("access denied: check the access key and secret")
            }
            TableError::NoSuchTable(t) => write!(f, "no table named {t:?}"),
            TableError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            TableError::Pool(e) => write!(f, "{e}"),
        }
    }
}

impl StdError for TableError {
    // The pool and retry match error sets through this chain: a
    // `TableError::Expired` is "a SessionExpired" to them.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TableError::Expired(e) => Some(e),
            TableError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<greenpool::Error> for TableError {
    fn from(e: greenpool::Error) -> Self {
        TableError::Pool(e)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ServiceStats {
    logins: u64,
    calls: u64,
    expired_by_uses: u64,
    expired_by_age: u64,
}

struct SessionInfo {
    issued: Instant,
    uses: u32,
}

struct ServiceState {
    next_token: u64,
    sessions: HashMap<u64, SessionInfo>,
    tables: HashMap<String, HashMap<String, String>>,
    stats: ServiceStats,
}

/// A fake remote key-value table service with expiring sessions.
struct TableService {
    state: Mutex<ServiceState>,
    max_uses: u32,
    ttl: Duration,
}

/// How long a login takes (key derivation, a round trip to an auth server).
const LOGIN_TIME: Duration = Duration::from_millis(5);
/// How long any other call takes.
const CALL_TIME: Duration = Duration::from_micros(200);

impl TableService {
    fn new(max_uses: u32, ttl: Duration) -> Self {
        let mut tables = HashMap::new();
        tables.insert(TABLE.to_owned(), HashMap::new());
        TableService {
            state: Mutex::new(ServiceState {
                next_token: 1,
                sessions: HashMap::new(),
                tables,
                stats: ServiceStats::default(),
            }),
            max_uses,
            ttl,
        }
    }

    fn stats(&self) -> ServiceStats {
        self.state.lock().unwrap().stats
    }

    fn login(&self, access_key: &str, secret: &str) -> Result<u64, TableError> {
        // The "network" time is spent outside the lock.
        sleep(LOGIN_TIME);
        if access_key != ACCESS_KEY || secret != SECRET {
            return Err(TableError::AccessDenied);
        }
        let mut st = self.state.lock().unwrap();
        let token = st.next_token;
        st.next_token += 1;
        st.stats.logins += 1;
        st.sessions.insert(
            token,
            SessionInfo {
                issued: Instant::now(),
                uses: 0,
            },
        );
        Ok(token)
    }

    /// Run one call on behalf of a session: check the session (and count
    /// the use), then the table, then do `op` on the table.
    fn call<T>(
        &self,
        token: u64,
        table: &str,
        op: impl FnOnce(&mut HashMap<String, String>) -> T,
    ) -> Result<T, TableError> {
        sleep(CALL_TIME);
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.stats.calls += 1;
        let Some(s) = st.sessions.get_mut(&token) else {
            return Err(TableError::AccessDenied);
        };
        let why = if s.uses >= self.max_uses {
            st.stats.expired_by_uses += 1;
            Some(Expiry::Uses(self.max_uses))
        } else if s.issued.elapsed() >= self.ttl {
            st.stats.expired_by_age += 1;
            Some(Expiry::Age(self.ttl))
        } else {
            s.uses += 1;
            None
        };
        if let Some(why) = why {
            st.sessions.remove(&token);
            return Err(TableError::Expired(SessionExpired { token, why }));
        }
        let t = st
            .tables
            .get_mut(table)
            .ok_or_else(|| TableError::NoSuchTable(table.to_owned()))?;
        Ok(op(t))
    }
}

// ---------------------------------------------------------------------------
// The pooled session and its manager.
// ---------------------------------------------------------------------------

/// What the pool holds: a session token and the table it works on.
struct TableSession {
    service: Arc<TableService>,
    token: u64,
    table: String,
}

impl TableSession {
    fn put(&self, key: &str, value: &str) -> Result<(), TableError> {
        check_key(key)?;
        let (k, v) = (key.to_owned(), value.to_owned());
        self.service.call(self.token, &self.table, move |t| {
            t.insert(k, v);
        })
    }

    fn get(&self, key: &str) -> Result<Option<String>, TableError> {
        check_key(key)?;
        self.service
            .call(self.token, &self.table, |t| t.get(key).cloned())
    }
}

fn check_key(key: &str) -> Result<(), TableError> {
    if key.is_empty() {
        return Err(TableError::InvalidRequest("the key is empty".into()));
    }
    Ok(())
}

struct SessionManager {
    service: Arc<TableService>,
    access_key: String,
    secret: String,
    table: String,
}

impl Manager for SessionManager {
    type Connection = TableSession;
    type Error = TableError;

    /// Log in, then check that the table exists (a `DescribeTable`).
    fn new_connection(&self) -> Result<TableSession, TableError> {
        let token = self.service.login(&self.access_key, &self.secret)?;
        let session = TableSession {
            service: Arc::clone(&self.service),
            token,
            table: self.table.clone(),
        };
        session.service.call(token, &session.table, |_| ())?;
        Ok(session)
    }
    // No keepalive: there is nothing to keep alive. An expired session is
    // found out on use, discarded, and the call retried.
}

// ---------------------------------------------------------------------------
// The program.
// ---------------------------------------------------------------------------

struct Options {
    threads: usize,
    calls: usize,
    size: usize,
    max_uses: u32,
    ttl: Duration,
}

fn parse_args(flags: &mut common::Flags) -> Result<Options, String> {
    let mut o = Options {
        threads: 300,
        calls: 40,
        size: 8,
        max_uses: 100,
        ttl: Duration::from_millis(500),
    };
    while let Some(a) = flags.next() {
        let mut value = |name: &str| flags.value::<u64>(name);
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--threads" => o.threads = value("--threads")?.max(1) as usize,
            "--calls" => o.calls = value("--calls")?.max(1) as usize,
            "--size" => o.size = value("--size")?.max(1) as usize,
            "--max-uses" => o.max_uses = value("--max-uses")?.clamp(2, u64::from(u32::MAX)) as u32,
            "--ttl-ms" => o.ttl = Duration::from_millis(value("--ttl-ms")?.max(10)),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    missing: AtomicU64,
}

/// Run `threads` green threads making `calls` calls each through `policy`,
/// counting outcomes in `tally`. Returns the number of green threads that
/// died.
fn run_calls(
    pool: &ConnectionPool<SessionManager>,
    policy: &Retry,
    tally: &Arc<Tally>,
    threads: usize,
    calls: usize,
    phase: &'static str,
) -> u64 {
    let workers: Vec<_> = (0..threads)
        .map(|w| {
            let (pool, policy, tally) = (pool.clone(), policy.clone(), Arc::clone(tally));
            spawn(move || {
                let count = |outcome: greenpool::RetryOutcome<(), TableError>| {
                    tally
                        .retried
                        .fetch_add(u64::from(outcome.attempts - 1), Ordering::Relaxed);
                    match outcome.result {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            log::error!("call failed for good: {e}");
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                };
                for i in 0..calls {
                    let key = format!("{phase}:user:{w}:{}", i / 2);
                    let value = format!("value {w}/{}", i / 2);
                    let outcome = match i % 2 {
                        0 => policy.run(|| pool.with(|s| s.put(&key, &value))),
                        _ if i % 10 == 9 => policy.run(|| {
                            pool.with(|s| match s.get(&format!("missing:{w}"))? {
                                None => {
                                    tally.missing.fetch_add(1, Ordering::Relaxed);
                                    Ok(())
                                }
                                Some(v) => {
                                    Err(TableError::InvalidRequest(format!("unexpected {v:?}")))
                                }
                            })
                        }),
                        _ => policy.run(|| {
                            pool.with(|s| match s.get(&key)? {
                                Some(v) if v == value => Ok(()),
                                other => Err(TableError::InvalidRequest(format!(
                                    "{key} read back as {other:?}"
                                ))),
                            })
                        }),
                    };
                    count(outcome);
                }
            })
        })
        .collect();
    let mut died = 0;
    for w in workers {
        if let Err(e) = w.join() {
            eprintln!("non_socket: a worker died: {e}");
            died += 1;
        }
    }
    died
}

fn main() -> ExitCode {
    let opts = match common::options("non_socket", HELP, parse_args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    common::init_logging("warn");
    common::start_runtime();

    let service = Arc::new(TableService::new(opts.max_uses, opts.ttl));
    let expired = ErrorSet::of::<SessionExpired>();
    let pool = ConnectionPool::builder()
        .name("sessions")
        .size(opts.size)
        // Only an expired session is a broken "connection"; every other error
        // leaves the session in the pool.
        .discard_on(expired.clone())
        .checkout_timeout(Duration::from_secs(5))
        .build(SessionManager {
            service: Arc::clone(&service),
            access_key: ACCESS_KEY.to_owned(),
            secret: SECRET.to_owned(),
            table: TABLE.to_owned(),
        })
        .expect("valid pool settings");
    if let Err(e) = pool.wait_ready(Duration::from_secs(5)) {
        eprintln!("non_socket: the pool is not ready: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "service: sessions expire after {} calls or {:?}; logins take {LOGIN_TIME:?}, calls {CALL_TIME:?}",
        opts.max_uses, opts.ttl
    );
    println!("pool: {} sessions on table {TABLE:?}", opts.size);

    // A caller's own mistake is not the session's: returned as it is, the
    // session goes back into the pool.
    let mut failures = 0u64;
    match pool.with(|s| s.get("")) {
        Err(TableError::InvalidRequest(why)) if pool.state().counters.discarded.total() == 0 => {
            println!("a bad request fails at once ({why}) and its session stays in the pool")
        }
        other => {
            println!("FAILED: a bad request gave {other:?}");
            failures += 1;
        }
    }

    // Every session can expire at the same moment (the TTL runs out for all
    // of them together), so allow one more attempt than the pool has
    // sessions: the last one runs on a freshly logged-in session.
    let policy = Retry::new()
        .name("table call")
        .on(expired)
        .max_failures(opts.size as u32 + 1)
        .retry_level(log::Level::Debug);
    let tally = Arc::new(Tally::default());
    let started = Instant::now();

    // Phase 1: busy. Sessions run out of uses one after another.
    println!(
        "busy: {} green threads x {} calls (PUT then GET of their own keys, and GETs of missing keys)",
        opts.threads, opts.calls
    );
    failures += run_calls(&pool, &policy, &tally, opts.threads, opts.calls, "busy");

    // Phase 2: quiet for longer than the TTL, then a burst: every pooled
    // session has expired at once, and the first calls find that out.
    let quiet = opts.ttl + Duration::from_millis(50);
    println!("quiet for {quiet:?}: every idle session outlives its TTL");
    sleep(quiet);
    let (burst_threads, burst_calls) = (50, 10);
    println!("burst: {burst_threads} green threads x {burst_calls} calls");
    failures += run_calls(&pool, &policy, &tally, burst_threads, burst_calls, "burst");
    let elapsed = started.elapsed();

    let svc = service.stats();
    let s = pool.state();
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed) + failures;
    let retried = tally.retried.load(Ordering::Relaxed);
    let expiries = svc.expired_by_uses + svc.expired_by_age;
    let total = (opts.threads * opts.calls + burst_threads * burst_calls) as u64;
    println!();
    println!("summary ({elapsed:.1?})");
    println!("  calls ok               {ok:>10}   of {total}");
    println!("  calls failed           {failed:>10}   (0 expected)");
    println!(
        "  missing keys           {:>10}   (looked up on purpose; not an error)",
        tally.missing.load(Ordering::Relaxed)
    );
    println!("  service: logins        {:>10}", svc.logins);
    println!("  service: calls         {:>10}", svc.calls);
    println!(
        "  service: expiries      {expiries:>10}   ({} by use count, {} by age)",
        svc.expired_by_uses, svc.expired_by_age
    );
    println!("  calls retried          {retried:>10}   (one per expiry)");
    println!(
        "  sessions discarded     {:>10}   (one per expiry)",
        s.counters.discarded.error
    );
    println!(
        "  pool at the end        {:>10}   open of {}",
        s.open, s.size
    );

    // The books must balance: each expiry was seen by exactly one call,
    // which discarded that session and ran again on another.
    let mut problems = Vec::new();
    if failed > 0 || ok != total {
        problems.push(format!("{failed} calls failed, {ok} of {total} ok"));
    }
    if svc.expired_by_age < opts.size as u64 {
        problems.push(format!(
            "only {} sessions expired by age after the quiet spell, expected all {}",
            svc.expired_by_age, opts.size
        ));
    }
    if retried != expiries {
        problems.push(format!("{retried} retries for {expiries} expiries"));
    }
    if s.counters.discarded.error != expiries {
        problems.push(format!(
            "{} sessions discarded for {expiries} expiries",
            s.counters.discarded.error
        ));
    }
    pool.close();
    if problems.is_empty() {
        println!("\nOK: {ok} calls, {expiries} expired sessions replaced, 0 failed.");
        ExitCode::SUCCESS
    } else {
        println!("\nFAILED: {}.", problems.join("; "));
        ExitCode::FAILURE
    }
}
