//! [`RedisServer`]: a real `redis-server` process for tests, on a free
//! loopback port.
//!
//! Each server is a child process with its own port and its own temporary
//! directory (its log is there; it saves nothing: no RDB snapshots, no AOF),
//! so tests that use one can run in parallel. Dropping the server kills and
//! reaps the process and removes the directory.
//!
//! The `redis-server` binary is taken from `$REDIS_SERVER` if set, else
//! from `PATH` (and a few usual install directories). Where it is missing,
//! [`RedisServer::start`] fails with [`io::ErrorKind::NotFound`]; tests can
//! check for that and skip, loudly:
//!
//! ```
//! use greenpool::testing::redis::RedisServer;
//!
//! let mut server = match RedisServer::start() {
//!     Ok(s) => s,
//!     Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
//!         eprintln!("SKIPPED: {e}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e.into()),
//! };
//! let mut c = server.client()?;
//! c.set("k", "v")?;
//! assert_eq!(c.get("k")?, Some(b"v".to_vec()));
//!
//! server.kill()?; // the port now refuses connections ...
//! assert!(c.ping().is_err());
//! server.restart()?; // ... and serves again (with an empty dataset)
//! assert_eq!(server.client()?.get("k")?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A test process killed with `SIGKILL` (or aborting) cannot run `Drop`, so
//! its servers outlive it; everything else (returning, panicking, unwinding)
//! cleans up.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::runtime::net::ConnectOptions;
use crate::runtime::sleep;

use crate::redis::{RedisManager, RespConnection, Value};

/// How long [`RedisServer::start`] and [`RedisServer::restart`] wait for the
/// server to answer `PING`: 10 s. It normally takes a few milliseconds.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`RedisServer::restart`] keeps retrying while its port is taken
/// (e.g. by a process that grabbed it after [`RedisServer::kill`]): 5 s.
pub const RESTART_BIND_WINDOW: Duration = Duration::from_secs(5);

/// Ports [`RedisServer::start`] tries before giving up, when another process
/// takes the free port it picked before redis can bind it.
const START_ATTEMPTS: usize = 5;

/// Pause between readiness probes while redis starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// Pause between bind attempts in `restart`.
const REBIND_INTERVAL: Duration = Duration::from_millis(50);

/// Longest [`RedisServer::kill`] waits for the killed process to be reaped
/// without blocking its OS thread, before it falls back to a blocking wait.
const REAP_POLL_LIMIT: Duration = Duration::from_secs(5);

/// How much of redis's output an error message quotes.
const OUTPUT_TAIL: u64 = 2048;

const NOT_FOUND: &str = "redis-server not found; install it with apt-get install redis-server \
                         (or set $REDIS_SERVER to its path)";

/// True if a `redis-server` binary can be found (`$REDIS_SERVER`, `PATH`);
/// says nothing about whether it starts. Never blocks on anything but a few
/// `stat` calls.
pub fn redis_available() -> bool {
    find_redis_server().is_ok()
}

/// The `redis-server` binary [`RedisServer::start`] would run:
/// `$REDIS_SERVER` if it is set and not empty (it must then be an
/// executable file), else the first `redis-server` on `PATH`, else in
/// `/usr/bin`, `/usr/local/bin`, `/usr/sbin`, `/opt/homebrew/bin`.
/// Fails with [`io::ErrorKind::NotFound`] and a message saying how to
/// install it.
pub fn find_redis_server() -> io::Result<PathBuf> {
    locate(std::env::var_os("REDIS_SERVER"), std::env::var_os("PATH"))
}

fn locate(explicit: Option<OsString>, path: Option<OsString>) -> io::Result<PathBuf> {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "$REDIS_SERVER is {}, which is not an executable file; point it at \
                 redis-server or unset it. {NOT_FOUND}",
                p.display()
            ),
        ));
    }
    let fallback = [
        "/usr/bin",
        "/usr/local/bin",
        "/usr/sbin",
        "/opt/homebrew/bin",
    ];
    let dirs = path
        .iter()
        .flat_map(std::env::split_paths)
        .chain(fallback.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join("redis-server");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, NOT_FOUND))
}

fn is_executable(p: &Path) -> bool {
    match fs::metadata(p) {
        #[cfg(unix)]
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        }
        #[cfg(not(unix))]
        Ok(m) => m.is_file(),
        Err(_) => false,
    }
}

/// A port that was free a moment ago: bind port 0 on loopback, read the
/// port, close the listener. Another process may take it before redis binds
/// it; callers retry.
fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A new, empty directory under the system's temporary directory.
fn make_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..100 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("greenpool-redis-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // Left behind by an earlier process with the same pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create a directory for redis-server in {base:?}: {e}"),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free directory name")))
}

/// Why one launch failed.
enum LaunchError {
    /// redis could not bind the port: try another (or wait).
    AddrInUse(String),
    Other(io::Error),
}

/// A `redis-server` child process for tests, listening on `127.0.0.1` on a
/// port of its own.
///
/// It runs with `--save '' --appendonly no` (nothing is persisted: a
/// restart starts empty), `--loglevel warning`, and its working directory
/// and log in a private temporary directory ([`dir`](Self::dir)). The
/// struct owns the process: dropping it kills the process with `SIGKILL`,
/// reaps it (no zombie) and removes the directory.
///
/// Every method that waits blocks only the calling green thread (or, outside
/// the runtime, the calling OS thread), except where noted.
pub struct RedisServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    pid: u32,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("addr", &self.addr())
            .field("pid", &self.pid)
            .field("running", &self.child.is_some())
            .field("binary", &self.binary)
            .field("dir", &self.dir)
            .finish()
    }
}

impl RedisServer {
    /// Start `redis-server` on a free loopback port and wait until it
    /// answers `PING` (at most [`START_TIMEOUT`]; it normally takes a few
    /// milliseconds).
    ///
    /// The port is picked by binding port 0 and closing the listener; if
    /// another process takes it before redis binds it, another port is tried
    /// (up to 5). Fails with [`io::ErrorKind::NotFound`] if no binary is
    /// found (see [`find_redis_server`]; also logged as a warning), with
    /// [`io::ErrorKind::TimedOut`] if the server does not answer in time, and
    /// otherwise with an error quoting redis's own output.
    ///
    /// Blocks the calling green thread while it waits; spawning the process
    /// briefly blocks its OS thread.
    pub fn start() -> io::Result<RedisServer> {
        let binary = find_redis_server().inspect_err(|e| log::warn!("greenpool: {e}"))?;
        let mut server = RedisServer {
            binary,
            dir: make_dir()?,
            port: 0,
            child: None,
            pid: 0,
        };
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(LaunchError::AddrInUse(msg)) => {
                    log::debug!(
                        "greenpool: redis-server could not bind port {} (attempt \
                         {attempt}/{START_ATTEMPTS}): {msg}",
                        server.port
                    );
                    last = msg;
                }
                // Dropping `server` removes its directory.
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "redis-server could not bind a free loopback port in {START_ATTEMPTS} \
                 attempts (other processes took each one first); last: {last}"
            ),
        ))
    }

    /// Spawn redis on `self.port` and wait until it is ready.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut child = self.spawn().map_err(LaunchError::Other)?;
        match self.wait_ready(&mut child) {
            Ok(()) => {
                log::debug!(
                    "greenpool: redis-server (pid {}) ready on 127.0.0.1:{}",
                    child.id(),
                    self.port
                );
                self.pid = child.id();
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                // Already exited in most failures; make sure and reap it.
                if let Err(kill_err) = kill_and_reap(&mut child) {
                    log::warn!(
                        "greenpool: cannot kill redis-server (pid {}): {kill_err}",
                        child.id()
                    );
                }
                Err(e)
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn console_path(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    fn spawn(&self) -> io::Result<Child> {
        // Fresh output files, so errors quote this launch only.
        let console = fs::File::create(self.console_path())?;
        fs::File::create(self.log_path())?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--loglevel", "warning"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run {}: {e}", self.binary.display()),
            )
        })
    }

    /// Poll until the server answers as itself, it exits, or the start
    /// timeout passes.
    fn wait_ready(&self, child: &mut Child) -> Result<(), LaunchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.addr().to_string();
        let opts = ConnectOptions::new()
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Some(Duration::from_secs(1)))
            .write_timeout(Some(Duration::from_secs(1)));
        loop {
            if let Some(status) = child.try_wait().map_err(LaunchError::Other)? {
                return Err(self.exited(status));
            }
            if probe(&addr, &opts, child.id()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Other(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server (pid {}) did not answer PING on {addr} within \
                         {START_TIMEOUT:?}; its output: {}",
                        child.id(),
                        self.output()
                    ),
                )));
            }
            sleep(PROBE_INTERVAL);
        }
    }

    fn exited(&self, status: ExitStatus) -> LaunchError {
        let output = self.output();
        if output.contains("Address already in use") {
            return LaunchError::AddrInUse(output);
        }
        LaunchError::Other(io::Error::other(format!(
            "redis-server ({}) exited during start-up with {status}; its output: {output}",
            self.binary.display()
        )))
    }

    /// The end of redis's log and console output (the last 2 KiB of each),
    /// for error messages. Reads two small files; never waits on redis.
    pub fn output(&self) -> String {
        let mut text = String::new();
        for path in [self.console_path(), self.log_path()] {
            if let Ok(tail) = tail(&path) {
                let tail = tail.trim();
                if !tail.is_empty() {
                    if !text.is_empty() {
                        text.push_str(" | ");
                    }
                    text.push_str(tail);
                }
            }
        }
        if text.is_empty() {
            text.push_str("(none)");
        }
        text
    }

    /// The address it listens on: `127.0.0.1:<port>`. The same after
    /// [`restart`](Self::restart).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server, or of the last one after
    /// [`kill`](Self::kill).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The private directory holding its log (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True while the process runs: not killed, and not exited on its own
    /// (checked without blocking).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// A new client connection, with 5 s connect, read and write timeouts.
    pub fn client(&self) -> io::Result<RespConnection> {
        let t = Duration::from_secs(5);
        let opts = ConnectOptions::new()
            .connect_timeout(t)
            .read_timeout(Some(t))
            .write_timeout(Some(t));
        RespConnection::connect(&self.addr().to_string(), &opts)
    }

    /// A [`RedisManager`] for this server, with its defaults.
    pub fn manager(&self) -> RedisManager {
        RedisManager::new(self.addr().to_string())
    }

    /// Kill the server with `SIGKILL` and wait until the process is gone
    /// (reaped), so its port refuses connections when this returns; open
    /// connections see the server vanish (reset or EOF). Does nothing if it
    /// is not running.
    ///
    /// Waits by polling every millisecond, blocking only the calling green
    /// thread, normally for a few milliseconds; a process the kernel has not
    /// torn down after 5 s is waited for blocking the OS thread.
    pub fn kill(&mut self) -> io::Result<()> {
        let Some(child) = &mut self.child else {
            return Ok(());
        };
        send_kill(child)?;
        let deadline = Instant::now() + REAP_POLL_LIMIT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            sleep(Duration::from_millis(1));
        }
        child.wait()?;
        self.child = None;
        Ok(())
    }

    /// Start the server again on the same port (killing it first if it is
    /// running) and wait until it answers `PING`. It starts with an empty
    /// dataset and default settings (`CONFIG SET` changes are lost).
    ///
    /// Redis binds with `SO_REUSEADDR`, so connections left in `TIME_WAIT`
    /// do not stand in the way; if another process has taken the port,
    /// binding is retried for [`RESTART_BIND_WINDOW`] before this fails with
    /// [`io::ErrorKind::AddrInUse`]. Blocks the calling green thread for as
    /// long as that takes, plus up to [`START_TIMEOUT`] for the server to
    /// answer.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        let deadline = Instant::now() + RESTART_BIND_WINDOW;
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(LaunchError::Other(e)) => return Err(e),
                Err(LaunchError::AddrInUse(msg)) => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!(
                                "cannot restart redis-server on port {}: the port has been \
                                 taken by another process for {RESTART_BIND_WINDOW:?}; \
                                 its output: {msg}",
                                self.port
                            ),
                        ));
                    }
                    log::debug!(
                        "greenpool: port {} still in use; retrying the restart",
                        self.port
                    );
                    sleep(REBIND_INTERVAL);
                }
            }
        }
    }
}

impl Drop for RedisServer {
    /// Kill (`SIGKILL`) and reap the process, then remove its directory.
    /// Blocks the calling OS thread (not just the green thread: a drop may
    /// run while a green thread unwinds, where the runtime cannot wait) for
    /// the moment the kernel takes to tear the process down.
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Err(e) = send_kill(child).and_then(|()| child.wait().map(drop)) {
                log::warn!(
                    "greenpool: cannot kill and reap redis-server (pid {}): {e}",
                    child.id()
                );
            }
        }
        self.child = None;
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!(
                    "greenpool: cannot remove redis-server's directory {}: {e}",
                    self.dir.display()
                );
            }
        }
    }
}

/// `SIGKILL`, tolerating a process that has already exited.
fn send_kill(child: &mut Child) -> io::Result<()> {
    match child.kill() {
        Ok(()) => Ok(()),
        // Older std versions report an already reaped child this way.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        Err(e) => Err(e),
    }
}

/// Kill and reap, blocking the OS thread for the reap (used on a process
/// that failed to start, which has normally exited already).
fn kill_and_reap(child: &mut Child) -> io::Result<()> {
    send_kill(child)?;
    child.wait().map(drop)
}

/// True if the server at `addr` answers `PING` and is the process `pid`
/// (not some other redis that happens to hold the port).
fn probe(addr: &str, opts: &ConnectOptions, pid: u32) -> bool {
    let Ok(mut c) = RespConnection::connect(addr, opts) else {
        return false;
    };
    if c.ping().is_err() {
        return false;
    }
    let Ok(info) = c.command(&["INFO", "server"]) else {
        return false;
    };
    let want = format!("process_id:{pid}");
    match info {
        Value::Bulk(Some(text)) => String::from_utf8_lossy(&text)
            .lines()
            .any(|l| l.trim() == want),
        _ => false,
    }
}

/// The last [`OUTPUT_TAIL`] bytes of a file, as text.
fn tail(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL)))?;
    let mut buf = Vec::new();
    f.take(OUTPUT_TAIL).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let e = locate(None, Some(OsString::from("/nonexistent-dir"))).map(|p| {
            // Installed in a fallback directory: nothing to check here.
            assert!(p.ends_with("redis-server"));
        });
        if let Err(e) = e {
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            assert!(
                e.to_string().contains("apt-get install redis-server"),
                "{e}"
            );
        }

        let e = locate(Some(OsString::from("/nonexistent/redis-server")), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(msg.contains("$REDIS_SERVER"), "{msg}");
        assert!(msg.contains("apt-get install redis-server"), "{msg}");
    }

    #[test]
    fn not_executable_files_are_skipped() {
        let dir = make_dir().unwrap();
        let fake = dir.join("redis-server");
        fs::write(&fake, b"not a program").unwrap();
        let e = locate(Some(fake.clone().into_os_string()), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(
                locate(Some(fake.clone().into_os_string()), None).unwrap(),
                fake
            );
            assert_eq!(
                locate(None, Some(dir.clone().into_os_string())).unwrap(),
                fake
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
