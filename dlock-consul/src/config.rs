//! Connection settings, read from a `consul://` or `consul+https://` URL.

use dlock_core::url_options::{check_timeout, QueryOptions};
use dlock_core::{ConnectOptions, Error, Result, TlsRoots};
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::Duration;

/// Default HTTP port of a Consul agent (`consul://`).
pub const DEFAULT_HTTP_PORT: u16 = 8500;
/// Default HTTPS port of a Consul agent (`consul+https://`).
pub const DEFAULT_HTTPS_PORT: u16 = 8501;
/// Key prefix used when the URL has no path.
pub const DEFAULT_PREFIX: &str = "dlock";
/// The longest `request_timeout` or `connect_timeout` accepted: one hour
/// (the same limit in every adapter).
pub use dlock_core::url_options::MAX_TIMEOUT;

/// The URL options this adapter understands.
pub const KNOWN_OPTIONS: &[&str] = &[
    "token",
    "token_file",
    "dc",
    "request_timeout",
    "connect_timeout",
    "ca_file",
    "tls_roots",
    "watch_loss",
];

/// Where and how to reach Consul, parsed from a URL:
///
/// `consul://host:port/prefix?token=…&dc=…&request_timeout=5s&connect_timeout=2s`
/// (`consul+https://` for TLS, with an optional `ca_file=/path/ca.pem`).
///
/// `Debug` never shows the ACL token.
///
/// ```
/// use dlock_consul::ConsulConfig;
/// let c = ConsulConfig::from_url("consul://127.0.0.1:8500/locks/app?token=s3cret&dc=dc1").unwrap();
/// assert_eq!(c.prefix, "locks/app");
/// assert_eq!(c.datacenter.as_deref(), Some("dc1"));
/// assert!(c.has_token());
/// assert!(!format!("{c:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ConsulConfig {
    /// `true` for `consul+https://`.
    pub https: bool,
    /// Agent host name or IP address (IPv6 in brackets).
    pub host: String,
    /// Agent HTTP(S) port.
    pub port: u16,
    /// KV prefix every lock key lives under (no leading or trailing `/`).
    pub prefix: String,
    /// Datacenter to send every request to (`dc=`); the agent's own when `None`.
    pub datacenter: Option<String>,
    /// Deadline for every ordinary request (`request_timeout=`, default 5 s,
    /// at most [`MAX_TIMEOUT`]). Blocking queries get their wait time on top.
    pub request_timeout: Duration,
    /// Deadline for opening a TCP/TLS connection (`connect_timeout=`,
    /// default 2 s, at most [`MAX_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// The root certificates `consul+https://` trusts (`tls_roots=webpki|system`,
    /// default webpki: the built-in Mozilla roots, as on every dlock backend).
    pub tls_roots: TlsRoots,
    /// Extra PEM CA certificate(s) to trust for `consul+https://` (`ca_file=`).
    pub ca_file: Option<PathBuf>,
    /// Whether held guards watch their keys with blocking queries, so
    /// `lost()` fires as soon as the key is deleted or taken over
    /// (`watch_loss=true|false`, default true). Off, loss is still detected
    /// at the next extension and when the lease runs out. A backend keeps
    /// at most 65 such queries open, each one HTTP connection (Consul
    /// allows 200 per client address by default): one per key for its
    /// first 64 held keys, and one on the whole prefix for the rest.
    pub watch_loss: bool,
    token: Option<SecretString>,
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("base_url", &self.base_url())
            .field("prefix", &self.prefix)
            .field("datacenter", &self.datacenter)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_roots", &self.tls_roots)
            .field("ca_file", &self.ca_file)
            .field("watch_loss", &self.watch_loss)
            .finish()
    }
}

impl ConsulConfig {
    /// Parses a `consul://` or `consul+https://` URL. Error messages never
    /// repeat the token.
    pub fn from_url(url: &str) -> Result<Self> {
        let (scheme, _) = url.split_once("://").ok_or_else(|| {
            Error::InvalidConfig(
                "a Consul URL looks like consul://host:port/prefix or consul+https://host:port/prefix".into(),
            )
        })?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "consul" => false,
            "consul+https" => true,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "URL scheme {other:?} is not a Consul scheme: use consul:// or consul+https://"
                )))
            }
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::InvalidConfig(format!(
                "the Consul URL is malformed ({e}); expected {scheme}://host:port/prefix?options"
            ))
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::InvalidConfig(
                "the Consul URL carries user info (user:password@); Consul has no passwords: \
                 pass the ACL token as ?token=... or ?token_file=/path"
                    .into(),
            ));
        }
        if parsed.fragment().is_some() {
            return Err(Error::InvalidConfig(
                "the Consul URL has a #fragment; remove it (a # inside the prefix must be percent-encoded, but prefixes only allow [A-Za-z0-9_.-/])".into(),
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "the Consul URL has no host: use {scheme}://host:port/prefix"
                )))
            }
        };
        let port = parsed.port().unwrap_or(if https {
            DEFAULT_HTTPS_PORT
        } else {
            DEFAULT_HTTP_PORT
        });
        // The URL parser resolves `.` and `..` segments; a prefix must not
        // contain them at all, so check the path as written.
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
        let written = rest.split(['?', '#']).next().unwrap_or_default();
        let written_path = written.find('/').map(|i| &written[i..]).unwrap_or("");
        let prefix = parse_prefix(written_path)?;
        let mut config = ConsulConfig {
            https,
            host,
            port,
            prefix,
            datacenter: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            tls_roots: TlsRoots::default(),
            ca_file: None,
            watch_loss: true,
            token: None,
        };
        let mut q = QueryOptions::parse("Consul", parsed.query().unwrap_or_default());
        let token = q.secret("token");
        let token_file = q.take("token_file").map(PathBuf::from);
        config.datacenter = q.take("dc");
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
        if let Some(b) = q.bool("watch_loss")? {
            config.watch_loss = b;
        }
        q.finish(KNOWN_OPTIONS)?;
        config.token = token;
        if let Some(path) = token_file {
            if config.token.is_some() {
                return Err(Error::InvalidConfig(
                    "give the Consul ACL token either as token= or as token_file=, not both".into(),
                ));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::InvalidConfig(format!(
                    "cannot read the Consul ACL token file {}: {e}",
                    path.display()
                ))
            })?;
            config.token = Some(SecretString::from(text.trim()));
        }
        if let Some(t) = config.token.take() {
            config.set_token(t)?;
        }
        if let Some(dc) = &config.datacenter {
            validate_datacenter(dc)?;
        }
        if (config.ca_file.is_some() || roots.is_some()) && !https {
            return Err(Error::InvalidConfig(
                "ca_file= and tls_roots= only make sense with consul+https://".into(),
            ));
        }
        config.check_timeouts()?;
        Ok(config)
    }

    /// `InvalidConfig` unless both timeouts are in `(0, MAX_TIMEOUT]`: the
    /// fields are public, so a configuration built in code is checked too.
    pub(crate) fn check_timeouts(&self) -> Result<()> {
        check_timeout("request_timeout", self.request_timeout)?;
        check_timeout("connect_timeout", self.connect_timeout)
    }

    /// Sets (or replaces) the ACL token sent as `X-Consul-Token`, so it
    /// never has to appear in a URL.
    pub fn set_token(&mut self, token: SecretString) -> Result<()> {
        let text = token.expose_secret();
        if text.is_empty() {
            return Err(Error::InvalidConfig(
                "the Consul ACL token is empty; leave token= out to use the anonymous token".into(),
            ));
        }
        if !text.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(Error::InvalidConfig(
                "the Consul ACL token contains characters an HTTP header cannot carry \
                 (spaces, control or non-ASCII characters); check how it was copied"
                    .into(),
            ));
        }
        self.token = Some(token);
        Ok(())
    }

    /// Applies `options` over what the URL said: the ACL token (so it can
    /// stay out of the URL) and the TLS roots. Consul has no passwords.
    pub fn apply(&mut self, options: &ConnectOptions) -> Result<()> {
        options.refuse(
            "consul",
            &["user", "password"],
            "Consul authenticates with an ACL token (ConnectOptions::token)",
        )?;
        if let Some(t) = &options.token {
            self.set_token(t.clone())?;
        }
        if let Some(r) = options.tls_roots {
            if !self.https {
                return Err(Error::InvalidConfig(
                    "ConnectOptions::tls_roots only makes sense with consul+https://".into(),
                ));
            }
            self.tls_roots = r;
        }
        Ok(())
    }

    /// Whether an ACL token is configured (the token itself is never exposed
    /// through `Debug` or errors).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.expose_secret())
    }

    /// `http://host:port` or `https://host:port`: where requests go. No secrets.
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// `host:port`, for messages.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn parse_prefix(path: &str) -> Result<String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(DEFAULT_PREFIX.to_string());
    }
    let ok_segment = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    if trimmed.len() > 256 || !trimmed.split('/').all(ok_segment) {
        return Err(Error::InvalidConfig(format!(
            "Consul key prefix {trimmed:?} is not accepted: use /-separated segments of \
             [A-Za-z0-9_.-] (no empty, . or .. segments, at most 256 bytes)"
        )));
    }
    Ok(trimmed.to_string())
}

fn validate_datacenter(dc: &str) -> Result<()> {
    if dc.is_empty()
        || dc.len() > 64
        || !dc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(Error::InvalidConfig(format!(
            "Consul datacenter {dc:?} is not a datacenter name ([A-Za-z0-9_.-], 1..=64 bytes)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn defaults() {
        let c = ConsulConfig::from_url("consul://127.0.0.1").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8500");
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert!(!c.has_token());
        assert_eq!(c.datacenter, None);
        let c = ConsulConfig::from_url("consul+https://consul.example:9999/").unwrap();
        assert_eq!(c.base_url(), "https://consul.example:9999");
        let c = ConsulConfig::from_url("CONSUL+HTTPS://[::1]/a/b").unwrap();
        assert_eq!(c.base_url(), "https://[::1]:8501");
        assert_eq!(c.prefix, "a/b");
    }

    #[test]
    fn options() {
        let c = ConsulConfig::from_url(
            "consul://h:1/p/?token=t0k%2Ben&dc=dc-2&request_timeout=750ms&connect_timeout=1s&watch_loss=off",
        )
        .unwrap();
        assert!(!c.watch_loss);
        assert_eq!(c.token(), Some("t0k+en"));
        assert_eq!(c.datacenter.as_deref(), Some("dc-2"));
        assert_eq!(c.request_timeout, Duration::from_millis(750));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.prefix, "p");
    }

    #[test]
    fn bad_urls_are_clear_and_never_echo_the_token() {
        for (url, needle) in [
            ("consul:/h", "looks like"),
            ("etcd://h", "not a Consul scheme"),
            ("consul:///p", "no host"),
            ("consul://h/a//b", "prefix"),
            ("consul://h/a/../b", "prefix"),
            ("consul://h/a%2Fb", "prefix"),
            (
                "consul://h/a?bogus=1&token=SECRET",
                "unknown Consul URL option \"bogus\"",
            ),
            ("consul://h/a?token=SECRET&dc=a%20b", "datacenter"),
            ("consul://h/a?token=SEC%20RET", "HTTP header"),
            ("consul://h/a?token=", "empty"),
            ("consul://u:SECRET@h/a", "user info"),
            ("consul://h/a?request_timeout=soon&token=SECRET", "duration"),
            ("consul://h/a?request_timeout=0s", "greater than zero"),
            ("consul://h/a?connect_timeout=2h", "at most 1h"),
            ("consul://h/a?watch_loss=maybe", "true or false"),
            ("consul://h/a?ca_file=/x.pem", "consul+https"),
            (
                "consul://h/a?token=SECRET&token_file=/nonexistent",
                "either",
            ),
            ("consul://h/a?token_file=/nonexistent/SECRET", "cannot read"),
        ] {
            let e = ConsulConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            if !url.contains("token_file=/nonexistent/") {
                assert!(
                    !e.contains("SECRET") && !e.contains("SEC RET"),
                    "{url}: {e}"
                );
            }
        }
    }

    #[test]
    fn debug_hides_token() {
        let c = ConsulConfig::from_url("consul://h/a?token=SECRET").unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("SECRET") && d.contains("<redacted>"), "{d}");
    }
}
