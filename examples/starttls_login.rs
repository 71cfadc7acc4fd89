//! geventconnpool's advanced example, made real: a connection is a TCP
//! socket upgraded with STARTTLS and then logged in, and the pool keeps those
//! expensive sessions open so that requests never pay for the handshake.
//!
//! The program starts (in green threads) a small line-protocol server on
//! `127.0.0.1:0` that offers `STARTTLS`, then `LOGIN user password`, then
//! `PING`, `WHOAMI` and `QUIT`. Its certificate is made at start-up with
//! rcgen, and the client trusts exactly that certificate and nothing else.
//! The pool's [`Manager::new_connection`] connects, reads the greeting, sends
//! `STARTTLS`, runs the TLS handshake (`greenpool::runtime::tls`: rustls over
//! the runtime's blocking `TcpStream`, every read and write blocks only the
//! green thread), and logs in; lines go through the runtime's bounded
//! `line::read_line` and one-piece `line::write_line`. Then 200 green threads send requests through `retry` while the server
//! drops every session once, as a restart would.
//!
//! With `--wrong-password` the login fails: every attempt is a connect
//! failure, the pool logs it clearly and keeps trying with backoff, and
//! `wait_ready` ends with an error that carries the server's answer. The
//! program then exits with status 1.
//!
//! ```text
//! cargo run --release --example starttls_login
//! cargo run --release --example starttls_login -- --wrong-password
//! ```

mod common;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool::runtime;
use greenpool::runtime::line::{read_line, write_line};
use greenpool::runtime::net::{
    connect_addr, serve as serve_on, ConnectOptions, ServeOptions, Server, TcpListener, TcpStream,
};
use greenpool::runtime::sync::Mutex;
use greenpool::runtime::tls::{self, rustls::ServerConfig, TlsConnector, TlsStream};
use greenpool::testing::tls::SelfSigned;
use greenpool::{ConnectionPool, ErrorSet, Manager, Retry};

const HELP: &str = "\
starttls_login: a pool of STARTTLS + LOGIN sessions to a line-protocol server
that the program starts itself; 200 green threads share them while the server
drops every session once.

USAGE: cargo run --release --example starttls_login -- [OPTIONS]

OPTIONS:
  --wrong-password    log in with a wrong password: show the pool's error, exit 1
  --concurrency N     green threads sending requests (default 200)
  --requests N        requests per green thread (default 50)
  --size N            sessions in the pool (default 4)
  -h, --help          this text

Set RUST_LOG=info (or debug) to see more of the pool's own log lines.";

/// TLS handshakes need more stack than the runtime's default green thread
/// has room for comfortably; an overflow in a release build exits the
/// process, so both ends of the handshake get 256 KiB.
const TLS_STACK: usize = tls::HANDSHAKE_STACK_SIZE;
/// Longest line either side accepts.
const MAX_LINE: usize = 1024;
const USER: &str = "demo";
const PASSWORD: &str = "correct horse battery staple";

// ---------------------------------------------------------------------------
// The client side: a session, its errors, and the pool's manager.
// ---------------------------------------------------------------------------

/// A logged-in TLS session.
struct Session {
    tls: BufReader<TlsStream>,
    user: String,
}

impl Session {
    /// Send one command line and read the one-line reply. An `ERR` reply is
    /// [`SessionError::Server`]: the server refused the command, the session
    /// is fine.
    fn request(&mut self, line: &str) -> Result<String, SessionError> {
        write_line(self.tls.get_mut(), line)?;
        let reply = read_line(&mut self.tls, MAX_LINE)?;
        match reply.strip_prefix("ERR ") {
            Some(why) => Err(SessionError::Server(why.to_owned())),
            None => Ok(reply),
        }
    }
}

/// The server broke the protocol: the session can't be trusted any more.
#[derive(Debug)]
struct ProtocolError(String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl StdError for ProtocolError {}

/// Everything a session can fail with.
#[derive(Debug)]
enum SessionError {
    /// Network or TLS failure (rustls reports its errors as `io::Error`s,
    /// e.g. an untrusted certificate). The session is broken.
    Io(io::Error),
    /// The server broke the protocol. The session is broken.
    Protocol(ProtocolError),
    /// The server rejected the login: a connect failure.
    LoginRejected { user: String, reply: String },
    /// The server answered `ERR` to a command; the session is fine.
    Server(String),
    /// No session could be checked out of the pool.
    Pool(greenpool::Error),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Io(e) => write!(f, "{e}"),
            SessionError::Protocol(e) => write!(f, "{e}"),
            SessionError::LoginRejected { user, reply } => write!(
                f,
                "LOGIN as {user:?} rejected by the server ({reply:?}); check the user name and password"
            ),
            SessionError::Server(why) => write!(f, "the server refused the command: {why}"),
            SessionError::Pool(e) => write!(f, "{e}"),
        }
    }
}

impl StdError for SessionError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SessionError::Io(e) => Some(e),
            SessionError::Protocol(e) => Some(e),
            SessionError::Pool(e) => Some(e),
            SessionError::LoginRejected { .. } | SessionError::Server(_) => None,
        }
    }
}

impl From<io::Error> for SessionError {
    fn from(e: io::Error) -> Self {
        SessionError::Io(e)
    }
}

impl From<ProtocolError> for SessionError {
    fn from(e: ProtocolError) -> Self {
        SessionError::Protocol(e)
    }
}

impl From<greenpool::Error> for SessionError {
    fn from(e: greenpool::Error) -> Self {
        SessionError::Pool(e)
    }
}

/// Opens sessions: connect, STARTTLS, TLS handshake, LOGIN.
struct LoginManager {
    addr: SocketAddr,
    tls: TlsConnector,
    server_name: String,
    user: String,
    password: String,
    timeout: Duration,
}

impl LoginManager {
    fn expect(&self, got: String, prefix: &str, what: &str) -> Result<String, ProtocolError> {
        if got.starts_with(prefix) {
            Ok(got)
        } else {
            Err(ProtocolError(format!("expected {what}, got {got:?}")))
        }
    }
}

impl Manager for LoginManager {
    type Connection = Session;
    type Error = SessionError;

    fn new_connection(&self) -> Result<Session, SessionError> {
        let t = Some(self.timeout);
        let opts = ConnectOptions::new()
            .connect_timeout(self.timeout)
            .read_timeout(t)
            .write_timeout(t);
        let mut plain = BufReader::new(connect_addr(self.addr, &opts)?);

        // Plain text: greeting, STARTTLS, "OK".
        let greeting = read_line(&mut plain, MAX_LINE)?;
        if !greeting.contains("STARTTLS") {
            return Err(
                ProtocolError(format!("the server does not offer STARTTLS: {greeting:?}")).into(),
            );
        }
        write_line(plain.get_mut(), "STARTTLS")?;
        let ok = read_line(&mut plain, MAX_LINE)?;
        self.expect(ok, "OK", "OK to STARTTLS")?;
        // TLS: the handshake runs now, so that a certificate problem is
        // reported as such rather than as a failed LOGIN. upgrade_buffered
        // refuses plain-text bytes the server sent after its OK (STARTTLS
        // command injection, CVE-2011-0411).
        let tls = BufReader::new(self.tls.upgrade_buffered(plain, &self.server_name)?);

        // LOGIN.
        let mut session = Session {
            tls,
            user: self.user.clone(),
        };
        match session.request(&format!("LOGIN {} {}", self.user, self.password)) {
            Ok(reply) => {
                self.expect(reply, "OK", "OK to LOGIN")?;
                Ok(session)
            }
            Err(SessionError::Server(reply)) => Err(SessionError::LoginRejected {
                user: self.user.clone(),
                reply,
            }),
            Err(e) => Err(e),
        }
    }

    fn keepalive(&self, s: &mut Session) -> Result<(), SessionError> {
        let reply = s.request("PING")?;
        self.expect(reply, "PONG", "PONG")?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The server side: STARTTLS, LOGIN, then commands.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ServerStats {
    handshakes: AtomicU64,
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    commands: AtomicU64,
}

/// The demo server: `runtime::net::serve`, one green thread per connection.
struct DemoServer {
    addr: SocketAddr,
    accept_loop: Server,
    /// A clone of every open connection's socket, so that the server can drop
    /// them all (`kick_all`).
    open: Arc<Mutex<HashMap<u64, TcpStream>>>,
    stats: Arc<ServerStats>,
}

impl DemoServer {
    fn start(
        tls: Arc<ServerConfig>,
        user: &'static str,
        password: &'static str,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let open = Arc::new(Mutex::new(HashMap::new()));
        let stats = Arc::new(ServerStats::default());
        let (open2, stats2) = (Arc::clone(&open), Arc::clone(&stats));
        let opts = ServeOptions::new().name("demo").stack_size(TLS_STACK);
        let accept_loop = serve_on(listener, opts, move |stream, accepted| {
            let id = accepted.id;
            if let Ok(clone) = stream.try_clone() {
                open2.lock().unwrap().insert(id, clone);
            }
            if let Err(e) = serve(stream, &tls, user, password, &stats2) {
                log::debug!("demo server: connection {id} ended: {e}");
            }
            open2.lock().unwrap().remove(&id);
        })?;
        Ok(DemoServer {
            addr,
            accept_loop,
            open,
            stats,
        })
    }

    /// Drop every open connection (no TLS goodbye), as a crash or restart
    /// would. Returns how many there were.
    fn kick_all(&self) -> usize {
        let open = self.open.lock().unwrap();
        for s in open.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        open.len()
    }

    fn stop(self) {
        // Drop the sessions, then stop accepting and wait (briefly) for their
        // green threads to see it.
        self.kick_all();
        self.accept_loop.stop(Duration::from_secs(1));
    }
}

/// One client connection, start to end.
fn serve(
    stream: TcpStream,
    tls: &Arc<ServerConfig>,
    user: &str,
    password: &str,
    stats: &ServerStats,
) -> io::Result<()> {
    let mut plain = BufReader::new(stream);
    write_line(plain.get_mut(), "HELLO greenpool-demo; STARTTLS required")?;
    loop {
        let line = read_line(&mut plain, MAX_LINE)?;
        if line == "STARTTLS" {
            break;
        }
        write_line(plain.get_mut(), "ERR STARTTLS first")?;
    }
    if !plain.buffer().is_empty() {
        // The client pipelined commands in plain text after STARTTLS.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plain-text bytes after STARTTLS",
        ));
    }
    let mut stream = plain.into_inner();
    write_line(&mut stream, "OK begin TLS")?;
    let mut tls = tls::accept(tls, stream)?;
    stats.handshakes.fetch_add(1, Ordering::Relaxed);

    let mut logged_in: Option<String> = None;
    loop {
        let line = read_line(&mut tls, MAX_LINE)?;
        let mut words = line.splitn(3, ' ');
        let reply = match (words.next().unwrap_or(""), &logged_in) {
            ("LOGIN", None) => {
                let (u, p) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                if u == user && p == password {
                    stats.logins_ok.fetch_add(1, Ordering::Relaxed);
                    logged_in = Some(u.to_owned());
                    format!("OK welcome {u}")
                } else {
                    stats.logins_failed.fetch_add(1, Ordering::Relaxed);
                    write_line(&mut tls, "ERR invalid user name or password")?;
                    tls.conn.send_close_notify();
                    let _ = io::Write::flush(&mut tls);
                    return Ok(());
                }
            }
            ("QUIT", _) => {
                write_line(&mut tls, "BYE")?;
                tls.conn.send_close_notify();
                return io::Write::flush(&mut tls);
            }
            (_, None) => "ERR LOGIN first".to_owned(),
            ("LOGIN", Some(_)) => "ERR already logged in".to_owned(),
            ("PING", Some(_)) => "PONG".to_owned(),
            ("WHOAMI", Some(u)) => u.clone(),
            (_, Some(_)) => "ERR unknown command".to_owned(),
        };
        stats.commands.fetch_add(1, Ordering::Relaxed);
        write_line(&mut tls, &reply)?;
    }
}

// ---------------------------------------------------------------------------
// The program.
// ---------------------------------------------------------------------------

struct Options {
    wrong_password: bool,
    concurrency: usize,
    requests: usize,
    size: usize,
}

fn parse_args(flags: &mut common::Flags) -> Result<Options, String> {
    let mut o = Options {
        wrong_password: false,
        concurrency: 200,
        requests: 50,
        size: 4,
    };
    while let Some(a) = flags.next() {
        let mut value = |name: &str| flags.value::<usize>(name);
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--wrong-password" => o.wrong_password = true,
            "--concurrency" => o.concurrency = value("--concurrency")?.max(1),
            "--requests" => o.requests = value("--requests")?.max(2),
            "--size" => o.size = value("--size")?.max(1),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

/// A self-signed certificate for "localhost", and the TLS configurations of
/// both ends: the client trusts that one certificate and nothing else.
fn tls_configs() -> io::Result<(Arc<ServerConfig>, TlsConnector)> {
    let cert = SelfSigned::new(&["localhost"])?;
    Ok((cert.server_config()?, cert.connector()?))
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

fn main() -> ExitCode {
    let opts = match common::options("starttls_login", HELP, parse_args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    common::init_logging("warn");
    common::start_runtime();

    let (server_tls, client_tls) = match tls_configs() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("starttls_login: cannot set up TLS: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match DemoServer::start(server_tls, USER, PASSWORD) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("starttls_login: cannot start the demo server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "server on {} (STARTTLS, then LOGIN; its certificate for \"localhost\" was made at \
         start-up and the client trusts only it)",
        server.addr
    );

    let password = if opts.wrong_password {
        "not the password"
    } else {
        PASSWORD
    };
    let pool = ConnectionPool::builder()
        .name("starttls")
        .size(opts.size)
        .connector_stack_size(TLS_STACK)
        .checkout_timeout(Duration::from_secs(5))
        .keepalive(Duration::from_secs(10))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        // Broken sessions: network/TLS errors and protocol violations. An ERR
        // reply to a command (SessionError::Server) leaves the session pooled.
        .discard_on(ErrorSet::io().or_type::<ProtocolError>())
        .build(LoginManager {
            addr: server.addr,
            tls: client_tls,
            server_name: "localhost".to_owned(),
            user: USER.to_owned(),
            password: password.to_owned(),
            timeout: Duration::from_secs(2),
        })
        .expect("valid pool settings");

    let started = Instant::now();
    let ready_within = if opts.wrong_password {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    if let Err(e) = pool.wait_ready(ready_within) {
        let s = pool.state();
        let failed_logins = server.stats.logins_failed.load(Ordering::Relaxed);
        eprintln!("starttls_login: the pool is not ready: {e}");
        eprintln!(
            "  {} connect attempts failed in {:.1?} ({} rejected logins): the pool retries with \
             backoff (50 ms doubling to 500 ms), it does not spin",
            s.counters.connect_failures,
            started.elapsed(),
            failed_logins
        );
        // A caller asking for a session gets the same explanation.
        if let Err(e) = pool.get_timeout(Duration::from_millis(200)) {
            eprintln!("  pool.get(): {e}");
        }
        pool.close();
        server.stop();
        return ExitCode::FAILURE;
    }
    if opts.wrong_password {
        eprintln!("starttls_login: BUG: logged in with a wrong password");
        return ExitCode::FAILURE;
    }
    println!(
        "pool: {} sessions ready in {:.1?} ({} TLS handshakes, {} logins)",
        opts.size,
        started.elapsed(),
        server.stats.handshakes.load(Ordering::Relaxed),
        server.stats.logins_ok.load(Ordering::Relaxed)
    );

    // The work: each request runs WHOAMI or PING through retry, on whichever
    // session is free; a session the server dropped is discarded and the
    // request runs again on a fresh one.
    let policy = Retry::new()
        .name("request")
        .on(ErrorSet::io().or_type::<ProtocolError>())
        .max_failures(opts.size as u32 + 2)
        .interval(Duration::from_millis(10))
        .retry_level(log::Level::Debug);
    let tally = Arc::new(Tally::default());
    let total = (opts.concurrency * opts.requests) as u64;
    let kicked = Arc::new(AtomicU64::new(0));
    println!(
        "{} green threads x {} requests (WHOAMI, PING) through retry; the server drops every \
         session half-way",
        opts.concurrency, opts.requests
    );
    let work_started = Instant::now();
    let server = Arc::new(server);
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|w| {
            let (pool, policy, tally, server, kicked) = (
                pool.clone(),
                policy.clone(),
                Arc::clone(&tally),
                Arc::clone(&server),
                Arc::clone(&kicked),
            );
            runtime::spawn(move || {
                for i in 0..opts.requests {
                    let outcome = policy.run(|| {
                        pool.with(|s| {
                            if (w + i) % 2 == 0 {
                                let me = s.request("WHOAMI")?;
                                if me != s.user {
                                    return Err(ProtocolError(format!("WHOAMI said {me:?}")).into());
                                }
                                Ok(())
                            } else {
                                s.request("PING").map(drop)
                            }
                        })
                    });
                    tally
                        .retried
                        .fetch_add(u64::from(outcome.attempts - 1), Ordering::Relaxed);
                    match outcome.result {
                        Ok(()) => {
                            // The request that completes the first half drops
                            // every session on the server.
                            if tally.ok.fetch_add(1, Ordering::Relaxed) + 1 == total / 2 {
                                kicked.store(server.kick_all() as u64, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            log::error!("request failed for good: {e}");
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        if let Err(e) = w.join() {
            eprintln!("starttls_login: a worker died: {e}");
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let elapsed = work_started.elapsed();
    println!(
        "  !! the server dropped all {} sessions half-way",
        kicked.load(Ordering::Relaxed)
    );

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let st = &server.stats;
    let handshakes = st.handshakes.load(Ordering::Relaxed);
    let logins = st.logins_ok.load(Ordering::Relaxed);
    let c = pool.state().counters;
    println!();
    println!("summary ({elapsed:.1?})");
    println!("  requests ok            {ok:>10}");
    println!("  requests failed        {failed:>10}   (0 expected)");
    println!(
        "  attempts retried       {:>10}",
        tally.retried.load(Ordering::Relaxed)
    );
    println!(
        "  throughput             {:>10.0} req/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("  TLS handshakes         {handshakes:>10}   (server side)");
    println!("  logins                 {logins:>10}   (server side)");
    println!(
        "  commands served        {:>10}",
        st.commands.load(Ordering::Relaxed)
    );
    println!("  sessions discarded     {:>10}", c.discarded.total());

    pool.close();
    match Arc::try_unwrap(server) {
        Ok(server) => server.stop(),
        Err(_) => unreachable!("every worker has finished"),
    }
    // Each session is opened once at start and once after the drop; a few
    // more are fine (a keepalive or a race), thousands would mean no pooling.
    let pooled = logins <= 4 * opts.size as u64;
    if failed == 0 && ok == total && pooled {
        println!("\nOK: {ok} requests over {logins} TLS logins, 0 failed.");
        ExitCode::SUCCESS
    } else {
        println!(
            "\nFAILED: {failed} failed, {ok} of {total} ok, {logins} logins for {} sessions.",
            opts.size
        );
        ExitCode::FAILURE
    }
}
