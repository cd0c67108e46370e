//! The backend-neutral contract of dlock.
//!
//! A [`LockBackend`] takes, extends and releases leases on one coordinator;
//! [`Locker`] and [`LockGuard`] build the user-facing API on it: try or wait,
//! keep-alive, a loss signal, fencing tokens, release on drop.
//!
//! Most users depend on the `dlock` crate, which re-exports all of this and
//! picks adapters by cargo feature and URL.

mod backend;
pub mod backoff;
pub mod clock;
mod connect_options;
mod election;
mod error;
mod guard;
mod lease;
mod locker;
mod name;
pub mod ready_pool;
mod spec;
pub mod url_options;
mod validity;
mod waiting_line;

pub use backend::{jittered, Capabilities, LockBackend};
pub use clock::BootInstant;
pub use connect_options::{ConnectOptions, TlsRoots};
pub use election::{Election, Leader, Leadership, Observer, DEFAULT_TERM_LEASE};
pub use error::{with_deadline, BoxError, Error, Result};
pub use guard::{LockGuard, LostSignal};
pub use lease::{local_valid_until, new_acquisition_id, FencingToken, Lease, LockInfo};
pub use locker::{Acquire, LockContext, LockOptions, Locker};
pub use name::{LockName, MAX_NAME_BYTES};
pub use spec::{default_owner, validate_owner, LockSpec, MAX_OWNER_BYTES};
pub use validity::ValidityBound;

/// Re-exported so adapters implement [`LockBackend`] with the same macro.
pub use async_trait::async_trait;
/// Secrets (passwords, tokens): `Debug` prints `[REDACTED]`.
pub use secrecy::{ExposeSecret, SecretString};
