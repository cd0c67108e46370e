//! dlock adapters for SQL databases, through sqlx.
//!
//! One table holds every lock (DDL in `migrations/<dialect>/`): name, owner,
//! acquisition id, fencing token, locked_at, lock_until. Acquire, extend and
//! release are one statement each, decided by the database's clock.
//!
//! Features: `sqlite` (default), `postgres`, `mysql`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
// A SQLite-only build uses only `Refusal`.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
mod errors;
pub use config::{SqlOptions, MAX_TIMEOUT};
mod pool;

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteBackend;

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod tls;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresBackend;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql::MysqlBackend;

use dlock_core::{Error, LockBackend, Result};
use std::sync::Arc;

/// Connects the backend named by `url`'s scheme (`sqlite:`, `postgres:`,
/// `postgresql:`, `mysql:`, `mariadb:`), as far as this build's features
/// include it.
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    connect_with(url, &dlock_core::ConnectOptions::new()).await
}

/// Like [`connect`], with `options` taking precedence over the URL. SQLite
/// takes none of them (it is a file: no user, password or TLS).
pub async fn connect_with(
    url: &str,
    options: &dlock_core::ConnectOptions,
) -> Result<Arc<dyn LockBackend>> {
    let scheme = url
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match scheme.as_str() {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            options.refuse(
                "sqlite",
                &["user", "password", "token", "tls_roots"],
                "SQLite is a file, with no login and no TLS",
            )?;
            Ok(Arc::new(SqliteBackend::connect(url).await?))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            Ok(Arc::new(PostgresBackend::connect_with(url, options).await?))
        }
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => Ok(Arc::new(MysqlBackend::connect_with(url, options).await?)),
        other => Err(Error::InvalidConfig(format!(
            "dlock-sql cannot handle URL scheme {other:?} in this build (features: {})",
            enabled_features().join(", ")
        ))),
    }
}

fn enabled_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "sqlite") {
        v.push("sqlite");
    }
    if cfg!(feature = "postgres") {
        v.push("postgres");
    }
    if cfg!(feature = "mysql") {
        v.push("mysql");
    }
    v
}
