//! Sessions made ahead of acquires, so that an acquire is one transaction.
//!
//! Without the pool an acquire takes two round trips: a session create,
//! then the transaction that locks the key with it. With it, an acquire
//! finds a session "ready", holding no key, from one of three places:
//! - a release: its transaction deleted the key (after checking the
//!   session held it), so the session, instead of being destroyed, waits
//!   for the next acquire of the same length;
//! - an acquire whose lock went to another session;
//! - a session made ahead: an acquire that found nothing ready, shortly
//!   after another acquire of the same length, makes the next one in the
//!   background.
//!
//! Why this keeps the contract:
//! - A ready session holds no key and nobody renews it: Consul ends it
//!   between one and two TTLs after it was made or last renewed, the same
//!   as a session made by the acquire. An acquire takes it out of the pool
//!   under the mutex, so one session carries at most one lock key.
//! - The lock's local validity counts from the session's last proof (the
//!   send of its create or last renewal), not from the acquire. So it is
//!   never longer than `lock_at_most_for`, only shorter by the session's
//!   age, and a holder that dies is freed within `lock_at_most_for` (+ the
//!   expiry slack) of its acquire.
//! - A session older than [`dlock_core::ready_pool::max_age`] (a tenth of
//!   its TTL, at most 1 s) is not used but destroyed.
//! - A session comes back only when no key is on it or can get onto it:
//!   a lock transaction is never sent twice unless Consul answered that it
//!   was applied nowhere (http.rs), so an answer settles it.
//!
//! The pool itself is [`dlock_core::ready_pool`], shared with etcd.

use crate::api::PendingSession;
use crate::backend::ConsulBackend;
use dlock_core::ready_pool::{Ready, Taken};
use dlock_core::{BootInstant, Lease, LockSpec, Result};
use std::time::Duration;

impl ConsulBackend {
    /// A session for an acquire of `spec`, with the instant its TTL began:
    /// a ready one, or one made now. Makes the next one ahead while
    /// acquires come close together.
    pub(crate) async fn session_for_acquire(
        &self,
        spec: &LockSpec,
    ) -> Result<(PendingSession, BootInstant)> {
        let Taken {
            ready,
            stale,
            refill,
        } = self.sessions.take(spec.at_most);
        if let Some(id) = stale {
            self.http.destroy_session_later(id);
        }
        if refill {
            self.spawn_refill(spec);
        }
        if let Some(r) = ready {
            return Ok((self.http.pending(r.lease), r.proven_at));
        }
        let proven_at = BootInstant::now();
        let session = self
            .http
            .create_pending_session(&Self::session_name(&spec.owner), spec.at_most)
            .await?;
        Ok((session, proven_at))
    }

    /// Returns a session holding no key to the pool, or destroys it.
    pub(crate) fn give_back_session(
        &self,
        length: Duration,
        session: PendingSession,
        proven_at: BootInstant,
    ) {
        let r = Ready {
            lease: session.keep(),
            proven_at,
        };
        self.keep_ready(length, r);
    }

    /// `r` into the pool, or destroyed when the pool does not keep it.
    fn keep_ready(&self, length: Duration, r: Ready<String>) {
        if let Some(id) = self.sessions.put(length, r) {
            self.http.destroy_session_later(id);
        }
    }

    /// After a release deleted the key `lease` held with `session`: that
    /// session, its TTL counted from the proof `lease.valid_until` was
    /// computed from, waits for the next acquire.
    pub(crate) fn recycle_session(&self, lease: &Lease, session: String) {
        match Ready::from_validity(session.clone(), lease.valid_until, lease.at_most) {
            Some(r) => self.keep_ready(lease.at_most, r),
            None => self.http.destroy_session_later(session),
        }
    }

    fn spawn_refill(&self, spec: &LockSpec) {
        let (me, length) = (self.clone(), spec.at_most);
        let name = Self::session_name(&spec.owner);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sessions.refilled(length);
            return;
        };
        rt.spawn(async move {
            let proven_at = BootInstant::now();
            match me.http.create_pending_session(&name, length).await {
                Ok(s) => me.give_back_session(length, s, proven_at),
                // The next acquire makes its own.
                Err(e) => {
                    tracing::debug!(error = %e, "dlock-consul: making a session ahead failed")
                }
            }
            me.sessions.refilled(length);
        });
    }
}
