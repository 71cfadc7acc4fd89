//! [`TestHttpServer`]: an embedded HTTP/1.1 (and HTTPS) server with the
//! responses an HTTP client must survive (feature `http`).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime;
use crate::runtime::net::{ServeOptions, Server, TcpListener, TcpStream};
use crate::runtime::sync::Mutex;

/// Stack for the server's connection green threads (TLS handshakes).
const STACK: usize = 256 * 1024;

/// An embedded HTTP/1.1 server on `127.0.0.1:0`, plain or (feature `tls`)
/// HTTPS with a self-signed certificate, for tests and examples. Each
/// connection is served in its own green thread, keep-alive by default.
///
/// | request | response |
/// |---|---|
/// | `GET /hello` | `200`, `hello` with `Content-Length` |
/// | `GET /chunked?n=K` | `200`, chunks `0`, `1`, ... `K-1` (chunked encoding, with a trailer) |
/// | `GET /close` | `200`, `bye`, `Connection: close`, then the server closes |
/// | `GET /bytes?n=N` | `200`, N bytes of `x` |
/// | `GET /eof?n=N` | `200`, N bytes, no length: the body ends at close |
/// | `GET /slow?ms=N` | `200`, `slow`, after N ms |
/// | `GET /reset` | half a response head, then a reset (RST) |
/// | `POST /echo` | `200`, the request body |
/// | `GET /id` | `200`, the connection's number (1, 2, ...) |
/// | `GET /race` | `200`, `race`; then the server reads the connection's next request and closes without answering (the keep-alive race) |
/// | anything else | `404` |
///
/// `HEAD` gets the same headers without a body. With
/// [`keep_alive`](Self::keep_alive) set, responses carry `Keep-Alive:
/// timeout=N` and the server closes connections idle that long.
///
/// ```
/// use greenpool::testing::TestHttpServer;
/// let server = TestHttpServer::start()?;
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct TestHttpServer {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    scheme: &'static str,
    /// Dropped to stop accepting.
    accept_loop: Mutex<Option<Server>>,
    open: Mutex<HashMap<u64, TcpStream>>,
    accepted: AtomicU64,
    requests: AtomicU64,
    /// Keep-alive timeout in ms; 0 = none.
    keep_alive_ms: AtomicU64,
    #[cfg(feature = "tls")]
    cert: Option<super::tls::SelfSigned>,
}

impl TestHttpServer {
    /// A plain HTTP server.
    pub fn start() -> io::Result<Self> {
        Self::launch(
            #[cfg(feature = "tls")]
            None,
        )
    }

    /// An HTTPS server with a self-signed certificate for `localhost` and
    /// `127.0.0.1`; [`connector`](Self::connector) trusts it.
    #[cfg(feature = "tls")]
    pub fn start_tls() -> io::Result<Self> {
        Self::launch(Some(super::tls::SelfSigned::new(&[
            "localhost",
            "127.0.0.1",
        ])?))
    }

    fn launch(#[cfg(feature = "tls")] cert: Option<super::tls::SelfSigned>) -> io::Result<Self> {
        crate::runtime::init();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        #[cfg(feature = "tls")]
        let tls = cert.as_ref().map(|c| c.server_config()).transpose()?;
        #[cfg(feature = "tls")]
        let scheme = if cert.is_some() { "https" } else { "http" };
        #[cfg(not(feature = "tls"))]
        let scheme = "http";
        let inner = Arc::new(Inner {
            addr,
            scheme,
            accept_loop: Mutex::new(None),
            open: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            keep_alive_ms: AtomicU64::new(0),
            #[cfg(feature = "tls")]
            cert,
        });
        let weak = Arc::downgrade(&inner);
        let opts = ServeOptions::new().name("test-http").stack_size(STACK);
        let server = runtime::net::serve(listener, opts, move |s, accepted| {
            let Some(inner) = weak.upgrade() else { return };
            let id = accepted.id;
            inner.accepted.fetch_add(1, Ordering::Relaxed);
            if let Ok(c) = s.try_clone() {
                inner.open.lock().unwrap().insert(id, c);
            }
            drop(inner);
            #[cfg(feature = "tls")]
            let r = match &tls {
                Some(cfg) => crate::runtime::tls::accept(cfg, s)
                    .and_then(|t| serve(BufReader::new(t), id, &weak)),
                None => serve(BufReader::new(s), id, &weak),
            };
            #[cfg(not(feature = "tls"))]
            let r = serve(BufReader::new(s), id, &weak);
            if let Err(e) = r {
                log::trace!("test http server: connection {id}: {e}");
            }
            if let Some(inner) = weak.upgrade() {
                inner.open.lock().unwrap().remove(&id);
            }
        })?;
        *inner.accept_loop.lock().unwrap() = Some(server);
        Ok(TestHttpServer { inner })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.inner.scheme, self.inner.addr)
    }

    /// A client that trusts this server's certificate (HTTPS servers only).
    #[cfg(feature = "tls")]
    pub fn connector(&self) -> io::Result<crate::runtime::tls::TlsConnector> {
        match &self.inner.cert {
            Some(c) => c.connector(),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this TestHttpServer is plain HTTP",
            )),
        }
    }

    /// Announce `Keep-Alive: timeout=N` (whole seconds, rounded up) and
    /// close connections idle for `timeout`; `None` turns it off. Applies to
    /// requests read from now on.
    pub fn keep_alive(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(0, |t| t.as_millis().max(1) as u64);
        self.inner.keep_alive_ms.store(ms, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Requests read so far.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.open.lock().unwrap().len()
    }

    /// Close every open connection (FIN), as a server restart would.
    /// Returns how many there were.
    pub fn close_all(&self) -> usize {
        let open = self.inner.open.lock().unwrap();
        for s in open.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        open.len()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.accept_loop.get_mut().unwrap().take());
        for s in self.open.get_mut().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn query_number(path: &str, key: &str) -> usize {
    path.split_once('?')
        .into_iter()
        .flat_map(|(_, q)| q.split('&'))
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

/// Serve one connection until it closes.
fn serve<S: Sock>(mut r: BufReader<S>, id: u64, inner: &std::sync::Weak<Inner>) -> io::Result<()> {
    let mut drop_next = false;
    loop {
        let keep_ms = inner
            .upgrade()
            .map_or(0, |i| i.keep_alive_ms.load(Ordering::Relaxed));
        // Wait for the next request (at most the keep-alive timeout).
        let head = match read_request_head(&mut r, keep_ms)? {
            Some(h) => h,
            None => return Ok(()),
        };
        if let Some(i) = inner.upgrade() {
            i.requests.fetch_add(1, Ordering::Relaxed);
        }
        if drop_next {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            r.get_mut().write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )?;
            return r.get_mut().flush();
        }
        let method = req.method.unwrap_or("").to_owned();
        let path = req.path.unwrap_or("/").to_owned();
        let len = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        let client_close = req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        });
        let mut body = vec![0; len.min(16 * 1024 * 1024)];
        r.read_exact(&mut body)?;

        let head_only = method == "HEAD";
        let route = path.split('?').next().unwrap_or("/");
        let mut extra = String::new();
        if keep_ms > 0 {
            extra.push_str(&format!(
                "keep-alive: timeout={}\r\n",
                keep_ms.div_ceil(1000)
            ));
        }
        let mut close = client_close;
        let w = r.get_mut();
        match (method.as_str(), route) {
            (_, "/chunked") => {
                let n = query_number(&path, "n");
                let mut out =
                    format!("HTTP/1.1 200 OK\r\n{extra}transfer-encoding: chunked\r\n\r\n");
                if !head_only {
                    for i in 0..n {
                        let chunk = i.to_string();
                        out.push_str(&format!("{:x};ext=1\r\n{chunk}\r\n", chunk.len()));
                    }
                    out.push_str("0\r\nx-trailer: done\r\n\r\n");
                }
                w.write_all(out.as_bytes())?;
            }
            (_, "/eof") => {
                let n = query_number(&path, "n");
                let mut out = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
                if !head_only {
                    out.resize(out.len() + n, b'x');
                }
                w.write_all(&out)?;
                w.flush()?;
                return Ok(());
            }
            (_, "/reset") => {
                w.write_all(b"HTTP/1.1 200 OK\r\ncontent-len")?;
                w.flush()?;
                // Linger 0: closing sends an RST, not a FIN.
                socket2::SockRef::from(w.tcp().inner()).set_linger(Some(Duration::ZERO))?;
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "reset on purpose",
                ));
            }
            (m, route) => {
                let (status, text): (&str, Vec<u8>) = match (m, route) {
                    (_, "/hello") => ("200 OK", b"hello".to_vec()),
                    (_, "/id") => ("200 OK", id.to_string().into_bytes()),
                    (_, "/race") => {
                        drop_next = true;
                        ("200 OK", b"race".to_vec())
                    }
                    (_, "/close") => {
                        close = true;
                        ("200 OK", b"bye".to_vec())
                    }
                    (_, "/bytes") => ("200 OK", vec![b'x'; query_number(&path, "n")]),
                    (_, "/slow") => {
                        runtime::sleep(Duration::from_millis(query_number(&path, "ms") as u64));
                        ("200 OK", b"slow".to_vec())
                    }
                    ("POST", "/echo") => ("200 OK", body),
                    _ => ("404 Not Found", b"not found".to_vec()),
                };
                let conn = if close { "connection: close\r\n" } else { "" };
                let mut out = format!(
                    "HTTP/1.1 {status}\r\n{extra}{conn}content-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                    text.len()
                )
                .into_bytes();
                if !head_only {
                    out.extend_from_slice(&text);
                }
                w.write_all(&out)?;
            }
        }
        w.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// What the server needs of a stream besides `Read` and `Write`: its socket.
trait Sock: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Sock for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

#[cfg(feature = "tls")]
impl Sock for crate::runtime::tls::ServerTlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// The next request head, or `None` when the client closed (or stayed idle
/// past the keep-alive timeout, `keep_ms` > 0) between requests.
fn read_request_head<S: Sock>(r: &mut BufReader<S>, keep_ms: u64) -> io::Result<Option<Vec<u8>>> {
    if keep_ms > 0 && r.buffer().is_empty() {
        let tcp = r.get_ref().tcp();
        tcp.set_read_timeout(Some(Duration::from_millis(keep_ms)))?;
        let first = r.fill_buf().map(|b| b.is_empty());
        r.get_ref().tcp().set_read_timeout(None)?;
        match first {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                crate::runtime::net::after_io_timeout();
                return Ok(None);
            }
            Err(e) => return Err(e),
            Ok(true) => return Ok(None),
            Ok(false) => {}
        }
    }
    match crate::http::read_head_raw(r, 64 * 1024) {
        Ok(h) => Ok(Some(h)),
        Err(crate::http::HeadError::Io(e, true)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Ok(None)
        }
        Err(crate::http::HeadError::Io(e, _)) => Err(e),
        Err(crate::http::HeadError::TooLarge) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request head too large",
        )),
    }
}
