//! The `zk://` URL: hosts, root path, digest credentials and timeouts.

use dlock_core::url_options::{check_timeout, redact_url as redact, QueryOptions};
use dlock_core::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::time::Duration;

/// Default root path when the URL names none.
pub const DEFAULT_ROOT: &str = "/dlock";
/// Default requested session timeout.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for establishing a session.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `session_timeout`, `connect_timeout` or `request_timeout`
/// accepted: one hour (the same limit in every adapter); a session that
/// long would also keep a dead holder's locks taken for as long.
pub use dlock_core::url_options::MAX_TIMEOUT;

/// The shortest `session_timeout` accepted. `zookeeper-client` must open the
/// session within the requested timeout (its first-connect deadline is that
/// timeout, whatever `connect_timeout` says), so a request of a few
/// milliseconds fails on any loaded machine; the server would raise it to
/// its `minSessionTimeout` (2 × `tickTime`) anyway.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(100);

/// The URL options this adapter understands.
pub const KNOWN_OPTIONS: &[&str] = &["session_timeout", "connect_timeout", "request_timeout"];

/// Everything a `zk://` URL says, parsed and checked.
///
/// ```text
/// zk://[user:password@]host:port[,host:port...][/root/path][?option=value&...]
/// ```
///
/// Options: `session_timeout` (default 10s, at least
/// [`MIN_SESSION_TIMEOUT`]; the server clamps it to its
/// `[minSessionTimeout, maxSessionTimeout]`), `connect_timeout` (default 5s),
/// `request_timeout` (default: the session timeout). Durations are written
/// like `4s` or `250ms`, each at most [`MAX_TIMEOUT`] (1h).
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct ZkConfig {
    /// `host:port` pairs, as given (IPv6 hosts in brackets).
    pub hosts: Vec<String>,
    /// Absolute path under which dlock keeps its nodes (default `/dlock`).
    pub root: String,
    /// Digest user, if the URL carries credentials.
    pub user: Option<String>,
    password: Option<SecretString>,
    /// Requested session timeout.
    pub session_timeout: Duration,
    /// Deadline for establishing a session.
    pub connect_timeout: Duration,
    /// Deadline of every request; `None` means "the negotiated session timeout".
    pub request_timeout: Option<Duration>,
}

impl fmt::Debug for ZkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkConfig")
            .field("hosts", &self.hosts)
            .field("root", &self.root)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ZkConfig {
    /// Parses a `zk://` or `zookeeper://` URL.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("zk://")
            .or_else(|| url.strip_prefix("zookeeper://"))
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "{:?} is not a ZooKeeper URL: expected zk://host:port[,host:port...][/root]",
                    redact(url)
                ))
            })?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostlist) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = ui.split_once(':').ok_or_else(|| {
                    Error::InvalidConfig(
                        "ZooKeeper URL credentials must be user:password (digest auth)".into(),
                    )
                })?;
                let u = decode("user name", u)?;
                if u.is_empty() {
                    return Err(Error::InvalidConfig(
                        "ZooKeeper URL has an empty user name before ':'".into(),
                    ));
                }
                (Some(u), Some(SecretString::from(decode("password", p)?)))
            }
        };
        let hosts = parse_hosts(hostlist)?;
        let root = parse_root(path)?;
        let mut cfg = ZkConfig {
            hosts,
            root,
            user,
            password,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
        };
        let mut q = QueryOptions::parse("ZooKeeper", query);
        if let Some(d) = q.duration("session_timeout")? {
            cfg.session_timeout = d;
        }
        if let Some(d) = q.duration("connect_timeout")? {
            cfg.connect_timeout = d;
        }
        cfg.request_timeout = q.duration("request_timeout")?;
        q.finish(KNOWN_OPTIONS)?;
        cfg.check_timeouts()?;
        Ok(cfg)
    }

    /// `InvalidConfig` unless every timeout is in `(0, MAX_TIMEOUT]`: the
    /// fields are public, so a configuration built in code is checked too.
    pub(crate) fn check_timeouts(&self) -> Result<()> {
        check_timeout("connect_timeout", self.connect_timeout)?;
        if let Some(t) = self.request_timeout {
            check_timeout("request_timeout", t)?;
        }
        match check_timeout("session_timeout", self.session_timeout) {
            Err(Error::InvalidConfig(m)) => Err(Error::InvalidConfig(format!(
                "{m}; a dead holder would block its locks that long"
            ))),
            Ok(()) if self.session_timeout < MIN_SESSION_TIMEOUT => {
                Err(Error::InvalidConfig(format!(
                    "session_timeout must be at least {MIN_SESSION_TIMEOUT:?}, got {:?}: the \
                     session must open within it, and ZooKeeper raises it to its \
                     minSessionTimeout (2 × tickTime) anyway",
                    self.session_timeout
                )))
            }
            r => r,
        }
    }

    /// The connect string handed to the client: `host:port,host:port`.
    pub(crate) fn connect_string(&self) -> String {
        self.hosts.join(",")
    }

    /// Where we connect, for error messages (no credentials).
    pub fn target(&self) -> String {
        format!("{}{}", self.connect_string(), self.root)
    }

    /// Applies `options` over what the URL said: the digest user and
    /// password (so they can stay out of the URL).
    pub fn apply(&mut self, options: &dlock_core::ConnectOptions) -> Result<()> {
        options.refuse(
            "zookeeper",
            &["token", "tls_roots"],
            "ZooKeeper authenticates with digest user:password, and dlock connects to it \
             without TLS",
        )?;
        options.apply_credentials(&mut self.user, &mut self.password);
        if self.user.is_some() != self.password.is_some() {
            return Err(Error::InvalidConfig(
                "ZooKeeper digest authentication needs both a user and a password".into(),
            ));
        }
        Ok(())
    }

    /// `user:password` for the digest scheme.
    pub(crate) fn digest(&self) -> Option<String> {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => Some(format!("{u}:{}", p.expose_secret())),
            _ => None,
        }
    }
}

fn decode(what: &str, s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            Error::InvalidConfig(format!(
                "the {what} in the ZooKeeper URL is not valid UTF-8 after percent-decoding"
            ))
        })
}

fn parse_hosts(list: &str) -> Result<Vec<String>> {
    if list.is_empty() {
        return Err(Error::InvalidConfig(
            "ZooKeeper URL names no host: use zk://host:port[,host:port...]".into(),
        ));
    }
    let mut hosts = Vec::new();
    for h in list.split(',') {
        let (host, port) = if let Some(rest) = h.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "ZooKeeper host {h:?}: missing ']' after an IPv6 address"
                ))
            })?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "ZooKeeper host {h:?}: expected ':port' after ']'"
                    ))
                })?),
            };
            (format!("[{host}]"), port)
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (h.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(Error::InvalidConfig(format!(
                "ZooKeeper URL has an empty host in {list:?}"
            )));
        }
        if host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@' || b == b'?')
        {
            return Err(Error::InvalidConfig(format!(
                "ZooKeeper host {host:?} contains characters a host name cannot have"
            )));
        }
        let port: u16 = match port {
            None => 2181,
            Some(p) => p.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::InvalidConfig(format!("ZooKeeper host {h:?}: {p:?} is not a port number"))
            })?,
        };
        hosts.push(format!("{host}:{port}"));
    }
    Ok(hosts)
}

/// Checks the root path: absolute, no empty, `.` or `..` segments, no
/// characters ZooKeeper refuses, not inside `/zookeeper`.
fn parse_root(path: &str) -> Result<String> {
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| Error::InvalidConfig("the ZooKeeper root path is not valid UTF-8".into()))?;
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(DEFAULT_ROOT.to_string());
    }
    for seg in trimmed[1..].split('/') {
        let bad = seg.is_empty()
            || seg == "."
            || seg == ".."
            || seg.chars().any(|c| {
                let u = u32::from(c);
                u <= 0x1f
                    || (0x7f..=0x9f).contains(&u)
                    || (0xd800..=0xf8ff).contains(&u)
                    || u >= 0xfff0
            });
        if bad {
            return Err(Error::InvalidConfig(format!(
                "ZooKeeper root path {path:?} has an empty, '.', '..' or unprintable segment"
            )));
        }
    }
    if trimmed == "/zookeeper" || trimmed.starts_with("/zookeeper/") {
        return Err(Error::InvalidConfig(
            "ZooKeeper root path must not be inside /zookeeper (reserved by the server)".into(),
        ));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn full_url() {
        let c = ZkConfig::parse(
            "zk://al%40ice:p%3Ass@h1:2181,[::1]:2182,h3/app/locks?session_timeout=4s&connect_timeout=750ms&request_timeout=2s",
        )
        .unwrap();
        assert_eq!(c.hosts, ["h1:2181", "[::1]:2182", "h3:2181"]);
        assert_eq!(c.root, "/app/locks");
        assert_eq!(c.user.as_deref(), Some("al@ice"));
        assert_eq!(c.digest().unwrap(), "al@ice:p:ss");
        assert_eq!(c.session_timeout, Duration::from_secs(4));
        assert_eq!(c.connect_timeout, Duration::from_millis(750));
        assert_eq!(c.request_timeout, Some(Duration::from_secs(2)));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("p:ss") && dbg.contains("***"), "{dbg}");
    }

    #[test]
    fn defaults() {
        let c = ZkConfig::parse("zookeeper://127.0.0.1:2181").unwrap();
        assert_eq!(c.root, DEFAULT_ROOT);
        assert_eq!(c.session_timeout, DEFAULT_SESSION_TIMEOUT);
        assert!(c.user.is_none() && c.digest().is_none());
        assert_eq!(ZkConfig::parse("zk://h:1/").unwrap().root, DEFAULT_ROOT);
        assert_eq!(ZkConfig::parse("zk://h:1/a/b/").unwrap().root, "/a/b");
    }

    #[test]
    fn bad_urls() {
        for (u, want) in [
            ("etcd://h:1", "not a ZooKeeper URL"),
            ("zk://", "no host"),
            ("zk://h:x", "not a port"),
            ("zk://h:0", "not a port"),
            ("zk://h:1,,h:2", "empty host"),
            ("zk://h:1/a//b", "empty, '.', '..'"),
            ("zk://h:1/a/../b", "empty, '.', '..'"),
            ("zk://h:1/zookeeper/x", "reserved"),
            ("zk://h:1?session_timeout=soon", "not a duration"),
            ("zk://h:1?session_timeout=0s", "greater than zero"),
            ("zk://h:1?session_timeout=10ms", "at least 100ms"),
            ("zk://h:1?session_timeout=61min", "at most 1h"),
            (
                "zk://h:1?request_timeout=18446744073709551615s",
                "at most 1h",
            ),
            ("zk://h:1?colour=red", "unknown ZooKeeper URL option"),
            ("zk://user@h:1", "user:password"),
            ("zk://:pw@h:1", "empty user"),
        ] {
            let e = ZkConfig::parse(u).unwrap_err().to_string();
            assert!(e.contains(want), "{u}: {e}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("zk://u:secret@h:1/r"), "zk://u:***@h:1/r");
        assert_eq!(redact("zk://h:1/r"), "zk://h:1/r");
        let e = ZkConfig::parse("zz://u:secret@h:1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
