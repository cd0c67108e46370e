//! Seeded bugs for the lab's self-tests: a lab that cannot see the bug it
//! exists to find proves nothing.
//!
//! - [`OverlongValidity`]: leases claim a local validity two lease lengths
//!   longer than the coordinator's. A holder paused past its lease then
//!   still reads `is_held() == true` after another owner was granted the
//!   lock: the overlap the checker must report.
//! - [`StuckLeases`]: the coordinator is asked for three times the lease
//!   and releases are dropped, so a lock stays taken two lease lengths after
//!   its holder let go: the stuck lock the checker must report.

use dlock_core::{
    async_trait, Capabilities, Lease, LockBackend, LockInfo, LockName, LockSpec, Result,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Which seeded bug a self-test's workers run on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seeded {
    /// [`OverlongValidity`].
    OverlongValidity,
    /// [`StuckLeases`].
    StuckLeases,
}

impl Seeded {
    /// `backend` with the bug.
    pub fn wrap(self, backend: Arc<dyn LockBackend>) -> Arc<dyn LockBackend> {
        match self {
            Seeded::OverlongValidity => Arc::new(OverlongValidity(backend)),
            Seeded::StuckLeases => Arc::new(StuckLeases(backend)),
        }
    }
}

/// `inner`, with every granted or extended lease's validity stretched.
pub struct OverlongValidity(pub Arc<dyn LockBackend>);

fn stretch(mut lease: Lease) -> Lease {
    lease.valid_until = lease.valid_until + lease.at_most * 2;
    lease
}

#[async_trait]
impl LockBackend for OverlongValidity {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        Ok(self.0.try_acquire(spec).await?.map(stretch))
    }
    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.0.extend(lease, lock_for).await.map(stretch)
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.0.release(lease).await
    }
    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        self.0.inspect(name).await
    }
    async fn list(&self) -> Result<Vec<LockInfo>> {
        self.0.list().await
    }
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.0.force_release(name).await
    }
    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        self.0.wait_for_release(name, max_wait).await
    }
}

/// `inner`, asked for three times every lease (its validity still the one
/// asked for), releases never sent.
pub struct StuckLeases(pub Arc<dyn LockBackend>);

/// The lease as the caller asked for it: the true one, shortened.
fn as_asked(mut lease: Lease, asked: Duration) -> Lease {
    let excess = lease.at_most.saturating_sub(asked);
    lease.valid_until = lease
        .valid_until
        .checked_sub(excess)
        .unwrap_or(lease.acquired_at);
    lease.at_most = asked;
    lease
}

#[async_trait]
impl LockBackend for StuckLeases {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        let mut tripled = spec.clone();
        tripled.at_most = spec.at_most * 3;
        Ok(self
            .0
            .try_acquire(&tripled)
            .await?
            .map(|l| as_asked(l, spec.at_most)))
    }
    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.0
            .extend(lease, lock_for * 3)
            .await
            .map(|l| as_asked(l, lock_for))
    }
    async fn release(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }
    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        self.0.inspect(name).await
    }
    async fn list(&self) -> Result<Vec<LockInfo>> {
        self.0.list().await
    }
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.0.force_release(name).await
    }
    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        self.0.wait_for_release(name, max_wait).await
    }
}
