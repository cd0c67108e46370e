//! Reading an adapter's settings from URL query options, the same way in
//! every adapter: durations (`5s`, `250ms`), booleans, secrets, and an error
//! that lists the known options when a key is unknown.
//!
//! ```
//! use dlock_core::url_options::QueryOptions;
//! use std::time::Duration;
//! let mut q = QueryOptions::parse("etcd", "request_timeout=2s&tls=true");
//! assert_eq!(q.duration("request_timeout").unwrap(), Some(Duration::from_secs(2)));
//! assert_eq!(q.bool("tls").unwrap(), Some(true));
//! q.finish(&["request_timeout", "tls"]).unwrap();
//!
//! let q = QueryOptions::parse("etcd", "reqest_timeout=2s");
//! let e = q.finish(&["request_timeout"]).unwrap_err().to_string();
//! assert!(e.contains("unknown etcd URL option \"reqest_timeout\"; known: request_timeout"));
//! ```

use crate::{Error, Result};
use secrecy::SecretString;
use std::time::Duration;

/// The longest timeout option any adapter accepts: one hour. Anything
/// longer is a mistake (a unit typo), not a deadline anyone waits out, and is
/// refused rather than silently shortened.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `k=v` options of a URL's query, taken out one by one; whatever is
/// left at [`QueryOptions::finish`] is an unknown option.
#[derive(Clone)]
pub struct QueryOptions {
    backend: &'static str,
    pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for QueryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("QueryOptions")
            .field("backend", &self.backend)
            .field("keys", &keys)
            .finish()
    }
}

impl QueryOptions {
    /// The options of `query` (`k=v&k=v`, percent-decoded) for errors
    /// about `backend`.
    pub fn parse(backend: &'static str, query: &str) -> Self {
        let pairs = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        QueryOptions { backend, pairs }
    }

    /// Takes `key` out: its last value when the URL gives it more than once.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let mut last = None;
        self.pairs.retain(|(k, v)| {
            if k == key {
                last = Some(v.clone());
                false
            } else {
                true
            }
        });
        last
    }

    /// Takes `key` out; an empty value is an error.
    pub fn non_empty(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            Some(v) if v.is_empty() => Err(Error::InvalidConfig(format!(
                "{} URL option {key} is empty",
                self.backend
            ))),
            v => Ok(v),
        }
    }

    /// Takes `key` out as a timeout (see [`parse_duration`]).
    pub fn duration(&mut self, key: &str) -> Result<Option<Duration>> {
        self.take(key).map(|v| parse_duration(key, &v)).transpose()
    }

    /// Takes `key` out as a boolean (see [`parse_bool`]).
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        self.take(key).map(|v| parse_bool(key, &v)).transpose()
    }

    /// Takes `key` out as a secret: its value is never echoed.
    pub fn secret(&mut self, key: &str) -> Option<SecretString> {
        self.take(key).map(SecretString::from)
    }

    /// Takes every option whose key is in `keys` out, in URL order and
    /// repeats included (options passed through to a driver, which may
    /// join repeated values, as PostgreSQL's `options=`).
    pub fn take_all(&mut self, keys: &[&str]) -> Vec<(String, String)> {
        let (taken, rest) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(k, _)| keys.contains(&k.as_str()));
        self.pairs = rest;
        taken
    }

    /// `Ok` when every option was taken; otherwise an error naming the first
    /// unknown key (never its value) and listing `known`.
    pub fn finish(self, known: &[&str]) -> Result<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(Error::InvalidConfig(format!(
                "unknown {} URL option {k:?}; known: {}",
                self.backend,
                known.join(", ")
            ))),
        }
    }
}

/// Parses `true/false`, `1/0`, `yes/no`, `on/off` (any case).
pub fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidConfig(format!(
            "{key} must be true or false, got {v:?}"
        ))),
    }
}

/// Parses a timeout such as `5s`, `250ms`, `1m30s`, checked by
/// [`check_timeout`].
pub fn parse_duration(key: &str, v: &str) -> Result<Duration> {
    let d = humantime::parse_duration(v).map_err(|e| {
        Error::InvalidConfig(format!(
            "{key}={v:?} is not a duration like 5s or 250ms: {e}"
        ))
    })?;
    check_timeout(key, d)?;
    Ok(d)
}

/// `InvalidConfig` naming `key` unless `d` is in `(0, MAX_TIMEOUT]`.
pub fn check_timeout(key: &str, d: Duration) -> Result<()> {
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(Error::InvalidConfig(format!(
            "{key} must be greater than zero and at most 1h, got {d:?}"
        )));
    }
    Ok(())
}

/// Whether a query option's value is a secret: `password`, `token` and
/// anything naming a pass, token, secret or auth — but not a `..._file`
/// option, which names a file.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_file")
        && ["pass", "token", "secret", "auth"]
            .iter()
            .any(|s| key.contains(s))
}

/// `url` fit for a message or a log: the password and the values of secret
/// query options ([`is_secret_key`]) replaced by `***`; the rest (scheme,
/// user, hosts, path, other options) stays readable. URLs the `url` crate
/// cannot parse (several hosts, as etcd and ZooKeeper allow) are redacted by
/// their text.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => redact_parsed(u),
        Err(_) => redact_text(url),
    }
}

fn redact_parsed(mut u: url::Url) -> String {
    if u.password().is_some() {
        // Cannot fail: a URL that has a password can have another one.
        let _ = u.set_password(Some("***"));
    }
    if let Some(q) = u.query() {
        let q = redact_query(q);
        u.set_query(Some(&q));
    }
    u.to_string()
}

fn redact_text(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return split_query(url);
    };
    // The userinfo ends at the last '@': a password may hold '?', '/' or
    // '#' unencoded, which is why the url crate refused it. (An '@' in a
    // query value makes this hide more than needed, never less.)
    match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let user = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{user}@{}", split_query(after))
        }
        None => format!("{scheme}://{}", split_query(rest)),
    }
}

/// `text` with the secret options of its query (after the first `?`) redacted.
fn split_query(text: &str) -> String {
    match text.split_once('?') {
        Some((before, q)) => format!("{before}?{}", redact_query(q)),
        None => text.to_string(),
    }
}

/// `a=1&password=x` → `a=1&password=***`, keeping the text of the others.
/// Keys are judged decoded (`p%61ssword` is `password`), as the parsers
/// read them.
fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_key(&decoded_key(k)) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn decoded_key(k: &str) -> String {
    url::form_urlencoded::parse(k.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn options_are_taken_once_and_the_rest_is_unknown() {
        let mut q = QueryOptions::parse("consul", "a=1s&b=on&token=s3cret&a=2s&x=1&y=2");
        assert_eq!(q.duration("a").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(q.bool("b").unwrap(), Some(true));
        assert_eq!(q.secret("token").unwrap().expose_secret(), "s3cret");
        assert_eq!(q.take("a"), None);
        let passed = q.take_all(&["y"]);
        assert_eq!(passed, vec![("y".to_string(), "2".to_string())]);
        let e = q.finish(&["a", "b", "token", "y"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid configuration: unknown consul URL option \"x\"; known: a, b, token, y"
        );
    }

    #[test]
    fn bad_values_name_the_option() {
        let mut q = QueryOptions::parse("etcd", "t=5parsecs&big=2h&zero=0s&b=maybe&e=");
        let e = q.duration("t").unwrap_err().to_string();
        assert!(e.contains("t=\"5parsecs\" is not a duration"), "{e}");
        let e = q.duration("big").unwrap_err().to_string();
        assert!(
            e.contains("big must be greater than zero and at most 1h"),
            "{e}"
        );
        assert!(q.duration("zero").is_err());
        assert!(q
            .bool("b")
            .unwrap_err()
            .to_string()
            .contains("b must be true or false"));
        assert!(q
            .non_empty("e")
            .unwrap_err()
            .to_string()
            .contains("option e is empty"));
    }

    #[test]
    fn redaction_hides_passwords_and_secret_options() {
        let url = redact_url;
        assert_eq!(
            url("postgres://dlock:s3cret@db:5432/locks?table=t&password=p4ss"),
            "postgres://dlock:***@db:5432/locks?table=t&password=***"
        );
        assert_eq!(
            url("consul://127.0.0.1:8500/dlock?token=t0k&token_file=/etc/t&dc=a"),
            "consul://127.0.0.1:8500/dlock?token=***&token_file=/etc/t&dc=a"
        );
        // Several hosts: not a URL the url crate parses; still redacted.
        assert_eq!(
            url("etcd://root:s3cret@h1:2379,h2:2379/p?request_timeout=5s"),
            "etcd://root:***@h1:2379,h2:2379/p?request_timeout=5s"
        );
        let shown = url("zk://u:p@ss:w0rd@h1:2181,h2:2181/ch");
        assert!(
            !shown.contains("w0rd") && shown.contains("h2:2181/ch"),
            "{shown}"
        );
        // Nothing secret: unchanged.
        assert_eq!(
            url("sqlite:///var/lib/dlock.db"),
            "sqlite:///var/lib/dlock.db"
        );
        assert_eq!(url("etcd://h1:2379,h2:2379"), "etcd://h1:2379,h2:2379");
        assert_eq!(url("not a url"), "not a url");
        // Keys count decoded, as the parsers read them.
        assert_eq!(
            url("postgres://u@h/db?p%61ssword=hunter2&t%6Fken=x"),
            "postgres://u@h/db?p%61ssword=***&t%6Fken=***"
        );
        // An unencoded '?' or '/' in the password: still hidden.
        for u in ["postgres://u:pa?ss@h/db", "etcd://root:pa/ss@h:2379/p"] {
            let shown = url(u);
            assert!(
                !shown.contains("pa?ss") && !shown.contains("pa/ss"),
                "{shown}"
            );
            assert!(
                shown.contains("u:***@") || shown.contains("root:***@"),
                "{shown}"
            );
        }
    }

    #[test]
    fn repeated_driver_options_pass_through_and_take_keeps_the_last() {
        let mut q = QueryOptions::parse("postgres", "options=-c%20a&t=1s&options=-c%20b&t=2s");
        assert_eq!(q.duration("t").unwrap(), Some(Duration::from_secs(2)));
        let passed = q.take_all(&["options"]);
        assert_eq!(passed.len(), 2, "{passed:?}");
        q.finish(&[]).unwrap();
    }
}
