//! [`LineManager`]: a [`Manager`] for the embedded line protocol.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::LineClient;
use crate::Manager;

/// A [`Manager`] whose connections are [`LineClient`]s to a
/// [`TestServer`](super::TestServer) (or a [`FaultProxy`](super::FaultProxy)
/// in front of one): connect is a TCP connect, keepalive and validation are
/// `PING`. greenpool's tests, examples and benches use it; it is also the
/// smallest complete example of a manager.
///
/// ```
/// use greenpool::ConnectionPool;
/// use greenpool::testing::{LineManager, TestServer};
/// use std::time::Duration;
///
/// let server = TestServer::start()?;
/// let pool = ConnectionPool::new(LineManager::new(server.addr()), 2)?;
/// pool.wait_ready(Duration::from_secs(5))?;
/// let id: u64 = pool.with(|c| c.id())?;
/// assert!(id == 1 || id == 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineManager {
    addr: SocketAddr,
    timeout: Duration,
}

impl LineManager {
    /// Connections to `addr`, with a 5 s connect and per-request timeout.
    pub fn new(addr: SocketAddr) -> Self {
        LineManager {
            addr,
            timeout: Duration::from_secs(5),
        }
    }

    /// The connect timeout and the read/write timeout of every request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Manager for LineManager {
    type Connection = LineClient;
    type Error = io::Error;

    fn new_connection(&self) -> io::Result<LineClient> {
        LineClient::connect(self.addr, self.timeout)
    }

    fn keepalive(&self, conn: &mut LineClient) -> io::Result<()> {
        conn.ping()
    }

    fn has_broken(&self, conn: &mut LineClient) -> bool {
        !conn.peer_status().is_idle()
    }
}
