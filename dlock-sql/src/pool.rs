//! The connection pool every SQL adapter builds for itself.

use crate::config::POOL_ACQUIRE_TIMEOUT;
use sqlx::pool::PoolOptions;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use sqlx::{Connection, Database};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::time::Duration;

/// A pooled server connection used more recently than this is handed out
/// without a ping first. sqlx pings every connection it hands out by
/// default: a whole round trip before each statement, so "one round trip
/// per acquire" was two (and a release two more). A connection in use a
/// moment ago is alive as far as a ping could tell; one idle for longer
/// (which a server restart, an idle timeout or a NAT may have closed) is
/// still pinged and replaced when dead. 500 ms is HikariCP's
/// `aliveBypassWindowMs`, the pool ShedLock users run on. (sqlx also pings
/// a connection as it returns to the pool, in a task of its own, off the
/// caller's path; that one cannot be turned off.)
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const PING_WHEN_IDLE_FOR: Duration = Duration::from_millis(500);

/// Pool options for a server database (PostgreSQL, MySQL/MariaDB): `size`
/// connections, no acquire timer of sqlx's own (see
/// [`POOL_ACQUIRE_TIMEOUT`]), a ping only for a connection idle for
/// [`PING_WHEN_IDLE_FOR`] or more.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn server_pool<DB: Database>(size: u32) -> PoolOptions<DB> {
    PoolOptions::<DB>::new()
        .max_connections(size)
        .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Pool options for SQLite: `size` connections, no acquire timer, and no
/// ping (a file connection does not go stale, and sqlx's ping is a trip
/// through the connection's worker thread).
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_pool(size: u32) -> PoolOptions<sqlx::Sqlite> {
    PoolOptions::new()
        .max_connections(size)
        .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
}
