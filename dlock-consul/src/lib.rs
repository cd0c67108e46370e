//! dlock adapter for [Consul](https://developer.hashicorp.com/consul): sessions,
//! one-transaction KV acquire, blocking-query waiters.
//!
//! ```no_run
//! # async fn f() -> dlock_core::Result<()> {
//! let backend = dlock_consul::ConsulBackend::connect("consul://127.0.0.1:8500/locks?token=...").await?;
//! let locker = dlock_core::Locker::new(backend);
//! if let Some(guard) = locker.try_lock("nightly-report", std::time::Duration::from_secs(60)).await? {
//!     // guard.token() is the fencing token: the key's raft ModifyIndex.
//!     guard.release().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # How a lock is kept
//!
//! Lock `name` is the KV key `<prefix>/<name.path_segment()>`; its value is
//! JSON `{"name", "owner", "id"}`. Every acquisition creates its own session
//! (`TTL = lock_at_most_for`, `LockDelay = 0s`, `Behavior = delete`, no
//! health checks) and locks the key with it in one `/v1/txn`.
//!
//! * **Behavior `delete`**: when a session ends (TTL passed, destroyed), Consul
//!   deletes the keys it holds. The KV tree then holds exactly the locks that
//!   are taken, and nothing is left behind per name ever used. The fencing
//!   token does not depend on the key surviving: it is the key's
//!   `ModifyIndex` after the acquire, i.e. the raft index of the acquiring
//!   transaction. Raft indexes only grow, across every key, deletion,
//!   release, session expiry and server restart (they are persisted), so a
//!   new acquisition always gets a larger token than every earlier one.
//! * **No health checks**: by default a session is tied to the agent's
//!   `serfHealth` check and could be invalidated early, before the holder's
//!   local validity ends. With none, only the TTL (the coordinator's clock)
//!   ends a session.
//! * **Lock-delay 0**: a released or expired lock is free at once.
//!
//! # Lease lengths
//!
//! Consul accepts session TTLs from 10 s to 24 h, so `lock_at_most_for` must
//! be in that range and a whole number of seconds; anything else is
//! [`dlock_core::Error::Unsupported`], never rounded. Consul never ends a
//! session before its TTL but may take up to twice the TTL (its servers arm
//! their timers with `2 x TTL`, and re-arm them after a leader election): an
//! abandoned lock becomes free between `at_most` and `2 x at_most` after the
//! last grant. The declared [`EXPIRY_SLACK`] (21 s) covers leases up to
//! 21 s; for a longer lease L plan for a slack of L (the core's
//! `Capabilities` has one fixed slack, not one that grows with the lease).
//!
//! `lock_at_least_for`: a release with time left moves the key, in one
//! transaction, to a new session nobody renews with TTL `max(10 s, rest)`,
//! so the lock stays taken at least until `acquired + at_least` by Consul's
//! clock, also when the process exits at once. While the releasing process
//! keeps running, a timer ends that session right at `acquired + at_least`;
//! if it exits, Consul ends it within `2 x max(10 s, rest)` of the release.
//!
//! # Round trips
//!
//! acquire 2 (session create, txn lock), release 1 (txn) plus a session
//! destroy in the background, extend 1 round-trip time (renew and a
//! consistent read in parallel), 2 for a release with `at_least` time left.
//!
//! # URL
//!
//! `consul://host:port/prefix?token=…&dc=…&request_timeout=5s&connect_timeout=2s`,
//! or `consul+https://…` with optional `ca_file=/path/ca.pem`; see
//! [`ConsulConfig`]. The ACL token travels only as the `X-Consul-Token`
//! header; it never appears in errors, logs or `Debug` output.

mod api;
mod backend;
mod config;
mod http;
mod key_watch;
mod record;
mod session_pool;
mod waiting;

pub use backend::{ConsulBackend, MAX_TTL, MIN_TTL};
pub use config::{
    ConsulConfig, DEFAULT_HTTPS_PORT, DEFAULT_HTTP_PORT, DEFAULT_PREFIX, KNOWN_OPTIONS, MAX_TIMEOUT,
};

use dlock_core::{ConnectOptions, LockBackend, Result};
use std::sync::Arc;
use std::time::Duration;

/// Backend kind, as used in errors and metrics.
pub const KIND: &str = "consul";

/// The expiry slack this backend declares: 21 s.
///
/// Two cases set it. A `lock_at_least_for` remainder is held by a session of
/// at least Consul's minimum TTL (10 s) that nobody renews; if the releasing
/// process exits, Consul ends it within 2 x 10 s. And an abandoned lease of
/// length L ends within 2 x L, i.e. L late. 21 s = 2 x 10 s + 1 s for the
/// invalidation to commit: exact for leases up to 21 s (the conformance
/// suite uses 10 s); a longer abandoned lease may be up to its own length
/// late. See the crate docs.
pub const EXPIRY_SLACK: Duration = Duration::from_secs(21);

/// Connects a Consul backend from a `consul://` or `consul+https://` URL.
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    connect_with(url, &ConnectOptions::new()).await
}

/// Like [`connect`], with `options` taking precedence over the URL.
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Arc<dyn LockBackend>> {
    Ok(Arc::new(ConsulBackend::connect_with(url, options).await?))
}
