//! A `LockBackend` that counts what its clients ask of the coordinator,
//! for the waiter-herd measurement: every call is passed on unchanged.

use dlock_core::{
    async_trait, Capabilities, Lease, LockBackend, LockInfo, LockName, LockSpec, Result,
    ValidityBound,
};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the counting backends of one measurement saw, shared by all of them.
#[derive(Debug, Default)]
pub struct Counts {
    /// `try_acquire` calls: one acquire request (transaction) each on every
    /// backend.
    pub attempts: AtomicU64,
    /// `wait_for_release` calls: each is a watch, a blocking query, a
    /// LISTEN wait or a poll sleep, depending on the backend.
    pub waits: AtomicU64,
}

impl Counts {
    /// Both counters back to zero.
    pub fn reset(&self) {
        self.attempts.store(0, Ordering::SeqCst);
        self.waits.store(0, Ordering::SeqCst);
    }

    /// `(attempts, waits)` now.
    pub fn read(&self) -> (u64, u64) {
        (
            self.attempts.load(Ordering::SeqCst),
            self.waits.load(Ordering::SeqCst),
        )
    }
}

/// `inner`, with its acquire attempts and waits counted in `counts`.
pub struct Counting {
    /// The backend every call goes to.
    pub inner: Arc<dyn LockBackend>,
    /// Where the calls are counted.
    pub counts: Arc<Counts>,
}

#[async_trait]
impl LockBackend for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.counts.attempts.fetch_add(1, Ordering::SeqCst);
        self.inner.try_acquire(spec).await
    }
    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.inner.extend(lease, lock_for).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
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
        self.counts.waits.fetch_add(1, Ordering::SeqCst);
        self.inner.wait_for_release(name, max_wait).await
    }
    fn loss_signal(&self, lease: &Lease) -> Option<BoxFuture<'static, String>> {
        self.inner.loss_signal(lease)
    }
    fn validity_bound(&self, lease: &Lease) -> Option<ValidityBound> {
        self.inner.validity_bound(lease)
    }
}
