//! [`RedisManager`]: the [`Manager`] that pools [`RespConnection`]s, and the
//! `redis://` URL it can be made from.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::manager::Manager;
use crate::runtime::net::ConnectOptions;

use super::resp::{RespConnection, RespError};

/// Read and write timeout [`RedisManager::new`] sets on its connections:
/// 10 s. A command that gets no reply within it fails with
/// [`io::ErrorKind::TimedOut`] (and the connection is then discarded).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect timeout [`RedisManager::new`] uses: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The port a `redis://` URL without one means: 6379.
pub const DEFAULT_PORT: u16 = 6379;

/// Error replies to `AUTH` or `SELECT` that trying again will not fix, as
/// Redis 5 to 7 word them (each is matched anywhere in the reply).
const PERMANENT_REPLIES: &[&str] = &[
    // Redis 6+: wrong user name or password, or the user is disabled.
    "WRONGPASS",
    // Redis < 6: the same for the one password.
    "invalid password",
    // The server wants a password and none is configured (SELECT first).
    "NOAUTH",
    // An ACL user that may not run the command.
    "NOPERM",
    // A password is configured but the server has none (6+, then < 6).
    "without any password configured",
    "no password is set",
    // `AUTH user password` on Redis < 6.
    "wrong number of arguments",
    // SELECT n with n at or above the server's `databases`.
    "DB index is out of range",
    "not allowed in cluster mode",
    // A proxy or server that has no AUTH or SELECT at all.
    "unknown command",
    // Protected mode: the server refuses clients from outside until its
    // configuration changes.
    "DENIED",
];

/// A [`Manager`] for Redis: pools [`RespConnection`]s.
///
/// - `new_connection`: connect, then `AUTH` if a password is set (`AUTH
///   user password` with a [`username`](Self::username)) and `SELECT` if a
///   database is set; a failed `AUTH` or `SELECT` fails the attempt with a
///   [`RespError::Server`] saying which.
/// - `keepalive` (and `validate`): `PING`, expecting `PONG`.
/// - `has_broken` (on every return to the pool, and at the checkout of an
///   idle connection): [`RespConnection::has_broken`], a non-blocking
///   one-byte peek ([`runtime::net::peer_status`](crate::runtime::net::peer_status)):
///   a connection the server has closed (idle `timeout`, `CLIENT KILL`,
///   restart) or that failed earlier is discarded instead of used.
/// - `is_permanent`: a connect error that retrying will not fix: a wrong
///   password or user (`WRONGPASS`), a password the server wants but the
///   manager lacks (`NOAUTH`) or has but the server does not (`ERR AUTH
///   <password> called without any password configured`), an ACL user
///   without the right (`NOPERM`), a database the server does not have
///   (`ERR DB index is out of range`), a server or proxy without `AUTH` or
///   `SELECT` (`ERR unknown command`, cluster mode), protected mode
///   (`DENIED`), or an address that is not `host:port`. A refused or
///   timed-out connect, `LOADING`, or `ERR max number of clients reached`
///   are worth retrying.
/// - `close`: [`RespConnection::quit`]: `QUIT` in one non-blocking write, no
///   wait for the reply.
/// - `server_idle_timeout`: `CONFIG GET timeout`; `0`, an error (e.g. a
///   managed Redis with `CONFIG` disabled) or a missing value is `None`.
///
/// ```
/// use std::time::Duration;
/// use greenpool::runtime::net::ConnectOptions;
/// use greenpool::redis::RedisManager;
///
/// let m = RedisManager::new("127.0.0.1:6379")
///     .password("secret")
///     .db(2)
///     .connect_options(ConnectOptions::new().read_timeout(Some(Duration::from_secs(2))));
/// assert_eq!(m.addr(), "127.0.0.1:6379");
/// assert!(!format!("{m:?}").contains("secret"));
///
/// let m = RedisManager::from_url("redis://app:s%40cret@cache.internal/3")?;
/// assert_eq!(m.addr(), "cache.internal:6379");
/// assert_eq!(m.selected_db(), Some(3));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RedisManager {
    addr: String,
    options: ConnectOptions,
    username: Option<String>,
    password: Option<Secret>,
    db: Option<u32>,
}

/// A password, shown as `<redacted>` by `Debug`.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl RedisManager {
    /// A manager for the server at `addr` (`"host:port"`), with no password,
    /// the default database, a connect timeout of
    /// [`DEFAULT_CONNECT_TIMEOUT`] and read/write timeouts of
    /// [`DEFAULT_IO_TIMEOUT`] (replace them with
    /// [`connect_options`](Self::connect_options), e.g. for blocking
    /// commands such as `BLPOP` that wait longer).
    pub fn new(addr: impl Into<String>) -> Self {
        RedisManager {
            addr: addr.into(),
            options: ConnectOptions::new()
                .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
                .read_timeout(Some(DEFAULT_IO_TIMEOUT))
                .write_timeout(Some(DEFAULT_IO_TIMEOUT)),
            username: None,
            password: None,
            db: None,
        }
    }

    /// A manager for `redis://[[user]:password@]host[:port][/db]`, with the
    /// defaults of [`new`](Self::new): the port defaults to
    /// [`DEFAULT_PORT`], the database to the server's default (0), an IPv6
    /// host goes in brackets (`redis://[::1]:6380`), and the user name and
    /// password may be percent-encoded (`%40` for `@`). As with `redis-cli
    /// -u`, a user part without `:` is the password, and the user `default`
    /// is the same as none (plain `AUTH password`, which also works on
    /// Redis before 6).
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] and a message that says
    /// what is wrong (and never contains the password) for anything else,
    /// `rediss://` (TLS) and query parameters included. Does not connect.
    pub fn from_url(url: &str) -> io::Result<Self> {
        let target = parse_url(url)?;
        let mut m = RedisManager::new(target.addr);
        m.username = target.username;
        m.password = target.password.map(Secret);
        m.db = target.db;
        Ok(m)
    }

    /// Send `AUTH password` on every new connection.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Log in as this ACL user: `AUTH username password` (with
    /// [`password`](Self::password); Redis 6 and later).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Send `SELECT db` on every new connection.
    pub fn db(mut self, db: u32) -> Self {
        self.db = Some(db);
        self
    }

    /// How to connect: timeouts, TCP keepalive, resolver (replaces the
    /// defaults of [`new`](Self::new) entirely).
    pub fn connect_options(mut self, options: ConnectOptions) -> Self {
        self.options = options;
        self
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The database every new connection selects, if one is set.
    pub fn selected_db(&self) -> Option<u32> {
        self.db
    }

    /// Open a connection as the pool would: connect, AUTH, SELECT. Blocks the
    /// calling green thread for at most the connect timeout plus the read
    /// and write timeouts of the two commands.
    pub fn connect(&self) -> Result<RespConnection, RespError> {
        let mut conn = RespConnection::connect(&self.addr, &self.options)?;
        if let Some(Secret(password)) = &self.password {
            let auth = match &self.username {
                Some(user) => conn.auth_user(user, password),
                None => conn.auth(password),
            };
            auth.map_err(|e| match e {
                RespError::Server(msg) => {
                    let (who, check) = match &self.username {
                        Some(u) => (format!(" as {u:?}"), "username and ::password"),
                        None => (String::new(), "password"),
                    };
                    RespError::Server(format!(
                        "AUTH{who} on {} failed: {msg} (check RedisManager::{check})",
                        self.addr
                    ))
                }
                other => other,
            })?;
        }
        if let Some(db) = self.db {
            conn.select(db).map_err(|e| match e {
                RespError::Server(msg) => RespError::Server(format!(
                    "SELECT {db} on {} failed: {msg} (check RedisManager::db and the \
                     server's `databases` setting)",
                    self.addr
                )),
                other => other,
            })?;
        }
        Ok(conn)
    }
}

impl Manager for RedisManager {
    type Connection = RespConnection;
    type Error = RespError;

    fn new_connection(&self) -> Result<RespConnection, RespError> {
        self.connect()
    }

    fn keepalive(&self, conn: &mut RespConnection) -> Result<(), RespError> {
        conn.ping()
    }

    fn has_broken(&self, conn: &mut RespConnection) -> bool {
        conn.has_broken()
    }

    fn is_permanent(&self, error: &RespError) -> bool {
        is_permanent(error)
    }

    fn close(&self, conn: RespConnection) {
        match conn.quit() {
            Ok(true) => {}
            Ok(false) => log::debug!(
                "redis at {}: no QUIT on close: the server had closed the connection",
                self.addr
            ),
            Err(e) => log::debug!("redis at {}: closed without QUIT: {e}", self.addr),
        }
    }

    fn server_idle_timeout(&self, conn: &mut RespConnection) -> Option<Duration> {
        match conn.config_get("timeout") {
            Ok(Some(v)) => match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(secs) => Some(Duration::from_secs(secs)),
                Err(_) => {
                    log::debug!("redis at {}: odd CONFIG GET timeout value {v:?}", self.addr);
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                log::debug!("redis at {}: CONFIG GET timeout failed: {e}", self.addr);
                None
            }
        }
    }
}

/// See [`RedisManager`]'s `is_permanent`.
fn is_permanent(error: &RespError) -> bool {
    match error {
        RespError::Server(msg) => PERMANENT_REPLIES.iter().any(|p| msg.contains(p)),
        // Not "host:port", or connect options that cannot work.
        RespError::Io(e) => e.kind() == io::ErrorKind::InvalidInput,
        _ => false,
    }
}

/// What a `redis://` URL says.
#[derive(Debug, PartialEq)]
struct Target {
    /// `host:port`, as `runtime::net::connect` takes it.
    addr: String,
    username: Option<String>,
    password: Option<String>,
    db: Option<u32>,
}

/// Parse `redis://[[user]:password@]host[:port][/db]`.
fn parse_url(url: &str) -> io::Result<Target> {
    // The URL as error messages show it: without what is between "://" and
    // the last '@' (the password, perhaps the user).
    let shown = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://<redacted>{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    };
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "redis URL {shown:?}: {why} (expected redis://[[user]:password@]host[:port][/db])"
            ),
        )
    };
    if url.starts_with("rediss://") {
        return Err(bad("TLS (rediss://) is not supported"));
    }
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| bad("it must start with redis://"))?;
    if rest.contains(['?', '#']) {
        return Err(bad("query parameters and fragments are not supported"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = u.split_once(':').unwrap_or(("", u));
            let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user name"))?;
            let pass = percent_decode(pass).ok_or_else(|| bad("bad %-escape in the password"))?;
            let user = Some(user).filter(|u| !u.is_empty() && u != "default");
            let pass = Some(pass).filter(|p| !p.is_empty());
            if user.is_some() && pass.is_none() {
                return Err(bad("a user name needs a password"));
            }
            (user, pass)
        }
    };
    if hostport.is_empty() || hostport.starts_with(':') {
        return Err(bad("no host"));
    }
    // A port is there if the text after the last ':' is outside [v6] brackets.
    let port = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && (!h.contains(':') || h.ends_with(']')) => Some(p),
        _ => None,
    };
    let addr = match port {
        Some(p) => {
            if p.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad("the port must be a number from 1 to 65535"));
            }
            hostport.to_owned()
        }
        None if hostport.contains(':') && !hostport.starts_with('[') => {
            return Err(bad("an IPv6 address goes in brackets: redis://[::1]:6379"))
        }
        None => format!("{hostport}:{DEFAULT_PORT}"),
    };
    let db = match path.trim_end_matches('/') {
        "" => None,
        d => Some(
            d.parse::<u32>()
                .map_err(|_| bad("the database must be a number"))?,
        ),
    };
    Ok(Target {
        addr,
        username,
        password,
        db,
    })
}

/// `%XX` escapes to bytes, the result as UTF-8; `None` for a broken escape
/// or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        addr: &str,
        username: Option<&str>,
        password: Option<&str>,
        db: Option<u32>,
    ) -> Target {
        Target {
            addr: addr.to_owned(),
            username: username.map(str::to_owned),
            password: password.map(str::to_owned),
            db,
        }
    }

    #[test]
    fn parses_urls() {
        let ok = |u: &str| parse_url(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        assert_eq!(ok("redis://h"), target("h:6379", None, None, None));
        assert_eq!(ok("redis://h:6380/"), target("h:6380", None, None, None));
        assert_eq!(
            ok("redis://127.0.0.1:7000/2"),
            target("127.0.0.1:7000", None, None, Some(2))
        );
        assert_eq!(
            ok("redis://:pw@h/1"),
            target("h:6379", None, Some("pw"), Some(1))
        );
        assert_eq!(ok("redis://pw@h"), target("h:6379", None, Some("pw"), None));
        assert_eq!(
            ok("redis://default:pw@h"),
            target("h:6379", None, Some("pw"), None)
        );
        assert_eq!(
            ok("redis://app:pw@h:1"),
            target("h:1", Some("app"), Some("pw"), None)
        );
        assert_eq!(
            ok("redis://a%40b:p%3Aw%2F@h"),
            target("h:6379", Some("a@b"), Some("p:w/"), None)
        );
        // The last '@' ends the user part.
        assert_eq!(
            ok("redis://:p@w@h"),
            target("h:6379", None, Some("p@w"), None)
        );
        assert_eq!(ok("redis://[::1]"), target("[::1]:6379", None, None, None));
        assert_eq!(
            ok("redis://[::1]:6380/4"),
            target("[::1]:6380", None, None, Some(4))
        );
        assert_eq!(ok("redis://:@h"), target("h:6379", None, None, None));
    }

    #[test]
    fn rejects_bad_urls_without_showing_the_password() {
        for (url, why) in [
            ("http://h", "must start with redis://"),
            ("rediss://h", "TLS"),
            ("redis://", "no host"),
            ("redis://:6379", "no host"),
            ("redis://:pw@", "no host"),
            ("redis://h:port", "port"),
            ("redis://h:0", "port"),
            ("redis://h:70000", "port"),
            ("redis://h/x", "database"),
            ("redis://h/-1", "database"),
            ("redis://h/1?timeout=3", "query"),
            ("redis://fe80::1", "brackets"),
            ("redis://app:@h", "needs a password"),
            ("redis://:s3cret%zz@h", "%-escape"),
        ] {
            let e = parse_url(url).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{url}");
            let msg = e.to_string();
            assert!(msg.contains(why), "{url}: {msg}");
            assert!(
                !msg.contains("s3cret") && !msg.contains(":pw"),
                "{url}: {msg}"
            );
        }
    }

    #[test]
    fn from_url_sets_what_the_url_says() {
        let m = RedisManager::from_url("redis://app:pw@h:7/9").unwrap();
        assert_eq!(m.addr(), "h:7");
        assert_eq!(m.username.as_deref(), Some("app"));
        assert_eq!(m.password.as_ref().map(|p| p.0.as_str()), Some("pw"));
        assert_eq!(m.db, Some(9));
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("pw") && dbg.contains("<redacted>"), "{dbg}");
        let m = RedisManager::from_url("redis://h").unwrap();
        assert!(m.password.is_none() && m.username.is_none() && m.db.is_none());
    }

    #[test]
    fn permanent_errors_are_the_ones_retrying_cannot_fix() {
        let server = |m: &str| RespError::Server(format!("AUTH on h:1 failed: {m} (check ...)"));
        for m in [
            "WRONGPASS invalid username-password pair or user is disabled.",
            "ERR invalid password",
            "NOAUTH Authentication required.",
            "NOPERM this user has no permissions to run the 'select' command",
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
            "ERR Client sent AUTH, but no password is set",
            "ERR wrong number of arguments for 'auth' command",
            "ERR DB index is out of range",
            "ERR SELECT is not allowed in cluster mode",
            "ERR unknown command 'SELECT'",
            "DENIED Redis is running in protected mode",
        ] {
            assert!(is_permanent(&server(m)), "{m}");
        }
        for m in [
            "ERR max number of clients reached",
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script.",
            "MASTERDOWN Link with MASTER is down",
        ] {
            assert!(!is_permanent(&server(m)), "{m}");
        }
        let io = |k: io::ErrorKind| RespError::Io(io::Error::from(k));
        assert!(is_permanent(&io(io::ErrorKind::InvalidInput)));
        assert!(!is_permanent(&io(io::ErrorKind::ConnectionRefused)));
        assert!(!is_permanent(&io(io::ErrorKind::TimedOut)));
        assert!(!is_permanent(&RespError::Protocol("x".into())));
    }
}
