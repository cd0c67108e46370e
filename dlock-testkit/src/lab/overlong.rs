//! A seeded bug for the lab's self-test: a backend whose leases claim a
//! local validity two lease lengths longer than the coordinator's. A holder
//! paused past its lease then still reads `is_held() == true` after another
//! owner was granted the lock — the overlap the checker must report, or the
//! lab proves nothing.

use dlock_core::{
    async_trait, Capabilities, Lease, LockBackend, LockInfo, LockName, LockSpec, Result,
};
use std::sync::Arc;
use std::time::Duration;

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
