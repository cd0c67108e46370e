//! [`EtcdConfig`]: everything an `etcd://` / `etcds://` URL says.

use dlock_core::url_options::{check_timeout, QueryOptions};
use dlock_core::{ConnectOptions, Error, Result, TlsRoots};
use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Port used when an endpoint names none.
pub const DEFAULT_PORT: u16 = 2379;

/// Key prefix used when the URL has no path.
pub const DEFAULT_PREFIX: &str = "dlock";

/// The longest `connect_timeout` or `request_timeout` accepted: one hour
/// (the same limit in every adapter).
pub use dlock_core::url_options::MAX_TIMEOUT;

/// The URL options this adapter understands.
pub const KNOWN_OPTIONS: &[&str] = &[
    "connect_timeout",
    "request_timeout",
    "ca_file",
    "cert_file",
    "key_file",
    "tls_domain",
    "tls_roots",
];

/// Connection settings parsed from
/// `etcd[s]://[user:password@]host:port[,host:port...][/prefix][?options]`.
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct EtcdConfig {
    /// `host:port` of every endpoint, in URL order (IPv6 hosts in brackets).
    pub endpoints: Vec<String>,
    /// TLS (`etcds://`) or plain HTTP/2 (`etcd://`).
    pub tls: bool,
    /// Every lock key is `<prefix>/<encoded name>`; nothing outside it is touched.
    pub prefix: String,
    /// User name for etcd authentication (URL userinfo).
    pub user: Option<String>,
    password: Option<SecretString>,
    /// The root certificates TLS trusts (`tls_roots=webpki|system`, default
    /// webpki: the built-in Mozilla roots, as on every dlock backend).
    pub tls_roots: TlsRoots,
    /// PEM file with CA certificate(s) to trust besides [`EtcdConfig::tls_roots`],
    /// e.g. the private CA that signed the servers' certificates (`ca_file=`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (`cert_file=`, with `key_file=`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (`key_file=`).
    pub key_file: Option<PathBuf>,
    /// Server name to verify instead of the endpoint's host (`tls_domain=`).
    pub tls_domain: Option<String>,
    /// Deadline for reaching the cluster and authenticating (`connect_timeout=`,
    /// default 5s, at most [`MAX_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Deadline for every request (`request_timeout=`, default 5s, at most
    /// [`MAX_TIMEOUT`]).
    pub request_timeout: Duration,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls)
            .field("prefix", &self.prefix)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls_roots", &self.tls_roots)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("tls_domain", &self.tls_domain)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl EtcdConfig {
    /// Parses an `etcd://` or `etcds://` URL.
    ///
    /// ```
    /// use dlock_etcd::EtcdConfig;
    /// let c = EtcdConfig::parse("etcd://u:secret@10.0.0.1:2379,10.0.0.2/jobs?request_timeout=2s").unwrap();
    /// assert_eq!(c.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
    /// assert_eq!(c.prefix, "jobs");
    /// assert!(!format!("{c:?}").contains("secret"));
    /// ```
    pub fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            Error::InvalidConfig(
                "an etcd URL looks like etcd://host:port/prefix or etcds://host:port/prefix".into(),
            )
        })?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "etcd" => false,
            "etcds" => true,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "URL scheme {other:?} is not etcd:// (plain) or etcds:// (TLS)"
                )))
            }
        };
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                let u = decode("user name", u)?;
                if u.is_empty() {
                    return Err(Error::InvalidConfig(
                        "the etcd URL has an empty user name before '@'".into(),
                    ));
                }
                let p = p
                    .map(|p| decode("password", p).map(SecretString::from))
                    .transpose()?;
                (Some(u), p)
            }
        };
        if user.is_some() && password.is_none() {
            return Err(Error::InvalidConfig(
                "the etcd URL names a user but no password: write etcd://user:password@host:port"
                    .into(),
            ));
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            endpoints.push(parse_endpoint(h)?);
        }
        let prefix = parse_prefix(path)?;
        let mut cfg = EtcdConfig {
            endpoints,
            tls,
            prefix,
            user,
            password,
            tls_roots: TlsRoots::default(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            tls_domain: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        };
        let mut q = QueryOptions::parse("etcd", query);
        if let Some(d) = q.duration("connect_timeout")? {
            cfg.connect_timeout = d;
        }
        if let Some(d) = q.duration("request_timeout")? {
            cfg.request_timeout = d;
        }
        cfg.ca_file = q.non_empty("ca_file")?.map(PathBuf::from);
        cfg.cert_file = q.non_empty("cert_file")?.map(PathBuf::from);
        cfg.key_file = q.non_empty("key_file")?.map(PathBuf::from);
        cfg.tls_domain = q.non_empty("tls_domain")?;
        let roots = q.take(TlsRoots::URL_OPTION);
        if let Some(r) = &roots {
            cfg.tls_roots = r.parse()?;
        }
        q.finish(KNOWN_OPTIONS)?;
        let tls_opts = roots.is_some()
            || cfg.ca_file.is_some()
            || cfg.cert_file.is_some()
            || cfg.key_file.is_some()
            || cfg.tls_domain.is_some();
        if tls_opts && !cfg.tls {
            return Err(Error::InvalidConfig(
                "tls_roots, ca_file, cert_file, key_file and tls_domain need TLS: use the etcds:// scheme"
                    .into(),
            ));
        }
        if cfg.cert_file.is_some() != cfg.key_file.is_some() {
            return Err(Error::InvalidConfig(
                "a client certificate needs both cert_file= and key_file=".into(),
            ));
        }
        cfg.check_timeouts()?;
        Ok(cfg)
    }

    /// `InvalidConfig` unless both timeouts are in `(0, MAX_TIMEOUT]`: the
    /// fields are public, so a configuration built in code is checked too.
    pub(crate) fn check_timeouts(&self) -> Result<()> {
        check_timeout("connect_timeout", self.connect_timeout)?;
        check_timeout("request_timeout", self.request_timeout)
    }

    /// The password from the URL, if any. Never logged.
    pub fn password(&self) -> Option<&str> {
        self.password.as_ref().map(|p| p.expose_secret())
    }

    /// Sets the password (instead of one in the URL), so it never has to
    /// appear in a URL, a command line or an environment dump.
    pub fn set_password(&mut self, password: SecretString) {
        self.password = Some(password);
    }

    /// Applies `options` over what the URL said. etcd has no tokens.
    pub fn apply(&mut self, options: &ConnectOptions) -> Result<()> {
        options.refuse(
            "etcd",
            &["token"],
            "etcd authenticates with a user and password",
        )?;
        options.apply_credentials(&mut self.user, &mut self.password);
        if self.user.is_some() != self.password.is_some() {
            return Err(Error::InvalidConfig(
                "etcd authentication needs both a user and a password".into(),
            ));
        }
        if let Some(r) = options.tls_roots {
            if !self.tls {
                return Err(Error::InvalidConfig(
                    "ConnectOptions::tls_roots needs TLS: use the etcds:// scheme".into(),
                ));
            }
            self.tls_roots = r;
        }
        Ok(())
    }

    /// The endpoints joined for messages (no secrets).
    pub fn target(&self) -> String {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        format!("{scheme}://{}", self.endpoints.join(","))
    }

    /// The key of lock `seg` (an already encoded name segment).
    pub(crate) fn key(&self, seg: &str) -> String {
        format!("{}/{seg}", self.prefix)
    }
}

fn decode(what: &str, s: &str) -> Result<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::InvalidConfig(format!("the {what} in the etcd URL is not valid UTF-8")))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` -> `host:port`.
fn parse_endpoint(h: &str) -> Result<String> {
    if h.is_empty() {
        return Err(Error::InvalidConfig(
            "the etcd URL has an empty endpoint: write etcd://host:port[,host:port...]/prefix"
                .into(),
        ));
    }
    let bad =
        |why: &str| Error::InvalidConfig(format!("etcd endpoint {h:?} is not host:port ({why})"));
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' of an IPv6 address"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address in brackets"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
        };
        (format!("[{v6}]"), port)
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (h.to_string(), None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    {
        return Err(bad("invalid host name"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be 1..=65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// URL path -> key prefix without leading or trailing `/`.
fn parse_prefix(path: &str) -> Result<String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(DEFAULT_PREFIX.to_string());
    }
    let prefix = decode("key prefix", trimmed)?;
    if prefix.contains('\0') {
        return Err(Error::InvalidConfig(
            "the etcd key prefix must not contain NUL".into(),
        ));
    }
    if prefix.split('/').any(str::is_empty) {
        return Err(Error::InvalidConfig(format!(
            "the etcd key prefix {prefix:?} has an empty segment ('//')"
        )));
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn full_url() {
        let c = EtcdConfig::parse(
            "etcds://root:p%40ss@a.example:1234,[::1]:2380,b/x/y/?connect_timeout=1s&request_timeout=250ms&ca_file=/ca.pem&cert_file=/c.pem&key_file=/k.pem&tls_domain=etcd.local",
        )
        .unwrap();
        assert!(c.tls);
        assert_eq!(c.endpoints, ["a.example:1234", "[::1]:2380", "b:2379"]);
        assert_eq!(c.prefix, "x/y");
        assert_eq!(c.user.as_deref(), Some("root"));
        assert_eq!(c.password(), Some("p@ss"));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert_eq!(c.tls_domain.as_deref(), Some("etcd.local"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("p@ss") && dbg.contains("***"), "{dbg}");
        assert_eq!(c.target(), "etcds://a.example:1234,[::1]:2380,b:2379");
    }

    #[test]
    fn defaults() {
        let c = EtcdConfig::parse("etcd://127.0.0.1:22379").unwrap();
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert!(!c.tls && c.user.is_none() && c.password().is_none());
        assert_eq!(c.key("a%2Fb"), "dlock/a%2Fb");
        let c = EtcdConfig::parse("etcd://127.0.0.1:22379/ns_1").unwrap();
        assert_eq!(c.key("n"), "ns_1/n");
    }

    #[test]
    fn bad_urls() {
        for (url, want) in [
            ("127.0.0.1:2379", "etcd://host"),
            ("http://127.0.0.1:2379", "not etcd://"),
            ("etcd://", "empty endpoint"),
            ("etcd://a,,b", "empty endpoint"),
            ("etcd://a:0", "1..=65535"),
            ("etcd://a:99999", "1..=65535"),
            ("etcd://a:x", "1..=65535"),
            ("etcd://[::1", "unclosed"),
            ("etcd://a b:1", "invalid host"),
            ("etcd://u@a:1", "no password"),
            ("etcd://:p@a:1", "empty user"),
            ("etcd://a:1/p?bogus=1", "unknown etcd URL option"),
            ("etcd://a:1/p?ca_file=/x", "etcds://"),
            ("etcds://a:1/p?cert_file=/x", "both cert_file"),
            ("etcd://a:1/p?request_timeout=soon", "duration"),
            ("etcd://a:1/p?request_timeout=0s", "greater than zero"),
            ("etcd://a:1/p?request_timeout=61min", "at most 1h"),
            (
                "etcd://a:1/p?connect_timeout=18446744073709551615s",
                "at most 1h",
            ),
            ("etcd://a:1/x//y", "empty segment"),
        ] {
            let e = EtcdConfig::parse(url).unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
