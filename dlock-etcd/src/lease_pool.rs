//! Leases granted ahead of acquires, so that an acquire is one transaction.
//!
//! Without the pool an acquire takes two round trips: a LeaseGrant, then the
//! transaction that puts the key on that lease. With it, an acquire finds a
//! lease "ready" here, with no key on it, from one of three places:
//! - a release: the key is deleted and its lease, instead of being revoked,
//!   waits for the next acquire of the same length (so a cycle of acquire
//!   and release is two writes at etcd, as on SQL, not four);
//! - an acquire that found the lock held;
//! - a grant ahead: an acquire that found nothing ready, shortly after
//!   another acquire of the same length, grants the next lease in the
//!   background.
//!
//! Why this keeps the contract:
//! - A ready lease has no key on it and nobody keeps it alive: etcd ends it
//!   one TTL after granting it. An acquire takes it out of the pool under
//!   the mutex, so one lease carries at most one lock key.
//! - The lock's local validity counts from the instant the grant was *sent*
//!   ([`Ready::proven_at`]), not from the acquire: etcd's TTL has run since
//!   the grant. So validity is never longer than `lock_at_most_for`, only
//!   shorter by the lease's age, and a holder that dies is freed within
//!   `lock_at_most_for` (+ the expiry slack) of its acquire, as before.
//! - A lease older than [`dlock_core::ready_pool::max_age`] (a tenth of its TTL, at most 1 s) is
//!   not used: the lock would lose too much of its validity. It is revoked,
//!   and the acquire grants a lease itself, as without the pool.
//!
//! The pool itself (freshness, one lease per length, when to grant ahead)
//! is [`dlock_core::ready_pool`], shared with the Consul adapter.
//! - A lease comes back into the pool only when no key can be on it or get
//!   onto it later: after a release transaction that deleted this very key
//!   (compare on create revision, value and lease) and was answered; after
//!   an acquire transaction that was sent once and answered "held by
//!   another". Its TTL then counts from its last proof: the grant's or the
//!   last keep-alive's send, as the released lease's validity says.
//! - A lease still waiting here when the backend is dropped expires at etcd
//!   one TTL after its grant; it holds no key meanwhile.

use crate::client::Inner;
use crate::KIND;
use dlock_core::ready_pool::{Ready, Taken};
use dlock_core::{BootInstant, Error, Lease, Result};
use std::sync::Arc;
use std::time::Duration;

/// The pool's key for a TTL of `ttl` seconds.
fn length(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl Inner {
    /// Grants a lease of exactly `ttl` seconds, or explains why not. Sent
    /// again elsewhere when unanswered: a lease granted twice leaves one
    /// lease with no key, which expires by itself.
    pub(crate) async fn grant(self: &Arc<Self>, op: &'static str, ttl: i64) -> Result<i64> {
        let resp = self
            .call_repeatable(op, |mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        if resp.ttl() != ttl {
            self.spawn_revoke(resp.id());
            return Err(Error::unsupported(
                KIND,
                format!(
                    "etcd granted a {}s lease when {ttl}s was asked (its minimum TTL is tied to the \
                     election timeout); use a lease of at least {}s",
                    resp.ttl(),
                    resp.ttl().max(self.min_ttl)
                ),
            ));
        }
        Ok(resp.id())
    }

    /// A lease of `ttl` seconds for an acquire: the ready one, or a fresh
    /// grant. Grants the next one ahead while acquires come close together.
    pub(crate) async fn lease_for_acquire(self: &Arc<Self>, ttl: i64) -> Result<Ready<i64>> {
        let Taken {
            ready,
            stale,
            refill,
        } = self.pool.take(length(ttl));
        if let Some(id) = stale {
            self.spawn_revoke(id);
        }
        let lease = match ready {
            Some(r) => r,
            None => {
                let proven_at = BootInstant::now();
                let lease = self.grant("acquire (lease grant)", ttl).await?;
                Ready { lease, proven_at }
            }
        };
        if refill {
            self.spawn_refill(ttl);
        }
        Ok(lease)
    }

    /// Returns a lease with no key on it (see the module docs for when that
    /// is sure) to the pool, or revokes it when it is not kept.
    pub(crate) fn give_back(self: &Arc<Self>, ttl: i64, r: Ready<i64>) {
        if let Some(id) = self.pool.put(length(ttl), r) {
            self.spawn_revoke(id);
        }
    }

    /// After a release deleted the key of `lease` from etcd lease `id`:
    /// that lease, its TTL counted from the proof `lease.valid_until` was
    /// computed from, waits for the next acquire.
    pub(crate) fn recycle(self: &Arc<Self>, lease: &Lease, id: i64) {
        let ttl = i64::try_from(lease.at_most.as_secs()).unwrap_or(i64::MAX);
        match Ready::from_validity(id, lease.valid_until, lease.at_most) {
            Some(r) if lease.at_most.subsec_nanos() == 0 => self.give_back(ttl, r),
            _ => self.spawn_revoke(id),
        }
    }

    fn spawn_refill(self: &Arc<Self>, ttl: i64) {
        let me = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.pool.refilled(length(ttl));
            return;
        };
        rt.spawn(async move {
            let proven_at = BootInstant::now();
            match me.grant("lease grant ahead", ttl).await {
                Ok(lease) => me.give_back(ttl, Ready { lease, proven_at }),
                // The next acquire grants its own.
                Err(e) => {
                    tracing::debug!(error = %e, ttl, "dlock-etcd: granting a lease ahead failed")
                }
            }
            me.pool.refilled(length(ttl));
        });
    }
}
