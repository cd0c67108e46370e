//! What a [`dlock_core::Lease`] carries for this backend: the etcd lease id
//! the key is attached to, and when the acquiring transaction was answered.

use crate::KIND;
use dlock_core::BootInstant;
use dlock_core::{Error, Lease, Result};
use std::time::Duration;

/// Parsed `Lease::handle`: `"<etcd lease id, hex>/<µs from acquired_at to
/// the txn answer>"`, then `"/2"` when the acquire was sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    /// The etcd lease the lock key is attached to now.
    pub lease_id: i64,
    /// Local time from `Lease::acquired_at` (before the grant was sent) to
    /// the moment the acquiring transaction's answer arrived: the lock was
    /// taken no later than `acquired_at + acquired_by`.
    pub acquired_by: Duration,
    /// The acquiring transaction went out twice: a late first copy may
    /// still put the key back on the lease after a release deleted it, so
    /// that lease is never reused for another acquire (lease_pool.rs).
    pub sent_twice: bool,
}

impl Handle {
    pub(crate) fn encode(&self) -> String {
        let twice = if self.sent_twice { "/2" } else { "" };
        format!(
            "{:x}/{}{twice}",
            self.lease_id,
            self.acquired_by.as_micros()
        )
    }

    pub(crate) fn of(lease: &Lease) -> Result<Self> {
        let bad = || {
            Error::InvalidConfig(format!(
                "lease of lock {:?} was not issued by the etcd backend (handle {:?})",
                lease.name.as_str(),
                lease.handle
            ))
        };
        let (id, rest) = lease.handle.split_once('/').ok_or_else(bad)?;
        let (by, sent_twice) = match rest.split_once('/') {
            Some((by, "2")) => (by, true),
            Some(_) => return Err(bad()),
            None => (rest, false),
        };
        let lease_id = u64::from_str_radix(id, 16).map_err(|_| bad())?;
        let lease_id = i64::try_from(lease_id).map_err(|_| bad())?;
        let by: u64 = by.parse().map_err(|_| bad())?;
        Ok(Handle {
            lease_id,
            acquired_by: Duration::from_micros(by),
            sent_twice,
        })
    }

    /// The latest local instant at which the lock may have been taken.
    pub(crate) fn taken_by(&self, lease: &Lease) -> BootInstant {
        lease.acquired_at + self.acquired_by
    }
}

/// `Unsupported` unless `d` is a whole number of seconds that fits an etcd TTL.
pub(crate) fn ttl_secs(what: &str, d: Duration) -> Result<i64> {
    if d.subsec_nanos() != 0 {
        return Err(Error::unsupported(
            KIND,
            format!(
                "{what} of {d:?} is not a whole number of seconds; etcd times leases in seconds"
            ),
        ));
    }
    i64::try_from(d.as_secs())
        .map_err(|_| Error::unsupported(KIND, format!("{what} of {d:?} is too long")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dlock_core::{FencingToken, LockName};

    fn lease(handle: &str) -> Lease {
        let now = BootInstant::now();
        Lease {
            name: LockName::new("n").unwrap(),
            owner: "o".into(),
            id: "i".into(),
            token: FencingToken(1),
            acquired_at: now,
            valid_until: now,
            at_most: Duration::from_secs(2),
            at_least: Duration::ZERO,
            handle: handle.into(),
        }
    }

    #[test]
    fn round_trip() {
        for sent_twice in [false, true] {
            let h = Handle {
                lease_id: 0x7fff_0000_1234_abcd,
                acquired_by: Duration::from_micros(1234),
                sent_twice,
            };
            assert_eq!(Handle::of(&lease(&h.encode())).unwrap(), h);
        }
        for bad in [
            "",
            "zz/1",
            "1",
            "1/x",
            "ffffffffffffffff/1",
            "1/1/1",
            "1/1/",
        ] {
            assert!(Handle::of(&lease(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn ttl() {
        assert_eq!(ttl_secs("x", Duration::from_secs(3)).unwrap(), 3);
        let e = ttl_secs("x", Duration::from_millis(1500)).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }
}
