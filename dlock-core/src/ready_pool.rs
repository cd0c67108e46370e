//! [`ReadyPool`]: coordinator leases (etcd leases, Consul sessions) made
//! ahead of acquires, so that an acquire is one request, not two.
//!
//! For adapters whose acquire is "make a lease, then put the key on it".
//! The pool holds at most one ready lease per lease length, each with the
//! instant its coordinator TTL began ([`Ready::proven_at`]: the send of the
//! grant or last renewal). The adapter decides when a lease may come back
//! (only when no key is or can later be on it) and fills the pool; the pool
//! decides what is fresh enough to use.
//!
//! The rule that keeps the contract: a lock taken on a ready lease gets its
//! local validity from `proven_at`, not from the acquire (see
//! [`Ready::valid_until`]). So it is never longer than `lock_at_most_for`,
//! only shorter by the lease's age, and a holder that dies is freed within
//! `lock_at_most_for` (+ the backend's expiry slack) of its acquire.

use crate::{local_valid_until, BootInstant};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// At most this many lease lengths have a lease waiting at once.
const MAX_LENGTHS: usize = 16;

/// A lease made ahead, carrying no key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready<T> {
    /// The coordinator's handle (an etcd lease id, a Consul session id).
    pub lease: T,
    /// Taken before the request that last started its TTL was sent.
    pub proven_at: BootInstant,
}

impl<T> Ready<T> {
    /// The local validity of a lock of `length` put on this lease.
    pub fn valid_until(&self, length: Duration) -> BootInstant {
        local_valid_until(self.proven_at, length)
    }

    /// The last proof of a lease that held a lock until now, recovered from
    /// the lock's local validity (`valid_until` of a lease of `length`,
    /// which [`local_valid_until`] computed from that proof, or earlier).
    pub fn from_validity(lease: T, valid_until: BootInstant, length: Duration) -> Option<Self> {
        let now = BootInstant::now();
        let shortfall = local_valid_until(now, length).saturating_duration_since(valid_until);
        Some(Ready {
            lease,
            proven_at: now.checked_sub(shortfall)?,
        })
    }
}

/// The oldest a ready lease of `length` may be and still carry a lock: a
/// tenth of its length, at most 1 s (the validity a lock loses to it).
pub fn max_age(length: Duration) -> Duration {
    (length / 10).min(Duration::from_secs(1))
}

struct Length<T> {
    ready: Option<Ready<T>>,
    /// A background grant for this length is under way.
    refilling: bool,
    /// The last acquire of this length: only acquires that follow each
    /// other within `max_age` get a lease made ahead (a job that runs every
    /// minute would only waste a grant and a revoke on each).
    last_acquire: Option<BootInstant>,
}

impl<T> Default for Length<T> {
    fn default() -> Self {
        Length {
            ready: None,
            refilling: false,
            last_acquire: None,
        }
    }
}

/// What [`ReadyPool::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken<T> {
    /// A fresh lease to put the key on.
    pub ready: Option<Ready<T>>,
    /// A lease too old to use: revoke it.
    pub stale: Option<T>,
    /// Make the next lease of this length ahead, in the background, then
    /// [`ReadyPool::put`] it and call [`ReadyPool::refilled`].
    pub refill: bool,
}

/// Ready leases by lease length. See the module docs.
pub struct ReadyPool<T> {
    lengths: Mutex<HashMap<Duration, Length<T>>>,
}

impl<T> Default for ReadyPool<T> {
    fn default() -> Self {
        ReadyPool {
            lengths: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> std::fmt::Debug for ReadyPool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyPool").finish_non_exhaustive()
    }
}

impl<T> ReadyPool<T> {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Duration, Length<T>>) -> R) -> R {
        f(&mut self.lengths.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// For an acquire of `length`: the ready lease if fresh (it leaves the
    /// pool, so no other acquire gets it), a stale one to revoke, and
    /// whether to make the next one ahead.
    pub fn take(&self, length: Duration) -> Taken<T> {
        let now = BootInstant::now();
        self.with(|m| {
            if !m.contains_key(&length) && m.len() >= MAX_LENGTHS {
                return Taken {
                    ready: None,
                    stale: None,
                    refill: false,
                };
            }
            let l = m.entry(length).or_default();
            let recent = l
                .last_acquire
                .is_some_and(|t| now.saturating_duration_since(t) <= max_age(length));
            l.last_acquire = Some(now);
            let (ready, stale) = match l.ready.take() {
                Some(r) if r.proven_at.elapsed() <= max_age(length) => (Some(r), None),
                Some(r) => (None, Some(r.lease)),
                None => (None, None),
            };
            // A lease taken fresh usually comes back (a release, a busy
            // answer): make one ahead only when nothing was ready.
            let refill = ready.is_none() && recent && !l.refilling;
            l.refilling |= refill;
            Taken {
                ready,
                stale,
                refill,
            }
        })
    }

    /// Puts `r` in as the ready lease of `length`. Returns a lease that is
    /// not kept, to revoke: `r` when it is too old or the pool is full, or
    /// the older of two.
    pub fn put(&self, length: Duration, r: Ready<T>) -> Option<T> {
        if r.proven_at.elapsed() > max_age(length) {
            return Some(r.lease);
        }
        self.with(|m| {
            if !m.contains_key(&length) && m.len() >= MAX_LENGTHS {
                return Some(r.lease);
            }
            let l = m.entry(length).or_default();
            match l.ready.take() {
                Some(old) if old.proven_at >= r.proven_at => {
                    l.ready = Some(old);
                    Some(r.lease)
                }
                old => {
                    l.ready = Some(r);
                    old.map(|o| o.lease)
                }
            }
        })
    }

    /// The background refill [`Taken::refill`] asked for is over.
    pub fn refilled(&self, length: Duration) {
        self.with(|m| {
            if let Some(l) = m.get_mut(&length) {
                l.refilling = false;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const S10: Duration = Duration::from_secs(10);

    fn ready(id: u32, age: Duration) -> Ready<u32> {
        Ready {
            lease: id,
            proven_at: BootInstant::now().checked_sub(age).unwrap(),
        }
    }

    #[test]
    fn only_fresh_leases_are_handed_out_and_only_close_acquires_refill() {
        let pool = ReadyPool::default();
        // First acquire of a length: nothing ready, no grant ahead.
        assert_eq!(
            pool.take(S10),
            Taken {
                ready: None,
                stale: None,
                refill: false
            }
        );
        // The next one right after: a grant ahead, once at a time.
        assert!(pool.take(S10).refill);
        assert!(!pool.take(S10).refill);
        pool.refilled(S10);
        assert_eq!(pool.put(S10, ready(1, Duration::ZERO)), None);
        // A lease taken fresh is expected back: no grant ahead.
        let t = pool.take(S10);
        assert_eq!(t.ready.map(|r| r.lease), Some(1));
        assert_eq!((t.stale, t.refill), (None, false));
        // Taken means gone: it is never handed out twice.
        assert!(pool.take(S10).ready.is_none());
        // Too old to keep (a tenth of its length, at most 1 s).
        assert_eq!(
            pool.put(S10, ready(2, Duration::from_millis(1100))),
            Some(2)
        );
        let s3 = Duration::from_secs(3);
        assert_eq!(pool.put(s3, ready(3, Duration::from_millis(250))), None);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(pool.take(s3).stale, Some(3), "aged past 300 ms in the pool");
    }

    #[test]
    fn the_fresher_lease_stays_and_the_pool_is_bounded() {
        let pool = ReadyPool::default();
        assert_eq!(pool.put(S10, ready(1, Duration::from_millis(50))), None);
        assert_eq!(pool.put(S10, ready(2, Duration::from_millis(100))), Some(2));
        assert_eq!(pool.put(S10, ready(3, Duration::ZERO)), Some(1));
        for n in 100..100 + MAX_LENGTHS as u32 - 1 {
            let len = Duration::from_secs(u64::from(n));
            assert_eq!(pool.put(len, ready(n, Duration::ZERO)), None);
        }
        let len = Duration::from_secs(7);
        assert_eq!(pool.put(len, ready(7, Duration::ZERO)), Some(7));
        assert!(!pool.take(len).refill);
    }

    #[test]
    fn a_released_lease_keeps_the_age_of_its_last_proof() {
        let proof = BootInstant::now()
            .checked_sub(Duration::from_millis(300))
            .unwrap();
        let valid_until = local_valid_until(proof, S10);
        let r = Ready::from_validity(1, valid_until, S10).unwrap();
        let err = r.proven_at.saturating_duration_since(proof)
            + proof.saturating_duration_since(r.proven_at);
        assert!(err < Duration::from_millis(5), "{err:?}");
        assert_eq!(r.valid_until(S10), valid_until);
    }
}
