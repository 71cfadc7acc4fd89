//! An HTTP/1.1 keep-alive [`Manager`] for one origin (cargo feature `http`;
//! `https://` origins need the `tls` feature too): what geventconnpool was
//! written for, a web app calling a remote HTTPS API without paying for a
//! TLS handshake per request.
//!
//! Not a general HTTP client: one origin, HTTP/1.1, no redirects, no
//! cookies, no proxies, no request body streaming. Requests and responses are
//! the [`http`] crate's types; responses are parsed by [`httparse`].
//!
//! ```
//! use greenpool::http::HttpManager;
//! use greenpool::{retry, ConnectionPool};
//! # let server = greenpool::testing::TestHttpServer::start()?;
//! # let origin = server.url();
//! // origin: "https://api.example.com" (or "http://127.0.0.1:8080")
//! let pool = ConnectionPool::builder()
//!     .size(8)
//!     .build(HttpManager::new(&origin)?)?;
//! let rsp = retry(|| pool.with(|c| c.get("/hello")))?;
//! assert_eq!(rsp.status(), 200);
//! assert_eq!(rsp.body(), b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How connections stay healthy:
//!
//! - a response with `Connection: close` (or an HTTP/1.0 one without
//!   keep-alive), or any error on the connection, makes it not reusable:
//!   [`Manager::has_broken`] then discards it when it goes back to the pool;
//! - the server's `Keep-Alive: timeout=N` is reported as
//!   [`Manager::server_idle_timeout`], so the pool checks idle connections
//!   inside it (learnt from a `HEAD` on the first connections, see
//!   [`HttpManager::idle_timeout_probe`], or given with
//!   [`HttpManager::server_idle_timeout`]);
//! - keepalive and validation are a non-blocking "has the server closed
//!   it?" check ([`HttpConnection::peer_status`]), or a `HEAD` request with
//!   [`HttpManager::keepalive_path`];
//! - before each request the same check runs, and a connection the server
//!   has closed is reopened in place; an idempotent request on a reused
//!   connection that the server closed before answering (the keep-alive
//!   race) is sent once more on a new connection, as browsers do.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(feature = "tls")]
use std::sync::OnceLock;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::Version;
/// The `http` crate's types that requests and responses are made of.
pub use http::{header, HeaderMap, Method, Request, Response, StatusCode};

use crate::runtime::net::{self, ConnectOptions, PeerStatus, TcpStream};
#[cfg(feature = "tls")]
use crate::runtime::tls::{TlsConnector, TlsStream};
use crate::Manager;

/// Default for [`HttpManager::timeout`]: 30 s per read or write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`HttpManager::max_response_head`]: 64 KiB.
pub const DEFAULT_MAX_HEAD: usize = 64 * 1024;
/// Default for [`HttpManager::max_response_body`]: 16 MiB.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;
/// Most response headers accepted.
pub const MAX_HEADERS: usize = 100;

const UNKNOWN: u64 = 0;
const NO_TIMEOUT: u64 = 1;

fn learnt(o: &Origin) -> Option<Option<Duration>> {
    match o.learnt.load(Ordering::Relaxed) {
        UNKNOWN => None,
        NO_TIMEOUT => Some(None),
        ms => Some(Some(Duration::from_millis(ms - 2))),
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What an HTTP request or connection failed with. Every message names the
/// request (method and URL) or the origin.
///
/// A status code is not an error: a `500` response is an `Ok(Response)`.
#[derive(Debug)]
pub enum HttpError {
    /// Connecting, TLS, reading or writing failed (including timeouts:
    /// [`is_timeout`](Self::is_timeout)). The `io::Error` is the
    /// [`source`](std::error::Error::source), so an `io`
    /// [`ErrorSet`](crate::ErrorSet) matches (and [`crate::retry`] retries).
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The server's response is not valid HTTP/1.1.
    Protocol(String),
    /// The response's head or body is larger than the manager's limit.
    TooLarge {
        /// What was too large, with the request.
        what: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request cannot be sent (a chunked request body, a bad URL).
    InvalidRequest(String),
    /// The origin URL given to [`HttpManager::new`] is not usable.
    InvalidOrigin(String),
    /// A health check found that the server has closed the idle connection.
    Closed(String),
    /// No pooled connection could be checked out (from
    /// [`ConnectionPool::with`](crate::ConnectionPool::with)).
    Pool(crate::Error),
}

impl From<crate::Error> for HttpError {
    fn from(e: crate::Error) -> Self {
        HttpError::Pool(e)
    }
}

impl HttpError {
    /// True if a read, write, connect or handshake timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Io { source, .. } if source.kind() == io::ErrorKind::TimedOut)
    }

    fn io(context: impl Into<String>, source: io::Error) -> Self {
        HttpError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Io { context, source } => write!(f, "{context}: {source}"),
            HttpError::Protocol(why) => write!(f, "HTTP protocol error: {why}"),
            HttpError::TooLarge { what, limit } => write!(
                f,
                "{what} is larger than the limit of {limit} bytes \
                 (HttpManager::max_response_head / max_response_body)"
            ),
            HttpError::InvalidRequest(why) => write!(f, "invalid HTTP request: {why}"),
            HttpError::InvalidOrigin(why) => write!(f, "invalid HTTP origin: {why}"),
            HttpError::Closed(why) => f.write_str(why),
            HttpError::Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Io { source, .. } => Some(source),
            HttpError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// The manager
// ---------------------------------------------------------------------------

struct Origin {
    /// "https://host:port", for messages.
    url: String,
    /// "host:port" to connect to.
    addr: String,
    /// The host, for TLS (no brackets).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    host: String,
    /// The Host header.
    authority: HeaderValue,
    tls: bool,
    connect: ConnectOptions,
    #[cfg(feature = "tls")]
    connector: OnceLock<TlsConnector>,
    timeout: Option<Duration>,
    max_head: usize,
    max_body: usize,
    server_idle_timeout: Option<Duration>,
    probe: Option<String>,
    keepalive_path: Option<String>,
    /// What the probe found: [`UNKNOWN`], [`NO_TIMEOUT`], or the server's
    /// keep-alive timeout in ms plus 2.
    learnt: AtomicU64,
}

impl Clone for Origin {
    fn clone(&self) -> Self {
        Origin {
            url: self.url.clone(),
            addr: self.addr.clone(),
            host: self.host.clone(),
            authority: self.authority.clone(),
            tls: self.tls,
            connect: self.connect.clone(),
            #[cfg(feature = "tls")]
            connector: self.connector.clone(),
            timeout: self.timeout,
            max_head: self.max_head,
            max_body: self.max_body,
            server_idle_timeout: self.server_idle_timeout,
            probe: self.probe.clone(),
            keepalive_path: self.keepalive_path.clone(),
            learnt: AtomicU64::new(self.learnt.load(Ordering::Relaxed)),
        }
    }
}

/// A [`Manager`] whose connections are HTTP/1.1 keep-alive connections to
/// one origin, over TCP or TLS. See the [module docs](self).
///
/// | option | default |
/// |---|---|
/// | [`tls`](Self::tls) | the system's root certificates |
/// | [`connect_options`](Self::connect_options) | [`ConnectOptions::default`] |
/// | [`timeout`](Self::timeout) | [`DEFAULT_TIMEOUT`] per read or write |
/// | [`max_response_head`](Self::max_response_head) | [`DEFAULT_MAX_HEAD`] |
/// | [`max_response_body`](Self::max_response_body) | [`DEFAULT_MAX_BODY`] |
/// | [`idle_timeout_probe`](Self::idle_timeout_probe) | `HEAD /` on the first connections |
/// | [`keepalive_path`](Self::keepalive_path) | none: keepalive only checks for a close |
///
/// A TLS handshake needs [`HANDSHAKE_STACK_SIZE`](crate::runtime::tls::HANDSHAKE_STACK_SIZE)
/// bytes of stack; on a green thread with less (the pool's connectors and the
/// runtime's default 128 KiB included) it runs on a helper green thread
/// that has enough, so no stack setting is needed.
///
/// The builder methods change this manager only: a clone made earlier keeps
/// its own settings.
#[derive(Clone)]
pub struct HttpManager {
    origin: Arc<Origin>,
}

impl fmt::Debug for HttpManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpManager")
            .field("origin", &self.origin.url)
            .finish_non_exhaustive()
    }
}

impl HttpManager {
    /// A manager for `origin`: `http://host[:port]` or `https://host[:port]`
    /// (a trailing `/` is allowed; a path, query or user name is not).
    pub fn new(origin: &str) -> Result<Self, HttpError> {
        let bad = |why: &str| HttpError::InvalidOrigin(format!("{origin:?}: {why}"));
        let uri: http::Uri = origin
            .parse()
            .map_err(|e| bad(&format!("not a URL ({e})")))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http:// or https://")),
        };
        #[cfg(not(feature = "tls"))]
        if tls {
            return Err(bad("https:// needs greenpool's `tls` feature"));
        }
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user names in the URL are not supported"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad(
                "an origin has no path or query; give those per request",
            ));
        }
        let host = auth.host();
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let authority = HeaderValue::from_str(auth.as_str()).map_err(|_| bad("bad host"))?;
        let scheme = if tls { "https" } else { "http" };
        Ok(HttpManager {
            origin: Arc::new(Origin {
                url: format!("{scheme}://{addr}"),
                addr,
                host: bare,
                authority,
                tls,
                connect: ConnectOptions::default(),
                #[cfg(feature = "tls")]
                connector: OnceLock::new(),
                timeout: Some(DEFAULT_TIMEOUT),
                max_head: DEFAULT_MAX_HEAD,
                max_body: DEFAULT_MAX_BODY,
                server_idle_timeout: None,
                probe: Some("/".to_owned()),
                keepalive_path: None,
                learnt: AtomicU64::new(UNKNOWN),
            }),
        })
    }

    fn edit(mut self, f: impl FnOnce(&mut Origin)) -> Self {
        f(Arc::make_mut(&mut self.origin));
        self
    }

    /// The TLS configuration for an `https://` origin (default: trust the
    /// system's root certificates, [`TlsConnector::system_roots`]).
    #[cfg(feature = "tls")]
    pub fn tls(self, connector: TlsConnector) -> Self {
        self.edit(|o| {
            o.connector = OnceLock::new();
            let _ = o.connector.set(connector);
        })
    }

    /// TCP options: connect timeout, DNS, TCP keepalive (default
    /// [`ConnectOptions::default`]). Its read and write timeouts are
    /// replaced by [`timeout`](Self::timeout).
    pub fn connect_options(self, opts: ConnectOptions) -> Self {
        self.edit(|o| o.connect = opts)
    }

    /// Time limit for each read and each write on a connection (default
    /// [`DEFAULT_TIMEOUT`]; `None`: wait forever). A slow response fails
    /// with a timeout ([`HttpError::is_timeout`]) and the connection is
    /// discarded.
    pub fn timeout(self, d: Option<Duration>) -> Self {
        self.edit(|o| o.timeout = d.map(|d| d.max(Duration::from_millis(1))))
    }

    /// Largest response head (status line and headers) accepted (default
    /// [`DEFAULT_MAX_HEAD`]).
    pub fn max_response_head(self, bytes: usize) -> Self {
        self.edit(|o| o.max_head = bytes.max(64))
    }

    /// Largest response body accepted (default [`DEFAULT_MAX_BODY`]). A
    /// larger one fails with [`HttpError::TooLarge`], before it is read when
    /// its `Content-Length` says so.
    pub fn max_response_body(self, bytes: usize) -> Self {
        self.edit(|o| o.max_body = bytes)
    }

    /// The server's keep-alive timeout, when you know it (no probe is sent).
    /// The pool keeps its idle connections checked inside it.
    pub fn server_idle_timeout(self, d: Duration) -> Self {
        self.edit(|o| {
            o.server_idle_timeout = Some(d);
            o.probe = None;
        })
    }

    /// Path of the `HEAD` request sent on new connections until one response
    /// has said whether the server sends `Keep-Alive: timeout=N` (default
    /// `Some("/")`; `None` sends nothing). Its status does not matter.
    pub fn idle_timeout_probe(self, path: Option<&str>) -> Self {
        self.edit(|o| o.probe = path.map(str::to_owned))
    }

    /// Make [`Manager::keepalive`] a `HEAD` request to `path` (any status
    /// counts as alive), which resets the server's idle timer, instead of
    /// the default check that costs no traffic but lets the server close
    /// idle connections (the pool then replaces them).
    pub fn keepalive_path(self, path: Option<&str>) -> Self {
        self.edit(|o| o.keepalive_path = path.map(str::to_owned))
    }

    /// The origin, as `scheme://host:port`.
    pub fn origin(&self) -> &str {
        &self.origin.url
    }

    /// Open a connection (TCP connect, and the TLS handshake for `https://`)
    /// without a pool: what a connection per request costs.
    pub fn connect(&self) -> Result<HttpConnection, HttpError> {
        let stream = open(&self.origin)?;
        Ok(HttpConnection {
            origin: Arc::clone(&self.origin),
            stream: Some(stream),
            used: false,
            keep_alive: None,
            reconnects: 0,
        })
    }
}

/// Open a stream. A TLS handshake needs [`HANDSHAKE_STACK_SIZE`] bytes of
/// stack: on a green thread with less (the runtime's default is 128 KiB) it
/// runs on a helper green thread that has enough, so callers need not care.
///
/// [`HANDSHAKE_STACK_SIZE`]: crate::runtime::tls::HANDSHAKE_STACK_SIZE
fn open(o: &Arc<Origin>) -> Result<BufReader<Transport>, HttpError> {
    #[cfg(feature = "tls")]
    if o.tls && crate::runtime::is_green() {
        let words = crate::runtime::tls::HANDSHAKE_STACK_SIZE / std::mem::size_of::<usize>();
        if crate::runtime::may::coroutine::current().stack_size() < words {
            let origin = Arc::clone(o);
            let helper = crate::runtime::Builder::new()
                .name("greenpool-tls-connect")
                .stack_size(crate::runtime::tls::HANDSHAKE_STACK_SIZE)
                .spawn(move || open_here(&origin))
                .map_err(|e| HttpError::io(format!("connect to {}", o.url), e))?;
            return helper.join().unwrap_or_else(|e| {
                Err(HttpError::io(
                    format!("connect to {}", o.url),
                    io::Error::other(format!("the TLS connect green thread failed: {e}")),
                ))
            });
        }
    }
    open_here(o)
}

fn open_here(o: &Origin) -> Result<BufReader<Transport>, HttpError> {
    let opts = o
        .connect
        .clone()
        .read_timeout(o.timeout)
        .write_timeout(o.timeout);
    let ctx = || format!("connect to {}", o.url);
    if o.tls {
        #[cfg(feature = "tls")]
        {
            let connector = match o.connector.get() {
                Some(c) => c,
                None => {
                    let c = TlsConnector::system_roots().map_err(|e| HttpError::io(ctx(), e))?;
                    o.connector.get_or_init(|| c)
                }
            };
            let s = connector
                .connect(&o.addr, &o.host, &opts)
                .map_err(|e| HttpError::io(ctx(), e))?;
            return Ok(BufReader::new(Transport::Tls(Box::new(s))));
        }
    }
    let s = net::connect(&o.addr, &opts).map_err(|e| HttpError::io(ctx(), e))?;
    Ok(BufReader::new(Transport::Tcp(s)))
}

impl Manager for HttpManager {
    type Connection = HttpConnection;
    type Error = HttpError;

    fn new_connection(&self) -> Result<HttpConnection, HttpError> {
        let mut c = self.connect()?;
        let o = &self.origin;
        let unknown = learnt(o).is_none();
        if let (Some(path), true) = (&o.probe, unknown) {
            let req = Request::head(path.as_str())
                .body(Vec::new())
                .map_err(|e| HttpError::InvalidRequest(format!("probe HEAD {path}: {e}")))?;
            c.send(req)?;
            let code = c
                .keep_alive
                .map_or(NO_TIMEOUT, |t| t.as_millis() as u64 + 2);
            o.learnt.store(code, Ordering::Relaxed);
            if let Some(t) = c.keep_alive {
                log::debug!("http {}: the server keeps idle connections {t:?}", o.url);
            }
            if !c.is_reusable() {
                // The probe's response closed the connection: start afresh.
                return self.connect();
            }
        }
        Ok(c)
    }

    fn keepalive(&self, c: &mut HttpConnection) -> Result<(), HttpError> {
        if let Some(path) = &self.origin.keepalive_path {
            let req = Request::head(path.as_str())
                .body(Vec::new())
                .map_err(|e| HttpError::InvalidRequest(format!("keepalive HEAD {path}: {e}")))?;
            // No reconnect in place: a health check must see the truth.
            c.check_open()?;
            c.send(req)?;
            if !c.is_reusable() {
                return Err(HttpError::Closed(format!(
                    "{}: the keepalive response closed the connection",
                    self.origin.url
                )));
            }
            return Ok(());
        }
        c.check_open()
    }

    fn has_broken(&self, c: &mut HttpConnection) -> bool {
        !c.is_reusable() || !c.peer_status().is_idle()
    }

    fn close(&self, mut c: HttpConnection) {
        c.say_goodbye();
    }

    fn server_idle_timeout(&self, c: &mut HttpConnection) -> Option<Duration> {
        self.origin
            .server_idle_timeout
            .or(c.keep_alive)
            .or_else(|| learnt(&self.origin).flatten())
    }
}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

enum Transport {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl Transport {
    fn peer_status(&mut self) -> PeerStatus {
        match self {
            Transport::Tcp(s) => net::peer_status(s),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => s.peer_status(),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// One HTTP/1.1 keep-alive connection to the manager's origin: send a
/// request, get the whole response. Made by [`HttpManager`]; usually
/// checked out of a pool.
pub struct HttpConnection {
    origin: Arc<Origin>,
    /// `None` once it must not be reused.
    stream: Option<BufReader<Transport>>,
    /// A response has been read on the current stream.
    used: bool,
    keep_alive: Option<Duration>,
    reconnects: u64,
}

impl fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnection")
            .field("origin", &self.origin.url)
            .field("reusable", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

/// How a request attempt failed: `stale` means nothing of a response came
/// on a reused connection (it may be sent again on a new one).
struct Failure {
    error: HttpError,
    stale: bool,
}

impl HttpConnection {
    /// `GET path` (with its query), no body.
    pub fn get(&mut self, path: &str) -> Result<Response<Vec<u8>>, HttpError> {
        let req = Request::get(path)
            .body(Vec::new())
            .map_err(|e| HttpError::InvalidRequest(format!("GET {path}: {e}")))?;
        self.send(req)
    }

    /// Send `req` and read the whole response.
    ///
    /// The request's URI gives the path and query (a scheme and authority in
    /// it are ignored: the connection's origin is used). `Host` is added
    /// unless present; `Content-Length` is set from the body for methods
    /// that carry one. A `Transfer-Encoding` request header is refused.
    /// Responses may use `Content-Length`, chunked encoding, or end at
    /// close; `1xx` interim responses are skipped.
    pub fn send<B: AsRef<[u8]>>(
        &mut self,
        req: Request<B>,
    ) -> Result<Response<Vec<u8>>, HttpError> {
        let head = encode_head(&req, &self.origin)?;
        let body = req.body().as_ref();
        let url = self.origin.url.clone();
        let what = || {
            format!(
                "{} {url}{}",
                req.method(),
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            )
        };
        let idempotent = matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        // A connection the server has closed while idle: reopen it now,
        // nothing has been sent.
        if self
            .stream
            .as_mut()
            .is_some_and(|s| !s.get_mut().peer_status().is_idle())
        {
            log::debug!(
                "http {}: the server closed an idle connection; reconnecting",
                self.origin.url
            );
            self.stream = None;
        }
        for attempt in 0..2 {
            if self.stream.is_none() {
                self.stream = Some(open(&self.origin)?);
                self.used = false;
                self.reconnects += 1;
            }
            let reused = self.used;
            match self.attempt(&head, body, req.method(), &what) {
                Ok(rsp) => return Ok(rsp),
                Err(f) => {
                    self.stream = None;
                    if f.stale && reused && idempotent && attempt == 0 {
                        log::debug!(
                            "http {}: {}; sending it again on a new connection",
                            self.origin.url,
                            f.error
                        );
                        continue;
                    }
                    return Err(f.error);
                }
            }
        }
        unreachable!("the loop returns")
    }

    fn attempt(
        &mut self,
        head: &[u8],
        body: &[u8],
        method: &Method,
        what: &dyn Fn() -> String,
    ) -> Result<Response<Vec<u8>>, Failure> {
        let o = Arc::clone(&self.origin);
        let stream = self.stream.as_mut().expect("connected");
        let io = |stale: bool| {
            move |e: io::Error| Failure {
                stale,
                error: HttpError::io(what(), e),
            }
        };
        // One write for small requests: head and body in one TLS record.
        if body.len() <= 16 * 1024 {
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            stream.get_mut().write_all(&all).map_err(io(true))?;
        } else {
            stream.get_mut().write_all(head).map_err(io(true))?;
            stream.get_mut().write_all(body).map_err(io(false))?;
        }
        stream.get_mut().flush().map_err(io(true))?;

        loop {
            let raw = read_head(stream, o.max_head, what).map_err(|(error, nothing)| Failure {
                error,
                stale: nothing,
            })?;
            let fail = |error| Failure {
                error,
                stale: false,
            };
            let (mut rsp, close) = parse_head(&raw, what).map_err(fail)?;
            let status = rsp.status();
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            let no_body = *method == Method::HEAD
                || status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED;
            let (body, ends_at_close) = if no_body {
                (Vec::new(), false)
            } else {
                read_body(stream, rsp.headers(), o.max_body, what).map_err(fail)?
            };
            *rsp.body_mut() = body;
            self.used = true;
            self.keep_alive = keep_alive_timeout(rsp.headers()).or(self.keep_alive);
            if close || ends_at_close || status == StatusCode::SWITCHING_PROTOCOLS {
                self.stream = None;
            }
            return Ok(rsp);
        }
    }

    /// True while the connection may carry another request: no error, no
    /// `Connection: close`.
    pub fn is_reusable(&self) -> bool {
        self.stream.is_some()
    }

    /// The server's keep-alive timeout, from its last `Keep-Alive:
    /// timeout=N` header.
    pub fn server_keep_alive(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// True if the current stream is TLS and its session was resumed (no
    /// certificate exchange in its handshake).
    #[cfg(feature = "tls")]
    pub fn tls_resumed(&self) -> bool {
        matches!(&self.stream, Some(s) if matches!(s.get_ref(), Transport::Tls(t) if t.is_resumed()))
    }

    /// How many times this connection reopened its stream in place (the
    /// server had closed it, or a request was sent again after the
    /// keep-alive race).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Has the server closed or reset this idle connection? Never blocks.
    /// [`PeerStatus::Closed`] once the connection is not reusable.
    pub fn peer_status(&mut self) -> PeerStatus {
        match &mut self.stream {
            Some(s) if !s.buffer().is_empty() => PeerStatus::Pending,
            Some(s) => s.get_mut().peer_status(),
            None => PeerStatus::Closed,
        }
    }

    /// Over TLS, send `close_notify` (best effort, without waiting for the
    /// server's); the socket closes when the connection drops.
    fn say_goodbye(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(s) = &mut self.stream {
            if let Transport::Tls(tls) = s.get_mut() {
                tls.close();
            }
        }
    }

    fn check_open(&mut self) -> Result<(), HttpError> {
        match self.peer_status() {
            PeerStatus::Idle => Ok(()),
            other => {
                self.stream = None;
                Err(HttpError::Closed(format!(
                    "{}: the idle connection is not usable ({other:?})",
                    self.origin.url
                )))
            }
        }
    }
}

fn encode_head<B>(req: &Request<B>, o: &Origin) -> Result<Vec<u8>, HttpError>
where
    B: AsRef<[u8]>,
{
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if !path.starts_with('/') && path != "*" {
        return Err(HttpError::InvalidRequest(format!(
            "{} {path}: the path must start with '/'",
            req.method()
        )));
    }
    if req.headers().contains_key(TRANSFER_ENCODING) {
        return Err(HttpError::InvalidRequest(format!(
            "{} {path}: Transfer-Encoding request bodies are not supported; send the body \
             whole (Content-Length is set for you)",
            req.method()
        )));
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers().contains_key(HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(o.authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.headers() {
        if name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let len = req.body().as_ref().len();
    let carries_body = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if len > 0 || carries_body {
        out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Why [`read_head_raw`] failed.
pub(crate) enum HeadError {
    /// The stream failed or ended (`UnexpectedEof`); the flag is true if no
    /// byte of the head came (and it was not a timeout).
    Io(io::Error, bool),
    /// Longer than the limit.
    TooLarge,
}

/// Read an HTTP head (request or response), up to and including the empty
/// line, never past it; at most `max` bytes.
pub(crate) fn read_head_raw<R: BufRead + ?Sized>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let nothing = head.is_empty() && e.kind() != io::ErrorKind::TimedOut;
                return Err(HeadError::Io(e, nothing));
            }
        };
        if available.is_empty() {
            let e = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if head.is_empty() {
                    "the server closed the connection without responding"
                } else {
                    "the server closed the connection in the middle of the response head"
                },
            );
            let nothing = head.is_empty();
            return Err(HeadError::Io(e, nothing));
        }
        // Consume up to the end of the head, never past it: the head ends
        // with a line end right after another ("\n\n" or "\n\r\n").
        let start = head.len();
        let mut take = available.len();
        let mut done = false;
        for (i, _) in available.iter().enumerate().filter(|(_, &b)| b == b'\n') {
            // The k-th byte before this '\n', in head ++ available.
            let before = |k: usize| match i.checked_sub(k) {
                Some(j) => Some(available[j]),
                None => (start + i).checked_sub(k).map(|j| head[j]),
            };
            if before(1) == Some(b'\n') || (before(1) == Some(b'\r') && before(2) == Some(b'\n')) {
                take = i + 1;
                done = true;
                break;
            }
        }
        if start + take > max {
            return Err(HeadError::TooLarge);
        }
        head.extend_from_slice(&available[..take]);
        r.consume(take);
        if done {
            return Ok(head);
        }
    }
}

fn read_head(
    r: &mut BufReader<Transport>,
    max: usize,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>, (HttpError, bool)> {
    read_head_raw(r, max).map_err(|e| match e {
        HeadError::Io(e, nothing) => (HttpError::io(what(), e), nothing),
        HeadError::TooLarge => (
            HttpError::TooLarge {
                what: format!("the response head of {}", what()),
                limit: max,
            },
            false,
        ),
    })
}

/// Parse a complete head with httparse. Returns the response (empty body)
/// and whether the connection closes after it.
fn parse_head(
    raw: &[u8],
    what: &dyn Fn() -> String,
) -> Result<(Response<Vec<u8>>, bool), HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Protocol(format!(
                "{}: incomplete response head",
                what()
            )))
        }
        Err(e) => {
            return Err(HttpError::Protocol(format!(
                "{}: malformed response head ({e}): {:?}",
                what(),
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )))
        }
    }
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| HttpError::Protocol(format!("{}: bad status code {code}", what())))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut rsp = Response::new(Vec::new());
    *rsp.status_mut() = status;
    *rsp.version_mut() = version;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            HttpError::Protocol(format!("{}: bad header name {:?}", what(), h.name))
        })?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| {
            HttpError::Protocol(format!("{}: bad value for header {}", what(), h.name))
        })?;
        rsp.headers_mut().append(name, value);
    }
    let tokens = |v: &HeaderValue| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let conn: Vec<String> = rsp
        .headers()
        .get_all(CONNECTION)
        .iter()
        .flat_map(tokens)
        .collect();
    let close = conn.iter().any(|t| t == "close")
        || (version == Version::HTTP_10 && !conn.iter().any(|t| t == "keep-alive"));
    Ok((rsp, close))
}

/// `Keep-Alive: timeout=N` (seconds).
fn keep_alive_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("keep-alive")?.to_str().ok()?;
    v.split(',').find_map(|p| {
        let (k, n) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("timeout") {
            n.trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .map(Duration::from_secs)
        } else {
            None
        }
    })
}

/// Read the body as the headers say. Returns it and whether it ended at
/// the connection's close (so the connection cannot be reused).
fn read_body(
    r: &mut BufReader<Transport>,
    headers: &http::HeaderMap,
    max: usize,
    what: &dyn Fn() -> String,
) -> Result<(Vec<u8>, bool), HttpError> {
    let too_large = || HttpError::TooLarge {
        what: format!("the response body of {}", what()),
        limit: max,
    };
    let io = |e: io::Error| HttpError::io(what(), e);
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        return read_chunked(r, max, what).map(|b| (b, false));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(HttpError::Protocol(format!(
            "{}: unsupported Transfer-Encoding (only chunked)",
            what()
        )));
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.any(|v| v != first) {
            return Err(HttpError::Protocol(format!(
                "{}: conflicting Content-Length headers",
                what()
            )));
        }
        let len: usize = first
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                HttpError::Protocol(format!("{}: bad Content-Length {first:?}", what()))
            })?;
        if len > max {
            return Err(too_large());
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io(io::Error::new(
                    e.kind(),
                    format!("the server closed the connection before the {len}-byte body ended"),
                ))
            } else {
                io(e)
            }
        })?;
        return Ok((body, false));
    }
    // No length: the body ends when the server closes the connection.
    let mut body = Vec::new();
    let n = r.take(max as u64 + 1).read_to_end(&mut body).map_err(io)?;
    if n > max {
        return Err(too_large());
    }
    Ok((body, true))
}

fn read_chunked(
    r: &mut BufReader<Transport>,
    max: usize,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>, HttpError> {
    let io = |e: io::Error| HttpError::io(what(), e);
    let protocol = |why: &str| HttpError::Protocol(format!("{}: bad chunked body: {why}", what()));
    let mut body = Vec::new();
    loop {
        let line = crate::runtime::line::read_line(r, 1024).map_err(io)?;
        let size = match httparse::parse_chunk_size(format!("{line}\r\n").as_bytes()) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(protocol(&format!("chunk size line {line:?}"))),
        };
        let size = usize::try_from(size).map_err(|_| protocol("chunk too large"))?;
        if size == 0 {
            break;
        }
        if body.len().saturating_add(size) > max {
            return Err(HttpError::TooLarge {
                what: format!("the response body of {}", what()),
                limit: max,
            });
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).map_err(io)?;
        let end = crate::runtime::line::read_line(r, 0).map_err(io)?;
        if !end.is_empty() {
            return Err(protocol("no CRLF after a chunk"));
        }
    }
    // Trailers, up to the empty line.
    for _ in 0..MAX_HEADERS {
        if crate::runtime::line::read_line(r, 8 * 1024)
            .map_err(io)?
            .is_empty()
        {
            return Ok(body);
        }
    }
    Err(protocol("too many trailers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let m = HttpManager::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(m.origin(), "http://127.0.0.1:8080");
        let m = HttpManager::new("http://[::1]").unwrap();
        assert_eq!(m.origin.addr, "[::1]:80");
        assert_eq!(m.origin.host, "::1");
        for bad in ["ftp://x", "http://x/path", "x:80", "http://u@x"] {
            let e = HttpManager::new(bad).unwrap_err();
            assert!(matches!(e, HttpError::InvalidOrigin(_)), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn keep_alive_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("keep-alive", HeaderValue::from_static("timeout=5, max=100"));
        assert_eq!(keep_alive_timeout(&h), Some(Duration::from_secs(5)));
        h.insert("keep-alive", HeaderValue::from_static("max=100"));
        assert_eq!(keep_alive_timeout(&h), None);
    }

    #[test]
    fn heads_are_encoded_in_order_with_host_and_length() {
        let o = HttpManager::new("http://api:81").unwrap().origin;
        let req = Request::post("/v1/x?y=1")
            .header("x-a", "1")
            .body(b"abc".to_vec())
            .unwrap();
        let head = String::from_utf8(encode_head(&req, &o).unwrap()).unwrap();
        assert_eq!(
            head,
            "POST /v1/x?y=1 HTTP/1.1\r\nhost: api:81\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n"
        );
        let req = Request::get("/")
            .header("transfer-encoding", "chunked")
            .body(Vec::new())
            .unwrap();
        assert!(matches!(
            encode_head(&req, &o),
            Err(HttpError::InvalidRequest(_))
        ));
    }
}
