//! Self-signed certificates for embedded TLS test servers (feature `tls`).

use std::io;
use std::sync::Arc;

use crate::runtime::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use crate::runtime::tls::rustls::ServerConfig;
use crate::runtime::tls::{self, TlsConnector};

/// A self-signed certificate and its key, made at run time (rcgen), and
/// both ends' TLS configurations: a server that presents it, a client that
/// trusts it and nothing else.
///
/// ```
/// let cert = greenpool::testing::tls::SelfSigned::new(&["localhost"])?;
/// assert!(cert.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// let _server = cert.server_config()?;
/// let _client = cert.connector()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SelfSigned {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

impl SelfSigned {
    /// A certificate for these DNS names (or IP addresses), valid from now
    /// for a year or so (rcgen's defaults).
    pub fn new(names: &[&str]) -> io::Result<Self> {
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| io::Error::other(format!("cannot make a test certificate: {e}")))?;
        Ok(SelfSigned {
            der: made.cert.der().clone(),
            cert_pem: made.cert.pem(),
            key_der: made.key_pair.serialize_der(),
            key_pem: made.key_pair.serialize_pem(),
        })
    }

    /// The certificate, PEM (for a server's config file, or a client's CA
    /// file).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server configuration presenting this certificate.
    pub fn server_config(&self) -> io::Result<Arc<ServerConfig>> {
        tls::server_config(
            vec![self.der.clone()],
            PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
        )
    }

    /// A client that trusts this certificate alone.
    pub fn connector(&self) -> io::Result<TlsConnector> {
        TlsConnector::from_pem(self.cert_pem.as_bytes())
    }
}
