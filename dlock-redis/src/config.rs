//! Connection settings, read from a `redis://` or `rediss://` URL.

use dlock_core::url_options::{check_timeout, redact_url, QueryOptions};
use dlock_core::{ConnectOptions, Error, Result, TlsRoots};
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::Duration;

/// Default port of a Redis server.
pub const DEFAULT_PORT: u16 = 6379;
/// Key prefix used when the URL gives none (`prefix=`).
pub const DEFAULT_PREFIX: &str = "dlock";
/// Longest accepted key prefix, in bytes.
pub const MAX_PREFIX_BYTES: usize = 128;

/// The URL options this adapter understands.
pub const KNOWN_OPTIONS: &[&str] = &[
    "prefix",
    "request_timeout",
    "connect_timeout",
    "tls_roots",
    "ca_file",
    "require_aof",
];

/// Where and how to reach Redis (or Valkey), parsed from a URL:
///
/// `redis://[user:password@]host:port/db?prefix=dlock&request_timeout=5s&connect_timeout=2s`
/// (`rediss://` for TLS, with optional `tls_roots=webpki|system` and
/// `ca_file=/path/ca.pem`; `require_aof=false` to accept a server without
/// an append-only file, see [`RedisConfig::require_aof`]).
///
/// `Debug` never shows the password.
///
/// ```
/// use dlock_redis::RedisConfig;
/// let c = RedisConfig::from_url("redis://app:s3cret@127.0.0.1:6379/2?prefix=jobs").unwrap();
/// assert_eq!((c.db, c.prefix.as_str()), (2, "jobs"));
/// assert!(!format!("{c:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    /// `true` for `rediss://`.
    pub tls: bool,
    /// Server host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database number (the URL path, `/0` when absent).
    pub db: i64,
    /// ACL user name; `None` authenticates as the default user (or not at all).
    pub user: Option<String>,
    /// Every key this backend writes starts with `<prefix>:` (`prefix=`,
    /// default `dlock`; `[A-Za-z0-9_.-/]`, at most 128 bytes).
    pub prefix: String,
    /// Deadline for every request (`request_timeout=`, default 5 s).
    pub request_timeout: Duration,
    /// Deadline for opening a TCP/TLS connection and logging in
    /// (`connect_timeout=`, default 2 s).
    pub connect_timeout: Duration,
    /// The root certificates `rediss://` trusts (`tls_roots=webpki|system`,
    /// default webpki: the built-in Mozilla roots, as on every dlock backend).
    pub tls_roots: TlsRoots,
    /// PEM CA certificate(s) to trust for `rediss://` (`ca_file=`). Given,
    /// the connection trusts these (and the system's roots with
    /// `tls_roots=system`) instead of the built-in roots: redis-rs takes
    /// one root store.
    pub ca_file: Option<PathBuf>,
    /// Refuse a server that does not write an append-only file
    /// (`require_aof=true|false`, default true). Without AOF a restart
    /// forgets every lock and every fencing token counter: a holder that
    /// still believes it holds overlaps the next one, and tokens start
    /// again from 1. Turn it off only for a cache-only server you accept
    /// that for (tests, development).
    pub require_aof: bool,
    password: Option<SecretString>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("target", &self.target())
            .field("db", &self.db)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_roots", &self.tls_roots)
            .field("ca_file", &self.ca_file)
            .field("require_aof", &self.require_aof)
            .finish()
    }
}

impl RedisConfig {
    /// Parses a `redis://` or `rediss://` URL. Error messages never repeat
    /// the password.
    pub fn from_url(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let (scheme, _) = url.split_once("://").ok_or_else(|| {
            Error::InvalidConfig(format!(
                "{shown:?}: a Redis URL looks like redis://[user:password@]host:port/db or rediss://..."
            ))
        })?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "redis" | "valkey" => false,
            "rediss" | "valkeys" => true,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "URL scheme {other:?} is not a Redis scheme: use redis:// or rediss://"
                )))
            }
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::InvalidConfig(format!(
                "the Redis URL {shown:?} is malformed ({e}); expected {scheme}://[user:password@]host:port/db?options"
            ))
        })?;
        if parsed.fragment().is_some() {
            return Err(Error::InvalidConfig(format!(
                "the Redis URL {shown:?} has a #fragment; a # in the password must be written %23"
            )));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "the Redis URL {shown:?} has no host: use {scheme}://host:port/db"
                )))
            }
        };
        let port = parsed.port().unwrap_or(DEFAULT_PORT);
        let db = match parsed.path().trim_matches('/') {
            "" => 0,
            p => p.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "the Redis URL {shown:?} has path /{p}; the path is the database number (/0, /1, ...); \
                     put a key prefix in ?prefix= instead"
                ))
            })?,
        };
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "the Redis URL {shown:?} has user info that is not valid percent-encoded UTF-8"
                ))
            })
        };
        let user = match parsed.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = match parsed.password() {
            None => None,
            Some(p) => Some(SecretString::from(decode(p)?)),
        };
        let mut config = RedisConfig {
            tls,
            host,
            port,
            db,
            user,
            prefix: DEFAULT_PREFIX.to_string(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            tls_roots: TlsRoots::default(),
            ca_file: None,
            require_aof: true,
            password,
        };
        let mut q = QueryOptions::parse("Redis", parsed.query().unwrap_or_default());
        if let Some(p) = q.take("prefix") {
            config.prefix = p;
        }
        if let Some(d) = q.duration("request_timeout")? {
            config.request_timeout = d;
        }
        if let Some(d) = q.duration("connect_timeout")? {
            config.connect_timeout = d;
        }
        config.ca_file = q.take("ca_file").map(PathBuf::from);
        let roots = q.take(TlsRoots::URL_OPTION);
        if let Some(r) = &roots {
            config.tls_roots = r.parse()?;
        }
        if let Some(b) = q.bool("require_aof")? {
            config.require_aof = b;
        }
        q.finish(KNOWN_OPTIONS)?;
        if (config.ca_file.is_some() || roots.is_some()) && !tls {
            return Err(Error::InvalidConfig(
                "ca_file= and tls_roots= only make sense with rediss:// (TLS)".into(),
            ));
        }
        config.check()?;
        Ok(config)
    }

    /// `InvalidConfig` unless the prefix and both timeouts are acceptable:
    /// the fields are public, so a configuration built in code is checked too.
    pub(crate) fn check(&self) -> Result<()> {
        check_prefix(&self.prefix)?;
        check_timeout("request_timeout", self.request_timeout)?;
        check_timeout("connect_timeout", self.connect_timeout)
    }

    /// Applies `options` over what the URL said: user, password, TLS roots.
    /// Redis has no separate tokens.
    pub fn apply(&mut self, options: &ConnectOptions) -> Result<()> {
        options.refuse(
            "redis",
            &["token"],
            "Redis authenticates with a user and password (ConnectOptions::user/password)",
        )?;
        options.apply_credentials(&mut self.user, &mut self.password);
        if let Some(r) = options.tls_roots {
            if !self.tls {
                return Err(Error::InvalidConfig(
                    "ConnectOptions::tls_roots only makes sense with rediss://".into(),
                ));
            }
            self.tls_roots = r;
        }
        Ok(())
    }

    /// Whether a password is configured (the password itself is never
    /// exposed through `Debug` or errors).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_ref().map(|p| p.expose_secret())
    }

    /// `host:port`, for messages. No secrets.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The URL's user info is percent-encoded; Redis wants it as written.
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|d| d.into_owned())
}

fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_BYTES
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if ok {
        return Ok(());
    }
    Err(Error::InvalidConfig(format!(
        "Redis key prefix {prefix:?} is not accepted: use 1..={MAX_PREFIX_BYTES} bytes of [A-Za-z0-9_.-/]"
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn defaults() {
        let c = RedisConfig::from_url("redis://127.0.0.1").unwrap();
        assert_eq!(
            (c.target(), c.db, c.prefix.as_str()),
            ("127.0.0.1:6379".into(), 0, DEFAULT_PREFIX)
        );
        assert!(!c.tls && c.require_aof && !c.has_password() && c.user.is_none());
        let c = RedisConfig::from_url("rediss://[::1]:7000/3").unwrap();
        assert_eq!((c.target(), c.db, c.tls), ("[::1]:7000".into(), 3, true));
    }

    #[test]
    fn options_and_credentials() {
        let c = RedisConfig::from_url(
            "redis://app:p%40ss%2Bw@h:1/0?prefix=a/b.c&request_timeout=750ms&connect_timeout=1s&require_aof=false",
        )
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password(), Some("p@ss+w"));
        assert_eq!(c.prefix, "a/b.c");
        assert_eq!(c.request_timeout, Duration::from_millis(750));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert!(!c.require_aof);
        let c = RedisConfig::from_url("redis://:only@h").unwrap();
        assert_eq!((c.user.as_deref(), c.password()), (None, Some("only")));
    }

    #[test]
    fn bad_urls_are_clear_and_never_echo_the_password() {
        for (url, needle) in [
            ("redis:/h", "looks like"),
            ("etcd://h", "not a Redis scheme"),
            ("redis:///0", "no host"),
            ("redis://h/jobs", "database number"),
            ("redis://h/-1", "database number"),
            (
                "redis://u:SECRET@h/0?bogus=1",
                "unknown Redis URL option \"bogus\"",
            ),
            ("redis://u:SECRET@h/0?prefix=a:b", "prefix"),
            ("redis://u:SECRET@h/0?prefix=", "prefix"),
            ("redis://u:SECRET@h/0?request_timeout=soon", "duration"),
            ("redis://h?request_timeout=0s", "greater than zero"),
            ("redis://h?connect_timeout=2h", "at most 1h"),
            ("redis://h?require_aof=maybe", "true or false"),
            ("redis://h?ca_file=/x.pem", "rediss://"),
            ("redis://u:SECRET@h#frag", "fragment"),
        ] {
            let e = RedisConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("SECRET"), "{url}: {e}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = RedisConfig::from_url("redis://u:SECRET@h").unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("SECRET") && d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn connect_options_override_the_url() {
        let mut c = RedisConfig::from_url("redis://u:p@h").unwrap();
        c.apply(&ConnectOptions::new().user("v").password("q"))
            .unwrap();
        assert_eq!((c.user.as_deref(), c.password()), (Some("v"), Some("q")));
        let e = c.apply(&ConnectOptions::new().token("t")).unwrap_err();
        assert!(e.to_string().contains("ConnectOptions::token"), "{e}");
        let e = c
            .apply(&ConnectOptions::new().tls_roots(TlsRoots::System))
            .unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
    }
}
