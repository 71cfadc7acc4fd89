//! TLS for green threads (cargo feature `tls`): gevent's `ssl.wrap_socket`,
//! on [rustls](https://docs.rs/rustls) with the `ring` provider.
//!
//! - [`TlsConnector`]: a client configuration (trusted roots from a PEM file
//!   or the operating system's store, session resumption, a handshake time
//!   limit) that [`connect`](TlsConnector::connect)s over
//!   [`net::connect`] or
//!   [`upgrade`](TlsConnector::upgrade)s a stream that is already open
//!   (STARTTLS).
//! - [`TlsStream`]: the encrypted stream. `Read` and `Write` block only the
//!   calling green thread; the socket's read and write timeouts apply to
//!   every read and write through TLS; [`TlsStream::peer_status`] says
//!   without blocking whether the server has closed an idle connection
//!   (`close_notify` or FIN) or reset it.
//! - [`TlsError`]: a failed handshake says why, in words: "unknown issuer",
//!   "name mismatch", "expired", a TLS alert from the server, or "the peer
//!   does not speak TLS".
//! - [`server_config`] and [`accept`]: the server side, for embedded test
//!   servers.
//!
//! **Stack size.** A handshake needs more stack than may's 32 KiB: run it on
//! at least [`HANDSHAKE_STACK_SIZE`] (256 KiB) bytes of stack, e.g. with the
//! pool's `Builder::connector_stack_size`; an overflow in a release build
//! exits the process.
//!
//! ```
//! use greenpool_runtime::net::{ConnectOptions, TcpListener};
//! use greenpool_runtime::tls::{self, TlsConnector};
//! use std::io::{Read, Write};
//!
//! // A server with a self-signed certificate for "localhost" (rcgen).
//! let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
//! let server_tls = tls::server_config(
//!     vec![cert.cert.der().clone()],
//!     tls::rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
//! ).unwrap();
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = greenpool_runtime::Builder::new().stack_size(tls::HANDSHAKE_STACK_SIZE).spawn(move || {
//!     let (s, _) = listener.accept().unwrap();
//!     let mut s = tls::accept(&server_tls, s).unwrap();
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).unwrap();
//!     s.write_all(&buf).unwrap();
//!     s.flush().unwrap();
//! }).unwrap();
//!
//! // The client trusts that one certificate (a PEM file works the same way:
//! // TlsConnector::from_pem_file).
//! let connector = TlsConnector::from_pem(cert.cert.pem().as_bytes()).unwrap();
//! let client = greenpool_runtime::Builder::new().stack_size(tls::HANDSHAKE_STACK_SIZE).spawn(move || {
//!     let mut s = connector.connect(&addr.to_string(), "localhost", &ConnectOptions::new()).unwrap();
//!     s.write_all(b"hello").unwrap();
//!     s.flush().unwrap();
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).unwrap();
//!     buf
//! }).unwrap();
//! assert_eq!(&client.join().unwrap(), b"hello");
//! server.join().unwrap();
//! ```

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use rustls;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, RootCertStore, ServerConfig,
    ServerConnection, StreamOwned,
};

use crate::net::{self, after_io_timeout, ConnectOptions, PeerStatus, TcpStream};

/// Stack a green thread needs to run a TLS handshake safely: 256 KiB.
pub const HANDSHAKE_STACK_SIZE: usize = 256 * 1024;

/// Default for [`TlsConnector::handshake_timeout`]: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server-side TLS stream after [`accept`].
pub type ServerTlsStream = StreamOwned<ServerConnection, TcpStream>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

// ---------------------------------------------------------------------------
// Client configuration
// ---------------------------------------------------------------------------

/// How to open TLS client connections: which certificates to trust, session
/// resumption, the handshake time limit. Cheap to clone (the rustls
/// configuration is shared, and so is its session cache).
///
/// Session resumption is on (rustls' in-memory cache of 256 sessions): a
/// second connection to the same server skips the certificate exchange.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Use a rustls configuration of your own (client certificates, custom
    /// verifiers, ALPN...).
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnector {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Trust exactly these roots (TLS 1.2 and 1.3, the `ring` provider).
    pub fn from_roots(roots: RootCertStore) -> io::Result<Self> {
        if roots.is_empty() {
            return Err(invalid(
                "no trusted root certificates: every server certificate would be rejected".into(),
            ));
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(format!("TLS set-up: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::new(Arc::new(config)))
    }

    /// Trust the certificates in PEM text (one or more `BEGIN CERTIFICATE`
    /// blocks: a private CA, or a self-signed server certificate).
    pub fn from_pem(pem: &[u8]) -> io::Result<Self> {
        Self::from_roots(roots_from_pem(pem, "the PEM text")?)
    }

    /// Trust the certificates in a PEM file. Errors name the file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read CA certificates from {}: {e}", path.display()),
            )
        })?;
        Self::from_roots(roots_from_pem(&pem, &path.display().to_string())?)
    }

    /// Trust the operating system's root certificates (on Debian
    /// `/etc/ssl/certs`, from the `ca-certificates` package; `SSL_CERT_FILE`
    /// and `SSL_CERT_DIR` override it). Certificates the store holds but
    /// rustls cannot parse are skipped with a `log` warning.
    ///
    /// Reads the store from disk: call it once, at start-up, and clone the
    /// connector.
    pub fn system_roots() -> io::Result<Self> {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::warn!("greenpool: system root certificates: {e}");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            log::warn!("greenpool: {ignored} system root certificates could not be used");
        }
        if added == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no system root certificates found; install them (apt-get install \
                 ca-certificates) or set SSL_CERT_FILE, or use TlsConnector::from_pem_file",
            ));
        }
        Self::from_roots(roots)
    }

    /// Session resumption on (the default) or off. Off makes every
    /// connection pay for a full handshake; useful to measure that, or for a
    /// server that mishandles resumption.
    pub fn resumption(mut self, on: bool) -> Self {
        let mut config = (*self.config).clone();
        config.resumption = if on {
            Resumption::default()
        } else {
            Resumption::disabled()
        };
        self.config = Arc::new(config);
        self
    }

    /// Protocols to offer with ALPN, e.g. `[b"http/1.1".to_vec()]`
    /// (default: none).
    pub fn alpn(mut self, protocols: Vec<Vec<u8>>) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols;
        self.config = Arc::new(config);
        self
    }

    /// Longest the handshake may take, over all its reads and writes
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`]). Each read and write of the
    /// handshake gets at most this long (or the stream's own timeout, if
    /// shorter); expiry is an [`io::ErrorKind::TimedOut`] error. The
    /// stream's own timeouts are restored afterwards. Zero counts as 1 ms.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Connect to `addr` (`host:port`, as [`net::connect`] takes it) with
    /// `opts`, then run the TLS handshake, checking the server's certificate
    /// against `server_name` (a DNS name or an IP address). The read and
    /// write timeouts of `opts` then apply to the TLS stream.
    pub fn connect(
        &self,
        addr: &str,
        server_name: &str,
        opts: &ConnectOptions,
    ) -> io::Result<TlsStream> {
        let stream = net::connect(addr, opts)?;
        self.upgrade(stream, server_name)
    }

    /// Run the TLS handshake over a stream that is already open, e.g. after
    /// a `STARTTLS` command and its `OK`. Blocks only the calling green
    /// thread, for at most the handshake timeout per read or write.
    pub fn upgrade(&self, stream: TcpStream, server_name: &str) -> io::Result<TlsStream> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            invalid(format!(
                "TLS: {server_name:?} is neither a DNS name nor an IP address"
            ))
        })?;
        let conn = ClientConnection::new(Arc::clone(&self.config), name).map_err(|e| {
            io::Error::other(format!(
                "TLS: cannot start a session for {server_name}: {e}"
            ))
        })?;
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let mut tls = StreamOwned::new(conn, stream);
        handshake(&mut tls, self.handshake_timeout, server_name, &peer)?;
        log::debug!(
            "greenpool: TLS to {server_name} ({peer}): {:?}, {:?} handshake",
            tls.conn.protocol_version(),
            tls.conn.handshake_kind()
        );
        Ok(TlsStream { inner: tls })
    }

    /// [`upgrade`](Self::upgrade) a stream read so far through a
    /// `BufReader` (as a line protocol's greeting and `STARTTLS` reply are).
    /// Bytes the server sent after its reply and before the handshake are
    /// refused with an [`io::ErrorKind::InvalidData`] error: they would be
    /// taken as if they had come over TLS (STARTTLS command injection,
    /// CVE-2011-0411).
    pub fn upgrade_buffered(
        &self,
        reader: BufReader<TcpStream>,
        server_name: &str,
    ) -> io::Result<TlsStream> {
        if !reader.buffer().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "STARTTLS: the server sent {} plain-text bytes before the TLS handshake; \
                     refusing them (command injection)",
                    reader.buffer().len()
                ),
            ));
        }
        self.upgrade(reader.into_inner(), server_name)
    }
}

fn roots_from_pem(pem: &[u8], source: &str) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{source}: bad PEM certificate: {e}"),
            )
        })?;
        roots.add(cert).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{source}: unusable certificate: {e}"),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{source}: no \"BEGIN CERTIFICATE\" block found"),
        ));
    }
    Ok(roots)
}

/// Run a handshake to completion with per-IO time limits, turning errors
/// into [`TlsError`]s.
fn handshake<C, D>(
    tls: &mut StreamOwned<C, TcpStream>,
    limit: Duration,
    server_name: &str,
    peer: &str,
) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    let saved = (tls.sock.read_timeout()?, tls.sock.write_timeout()?);
    let cap = |t: Option<Duration>| Some(t.map_or(limit, |t| t.min(limit)));
    tls.sock.set_read_timeout(cap(saved.0))?;
    tls.sock.set_write_timeout(cap(saved.1))?;
    let mut result = Ok(());
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            result = Err(e);
            break;
        }
    }
    // Push out anything still queued (a client's Finished under TLS 1.2).
    if result.is_ok() && tls.conn.wants_write() {
        result = tls.conn.complete_io(&mut tls.sock).map(drop);
    }
    let restored = tls
        .sock
        .set_read_timeout(saved.0)
        .and_then(|()| tls.sock.set_write_timeout(saved.1));
    result.map_err(|e| handshake_error(e, limit, server_name, peer))?;
    restored
}

fn handshake_error(e: io::Error, limit: Duration, server_name: &str, peer: &str) -> io::Error {
    let kind = e.kind();
    if kind == io::ErrorKind::TimedOut {
        after_io_timeout();
        return io::Error::new(
            kind,
            format!(
                "TLS handshake with {server_name} ({peer}): no answer within {limit:?} \
                 (TlsConnector::handshake_timeout, or the stream's own timeout)"
            ),
        );
    }
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    let error = match rustls_error {
        Some(r) => TlsErrorKind::Rustls(r),
        None if kind == io::ErrorKind::UnexpectedEof => TlsErrorKind::ClosedDuringHandshake,
        None => {
            return io::Error::new(
                kind,
                format!("TLS handshake with {server_name} ({peer}): {e}"),
            )
        }
    };
    io::Error::new(
        kind,
        TlsError {
            server_name: server_name.to_owned(),
            peer: peer.to_owned(),
            error,
        },
    )
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A TLS handshake failed. It travels inside an [`io::Error`] (kind
/// `InvalidData`, or `UnexpectedEof` when the peer closed), so an `io`
/// [`ErrorSet`](https://docs.rs/greenpool) matches it; get it back with
/// [`TlsError::find`]. Its message names the server and the rule that
/// failed, e.g.
///
/// `TLS handshake with localhost (127.0.0.1:8443) failed: the server's
/// certificate was rejected: unknown issuer: ...`
#[derive(Debug)]
pub struct TlsError {
    server_name: String,
    peer: String,
    error: TlsErrorKind,
}

#[derive(Debug)]
enum TlsErrorKind {
    Rustls(rustls::Error),
    ClosedDuringHandshake,
}

impl TlsError {
    /// The `TlsError` inside an `io::Error` (or anywhere in its `source()`
    /// chain), if there is one.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(t) = err.downcast_ref::<TlsError>() {
                return Some(t);
            }
            if let Some(io) = err.downcast_ref::<io::Error>() {
                if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
                    return Some(t);
                }
            }
            cur = err.source();
        }
        None
    }

    /// The server name the certificate was checked against.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// rustls' own error, if rustls reported one (not when the peer just
    /// closed the connection).
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match &self.error {
            TlsErrorKind::Rustls(e) => Some(e),
            TlsErrorKind::ClosedDuringHandshake => None,
        }
    }

    /// Why the server's certificate was rejected, if that is what failed.
    pub fn certificate_error(&self) -> Option<&CertificateError> {
        match self.rustls_error() {
            Some(rustls::Error::InvalidCertificate(c)) => Some(c),
            _ => None,
        }
    }
}

/// The rule a certificate broke, in a few words, and what to do.
fn certificate_rule(c: &CertificateError) -> (&'static str, &'static str) {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => (
            "unknown issuer",
            "it is not signed by a CA this client trusts (self-signed, or a private CA): \
             trust that CA with TlsConnector::from_pem_file",
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => (
            "name mismatch",
            "it is not issued for the server name the client asked for: connect with the \
             name the certificate carries",
        ),
        C::Expired | C::ExpiredContext { .. } => (
            "expired",
            "the server must renew its certificate (or this machine's clock is wrong)",
        ),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            ("not valid yet", "check this machine's clock")
        }
        C::Revoked => ("revoked", "the CA has withdrawn this certificate"),
        C::BadSignature => (
            "bad signature",
            "the certificate chain is corrupt or forged",
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => (
            "wrong purpose",
            "the certificate is not meant for a TLS server",
        ),
        _ => ("invalid certificate", "see the details"),
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS handshake with {} ({}) failed: ",
            self.server_name, self.peer
        )?;
        match &self.error {
            TlsErrorKind::ClosedDuringHandshake => f.write_str(
                "the peer closed the connection during the handshake (does it speak TLS on \
                 this port?)",
            ),
            TlsErrorKind::Rustls(rustls::Error::InvalidCertificate(c)) => {
                let (rule, hint) = certificate_rule(c);
                write!(
                    f,
                    "the server's certificate was rejected: {rule}: {hint} ({})",
                    rustls::Error::InvalidCertificate(c.clone())
                )
            }
            TlsErrorKind::Rustls(rustls::Error::AlertReceived(alert)) => write!(
                f,
                "the peer refused the handshake with the TLS alert {alert:?} (it may not \
                 accept this client's certificate, protocol version or cipher suites)"
            ),
            TlsErrorKind::Rustls(e @ rustls::Error::InvalidMessage(_)) => write!(
                f,
                "the peer does not speak TLS here (is this a plain-text port?): {e}"
            ),
            TlsErrorKind::Rustls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.error {
            TlsErrorKind::Rustls(e) => Some(e),
            TlsErrorKind::ClosedDuringHandshake => None,
        }
    }
}

// ---------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------

/// A client TLS stream over the runtime's [`TcpStream`], after a completed
/// handshake. `Read` and `Write` block only the calling green thread.
///
/// Writes are buffered by rustls until [`flush`](Write::flush): flush after
/// each request. The socket's read and write timeouts
/// ([`set_read_timeout`](Self::set_read_timeout)) apply to each read and
/// write through TLS and fail with [`io::ErrorKind::TimedOut`]; the stream
/// then calls [`after_io_timeout`] itself. A peer that closes without
/// `close_notify` is an [`io::ErrorKind::UnexpectedEof`] error on read.
pub struct TlsStream {
    inner: StreamOwned<ClientConnection, TcpStream>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.inner.sock.peer_addr().ok())
            .field("protocol", &self.inner.conn.protocol_version())
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// The TCP stream underneath. Reading or writing it directly corrupts
    /// the TLS session; use it for socket options and addresses.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner.sock
    }

    /// The rustls session: protocol version, ALPN, handshake kind.
    pub fn session(&self) -> &ClientConnection {
        &self.inner.conn
    }

    /// True if this session was resumed (no certificate exchange).
    pub fn is_resumed(&self) -> bool {
        self.inner.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Time limit for each read (`None`: wait forever).
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.inner
            .sock
            .set_read_timeout(d.map(|d| d.max(Duration::from_millis(1))))
    }

    /// Time limit for each write (`None`: wait forever).
    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.inner
            .sock
            .set_write_timeout(d.map(|d| d.max(Duration::from_millis(1))))
    }

    /// Has the server closed or reset this idle connection? Never blocks.
    ///
    /// Looks at the socket ([`net::peer_status`]) and at what TLS has
    /// buffered: decrypted bytes nobody has read yet are
    /// [`PeerStatus::Pending`]; a `close_notify` alert or a FIN is
    /// [`PeerStatus::Closed`]. Records that carry no data (TLS 1.3 session
    /// tickets, which servers send after the handshake) are read and
    /// processed on the way, so a fresh idle connection is
    /// [`PeerStatus::Idle`].
    pub fn peer_status(&mut self) -> PeerStatus {
        // Bounded: each round consumes one socket read of records.
        for _ in 0..16 {
            let state = match self.inner.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("greenpool: TLS peer check: {e}");
                    return PeerStatus::Failed(io::ErrorKind::InvalidData);
                }
            };
            if state.plaintext_bytes_to_read() > 0 {
                return PeerStatus::Pending;
            }
            if state.peer_has_closed() {
                return PeerStatus::Closed;
            }
            match net::peer_status(&self.inner.sock) {
                PeerStatus::Pending => {}
                other => return other,
            }
            // Records are waiting: read them without blocking (the std socket
            // under may's stream is non-blocking).
            let mut sock: &std::net::TcpStream = self.inner.sock.inner();
            match self.inner.conn.read_tls(&mut sock) {
                Ok(0) => return PeerStatus::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PeerStatus::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return PeerStatus::Failed(e.kind()),
            }
        }
        PeerStatus::Pending
    }

    /// Send `close_notify` (best effort, without waiting for the peer's).
    /// Dropping the stream without it just closes the socket.
    pub fn close(&mut self) {
        self.inner.conn.send_close_notify();
        let _ = self.inner.flush();
    }
}

fn after_timeout<T>(r: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &r {
        if e.kind() == io::ErrorKind::TimedOut {
            after_io_timeout();
        }
    }
    r
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        after_timeout(self.inner.read(buf))
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        after_timeout(self.inner.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        after_timeout(self.inner.flush())
    }
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// A server configuration (TLS 1.2 and 1.3, the `ring` provider, no client
/// certificates) with this certificate chain and key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> io::Result<Arc<ServerConfig>> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("TLS: unusable certificate or key: {e}")))?;
    Ok(Arc::new(config))
}

/// Run the server side of a handshake on an accepted stream, with at most
/// [`DEFAULT_HANDSHAKE_TIMEOUT`] per read or write.
pub fn accept(config: &Arc<ServerConfig>, stream: TcpStream) -> io::Result<ServerTlsStream> {
    let conn = ServerConnection::new(Arc::clone(config))
        .map_err(|e| io::Error::other(format!("TLS: cannot start a server session: {e}")))?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let mut tls = StreamOwned::new(conn, stream);
    handshake(&mut tls, DEFAULT_HANDSHAKE_TIMEOUT, "client", &peer)?;
    Ok(tls)
}
