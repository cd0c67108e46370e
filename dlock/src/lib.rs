#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// What applications use. Everything an adapter author needs besides is in
// [`backend`]; nothing is glob re-exported, so this list is the public
// surface.
pub use dlock_core::{
    Acquire, BootInstant, ConnectOptions, Election, Error, FencingToken, Leader, Leadership,
    LockContext, LockGuard, LockInfo, LockName, LockOptions, Locker, LostSignal, Observer, Result,
    TlsRoots, DEFAULT_TERM_LEASE, MAX_NAME_BYTES,
};

/// For writing a backend (an adapter to another coordinator): the trait,
/// what it takes and returns, and the helpers dlock's own adapters share.
/// Applications do not need this module; `dlock-testkit` checks an adapter
/// against the contract.
pub mod backend {
    pub use dlock_core::{
        async_trait, backoff, clock, default_owner, jittered, local_valid_until,
        new_acquisition_id, url_options, validate_owner, with_deadline, BoxError, Capabilities,
        Lease, LockBackend, LockSpec, ValidityBound, MAX_OWNER_BYTES,
    };
}

mod connect;
pub use connect::{connect, connect_with, supported_schemes, BackendScheme, SCHEMES};

pub mod test;

mod try_lock;
#[doc(hidden)]
pub use try_lock::__private;
pub use try_lock::{current_lock, default_locker, set_default_locker};

/// Runs an `async fn` only when a distributed lock could be taken; see
/// [`dlock_macros::try_lock`] for the arguments. The return type `T` becomes
/// `dlock::Result<Option<T>>` (`Ok(None)`: another owner held the lock).
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use dlock_macros::try_lock;

#[cfg(feature = "schedule")]
#[cfg_attr(docsrs, doc(cfg(feature = "schedule")))]
pub mod schedule;

/// The SQL adapters (SQLite, PostgreSQL, MySQL/MariaDB).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
pub use dlock_sql as sql;

/// The in-process backend for tests (`memory://`).
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use dlock_memory as memory;

/// The etcd adapter.
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use dlock_etcd as etcd;

/// The ZooKeeper adapter.
#[cfg(feature = "zookeeper")]
#[cfg_attr(docsrs, doc(cfg(feature = "zookeeper")))]
pub use dlock_zookeeper as zookeeper;

/// The Consul adapter.
#[cfg(feature = "consul")]
#[cfg_attr(docsrs, doc(cfg(feature = "consul")))]
pub use dlock_consul as consul;

/// The Redis / Valkey adapter.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use dlock_redis as redis;
