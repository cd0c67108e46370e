//! dlock adapter for etcd v3.
//!
//! - **Acquire**: one transaction "key absent → put key on the lease, else
//!   read it", on a lease granted by etcd (TTL = `lock_at_most_for`, whole
//!   seconds, timed by the leader) that carries no key: usually one a
//!   release or a busy acquire left, or one granted ahead, so one round
//!   trip; else a LeaseGrant first (lease_pool.rs).
//!   The key's value is `<acquisition id>:<owner>`; the fencing token is the
//!   key's create revision, which grows across owners, expiries and restarts.
//! - **Extend**: a keep-alive of the lease (same length) checked against the
//!   key, or a fresh lease attached by a transaction guarded on the create
//!   revision (another length). When that transaction's outcome is unknown
//!   (no answer in time, a broken connection) the key may sit on either
//!   lease: the extend answers `LockLost` and revokes neither, so nobody
//!   else gets the lock before the lease the key sits on expires.
//! - **Release**: a transaction that deletes the key only while it is still
//!   this acquisition's; with `lock_at_least_for` still running, the key is
//!   moved to a fresh lease that ends no earlier than `acquired + at_least`,
//!   so the hold survives the process. A move whose outcome is unknown
//!   revokes nothing (an error says so): the lock stays taken until its
//!   lease expires.
//! - **Waiting** watches the key from the revision at which it was seen held
//!   (no polling); a guard's loss signal watches its key for deletion.
//! - **Keys**: `<prefix>/<LockName::path_segment>`; a name's `/` is encoded,
//!   so lock `a` and lock `a/b` never meet, and nothing outside the prefix
//!   is touched (the only range read is `list`, over `<prefix>/`).
//!
//! URL: `etcd://[user:password@]host:port[,host:port...][/prefix][?options]`,
//! `etcds://` for TLS. Options: `connect_timeout`, `request_timeout`,
//! `ca_file`, `cert_file`, `key_file`, `tls_domain`. Timeouts above
//! [`MAX_TIMEOUT`] (1h) are `InvalidConfig`.
//!
//! ```no_run
//! # async fn f() -> dlock_core::Result<()> {
//! let backend = dlock_etcd::EtcdBackend::connect("etcd://127.0.0.1:2379/myapp").await?;
//! let locker = dlock_core::Locker::new(backend);
//! # Ok(()) }
//! ```

mod backend;
mod client;
mod config;
mod errors;
mod handle;
mod lease_pool;
mod tls;
mod waiting;

pub use backend::EtcdBackend;
pub use config::{EtcdConfig, DEFAULT_PORT, DEFAULT_PREFIX, MAX_TIMEOUT};

use dlock_core::{ConnectOptions, LockBackend, Result};
use std::sync::Arc;

/// Backend kind, as reported by [`LockBackend::kind`].
pub const KIND: &str = "etcd";

/// Connects an etcd backend for `url` (`etcd://` or `etcds://`).
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    connect_with(url, &ConnectOptions::new()).await
}

/// Like [`connect`], with `options` taking precedence over the URL.
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Arc<dyn LockBackend>> {
    Ok(Arc::new(EtcdBackend::connect_with(url, options).await?))
}
