//! [`Nginx`]: a real nginx for tests, on a free loopback port, serving HTTPS
//! with a self-signed certificate (features `http` and `tls`).
//!
//! The binary is `$NGINX` if set, else `nginx` on `PATH` or in `/usr/sbin`.
//! Where it is missing, [`Nginx::start`] fails with
//! [`io::ErrorKind::NotFound`] (install it with `apt-get install nginx`);
//! tests skip, loudly. The system's nginx service is not touched: each
//! [`Nginx`] runs its own master process in the foreground with its own
//! configuration, pid file, logs and temporary files in a private directory,
//! and dropping it stops the process and removes the directory.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::tls::SelfSigned;
use crate::runtime::net::{connect_addr, ConnectOptions};
use crate::runtime::sleep;

const NOT_FOUND: &str = "nginx not found; install it with apt-get install nginx (or set $NGINX)";

/// How long start-up and restart wait for nginx to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the test nginx's configuration says.
#[derive(Debug, Clone)]
pub struct NginxConfig {
    /// `keepalive_timeout`, also announced as `Keep-Alive: timeout=N`
    /// (whole seconds).
    pub keepalive_timeout: Duration,
    /// `keepalive_requests`: requests per connection before nginx closes it.
    pub keepalive_requests: u32,
    /// `worker_processes`.
    pub workers: u32,
}

impl Default for NginxConfig {
    fn default() -> Self {
        NginxConfig {
            keepalive_timeout: Duration::from_secs(2),
            keepalive_requests: 100,
            workers: 1,
        }
    }
}

/// A running nginx (see the [module docs](self)). It serves, over HTTPS on
/// `127.0.0.1`:
///
/// - `GET /hello`: `hello`;
/// - `GET /close`: `bye` with `Connection: close`
///   (`keepalive_timeout 0` for that location);
/// - anything else: `ok`.
pub struct Nginx {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    cert: SelfSigned,
}

fn find_nginx() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NGINX").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, NOT_FOUND))
}

/// True if an nginx binary can be found.
pub fn nginx_available() -> bool {
    find_nginx().is_ok()
}

fn make_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("greenpool-nginx-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn config_text(dir: &Path, port: u16, c: &NginxConfig) -> String {
    let d = dir.display();
    let secs = c.keepalive_timeout.as_secs().max(1);
    // As root, the workers would switch to "nobody", who cannot write the
    // private directory.
    let user = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    format!(
        "{user}
daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout {secs}s {secs}s;
    keepalive_requests {reqs};
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        default_type text/plain;
        location = /hello {{ return 200 \"hello\"; }}
        location = /close {{ keepalive_timeout 0; return 200 \"bye\"; }}
        location / {{ return 200 \"ok\"; }}
    }}
}}
",
        workers = c.workers,
        reqs = c.keepalive_requests,
    )
}

impl Nginx {
    /// Start nginx with `config` on a free port and wait until it accepts
    /// connections.
    pub fn start(config: NginxConfig) -> io::Result<Self> {
        let binary = find_nginx()?;
        let dir = make_dir()?;
        let cert = SelfSigned::new(&["localhost", "127.0.0.1"])?;
        fs::write(dir.join("cert.pem"), cert.cert_pem())?;
        fs::write(dir.join("key.pem"), cert.key_pem())?;
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        fs::write(dir.join("nginx.conf"), config_text(&dir, port, &config))?;
        let mut n = Nginx {
            binary,
            dir,
            port,
            child: None,
            cert,
        };
        n.launch()?;
        Ok(n)
    }

    fn launch(&mut self) -> io::Result<()> {
        let child = Command::new(&self.binary)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {:?}: {e}", self.binary)))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let probe = ConnectOptions::new().connect_timeout(Duration::from_millis(200));
            if connect_addr(self.addr(), &probe).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "nginx exited at start-up ({status}): {}",
                    self.error_log()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "nginx did not listen within {START_TIMEOUT:?}: {}",
                        self.error_log()
                    ),
                ));
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// The last lines of nginx's error log.
    pub fn error_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr())
    }

    /// nginx's certificate (for `localhost` and `127.0.0.1`).
    pub fn cert(&self) -> &SelfSigned {
        &self.cert
    }

    /// Signal our own child, which we have not reaped yet (so its pid
    /// cannot have been reused).
    fn signal(&self, sig: Signal) -> io::Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| io::Error::other("nginx is not running"))?;
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(io::Error::from)
    }

    /// `nginx -s reload`: SIGHUP. New workers start; old ones finish their
    /// requests and close their keep-alive connections.
    pub fn reload(&self) -> io::Result<()> {
        self.signal(Signal::SIGHUP)
    }

    /// Stop nginx at once (SIGTERM: open connections are closed) and wait
    /// for it to exit.
    pub fn stop(&mut self) -> io::Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.signal(Signal::SIGTERM)?;
        let mut child = self.child.take().expect("checked");
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                break;
            }
            sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stop nginx and start it again on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.launch()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM first: the master stops its workers (a SIGKILL would
        // orphan them, still listening); stop() falls back to SIGKILL.
        if self.stop().is_err() {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
