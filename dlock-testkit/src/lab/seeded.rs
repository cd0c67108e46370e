//! Seeded bugs for the lab's self-tests: a lab that cannot see the bug it
//! exists to find proves nothing.
//!
//! - [`Seeded::OverlongValidity`]: leases claim a local validity two lease
//!   lengths longer than the coordinator's. A holder paused past its lease
//!   then still reads `is_held() == true` after another owner was granted
//!   the lock: the overlap the checker must report.
//! - [`Seeded::StuckLeases`]: the coordinator is asked for three times the
//!   lease and releases are dropped, so a lock stays taken two lease lengths
//!   after its holder let go: the stuck lock the checker must report.

use dlock_core::{
    async_trait, Capabilities, Lease, LockBackend, LockInfo, LockName, LockSpec, Result,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Which seeded bug a self-test's workers run on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seeded {
    /// Every granted or extended lease's validity stretched by two lease
    /// lengths.
    OverlongValidity,
    /// Three times every lease asked of the coordinator (the validity still
    /// the one asked for), releases never sent.
    StuckLeases,
}

impl Seeded {
    /// `backend` with the bug.
    pub fn wrap(self, backend: Arc<dyn LockBackend>) -> Arc<dyn LockBackend> {
        Arc::new(WithBug {
            inner: backend,
            bug: self,
        })
    }
}

/// A backend with a seeded bug; everything the bug does not touch is the
/// inner backend's.
struct WithBug {
    inner: Arc<dyn LockBackend>,
    bug: Seeded,
}

/// How much longer than asked the coordinator is asked for.
fn asked_of_coordinator(bug: Seeded, lease: Duration) -> Duration {
    match bug {
        Seeded::OverlongValidity => lease,
        Seeded::StuckLeases => lease * 3,
    }
}

/// The lease the caller is told of, for a request of `asked`.
fn told(bug: Seeded, mut lease: Lease, asked: Duration) -> Lease {
    match bug {
        Seeded::OverlongValidity => {
            lease.valid_until = lease.valid_until + lease.at_most * 2;
        }
        Seeded::StuckLeases => {
            // The true lease, shortened to what was asked.
            let excess = lease.at_most.saturating_sub(asked);
            lease.valid_until = lease
                .valid_until
                .checked_sub(excess)
                .unwrap_or(lease.acquired_at);
            lease.at_most = asked;
        }
    }
    lease
}

#[async_trait]
impl LockBackend for WithBug {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        let mut asked = spec.clone();
        asked.at_most = asked_of_coordinator(self.bug, spec.at_most);
        Ok(self
            .inner
            .try_acquire(&asked)
            .await?
            .map(|l| told(self.bug, l, spec.at_most)))
    }
    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.inner
            .extend(lease, asked_of_coordinator(self.bug, lock_for))
            .await
            .map(|l| told(self.bug, l, lock_for))
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        match self.bug {
            Seeded::StuckLeases => Ok(()),
            Seeded::OverlongValidity => self.inner.release(lease).await,
        }
    }
    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        self.inner.inspect(name).await
    }
    async fn list(&self) -> Result<Vec<LockInfo>> {
        self.inner.list().await
    }
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.inner.force_release(name).await
    }
    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        self.inner.wait_for_release(name, max_wait).await
    }
}
