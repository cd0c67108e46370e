//! Helpers for testing code that takes locks: assert that code runs under
//! its lock, and (feature `memory`) lockers on an in-process store, so
//! tests need no server.
//!
//! ```
//! # #[cfg(all(feature = "memory", feature = "macros"))]
//! # async fn f() -> dlock::Result<()> {
//! #[dlock::try_lock(name = "nightly-report", lock_for = "10m")]
//! async fn nightly_report() -> usize {
//!     dlock::assert_locked!("nightly-report");
//!     42
//! }
//!
//! // In the test: the process-wide locker on a private in-memory store.
//! dlock::set_default_locker(dlock::test::locker());
//! assert_eq!(nightly_report().await?, Some(42));
//! # Ok(()) }
//! ```

use crate::current_lock;

/// Panics unless the code around it runs under a held dlock lock: inside a
/// `#[dlock::try_lock]` function or a scheduled job, with the lease not
/// lost. `assert_locked!("name")` also checks the lock's name. Like
/// `assert!`, it is meant for tests and for invariants that must never
/// break; it does not talk to the coordinator.
///
/// What ShedLock's `LockAssert.assertLocked()` does for Java.
#[macro_export]
macro_rules! assert_locked {
    () => {
        $crate::test::__assert_locked(::core::option::Option::None)
    };
    ($name:expr $(,)?) => {
        $crate::test::__assert_locked(::core::option::Option::Some($name))
    };
}

#[doc(inline)]
pub use crate::assert_locked;

/// What [`assert_locked!`] calls. Not a stable API.
#[doc(hidden)]
#[track_caller]
// Panicking is this assertion's purpose, as it is `assert!`'s.
#[allow(clippy::panic)]
pub fn __assert_locked(name: Option<&str>) {
    let Some(lock) = current_lock() else {
        panic!(
            "assert_locked!: no dlock lock is held here; this code must run inside a \
             #[dlock::try_lock] function or a scheduled job"
        );
    };
    if let Some(want) = name {
        if lock.name.as_str() != want {
            panic!(
                "assert_locked!: running under lock {:?}, expected {want:?}",
                lock.name.as_str()
            );
        }
    }
    if let Some(reason) = lock.lost.reason() {
        panic!(
            "assert_locked!: lock {:?} was lost: {reason}",
            lock.name.as_str()
        );
    }
}

/// A locker on a new private in-memory store (with the default owner,
/// `host:pid`): locks taken through it (and its clones) exclude each other
/// and nothing else.
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub fn locker() -> crate::Locker {
    crate::Locker::new(dlock_memory::MemoryBackend::new())
}

/// A locker as `owner` on the in-memory store called `store`, shared by
/// every locker of this process that names it — two "nodes" of a test
/// contend for the same locks, as nodes on one coordinator do. The same
/// store as `dlock::connect("memory://STORE")`.
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub fn shared_locker(store: &str, owner: &str) -> crate::Result<crate::Locker> {
    crate::Locker::new(dlock_memory::MemoryBackend::shared(store)).with_owner(owner)
}
