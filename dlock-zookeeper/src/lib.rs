//! dlock on Apache ZooKeeper.
//!
//! A lock is a queue of ephemeral sequential nodes under
//! `<root>/<encoded name>/`; the lowest node holds it. Acquiring is one
//! create pipelined with one multi-read (one round trip); the fencing token is
//! the holder node's `czxid`, which grows with every transaction of the
//! ensemble, across restarts. Waiters watch only their predecessor.
//!
//! ZooKeeper has no per-node TTL, so the lease bounds come from two places:
//! a holder that dies or is cut off is bounded by its session timeout
//! (expired by the server), and a live holder past `lock_at_most_for`
//! deletes its own node (a local monotonic timer; extension refuses after
//! it). `lock_at_least_for` after a release is kept by a marker node written
//! in the same multi as the deletion and timed by the leader's clock.
//! See the crate README for exactly what is guaranteed.
//!
//! ```no_run
//! # async fn f() -> dlock_core::Result<()> {
//! use std::time::Duration;
//! let backend = dlock_zookeeper::ZookeeperBackend::connect(
//!     "zk://127.0.0.1:2181,127.0.0.1:2182/myapp?session_timeout=10s",
//! )
//! .await?;
//! let locker = dlock_core::Locker::new(backend);
//! if let Some(guard) = locker.try_lock("emailLock", Duration::from_secs(600)).await? {
//!     println!("token {}", guard.token());
//!     guard.release().await?;
//! }
//! # Ok(()) }
//! ```

mod acquire;
mod admin;
mod backend;
mod config;
mod error;
mod loss;
mod nodes;
mod release;
mod session;
mod wait;

pub use backend::{connect, connect_with, ZookeeperBackend};
pub use config::{
    ZkConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ROOT, DEFAULT_SESSION_TIMEOUT, KNOWN_OPTIONS,
    MAX_TIMEOUT, MIN_SESSION_TIMEOUT,
};
