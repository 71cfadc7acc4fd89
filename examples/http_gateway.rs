//! An HTTP front end whose handlers call a remote HTTPS API through the pool:
//! the scenario geventconnpool was written for. The pool keeps keep-alive
//! TLS connections open, so no request pays for a TLS handshake.
//!
//! The HTTP server is `may_minihttp`: every connection is served by its own
//! green thread, and a handler that checks a connection out of the pool
//! blocks only that green thread. The backend ("the remote API") is an
//! embedded HTTPS server (`greenpool::testing::TestHttpServer`, with a
//! self-signed certificate the pool trusts), or a real one
//! (`--backend https://host[:port]`, trusted through the system's roots or
//! `--backend-ca FILE`). The pool is `greenpool::http::HttpManager`.
//!
//! Endpoints:
//!
//! - `GET /ping`: `GET /hello` on the backend through the pool, with `retry`;
//! - `GET /echo/<text>`: `POST /echo` with `<text>` (percent-decoded; control
//!   characters are refused) as the body;
//! - `GET /stats`: the pool's state and counters as JSON;
//! - `GET /metrics`: the pool's metrics (`greenpool::metrics::MetricsEvents`,
//!   cargo feature `metrics`) in the Prometheus text format, from
//!   `metrics-exporter-prometheus`'s recorder (no listener of its own: this
//!   server serves the text).
//!
//! A backend failure is `502 Bad Gateway`; no free backend connection within
//! the checkout timeout is `503 Service Unavailable`; both say why.
//!
//! `--self-test CONNS` runs a built-in load client instead of serving
//! forever: CONNS keep-alive HTTP connections (green threads, plain blocking
//! HTTP/1.1 over the runtime's `TcpStream`) each send `--requests` requests;
//! half-way through, the embedded backend closes every pooled connection.
//! It prints requests/s, latency percentiles and errors, and exits 0 only if
//! every request succeeded.
//!
//! ```text
//! cargo run --release --example http_gateway                      # serve on 127.0.0.1:8080
//! cargo run --release --example http_gateway -- --listen 127.0.0.1:0 --self-test 200
//! ```

mod common;

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool::http::{self as backend_http, HttpError, HttpManager};
use greenpool::metrics::MetricsEvents;
use greenpool::runtime::net::{connect_addr, ConnectOptions};
use greenpool::runtime::tls::TlsConnector;
use greenpool::runtime::{self, spawn};
use greenpool::testing::TestHttpServer;
use greenpool::{ConnectionPool, Retry};
use may_minihttp::{HttpServer, HttpService, Request, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const HELP: &str = "\
http_gateway: an HTTP server (may_minihttp) whose handlers reach a backend
through a greenpool connection pool.

USAGE: cargo run --release --example http_gateway -- [OPTIONS]

OPTIONS:
  --listen ADDR       where to serve HTTP (default 127.0.0.1:8080; port 0 picks a free port)
  --backend URL       the HTTPS (or HTTP) API to call: it must answer
                      GET /hello with \"hello\" and echo POST /echo bodies
                      (default: start an embedded HTTPS backend)
  --backend-ca FILE   trust the CA certificates in this PEM file for
                      --backend (default: the system's roots)
  --size N            backend connections in the pool (default 8)
  --duration SECS     serve this long, then stop (default: until killed)
  --self-test CONNS   run the built-in load client with CONNS keep-alive
                      connections, print the numbers, stop; exit 0 only if
                      every request succeeded
  --requests N        requests per self-test connection (default 50)
  -h, --help          this text

ENDPOINTS: GET /ping, GET /echo/<text>, GET /stats, GET /metrics (Prometheus text)

Set RUST_LOG=info to see the pool's own log lines.";

/// Longest `<text>` accepted by `/echo/`.
const MAX_ECHO: usize = 1024;

struct Options {
    listen: SocketAddr,
    backend: Option<String>,
    backend_ca: Option<String>,
    size: usize,
    duration: Option<Duration>,
    self_test: Option<usize>,
    requests: usize,
}

fn parse_args(flags: &mut common::Flags) -> Result<Options, String> {
    let mut o = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        backend: None,
        backend_ca: None,
        size: 8,
        duration: None,
        self_test: None,
        requests: 50,
    };
    while let Some(a) = flags.next() {
        let mut value = |name: &str| flags.value::<String>(name);
        let number = |name: &str, v: String| v.parse::<usize>().map_err(|e| format!("{name}: {e}"));
        let addr = |name: &str, v: String| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("{name}: {e} (expected IP:PORT, e.g. 127.0.0.1:8080)"))
        };
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--listen" => o.listen = addr("--listen", value("--listen")?)?,
            "--backend" => o.backend = Some(value("--backend")?),
            "--backend-ca" => o.backend_ca = Some(value("--backend-ca")?),
            "--size" => o.size = number("--size", value("--size")?)?.max(1),
            "--duration" => {
                o.duration = Some(Duration::from_secs(
                    number("--duration", value("--duration")?)?.max(1) as u64,
                ))
            }
            "--self-test" => {
                o.self_test = Some(number("--self-test", value("--self-test")?)?.max(1))
            }
            "--requests" => o.requests = number("--requests", value("--requests")?)?.max(1),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------
// The HTTP service.
// ---------------------------------------------------------------------------

/// One per HTTP connection (may_minihttp clones it); the clones share the
/// pool.
#[derive(Clone)]
struct Gateway {
    pool: ConnectionPool<HttpManager>,
    policy: Retry,
    started: Instant,
    served: Arc<AtomicU64>,
    /// Renders the pool's metrics.
    metrics: PrometheusHandle,
}

impl HttpService for Gateway {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        self.served.fetch_add(1, Ordering::Relaxed);
        let path = req.path();
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match (req.method(), path) {
            ("GET", "/ping") => match self.policy.call(|| self.backend_get("/hello")) {
                Ok(body) if body == "hello" => text(rsp, "PONG\n"),
                Ok(body) => backend_error(rsp, &unexpected(&body)),
                Err(e) => backend_error(rsp, &e),
            },
            ("GET", p) if p.starts_with("/echo/") => match decode_text(&p["/echo/".len()..]) {
                Err(why) => {
                    rsp.status_code(400, "Bad Request");
                    text(rsp, format!("{why}\n"));
                }
                Ok(t) => match self.policy.call(|| self.backend_echo(&t)) {
                    Ok(reply) => text(rsp, reply + "\n"),
                    Err(e) => backend_error(rsp, &e),
                },
            },
            ("GET", "/stats") => {
                rsp.header("Content-Type: application/json");
                rsp.body_vec(self.stats_json().into_bytes());
            }
            ("GET", "/metrics") => {
                rsp.header("Content-Type: text/plain; version=0.0.4");
                rsp.body_vec(self.metrics.render().into_bytes());
            }
            ("GET", "/") => text(
                rsp,
                "endpoints: GET /ping, GET /echo/<text>, GET /stats, GET /metrics\n",
            ),
            (_, "/" | "/ping" | "/stats" | "/metrics") => {
                rsp.status_code(405, "Method Not Allowed");
                rsp.header("Allow: GET");
                text(rsp, "only GET\n");
            }
            _ => {
                rsp.status_code(404, "Not Found");
                text(
                    rsp,
                    "not found; try /ping, /echo/<text>, /stats or /metrics\n",
                );
            }
        }
        Ok(())
    }
}

/// The backend answered 200 with something else.
fn unexpected(body: &str) -> HttpError {
    HttpError::Protocol(format!("the backend answered {body:?}"))
}

impl Gateway {
    /// `GET path` on the backend through the pool: the body of a 200.
    fn backend_get(&self, path: &str) -> Result<String, HttpError> {
        let r = self.pool.with(|c| c.get(path))?;
        ok_body(r)
    }

    /// `POST /echo` with `text` on the backend through the pool.
    fn backend_echo(&self, text: &str) -> Result<String, HttpError> {
        let req = backend_http::Request::post("/echo")
            .header("content-type", "text/plain; charset=utf-8")
            .body(text.as_bytes().to_vec())
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let r = self.pool.with(|c| c.send(req.clone()))?;
        ok_body(r)
    }

    /// The pool's state and counters, and the gateway's own, as JSON.
    fn stats_json(&self) -> String {
        let s = self.pool.state();
        let c = s.counters;
        let d = c.discarded;
        let pool = json_object(&[
            ("size", s.size.to_string()),
            ("open", s.open.to_string()),
            ("idle", s.idle.to_string()),
            ("in_use", s.in_use.to_string()),
            ("checking", s.checking.to_string()),
            ("connecting", s.connecting.to_string()),
            ("waiting", s.waiting.to_string()),
            ("closed", s.closed.to_string()),
        ]);
        let discarded = json_object(&[
            ("total", d.total().to_string()),
            ("error", d.error.to_string()),
            ("panic", d.panic.to_string()),
            ("explicit", d.explicit.to_string()),
            ("broken", d.broken.to_string()),
            ("keepalive", d.keepalive.to_string()),
            ("validation", d.validation.to_string()),
            ("expired", d.expired.to_string()),
        ]);
        let counters = json_object(&[
            ("created", c.created.to_string()),
            ("connect_failures", c.connect_failures.to_string()),
            ("checkouts", c.checkouts.to_string()),
            ("waited_checkouts", c.waited_checkouts.to_string()),
            ("checkout_timeouts", c.checkout_timeouts.to_string()),
            ("keepalives", c.keepalives.to_string()),
            ("discarded", discarded),
        ]);
        let gateway = json_object(&[
            (
                "http_requests",
                self.served.load(Ordering::Relaxed).to_string(),
            ),
            ("uptime_ms", self.started.elapsed().as_millis().to_string()),
        ]);
        let mut all = json_object(&[("pool", pool), ("counters", counters), ("gateway", gateway)]);
        all.push('\n');
        all
    }
}

/// `{"key":value,...}` from keys that need no escaping and values that are
/// JSON already (numbers, booleans, objects).
fn json_object(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{k}\":{v}");
    }
    out.push('}');
    out
}

fn text(rsp: &mut Response, body: impl Into<String>) {
    rsp.header("Content-Type: text/plain; charset=utf-8");
    rsp.body_vec(body.into().into_bytes());
}

/// The body of a `200` response, as text; any other status is an error.
fn ok_body(r: greenpool::http::Response<Vec<u8>>) -> Result<String, HttpError> {
    let body = String::from_utf8_lossy(r.body()).into_owned();
    if r.status() == 200 {
        Ok(body)
    } else {
        Err(HttpError::Protocol(format!(
            "the backend answered {}: {body:?}",
            r.status()
        )))
    }
}

/// 503 when no backend connection was free in time (the pool's checkout
/// timeout), 502 for any other backend failure; the body says what happened.
fn backend_error(rsp: &mut Response, e: &HttpError) {
    let timeout = matches!(e, HttpError::Pool(p) if p.is_timeout());
    if timeout {
        rsp.status_code(503, "Service Unavailable");
        rsp.header("Retry-After: 1");
    } else {
        rsp.status_code(502, "Bad Gateway");
    }
    log::warn!("backend request failed: {e}");
    text(rsp, format!("backend: {e}\n"));
}

/// Percent-decode the `<text>` of `/echo/<text>`. Control characters
/// (`\n`, `\r`, ...) are refused: they would end the backend's request line
/// and let a client send a second command of its own.
fn decode_text(raw: &str) -> Result<String, String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let v = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding in the path")?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let t = String::from_utf8(out).map_err(|_| "the text is not UTF-8".to_owned())?;
    if t.is_empty() || t.len() > MAX_ECHO {
        return Err(format!("the text must be 1 to {MAX_ECHO} bytes"));
    }
    if t.chars().any(char::is_control) {
        return Err("control characters are not allowed in the text".to_owned());
    }
    Ok(t)
}

// ---------------------------------------------------------------------------
// The built-in load client.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ClientReport {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl ClientReport {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// One HTTP/1.1 request on a keep-alive connection; returns status and body.
fn http_get(
    conn: &mut BufReader<runtime::net::TcpStream>,
    host: &str,
    path: &str,
) -> io::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes())?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let mut length = None;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(bad("the server closed the connection in the headers"));
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = length.ok_or_else(|| bad("no Content-Length"))?;
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One self-test connection: `requests` requests in turn, checking every
/// answer. A failed connection is reopened for the remaining requests.
/// The request that completes number `half` of all of them runs `halfway`.
fn client(
    addr: SocketAddr,
    id: usize,
    requests: usize,
    done: &AtomicU64,
    half: u64,
    halfway: &(dyn Fn() + Sync),
) -> ClientReport {
    let opts = ConnectOptions::new()
        .read_timeout(Some(Duration::from_secs(10)))
        .write_timeout(Some(Duration::from_secs(10)));
    let host = addr.to_string();
    let mut report = ClientReport {
        latencies_us: Vec::with_capacity(requests),
        ..ClientReport::default()
    };
    let mut conn = None;
    for i in 0..requests {
        let (path, expect) = match i % 10 {
            9 => ("/stats".to_owned(), None),
            n if n % 2 == 0 => ("/ping".to_owned(), Some("PONG\n".to_owned())),
            _ => (
                format!("/echo/client%20{id}%2F{i}"),
                Some(format!("client {id}/{i}\n")),
            ),
        };
        let t = Instant::now();
        let c = match &mut conn {
            Some(c) => c,
            None => match connect_addr(addr, &opts) {
                Ok(s) => conn.insert(BufReader::new(s)),
                Err(e) => {
                    report.error(format!("connect: {e}"));
                    continue;
                }
            },
        };
        match http_get(c, &host, &path) {
            Ok((200, body)) if expect.as_ref().is_none_or(|e| *e == body) => {
                report
                    .latencies_us
                    .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok((status, body)) => report.error(format!("GET {path}: {status} {body:?}")),
            Err(e) => {
                report.error(format!("GET {path}: {e}"));
                conn = None;
            }
        }
        if done.fetch_add(1, Ordering::Relaxed) + 1 == half {
            halfway();
        }
    }
    report
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

// ---------------------------------------------------------------------------
// The program.
// ---------------------------------------------------------------------------

/// may_minihttp's `start` does not report the port it bound, so port 0 is
/// resolved here: bind a throw-away listener, note its port, close it.
fn concrete_listen_addr(addr: SocketAddr) -> io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr)?;
    probe.local_addr()
}

/// The pool's manager for `url`: trusting the embedded backend's own
/// certificate, or `ca` (a PEM file), or the system's roots.
fn backend_manager(
    url: &str,
    ca: Option<&str>,
    embedded: Option<&TestHttpServer>,
) -> Result<HttpManager, Box<dyn std::error::Error>> {
    let m = HttpManager::new(url)?.timeout(Some(Duration::from_secs(2)));
    let connector = match (embedded, ca) {
        (Some(server), _) => Some(server.connector()?),
        (None, Some(ca)) => Some(TlsConnector::from_pem_file(ca)?),
        (None, None) => None,
    };
    Ok(match connector {
        Some(c) => m.tls(c),
        None => m,
    })
}

fn main() -> ExitCode {
    let opts = match common::options("http_gateway", HELP, parse_args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    // may_minihttp logs every keep-alive connection a client closes as an
    // error ("service err = ... read closed"); keep that quiet by default.
    common::init_logging("warn,may_minihttp=off");
    // First thing: may_minihttp's connection green threads get the runtime's
    // stack size (128 KiB) only if the runtime is configured before it starts.
    common::start_runtime();

    // The backend: an embedded HTTPS API, or a real one.
    let embedded = match opts.backend {
        Some(_) => None,
        None => match TestHttpServer::start_tls() {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("http_gateway: cannot start the embedded backend: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let backend = opts
        .backend
        .clone()
        .or(embedded.as_ref().map(TestHttpServer::url))
        .expect("one of the two");
    let manager = match backend_manager(&backend, opts.backend_ca.as_deref(), embedded.as_ref()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("http_gateway: {e}");
            return ExitCode::from(2);
        }
    };

    // The pool, reporting its events to a Prometheus recorder of its own
    // (not installed globally: /metrics renders it).
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let pool = ConnectionPool::builder()
        .name("backend")
        .size(opts.size)
        .checkout_timeout(Duration::from_secs(2))
        .event_handler(MetricsEvents::new("backend").with_recorder(Arc::new(recorder)))
        .build(manager)
        .expect("valid pool settings");
    if let Err(e) = pool.wait_ready(Duration::from_secs(5)) {
        eprintln!("http_gateway: cannot reach the backend at {backend}: {e}");
        return ExitCode::FAILURE;
    }
    let gateway = Gateway {
        pool: pool.clone(),
        policy: Retry::new()
            .name("backend request")
            .max_failures(3)
            .interval(Duration::from_millis(5))
            .retry_level(log::Level::Debug),
        started: Instant::now(),
        served: Arc::new(AtomicU64::new(0)),
        metrics,
    };

    // The HTTP server.
    let listen = match concrete_listen_addr(opts.listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http_gateway: cannot listen on {}: {e}", opts.listen);
            return ExitCode::FAILURE;
        }
    };
    let server = match HttpServer(gateway.clone()).start(listen) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("http_gateway: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "http_gateway on http://{listen}  ->  backend {backend}{} through a pool of {}",
        if embedded.is_some() {
            " (embedded)"
        } else {
            ""
        },
        opts.size
    );

    let code = match opts.self_test {
        Some(conns) => run_self_test(listen, conns, opts.requests, embedded.as_ref(), &gateway),
        None => {
            println!("try: curl http://{listen}/ping  |  curl http://{listen}/echo/hello  |  curl http://{listen}/stats  |  curl http://{listen}/metrics");
            match opts.duration {
                Some(d) => {
                    runtime::sleep(d);
                    println!(
                        "served {} requests; stopping",
                        gateway.served.load(Ordering::Relaxed)
                    );
                    ExitCode::SUCCESS
                }
                None => {
                    // Serve until killed.
                    let _ = server.join();
                    return ExitCode::SUCCESS;
                }
            }
        }
    };

    // Stop: cancel the accept loop (its listener closes), then the pool.
    // Connections still open would keep being served by their own green
    // threads, which is why the self-test closed its clients first.
    //
    // SAFETY: cancelling a may coroutine unwinds it at its next blocking call
    // (here the accept), running its destructors; it needs panic = "unwind",
    // which Cargo.toml sets for every profile. No other code touches the
    // coroutine.
    unsafe { server.coroutine().cancel() };
    let _ = server.join(); // Err(Cancel) is the expected outcome
    pool.close();
    code
}

/// `GET /metrics` once, on a connection of its own: the body of a 200.
fn scrape_metrics(addr: SocketAddr) -> io::Result<String> {
    let opts = ConnectOptions::new().read_timeout(Some(Duration::from_secs(10)));
    let mut c = BufReader::new(connect_addr(addr, &opts)?);
    match http_get(&mut c, &addr.to_string(), "/metrics")? {
        (200, body) if body.contains("greenpool_checkouts_total{pool=\"backend\"}") => Ok(body),
        (status, body) => Err(io::Error::other(format!(
            "{status}, without the pool's checkout counter: {body:.200}"
        ))),
    }
}

fn run_self_test(
    listen: SocketAddr,
    conns: usize,
    requests: usize,
    embedded: Option<&TestHttpServer>,
    gateway: &Gateway,
) -> ExitCode {
    let total = (conns * requests) as u64;
    let reset = Arc::new(AtomicU64::new(0));
    let halfway: Arc<dyn Fn() + Send + Sync> = match embedded {
        Some(server) => {
            let (server, reset) = (server.clone(), Arc::clone(&reset));
            Arc::new(move || {
                reset.store(server.close_all() as u64, Ordering::Relaxed);
            })
        }
        None => Arc::new(|| {}),
    };
    println!(
        "self-test: {conns} keep-alive connections x {requests} requests (/ping, /echo, /stats){}",
        if embedded.is_some() {
            "; the backend closes every pooled connection half-way"
        } else {
            ""
        }
    );
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..conns)
        .map(|id| {
            let (done, halfway) = (Arc::clone(&done), Arc::clone(&halfway));
            spawn(move || client(listen, id, requests, &done, total / 2, &*halfway))
        })
        .collect();
    let mut lat = Vec::with_capacity(total as usize);
    let mut errors = 0;
    let mut first_error = None;
    for c in clients {
        match c.join() {
            Ok(r) => {
                lat.extend(r.latencies_us);
                errors += r.errors;
                first_error = first_error.or(r.first_error);
            }
            Err(e) => {
                errors += requests as u64;
                first_error = first_error.or(Some(format!("a client green thread died: {e}")));
            }
        }
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    let ok = lat.len() as u64;
    let s = gateway.pool.state();
    println!();
    println!("self-test summary ({elapsed:.2?})");
    println!("  requests ok            {ok:>10}");
    println!("  errors                 {errors:>10}   (0 expected)");
    println!(
        "  throughput             {:>10.0} req/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency p50            {:>10.2} ms",
        percentile(&lat, 0.50)
    );
    println!(
        "  latency p99            {:>10.2} ms",
        percentile(&lat, 0.99)
    );
    println!(
        "  latency max            {:>10.2} ms",
        percentile(&lat, 1.0)
    );
    if embedded.is_some() {
        println!(
            "  backend resets         {:>10}   connections, half-way",
            reset.load(Ordering::Relaxed)
        );
    }
    println!(
        "  pool                   {:>10}   open of {}; {} created, {} discarded, {} checkouts ({} waited)",
        s.open,
        s.size,
        s.counters.created,
        s.counters.discarded.total(),
        s.counters.checkouts,
        s.counters.waited_checkouts
    );
    match scrape_metrics(listen) {
        Ok(body) => {
            let checkouts = body
                .lines()
                .find(|l| l.starts_with("greenpool_checkouts_total{"))
                .and_then(|l| l.rsplit_once(' '))
                .map_or("none", |(_, v)| v)
                .to_owned();
            println!(
                "  /metrics               {:>10}   lines; greenpool_checkouts_total {checkouts}",
                body.lines().count()
            );
        }
        Err(e) => {
            errors += 1;
            first_error = first_error.or(Some(format!("GET /metrics: {e}")));
        }
    }
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    if errors == 0 && ok == total {
        println!(
            "\nOK: {ok} HTTP requests through a pool of {}, 0 failed.",
            s.size
        );
        ExitCode::SUCCESS
    } else {
        println!("\nFAILED: {errors} errors, {ok} of {total} requests ok.");
        ExitCode::FAILURE
    }
}
