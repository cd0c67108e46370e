//! Faults injected at the client into the first extension a guard sends:
//!
//! - [`Fault::LandLater`], for the "later wins" rule: the extension is held
//!   back in flight (as a request stuck in a slow connection would be) and
//!   reaches the real coordinator only later, after the caller was told it
//!   timed out;
//! - [`Fault::AnswerLate`]: the extension goes out at once, its answer comes
//!   back late (so the guard's operation lock is held meanwhile).
//!
//! Everything else goes straight to the real backend; nothing is stubbed.

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

/// What happens to the first extension.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// Sent `delay` later; the caller gets a timeout at once.
    LandLater,
    /// Sent at once; the caller gets the real answer `delay` later.
    AnswerLate,
}

pub(crate) struct DelayedFirstExtend {
    inner: Arc<dyn LockBackend>,
    fault: Fault,
    delay: Duration,
    /// Present until the first extension was held back.
    report: Mutex<Option<oneshot::Sender<Landed>>>,
}

impl DelayedFirstExtend {
    /// Wraps `inner`; the first extension suffers `fault` for `delay`.
    pub(crate) fn wrap(
        inner: Arc<dyn LockBackend>,
        fault: Fault,
        delay: Duration,
    ) -> (Arc<dyn LockBackend>, oneshot::Receiver<Landed>) {
        let (tx, rx) = oneshot::channel();
        let b = DelayedFirstExtend {
            inner,
            fault,
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
        if let Fault::AnswerLate = self.fault {
            let sent = BootInstant::now();
            let r = self.inner.extend(lease, lock_for).await;
            tokio::time::sleep(self.delay).await;
            let _ = report.send(Landed {
                sent,
                applied: r.is_ok(),
            });
            return r;
        }
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
