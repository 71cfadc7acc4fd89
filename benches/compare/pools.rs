//! The four pools behind one face, and the two kinds of connection they pool.
//!
//! Every pool is configured to do the same work per checkout: none beyond
//! the checkout itself. r2d2 and bb8 would otherwise run `is_valid` (a round
//! trip) on every checkout, and deadpool `recycle`; here they are off or do
//! nothing, and greenpool's `validate_after` (5 s of idleness) never fires
//! under load. Every pool has a 30 s checkout timeout (the default of
//! greenpool, r2d2 and bb8; deadpool has none by default, so it is set).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::DerefMut;
use std::time::Duration;

use greenpool::runtime::net::{connect_addr, ConnectOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

/// Checkout timeout of every pool.
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a new pool may take to open its connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool used from blocking code: greenpool (green threads) and r2d2 (OS
/// threads).
pub trait BlockingPool: Clone + Send + Sync + 'static {
    type Conn;
    type Guard<'a>: DerefMut<Target = Self::Conn>
    where
        Self: 'a;
    fn checkout(&self) -> io::Result<Self::Guard<'_>>;

    /// Check out a connection, run `f` on it, give it back.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Self::Conn) -> io::Result<T>) -> io::Result<T> {
        let mut conn = self.checkout()?;
        f(&mut conn)
    }
}

/// A pool used from tokio tasks: deadpool and bb8.
pub trait AsyncPool: Clone + Send + Sync + 'static {
    type Conn: Send;
    type Guard<'a>: DerefMut<Target = Self::Conn> + Send
    where
        Self: 'a;
    fn checkout(&self) -> impl std::future::Future<Output = io::Result<Self::Guard<'_>>> + Send;
}

impl<M: greenpool::Manager> BlockingPool for greenpool::ConnectionPool<M> {
    type Conn = M::Connection;
    type Guard<'a> = greenpool::PooledConnection<M>;
    fn checkout(&self) -> io::Result<Self::Guard<'_>> {
        Ok(self.get()?)
    }

    /// greenpool's own way: `with` discards the connection if `f` fails.
    fn with_conn<T>(&self, f: impl FnOnce(&mut M::Connection) -> io::Result<T>) -> io::Result<T> {
        self.with(f)
    }
}

impl<M: r2d2::ManageConnection> BlockingPool for r2d2::Pool<M> {
    type Conn = M::Connection;
    type Guard<'a> = r2d2::PooledConnection<M>;
    fn checkout(&self) -> io::Result<Self::Guard<'_>> {
        self.get().map_err(io::Error::other)
    }
}

impl<M> AsyncPool for deadpool::managed::Pool<M>
where
    M: deadpool::managed::Manager + 'static,
    M::Type: Send,
    M::Error: std::error::Error + Send + Sync + 'static,
{
    type Conn = M::Type;
    type Guard<'a> = deadpool::managed::Object<M>;
    async fn checkout(&self) -> io::Result<Self::Guard<'_>> {
        self.get().await.map_err(io::Error::other)
    }
}

impl<M> AsyncPool for bb8::Pool<M>
where
    M: bb8::ManageConnection,
    M::Error: std::error::Error + Send + Sync + 'static,
{
    type Conn = M::Connection;
    type Guard<'a> = bb8::PooledConnection<'a, M>;
    async fn checkout(&self) -> io::Result<Self::Guard<'_>> {
        self.get().await.map_err(io::Error::other)
    }
}

/// The same manager in all four pools.
pub struct Pools<M>
where
    M: greenpool::Manager
        + r2d2::ManageConnection
        + deadpool::managed::Manager
        + bb8::ManageConnection,
{
    pub greenpool: greenpool::ConnectionPool<M>,
    pub r2d2: r2d2::Pool<M>,
    pub deadpool: deadpool::managed::Pool<M>,
    pub bb8: bb8::Pool<M>,
}

impl<M> Pools<M>
where
    M: greenpool::Manager
        + r2d2::ManageConnection
        + deadpool::managed::Manager
        + bb8::ManageConnection
        + Clone,
    <M as deadpool::managed::Manager>::Type: Send,
{
    /// Four pools of `size` connections made by `manager`, each with all
    /// its connections open.
    pub fn open(rt: &Runtime, manager: M, size: usize) -> Pools<M> {
        Pools {
            greenpool: open_greenpool(manager.clone(), size, Some(CHECKOUT_TIMEOUT)),
            r2d2: open_r2d2(manager.clone(), size, CHECKOUT_TIMEOUT),
            deadpool: open_deadpool(rt, manager.clone(), size, CHECKOUT_TIMEOUT),
            bb8: open_bb8(rt, manager, size, CHECKOUT_TIMEOUT),
        }
    }
}

/// A greenpool pool with all `size` connections open; `None`: no checkout
/// timeout.
pub fn open_greenpool<M: greenpool::Manager>(
    manager: M,
    size: usize,
    checkout_timeout: Option<Duration>,
) -> greenpool::ConnectionPool<M> {
    let builder = greenpool::ConnectionPool::builder().size(size);
    let builder = match checkout_timeout {
        Some(t) => builder.checkout_timeout(t),
        None => builder.no_checkout_timeout(),
    };
    let pool = builder
        .build(manager)
        .expect("greenpool settings are valid");
    pool.wait_ready(READY_TIMEOUT)
        .expect("greenpool opens its connections");
    pool
}

/// An r2d2 pool with all `size` connections open (r2d2 opens them in `build`).
pub fn open_r2d2<M: r2d2::ManageConnection>(
    manager: M,
    size: usize,
    checkout_timeout: Duration,
) -> r2d2::Pool<M> {
    r2d2::Pool::builder()
        .max_size(size as u32)
        .test_on_check_out(false)
        .connection_timeout(checkout_timeout)
        .build(manager)
        .expect("r2d2 opens its connections")
}

/// A deadpool pool with all `size` connections open.
pub fn open_deadpool<M>(
    rt: &Runtime,
    manager: M,
    size: usize,
    checkout_timeout: Duration,
) -> deadpool::managed::Pool<M>
where
    M: deadpool::managed::Manager,
    M::Type: Send,
{
    let pool = deadpool::managed::Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(checkout_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("deadpool settings are valid");
    // deadpool opens connections on demand: check out `size` at once.
    rt.block_on(async {
        let mut held = Vec::with_capacity(size);
        for _ in 0..size {
            let obj = pool.get().await;
            held.push(obj.unwrap_or_else(|_| panic!("deadpool opens its connections")));
        }
    });
    pool
}

/// A bb8 pool with all `size` connections open.
pub fn open_bb8<M: bb8::ManageConnection>(
    rt: &Runtime,
    manager: M,
    size: usize,
    checkout_timeout: Duration,
) -> bb8::Pool<M> {
    rt.block_on(async {
        let pool = bb8::Pool::builder()
            .max_size(size as u32)
            .min_idle(Some(size as u32))
            .test_on_check_out(false)
            .connection_timeout(checkout_timeout)
            .build(manager)
            .await
            .unwrap_or_else(|_| panic!("bb8 opens its connections"));
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while pool.state().connections < size as u32 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "bb8 opens its connections"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pool
    })
}

/// Which pool a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Greenpool,
    R2d2,
    Deadpool,
    Bb8,
}

impl Which {
    pub const ALL: [Which; 4] = [Which::Greenpool, Which::R2d2, Which::Deadpool, Which::Bb8];
    pub const PEERS: [Which; 3] = [Which::R2d2, Which::Deadpool, Which::Bb8];

    pub fn name(self) -> &'static str {
        match self {
            Which::Greenpool => "greenpool",
            Which::R2d2 => "r2d2",
            Which::Deadpool => "deadpool",
            Which::Bb8 => "bb8",
        }
    }

    pub fn from_name(name: &str) -> Option<Which> {
        Which::ALL.into_iter().find(|w| w.name() == name)
    }
}

// ---------------------------------------------------------------------------
// A "connection" that is only a counter: the pool's own cost and nothing else.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub struct Counter;

impl greenpool::Manager for Counter {
    type Connection = u64;
    type Error = io::Error;
    fn new_connection(&self) -> io::Result<u64> {
        Ok(0)
    }
}

impl r2d2::ManageConnection for Counter {
    type Connection = u64;
    type Error = io::Error;
    fn connect(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn is_valid(&self, _: &mut u64) -> io::Result<()> {
        Ok(())
    }
    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

impl deadpool::managed::Manager for Counter {
    type Type = u64;
    type Error = io::Error;
    async fn create(&self) -> io::Result<u64> {
        Ok(0)
    }
    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<io::Error> {
        Ok(())
    }
}

impl bb8::ManageConnection for Counter {
    type Connection = u64;
    type Error = io::Error;
    async fn connect(&self) -> io::Result<u64> {
        Ok(0)
    }
    async fn is_valid(&self, _: &mut u64) -> io::Result<()> {
        Ok(())
    }
    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------
// A TCP connection to the backend, and the one exchange every pool runs on it.
// ---------------------------------------------------------------------------

/// The request and the reply every worker exchanges.
#[derive(Debug)]
pub struct Proto {
    pub request: &'static [u8],
    pub reply: &'static [u8],
}

/// redis: an inline `PING` (what `redis-benchmark -t ping_inline` sends).
pub const REDIS_PING: Proto = Proto {
    request: b"PING\r\n",
    reply: b"+PONG\r\n",
};

/// greenpool's embedded TestServer (it ignores the `\r`).
pub const LINE_PING: Proto = Proto {
    request: b"PING\r\n",
    reply: b"PONG\n",
};

impl Proto {
    fn check(&self, got: &[u8]) -> io::Result<()> {
        if got == self.reply {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "expected {:?}, got {:?}",
                    String::from_utf8_lossy(self.reply),
                    String::from_utf8_lossy(got)
                ),
            ))
        }
    }
}

/// Longest reply any [`Proto`] has.
const MAX_REPLY: usize = 16;

/// Write the request, read the reply: over may's or std's `TcpStream`.
pub fn ping<S: Read + Write>(s: &mut S, proto: &Proto) -> io::Result<()> {
    s.write_all(proto.request)?;
    let mut buf = [0u8; MAX_REPLY];
    let reply = &mut buf[..proto.reply.len()];
    s.read_exact(reply)?;
    proto.check(reply)
}

/// [`ping`] over tokio's `TcpStream`.
pub async fn ping_async<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    proto: &Proto,
) -> io::Result<()> {
    s.write_all(proto.request).await?;
    let mut buf = [0u8; MAX_REPLY];
    let reply = &mut buf[..proto.reply.len()];
    s.read_exact(reply).await?;
    proto.check(reply)
}

/// Connections to the backend: may's `TcpStream` for greenpool, std's for
/// r2d2, tokio's for deadpool and bb8; all with `TCP_NODELAY`, none with
/// read or write timeouts, nothing checked on checkout or return.
#[derive(Debug, Clone, Copy)]
pub struct Tcp {
    pub addr: SocketAddr,
    /// Read and write timeouts on greenpool's streams (`None` in every
    /// comparison; the IO-timeout cost rows arm them).
    pub io_timeout: Option<Duration>,
    /// Checks for greenpool's checkout: `has_broken` asks the socket
    /// (`peer_status`) and `validate` runs this exchange (`None` in every
    /// comparison; the checkout-check cost rows set it).
    pub checks: Option<&'static Proto>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl greenpool::Manager for Tcp {
    type Connection = greenpool::runtime::net::TcpStream;
    type Error = io::Error;
    fn new_connection(&self) -> io::Result<Self::Connection> {
        connect_addr(
            self.addr,
            &ConnectOptions::new()
                .connect_timeout(CONNECT_TIMEOUT)
                .nodelay(true)
                .read_timeout(self.io_timeout)
                .write_timeout(self.io_timeout),
        )
    }
    fn validate(&self, c: &mut Self::Connection) -> io::Result<()> {
        match self.checks {
            Some(proto) => ping(c, proto),
            None => Ok(()),
        }
    }
    fn has_broken(&self, c: &mut Self::Connection) -> bool {
        self.checks.is_some() && !greenpool::runtime::net::peer_status(c).is_idle()
    }
}

impl r2d2::ManageConnection for Tcp {
    type Connection = std::net::TcpStream;
    type Error = io::Error;
    fn connect(&self) -> io::Result<Self::Connection> {
        let s = std::net::TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)?;
        s.set_nodelay(true)?;
        Ok(s)
    }
    fn is_valid(&self, _: &mut Self::Connection) -> io::Result<()> {
        Ok(())
    }
    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// A tokio `TcpStream` to `addr`, with `TCP_NODELAY`.
pub async fn tokio_connect(addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

impl deadpool::managed::Manager for Tcp {
    type Type = tokio::net::TcpStream;
    type Error = io::Error;
    async fn create(&self) -> io::Result<Self::Type> {
        tokio_connect(self.addr).await
    }
    async fn recycle(
        &self,
        _: &mut Self::Type,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<io::Error> {
        Ok(())
    }
}

impl bb8::ManageConnection for Tcp {
    type Connection = tokio::net::TcpStream;
    type Error = io::Error;
    async fn connect(&self) -> io::Result<Self::Connection> {
        tokio_connect(self.addr).await
    }
    async fn is_valid(&self, _: &mut Self::Connection) -> io::Result<()> {
        Ok(())
    }
    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}
