//! What a successful acquisition returns: [`Lease`] and [`FencingToken`].

use crate::{BootInstant, LockName};
use std::fmt;
use std::time::{Duration, SystemTime};

/// A number that strictly grows with every successful acquisition of a name,
/// across owners, releases, expiries and coordinator restarts.
///
/// Pass it to the resource you protect and let the resource reject a stale
/// holder: `UPDATE t SET ..., fence = $token WHERE id = $id AND fence < $token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The raw value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A held lock as the backend granted it.
///
/// Only this exact lease (matched on [`Lease::id`], and on the backend's
/// `handle`) can extend or release the lock.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The lock name.
    pub name: LockName,
    /// The owner that asked.
    pub owner: String,
    /// Unique id of this acquisition (32 hex digits).
    pub id: String,
    /// Fencing token of this acquisition.
    pub token: FencingToken,
    /// Local time ([`BootInstant`]) taken *before* the acquire request was sent.
    pub acquired_at: BootInstant,
    /// Local instant ([`BootInstant`]) after which the lease can no longer be
    /// proven valid; no later than the coordinator's own expiry.
    pub valid_until: BootInstant,
    /// `lock_at_most_for` of the latest grant or extension.
    pub at_most: Duration,
    /// `lock_at_least_for` of the acquisition.
    pub at_least: Duration,
    /// Backend-private state needed to extend or release (an etcd lease id,
    /// a znode path, a Consul session). Opaque to everyone else.
    pub handle: String,
}

impl Lease {
    /// The lease a backend grants for `spec`, for a request sent at `sent`
    /// (taken *before* sending): local validity per [`local_valid_until`].
    pub fn granted(
        spec: &crate::LockSpec,
        id: String,
        token: FencingToken,
        sent: BootInstant,
        handle: String,
    ) -> Lease {
        Lease {
            name: spec.name.clone(),
            owner: spec.owner.clone(),
            id,
            token,
            acquired_at: sent,
            valid_until: local_valid_until(sent, spec.at_most),
            at_most: spec.at_most,
            at_least: spec.at_least,
            handle,
        }
    }

    /// This lease after the coordinator extended it to `lock_for` from a
    /// request sent at `sent`.
    pub fn extended(&self, lock_for: Duration, sent: BootInstant) -> Lease {
        let mut new = self.clone();
        new.valid_until = local_valid_until(sent, lock_for);
        new.at_most = lock_for;
        new
    }

    /// True while the local clock says the lease is still valid (by this
    /// lease's own length only; a guard also applies the backend's other
    /// bounds, see `LockGuard::is_held`).
    pub fn is_valid_now(&self) -> bool {
        !self.valid_until.has_passed()
    }

    /// Time left before the lease can no longer be proven valid.
    pub fn remaining(&self) -> Duration {
        self.valid_until.remaining()
    }
}

/// Computes a conservative local validity end for a lease of `lease` granted
/// by a request sent at `sent_at`: the coordinator's expiry can only be later.
/// A safety margin of 1% + 2 ms covers clock-rate drift between the hosts.
pub fn local_valid_until(sent_at: BootInstant, lease: Duration) -> BootInstant {
    let margin = lease / 100 + Duration::from_millis(2);
    // Saturating: a lease too long to represent ends in the far future.
    sent_at + lease.saturating_sub(margin)
}

/// A new random acquisition id (UUID v4, 32 lower-case hex digits).
pub fn new_acquisition_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Who holds a lock, as the coordinator sees it (for `dlock status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock name.
    pub name: LockName,
    /// The holder's owner string.
    pub owner: String,
    /// The holder's acquisition id, where the backend stores it.
    pub id: Option<String>,
    /// Fencing token of the holder's acquisition.
    pub token: FencingToken,
    /// When it was taken, by the coordinator's clock, where known.
    pub locked_at: Option<SystemTime>,
    /// When it expires unless extended, by the coordinator's clock, where known.
    pub lock_until: Option<SystemTime>,
}
