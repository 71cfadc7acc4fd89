//! The server the end-to-end figures run against: a redis-server this
//! process starts (and kills when it ends, also on a panic), or greenpool's
//! embedded TestServer where redis-server is not installed; and
//! `redis-benchmark` as a reference.

use std::io;
use std::net::SocketAddr;
use std::process::Command;

use greenpool::testing::redis::{find_redis_server, RedisServer};
use greenpool::testing::TestServer;

use crate::pools::{Proto, Tcp, LINE_PING, REDIS_PING};
use crate::report::command_line;

pub enum Backend {
    /// Killed and reaped when dropped.
    Redis(RedisServer),
    Embedded(TestServer),
}

impl Backend {
    pub fn start() -> Backend {
        match RedisServer::start() {
            Ok(server) => Backend::Redis(server),
            Err(e) => {
                eprintln!("redis-server unavailable ({e}); using the embedded TestServer");
                Backend::Embedded(TestServer::start().expect("the embedded TestServer starts"))
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Backend::Redis(s) => s.addr(),
            Backend::Embedded(s) => s.addr(),
        }
    }

    /// A manager for connections to it (for every pool).
    pub fn tcp(&self) -> Tcp {
        Tcp {
            addr: self.addr(),
            io_timeout: None,
            checks: None,
        }
    }

    pub fn proto(&self) -> &'static Proto {
        match self {
            Backend::Redis(_) => &REDIS_PING,
            Backend::Embedded(_) => &LINE_PING,
        }
    }

    pub fn is_redis(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }

    /// What it is, for the report.
    pub fn describe(&self) -> String {
        match self {
            Backend::Redis(_) => {
                let version = find_redis_server()
                    .ok()
                    .and_then(|p| command_line(&p.to_string_lossy(), &["--version"]))
                    .unwrap_or_else(|| "redis-server".into());
                format!(
                    "{version}; started by the bench on 127.0.0.1 with `--save '' \
                     --appendonly no`; requests are inline `PING`"
                )
            }
            Backend::Embedded(_) => "greenpool's embedded TestServer (redis-server is not \
                                     installed), in the bench's own process"
                .into(),
        }
    }

    /// Stop serving: kill redis (the port then refuses connections), or stop
    /// the TestServer (which resets its connections).
    pub fn stop(&mut self) -> io::Result<()> {
        match self {
            Backend::Redis(s) => s.kill(),
            Backend::Embedded(s) => {
                s.stop();
                Ok(())
            }
        }
    }

    /// Serve again on the same port; returns once it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        match self {
            Backend::Redis(s) => s.restart(),
            Backend::Embedded(s) => s.restart(),
        }
    }
}

/// What one `redis-benchmark` run reported; latencies in ns.
#[derive(Debug, Clone, Copy)]
pub struct RedisBenchmark {
    pub rate: f64,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// `redis-benchmark -c clients -n requests -t ping_inline --csv` against
/// `addr`; `None` if it is not installed or fails.
pub fn redis_benchmark(addr: SocketAddr, clients: usize, requests: u64) -> Option<RedisBenchmark> {
    let out = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string()])
        .args(["-c", &clients.to_string()])
        .args(["-n", &requests.to_string()])
        .args(["-t", "ping_inline", "--csv"])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    // "p95_latency_ms","p99_latency_ms","max_latency_ms"
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("\"PING_INLINE\""))?;
    let fields: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse().ok())
        .collect::<Option<_>>()?;
    let ms = |i: usize| fields.get(i).map(|v| v * 1e6);
    Some(RedisBenchmark {
        rate: *fields.first()?,
        mean: ms(1)?,
        p50: ms(3)?,
        p99: ms(5)?,
        max: ms(6)?,
    })
}
