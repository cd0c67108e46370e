//! `dlock::connect(url)`: pick the adapter by URL scheme at run time.

use crate::{ConnectOptions, Error, Locker, Result};
use dlock_core::url_options::redact_url as redact;

/// One URL scheme family and the cargo feature that enables it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendScheme {
    /// Backend kind.
    pub backend: &'static str,
    /// URL schemes that select it.
    pub schemes: &'static [&'static str],
    /// The `dlock` cargo feature that compiles it in.
    pub feature: &'static str,
    /// Whether this build has it.
    pub enabled: bool,
}

/// Every backend dlock knows, whether or not this build includes it.
pub const SCHEMES: &[BackendScheme] = &[
    BackendScheme {
        backend: "memory",
        schemes: &["memory"],
        feature: "memory",
        enabled: cfg!(feature = "memory"),
    },
    BackendScheme {
        backend: "sqlite",
        schemes: &["sqlite"],
        feature: "sqlite",
        enabled: cfg!(feature = "sqlite"),
    },
    BackendScheme {
        backend: "postgres",
        schemes: &["postgres", "postgresql"],
        feature: "postgres",
        enabled: cfg!(feature = "postgres"),
    },
    BackendScheme {
        backend: "mysql",
        schemes: &["mysql", "mariadb"],
        feature: "mysql",
        enabled: cfg!(feature = "mysql"),
    },
    BackendScheme {
        backend: "etcd",
        schemes: &["etcd", "etcds"],
        feature: "etcd",
        enabled: cfg!(feature = "etcd"),
    },
    BackendScheme {
        backend: "zookeeper",
        schemes: &["zk", "zookeeper"],
        feature: "zookeeper",
        enabled: cfg!(feature = "zookeeper"),
    },
    BackendScheme {
        backend: "consul",
        schemes: &["consul", "consul+https"],
        feature: "consul",
        enabled: cfg!(feature = "consul"),
    },
    BackendScheme {
        backend: "redis",
        schemes: &["redis", "rediss", "valkey", "valkeys"],
        feature: "redis",
        enabled: cfg!(feature = "redis"),
    },
];

/// The URL schemes this build accepts.
pub fn supported_schemes() -> Vec<&'static str> {
    SCHEMES
        .iter()
        .filter(|s| s.enabled)
        .flat_map(|s| s.schemes.iter().copied())
        .collect()
}

/// Builds a [`Locker`] for the coordinator named by `url`; the scheme picks
/// the adapter. Changing coordinator is a configuration change.
///
/// ```no_run
/// # async fn f() -> dlock::Result<()> {
/// let locker = dlock::connect("sqlite://locks.db").await?;
/// # Ok(()) }
/// ```
///
/// A scheme this build does not include is an error naming the cargo
/// feature to enable; an unknown scheme lists the supported ones.
pub async fn connect(url: &str) -> Result<Locker> {
    connect_with(url, &ConnectOptions::new()).await
}

/// Like [`connect`], with `options` taking precedence over the URL: a
/// password or token that should not be written into a URL, the root
/// certificates TLS trusts. A setting the chosen backend has no use for is
/// an error naming it.
///
/// ```no_run
/// # async fn f() -> dlock::Result<()> {
/// let password = std::env::var("LOCKS_DB_PASSWORD").unwrap_or_default();
/// let locker = dlock::connect_with(
///     "postgres://app@db.internal/locks?sslmode=verify-full",
///     &dlock::ConnectOptions::new().password(password),
/// )
/// .await?;
/// # Ok(()) }
/// ```
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Locker> {
    let scheme = match url.split_once(':') {
        Some((s, _)) if !s.is_empty() => s.to_ascii_lowercase(),
        _ => {
            return Err(Error::InvalidConfig(format!(
                "{:?} is not a lock URL: expected SCHEME://..., supported schemes: {}",
                redact(url),
                supported_schemes().join(", ")
            )))
        }
    };
    let Some(entry) = SCHEMES
        .iter()
        .find(|s| s.schemes.contains(&scheme.as_str()))
    else {
        return Err(Error::InvalidConfig(format!(
            "unknown URL scheme {scheme:?}; this build supports: {}",
            supported_schemes().join(", ")
        )));
    };
    if !entry.enabled {
        return Err(feature_off(entry, &scheme));
    }
    connect_enabled(entry.backend, url, options).await
}

/// The error for a known scheme whose backend this build leaves out.
fn feature_off(entry: &BackendScheme, scheme: &str) -> Error {
    Error::InvalidConfig(format!(
        "URL scheme {scheme:?} needs the {} backend, which this build does not include: \
         enable the `{}` feature of the dlock crate",
        entry.backend, entry.feature
    ))
}

#[allow(unused_variables, clippy::needless_return)]
async fn connect_enabled(backend: &str, url: &str, options: &ConnectOptions) -> Result<Locker> {
    #[cfg(feature = "memory")]
    if backend == "memory" {
        options.refuse(
            "memory",
            &["user", "password", "token", "tls_roots"],
            "the in-process store has no login and no TLS",
        )?;
        return dlock_memory::MemoryBackend::connect(url).map(Locker::new);
    }
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    if matches!(backend, "sqlite" | "postgres" | "mysql") {
        return dlock_sql::connect_with(url, options)
            .await
            .map(Locker::from_arc);
    }
    #[cfg(feature = "etcd")]
    if backend == "etcd" {
        return dlock_etcd::connect_with(url, options)
            .await
            .map(Locker::from_arc);
    }
    #[cfg(feature = "zookeeper")]
    if backend == "zookeeper" {
        return dlock_zookeeper::connect_with(url, options)
            .await
            .map(Locker::from_arc);
    }
    #[cfg(feature = "consul")]
    if backend == "consul" {
        return dlock_consul::connect_with(url, options)
            .await
            .map(Locker::from_arc);
    }
    #[cfg(feature = "redis")]
    if backend == "redis" {
        return dlock_redis::connect_with(url, options)
            .await
            .map(Locker::from_arc);
    }
    Err(Error::InvalidConfig(format!(
        "backend {backend} is not compiled in"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_and_unknown_schemes_are_clear_errors() {
        let e = connect("no-scheme-here").await.unwrap_err().to_string();
        assert!(e.contains("not a lock URL"), "{e}");
        let e = connect("mongodb://127.0.0.1")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown URL scheme") && e.contains("sqlite"),
            "{e}"
        );
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn redis_urls_reach_the_redis_backend() {
        for url in ["redis://127.0.0.1:1/0", "valkey://127.0.0.1:1"] {
            let e = connect(url).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Connect {
                        backend: "redis",
                        ..
                    }
                ),
                "{url}: {e}"
            );
        }
    }

    #[tokio::test]
    async fn disabled_feature_is_named() {
        // Whatever this build includes, the message for a left-out backend names its feature.
        for s in SCHEMES {
            let off = BackendScheme {
                enabled: false,
                ..*s
            };
            let e = feature_off(&off, s.schemes[0]).to_string();
            assert!(e.contains(&format!("`{}` feature", s.feature)), "{e}");
            assert!(e.contains(s.backend), "{e}");
        }
        // And connect() really answers with it for the ones left out of this build.
        for s in SCHEMES.iter().filter(|s| !s.enabled) {
            let url = format!("{}://127.0.0.1:1/x", s.schemes[0]);
            let e = connect(&url).await.unwrap_err().to_string();
            assert!(e.contains(&format!("`{}` feature", s.feature)), "{e}");
        }
    }

    #[test]
    fn every_scheme_is_listed_once() {
        let mut all: Vec<_> = SCHEMES.iter().flat_map(|s| s.schemes.iter()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn redact_hides_password() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
