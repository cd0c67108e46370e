//! dlock adapter for Redis 7+ and Valkey: one server-side script per
//! acquire, fencing tokens that survive release and expiry, expiry by the
//! server's clock, and waiters woken by pub/sub.
//!
//! ```no_run
//! # async fn f() -> dlock_core::Result<()> {
//! let locker = dlock_core::Locker::from_arc(
//!     dlock_redis::connect("redis://app:secret@127.0.0.1:6379/0?prefix=jobs").await?,
//! );
//! if let Some(guard) = locker.try_lock("nightly-report", std::time::Duration::from_secs(60)).await? {
//!     // Pass guard.token() to whatever the job writes: `... WHERE fence < $token`.
//!     guard.release().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # How the contract maps onto Redis
//!
//! - **One hash per name**, `<prefix>:lock:<name>`, that never expires (a
//!   row, as on the SQL backends): the token counter, the latest
//!   acquisition's id and owner, and its times (`at`, `until`, `hold` =
//!   `at` + `lock_at_least_for`) in µs by the server's `TIME`.
//! - **Acquire** is one script (`EVALSHA`, one round trip): if `until` has
//!   passed by the server's clock, it bumps the token and writes the
//!   acquisition with one `HSET`; if not, it answers how long the lock
//!   stays taken and writes nothing.
//! - **Expiry** is decided by the server's clock in every script, never
//!   the client's: a dead holder's lock is free the moment `until` passes.
//! - **Fencing token**: the counter's new value. It lives in the hash that
//!   is never deleted, so it keeps growing across owners, releases,
//!   expiries — and restarts, as long as the server persists it (below).
//! - **Extend / release** are scripts matched on the acquisition id. An
//!   extend never moves `until` earlier, so a delayed one cannot undo a
//!   later one. A release within `lock_at_least_for` clears the id and
//!   keeps `until` at `hold`.
//! - **One write per operation.** Redis writes a script's changes to its
//!   append-only file, wrapping two or more in MULTI/EXEC. Redis 7 (fixed
//!   in 8, redis#14541) and Valkey (valkey#3983) silently drop such a
//!   transaction on loading the file when the `default` user is disabled,
//!   which is a common hardening step, and locks would then vanish in a
//!   restart. So every script writes with a single `HSET`.
//! - **Waiting**: every release publishes the name on `<prefix>:released`
//!   (one that leaves the lock taken until `at_least` ends too, so waiters
//!   learn the new end); one subscription per backend wakes its waiters.
//!   A lock that frees itself when its time runs out publishes nothing: a
//!   waiter reads the lock's end first, and wakes when it comes.
//!   Keyspace notifications are not needed.
//! - **Loss**: there is no push signal of a lost lease; a guard learns of
//!   it at its next extension, and its local validity (counted from the
//!   request's send instant, below the server's expiry) ends `is_held()`
//!   on time regardless.
//!
//! # What a single Redis guarantees, and what it does not
//!
//! One Redis server is one process with one clock, like one PostgreSQL
//! server: while it runs and keeps its data, every promise of the dlock
//! contract holds. It is **not** a consensus system:
//!
//! - **Persistence.** Without an append-only file a restart forgets every
//!   lock (two holders) and every counter (tokens start again at 1). dlock
//!   refuses a server with `appendonly no` unless the URL says
//!   `require_aof=false`. With `appendfsync everysec` (Redis's default
//!   with AOF) a crash of the *machine* can still lose the last second of
//!   writes, so a token may repeat after a power loss; `appendfsync always`
//!   closes that at the cost of an fsync per acquire. A killed or
//!   restarted *process* loses nothing either way.
//! - **Eviction.** The lock hashes never expire, so `noeviction` and the
//!   `volatile-*` policies leave them alone; an `allkeys-*` policy could
//!   evict a held lock and its counter, and dlock refuses such a server.
//! - **Replicas and failover.** Replication is asynchronous. If a primary
//!   fails and a replica (Sentinel, a managed service's failover) takes
//!   over, acquisitions the replica had not received are lost: the lock
//!   can be granted again while its holder runs, and a token can repeat.
//!   Fencing tokens then only protect a resource whose highest accepted
//!   token survived the failover. Point dlock at the primary; `WAIT` does
//!   not make asynchronous replication safe either.
//! - **Clock.** Expiry follows the server's wall clock (`TIME`): a server clock
//!   stepped forward ends leases early (the same limit as the SQL
//!   backends; see the README).
//! - **Redlock** (locking a majority of independent servers) is not
//!   implemented: it still depends on bounded clock drift and pauses and
//!   gives no fencing token that orders holders across servers. Where
//!   Redis alone is not enough, use etcd, ZooKeeper or Consul through the
//!   same API.
//! - **Redis Cluster** is not supported (the release channel and the
//!   names' keys are assumed to live on one server).
//!
//! # URL
//!
//! `redis://[user:password@]host:port/db?options` and `rediss://` (TLS,
//! rustls with the ring provider); see [`RedisConfig`] for the options.
//! Needs Redis 7.0+ (or Valkey 7.2+) and, with an ACL, the keys
//! `<prefix>:*`, the channel `<prefix>:released` and the commands EVALSHA,
//! EVAL, SCRIPT, HGET, HMGET, HSET, TIME, SCAN, PUBLISH, SUBSCRIBE, PING and INFO.

mod backend;
mod config;
mod errors;
mod release_feed;
mod scripts;
mod tls;

pub use backend::{RedisBackend, MAX_LEASE, MIN_SERVER_VERSION};
pub use config::{RedisConfig, DEFAULT_PORT, DEFAULT_PREFIX, KNOWN_OPTIONS, MAX_PREFIX_BYTES};

use dlock_core::{ConnectOptions, LockBackend, Result};
use std::sync::Arc;

/// Backend kind, as used in errors and metrics.
pub const KIND: &str = "redis";

/// Connects a Redis backend from a `redis://` or `rediss://` URL.
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    connect_with(url, &ConnectOptions::new()).await
}

/// Like [`connect`], with `options` taking precedence over the URL.
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Arc<dyn LockBackend>> {
    Ok(Arc::new(RedisBackend::connect_with(url, options).await?))
}
