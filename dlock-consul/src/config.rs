//! Connection settings, read from a `consul://` or `consul+https://` URL.

use dlock_core::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Default HTTP port of a Consul agent (`consul://`).
pub const DEFAULT_HTTP_PORT: u16 = 8500;
/// Default HTTPS port of a Consul agent (`consul+https://`).
pub const DEFAULT_HTTPS_PORT: u16 = 8501;
/// Key prefix used when the URL has no path.
pub const DEFAULT_PREFIX: &str = "dlock";
/// The longest `request_timeout` or `connect_timeout` accepted: one hour.
/// Anything longer is a mistake (a unit typo), and is refused rather than
/// silently shortened.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

const KNOWN_OPTIONS: &str =
    "token, token_file, dc, request_timeout, connect_timeout, ca_file, watch_loss";

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
    /// Extra PEM CA certificate(s) to trust for `consul+https://` (`ca_file=`).
    pub ca_file: Option<PathBuf>,
    /// Whether each held guard keeps a blocking query open on its key, so
    /// `lost()` fires as soon as the key is deleted or taken over
    /// (`watch_loss=true|false`, default true). Off, loss is still detected
    /// at the next extension and when the lease runs out; each watch holds
    /// one HTTP connection (Consul allows 200 per client IP by default).
    pub watch_loss: bool,
    token: Option<String>,
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
            ca_file: None,
            watch_loss: true,
            token: None,
        };
        let mut token_file = None;
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "token" => config.token = Some(v.into_owned()),
                "token_file" => token_file = Some(PathBuf::from(v.as_ref())),
                "dc" => config.datacenter = Some(v.into_owned()),
                "request_timeout" => config.request_timeout = parse_duration(&k, &v)?,
                "connect_timeout" => config.connect_timeout = parse_duration(&k, &v)?,
                "ca_file" => config.ca_file = Some(PathBuf::from(v.as_ref())),
                "watch_loss" => config.watch_loss = parse_bool(&k, &v)?,
                other => {
                    return Err(Error::InvalidConfig(format!(
                        "unknown Consul URL option {other:?}; known: {KNOWN_OPTIONS}"
                    )))
                }
            }
        }
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
            config.token = Some(text.trim().to_string());
        }
        if let Some(t) = config.token.take() {
            config.set_token(t)?;
        }
        if let Some(dc) = &config.datacenter {
            validate_datacenter(dc)?;
        }
        if config.ca_file.is_some() && !https {
            return Err(Error::InvalidConfig(
                "ca_file= only makes sense with consul+https://".into(),
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

    /// Sets (or replaces) the ACL token sent as `X-Consul-Token`.
    pub fn set_token(&mut self, token: impl Into<String>) -> Result<()> {
        let token = token.into();
        if token.is_empty() {
            return Err(Error::InvalidConfig(
                "the Consul ACL token is empty; leave token= out to use the anonymous token".into(),
            ));
        }
        if !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(Error::InvalidConfig(
                "the Consul ACL token contains characters an HTTP header cannot carry \
                 (spaces, control or non-ASCII characters); check how it was copied"
                    .into(),
            ));
        }
        self.token = Some(token);
        Ok(())
    }

    /// Whether an ACL token is configured (the token itself is never exposed
    /// through `Debug` or errors).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
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

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidConfig(format!(
            "{key} must be true or false, got {v:?}"
        ))),
    }
}

fn parse_duration(key: &str, v: &str) -> Result<Duration> {
    let d = humantime::parse_duration(v).map_err(|e| {
        Error::InvalidConfig(format!(
            "{key}={v:?} is not a duration like 5s or 250ms: {e}"
        ))
    })?;
    check_timeout(key, d)?;
    Ok(d)
}

fn check_timeout(key: &str, d: Duration) -> Result<()> {
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(Error::InvalidConfig(format!(
            "{key} must be greater than zero and at most 1h, got {d:?}"
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
