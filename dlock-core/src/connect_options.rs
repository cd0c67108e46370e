//! What a connection takes besides its URL: credentials that should not be
//! written into a URL, and the root certificates TLS trusts — the same
//! settings, with the same meaning, on every backend.

use crate::{Error, Result};
use secrecy::SecretString;

/// Which root certificates a TLS connection to the coordinator trusts,
/// besides a CA file the URL names (`ca_file=`, `sslrootcert=`, `ssl-ca=`),
/// which is always added. The same default on every backend: `Webpki`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsRoots {
    /// Mozilla's root certificates, built into the program (webpki-roots):
    /// the same on every machine, whatever its OS store holds.
    #[default]
    Webpki,
    /// The operating system's trust store (read at connect), for a
    /// company CA installed there. On the SQL backends the built-in roots
    /// stay trusted too (sqlx always includes them).
    System,
    /// Only the CA file the URL names (which is then required): a private
    /// cluster pinned to its own CA. etcd and Consul; the SQL backends
    /// cannot leave sqlx's built-in roots out and refuse it as
    /// `Unsupported`.
    CaFileOnly,
}

impl TlsRoots {
    /// The URL option that chooses it: `tls_roots=webpki|system`.
    pub const URL_OPTION: &'static str = "tls_roots";

    /// `InvalidConfig` when this choice needs a CA file and none is given
    /// (`ca_file_only` trusts nothing else).
    pub fn check_ca_file(self, ca_file_given: bool) -> Result<()> {
        if self == TlsRoots::CaFileOnly && !ca_file_given {
            return Err(Error::InvalidConfig(
                "tls_roots=ca_file_only needs ca_file= (the CA to trust)".into(),
            ));
        }
        Ok(())
    }

    /// The option's value for this choice.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsRoots::Webpki => "webpki",
            TlsRoots::System => "system",
            TlsRoots::CaFileOnly => "ca_file_only",
        }
    }
}

impl std::str::FromStr for TlsRoots {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "webpki" => Ok(TlsRoots::Webpki),
            "system" => Ok(TlsRoots::System),
            "ca_file_only" => Ok(TlsRoots::CaFileOnly),
            _ => Err(Error::InvalidConfig(format!(
                "tls_roots must be webpki (the built-in Mozilla roots, the default), system \
                 (the OS trust store) or ca_file_only (only the CA file the URL names), got {s:?}"
            ))),
        }
    }
}

/// Settings for [`connect_with`](https://docs.rs/dlock-rs/latest/dlock/fn.connect_with.html)
/// that take precedence over the URL's, so that secrets can stay out of
/// URLs (and out of command lines, environment dumps and logs). `Debug`
/// never shows a secret.
///
/// ```
/// use dlock_core::{ConnectOptions, TlsRoots};
/// let opts = ConnectOptions::new()
///     .user("app")
///     .password(std::env::var("DB_PASSWORD").unwrap_or_default())
///     .tls_roots(TlsRoots::System);
/// assert!(!format!("{opts:?}").contains("DB_PASSWORD"));
/// ```
///
/// A setting a backend has no use for is an error naming it, never
/// ignored: a password for Consul (which has tokens), a token for a SQL
/// database.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The user name (instead of the URL's).
    pub user: Option<String>,
    /// The password (instead of the URL's).
    pub password: Option<SecretString>,
    /// An access token (Consul's ACL token; instead of `token=`).
    pub token: Option<SecretString>,
    /// The root certificates TLS trusts (instead of `tls_roots=`).
    pub tls_roots: Option<TlsRoots>,
}

impl ConnectOptions {
    /// No settings: the URL says everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the user name.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(SecretString::from(password.into()));
        self
    }

    /// Sets the access token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(SecretString::from(token.into()));
        self
    }

    /// Sets the root certificates TLS trusts.
    pub fn tls_roots(mut self, roots: TlsRoots) -> Self {
        self.tls_roots = Some(roots);
        self
    }

    /// Puts the user and password of these options over `user` and
    /// `password` (what the URL said).
    pub fn apply_credentials(
        &self,
        user: &mut Option<String>,
        password: &mut Option<SecretString>,
    ) {
        if let Some(u) = &self.user {
            *user = Some(u.clone());
        }
        if let Some(p) = &self.password {
            *password = Some(p.clone());
        }
    }

    /// `InvalidConfig` for each setting `backend` cannot use, named in
    /// `unused` among `"user"`, `"password"`, `"token"`, `"tls_roots"`.
    pub fn refuse(&self, backend: &'static str, unused: &[&str], why: &str) -> Result<()> {
        let given = [
            ("user", self.user.is_some()),
            ("password", self.password.is_some()),
            ("token", self.token.is_some()),
            ("tls_roots", self.tls_roots.is_some()),
        ];
        match given
            .iter()
            .find(|(name, set)| *set && unused.contains(name))
        {
            Some((name, _)) => Err(Error::InvalidConfig(format!(
                "the {backend} backend has no use for ConnectOptions::{name}: {why}"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roots_parse_and_debug_hides_secrets() {
        assert_eq!("System".parse::<TlsRoots>().unwrap(), TlsRoots::System);
        assert_eq!("webpki".parse::<TlsRoots>().unwrap(), TlsRoots::default());
        let e = "os".parse::<TlsRoots>().unwrap_err().to_string();
        assert!(e.contains("webpki") && e.contains("system"), "{e}");
        let o = ConnectOptions::new().password("hunter2").token("t0k3n");
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("t0k3n"),
            "{shown}"
        );
        let e = o
            .refuse("postgres", &["token"], "SQL databases take a password")
            .unwrap_err();
        assert!(e.to_string().contains("ConnectOptions::token"), "{e}");
        assert!(o.refuse("etcd", &["tls_roots"], "").is_ok());
    }
}
