#![doc = include_str!("../../README.md")]

pub use dlock_core::*;

mod connect;
pub use connect::{connect, supported_schemes, BackendScheme, SCHEMES};

/// The SQL adapters (SQLite, PostgreSQL, MySQL/MariaDB).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use dlock_sql as sql;

/// The etcd adapter.
#[cfg(feature = "etcd")]
pub use dlock_etcd as etcd;

/// The ZooKeeper adapter.
#[cfg(feature = "zookeeper")]
pub use dlock_zookeeper as zookeeper;

/// The Consul adapter.
#[cfg(feature = "consul")]
pub use dlock_consul as consul;
