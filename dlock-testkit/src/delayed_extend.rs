//! A fault injected at the client, for the "later wins" rule: the first
//! extension a guard sends is held back in flight (as a request stuck in a
//! slow connection would be) and reaches the real coordinator only later,
//! after the caller was told it timed out. Everything else goes straight to
//! the real backend; nothing is stubbed.

use dlock_core::{
    async_trait, BootInstant, Capabilities, Error, Lease, LockBackend, LockInfo, LockName,
    LockSpec, Result, ValidityBound,
};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// What happened to the held-back extension once it reached the coordinator.
pub(crate) struct Landed {
    /// Local instant just before it was sent to the coordinator.
    pub sent: BootInstant,
    /// Whether the coordinator applied it.
    pub applied: bool,
}

pub(crate) struct DelayedFirstExtend {
    inner: Arc<dyn LockBackend>,
    delay: Duration,
    /// Present until the first extension was held back.
    report: Mutex<Option<oneshot::Sender<Landed>>>,
}

impl DelayedFirstExtend {
    /// Wraps `inner`; the first extension lands `delay` after it was asked.
    pub(crate) fn wrap(
        inner: Arc<dyn LockBackend>,
        delay: Duration,
    ) -> (Arc<dyn LockBackend>, oneshot::Receiver<Landed>) {
        let (tx, rx) = oneshot::channel();
        let b = DelayedFirstExtend {
            inner,
            delay,
            report: Mutex::new(Some(tx)),
        };
        (Arc::new(b), rx)
    }
}

#[async_trait]
impl LockBackend for DelayedFirstExtend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.inner.try_acquire(spec).await
    }
    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        let report = self.report.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(report) = report else {
            return self.inner.extend(lease, lock_for).await;
        };
        let (inner, lease_c, delay) = (self.inner.clone(), lease.clone(), self.delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let sent = BootInstant::now();
            let applied = inner.extend(&lease_c, lock_for).await.is_ok();
            let _ = report.send(Landed { sent, applied });
        });
        Err(Error::Timeout {
            operation: "extend (held back in flight by the test)",
            after: Duration::ZERO,
        })
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
        self.inner.wait_for_release(name, max_wait).await
    }
    fn loss_signal(&self, lease: &Lease) -> Option<BoxFuture<'static, String>> {
        self.inner.loss_signal(lease)
    }
    fn validity_bound(&self, lease: &Lease) -> Option<ValidityBound> {
        self.inner.validity_bound(lease)
    }
}
