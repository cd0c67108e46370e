//! [`LockGuard`]: a held lock with keep-alive, a loss signal and release.

use crate::{Error, FencingToken, Lease, LockBackend, LockName, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Completes when the lease is gone or can no longer be proven valid.
///
/// Cheap to clone; `.await` it (or call [`LostSignal::wait`]) to get the reason.
/// ```no_run
/// # async fn f(guard: dlock_core::LockGuard) {
/// tokio::select! {
///     reason = guard.lost() => eprintln!("stop writing: {reason}"),
///     _ = do_work() => {}
/// }
/// # }
/// # async fn do_work() {}
/// ```
#[derive(Clone, Debug)]
pub struct LostSignal {
    rx: watch::Receiver<Option<String>>,
}

impl LostSignal {
    /// True once the lease is known or presumed gone.
    pub fn is_lost(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// The reason, once lost.
    pub fn reason(&self) -> Option<String> {
        self.rx.borrow().clone()
    }

    /// Waits until the lease is lost and returns why. Never completes for a
    /// lease that is released normally and never lost.
    pub async fn wait(&self) -> String {
        let mut rx = self.rx.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The guard is gone without a loss: never complete.
                futures::future::pending::<()>().await;
            }
        }
    }
}

impl IntoFuture for LostSignal {
    type Output = String;
    type IntoFuture = BoxFuture<'static, String>;
    fn into_future(self) -> Self::IntoFuture {
        async move { self.wait().await }.boxed()
    }
}

pub(crate) struct GuardShared {
    backend: Arc<dyn LockBackend>,
    lease: Mutex<Lease>,
    lost_tx: watch::Sender<Option<String>>,
    /// Serializes extend and release so a release never races an extension.
    op_lock: tokio::sync::Mutex<()>,
}

impl GuardShared {
    fn lease(&self) -> MutexGuard<'_, Lease> {
        // A poisoned lock only means a panic elsewhere; the lease data is plain.
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_lost(&self, reason: String) {
        let first = self.lost_tx.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            let name = self.lease().name.clone();
            tracing::warn!(backend = self.backend.kind(), lock = %name, %reason, "dlock lease lost");
            metrics::counter!("dlock_lost_total", "backend" => self.backend.kind()).increment(1);
        }
    }

    fn lost_reason(&self) -> Option<String> {
        self.lost_tx.borrow().clone()
    }

    /// Sends the release of the current lease (explicit or on drop), with
    /// its span and metrics.
    async fn send_release(&self) -> Result<()> {
        let lease = self.lease().clone();
        let kind = self.backend.kind();
        let span = tracing::debug_span!("dlock.release", backend = kind, lock = %lease.name, token = lease.token.0);
        let r = self.backend.release(&lease).instrument(span).await;
        if self.lost_reason().is_none() {
            metrics::histogram!("dlock_hold_seconds", "backend" => kind)
                .record(lease.acquired_at.elapsed().as_secs_f64());
        }
        if r.is_err() {
            metrics::counter!("dlock_release_errors_total", "backend" => kind).increment(1);
        }
        r
    }

    async fn extend(&self, lock_for: Duration) -> Result<()> {
        let _op = self.op_lock.lock().await;
        if let Some(r) = self.lost_reason() {
            let name = self.lease().name.clone();
            return Err(Error::lost(&name, r));
        }
        let lease = {
            // If the new length is shorter than what is left, count on the
            // shorter one from now on: should this call be cancelled after the
            // coordinator applied it, the guard must not believe the longer.
            let mut l = self.lease();
            let shorter = crate::local_valid_until(Instant::now(), lock_for);
            if shorter < l.valid_until {
                l.valid_until = shorter;
            }
            l.clone()
        };
        let span = tracing::debug_span!("dlock.extend", backend = self.backend.kind(), lock = %lease.name, token = lease.token.0);
        match self.backend.extend(&lease, lock_for).instrument(span).await {
            Ok(new) => {
                *self.lease() = new;
                Ok(())
            }
            Err(e) => {
                metrics::counter!("dlock_extend_failures_total", "backend" => self.backend.kind())
                    .increment(1);
                if e.is_lock_lost() {
                    self.mark_lost(e.to_string());
                }
                Err(e)
            }
        }
    }
}

/// A held lock. Keeps itself alive (when asked to), signals loss, and is
/// released by [`LockGuard::release`] or, best effort, on drop.
pub struct LockGuard {
    shared: Arc<GuardShared>,
    watchdog: Option<JoinHandle<()>>,
    done: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.is_held();
        let lease = self.shared.lease();
        f.debug_struct("LockGuard")
            .field("name", &lease.name)
            .field("owner", &lease.owner)
            .field("token", &lease.token)
            .field("held", &held)
            .finish()
    }
}

impl LockGuard {
    /// Wraps a granted lease and starts its watchdog (keep-alive or expiry
    /// watch) on the current tokio runtime.
    pub(crate) fn start(
        backend: Arc<dyn LockBackend>,
        lease: Lease,
        keep_alive: bool,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfig("dlock guards need a tokio runtime to keep their lease".into())
        })?;
        let (lost_tx, _) = watch::channel(None);
        let loss = backend.loss_signal(&lease);
        let shared = Arc::new(GuardShared {
            backend,
            lease: Mutex::new(lease),
            lost_tx,
            op_lock: tokio::sync::Mutex::new(()),
        });
        let watchdog = runtime.spawn(watchdog(Arc::downgrade(&shared), keep_alive, loss));
        Ok(LockGuard {
            shared,
            watchdog: Some(watchdog),
            done: false,
        })
    }

    /// The lock name.
    pub fn name(&self) -> LockName {
        self.shared.lease().name.clone()
    }

    /// The fencing token of this acquisition.
    pub fn token(&self) -> FencingToken {
        self.shared.lease().token
    }

    /// A copy of the current lease (its validity moves with extensions).
    pub fn lease(&self) -> Lease {
        self.shared.lease().clone()
    }

    /// True while the lease is valid by the local monotonic clock and no
    /// loss has been detected. Turns false no later than the coordinator's expiry.
    pub fn is_held(&self) -> bool {
        !self.done && self.shared.lost_reason().is_none() && self.shared.lease().is_valid_now()
    }

    /// A future that completes when the lease is gone or can no longer be
    /// proven (expired without extension, extension refused, coordinator gone).
    pub fn lost(&self) -> LostSignal {
        LostSignal {
            rx: self.shared.lost_tx.subscribe(),
        }
    }

    /// Extends the lease to `lock_for` from now, by the coordinator's clock.
    /// [`Error::LockLost`] if it is no longer ours.
    pub async fn extend(&self, lock_for: Duration) -> Result<()> {
        self.shared.extend(lock_for).await
    }

    /// Releases the lock, honouring `lock_at_least_for`, and reports errors.
    /// A lease that was lost while held is [`Error::LockLost`]: the work that
    /// ran under it was not protected for its whole duration. (A release is
    /// still sent then, matched on this acquisition, in case a cancelled
    /// extension revived the lease at the coordinator.)
    ///
    /// Cancelling this future leaves the background release of `Drop` in charge.
    pub async fn release(mut self) -> Result<()> {
        let shared = self.shared.clone();
        let _op = shared.op_lock.lock().await;
        if let Some(w) = self.watchdog.take() {
            // abort() does not stop a poll already running on another worker:
            // wait until the watchdog is really gone, so it cannot mark a
            // successfully released lease lost.
            w.abort();
            let _ = w.await;
        }
        let sent = shared.send_release().await;
        self.done = true;
        if let Some(reason) = shared.lost_reason() {
            return Err(Error::lost(&shared.lease().name, reason));
        }
        sent
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let watchdog = self.watchdog.take();
        if self.done {
            if let Some(w) = watchdog {
                w.abort();
            }
            return;
        }
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    // Wait for an extension in flight, then stop the watchdog and release.
                    let _op = shared.op_lock.lock().await;
                    if let Some(w) = watchdog {
                        w.abort();
                        let _ = w.await;
                    }
                    if let Err(e) = shared.send_release().await {
                        let lease = shared.lease().clone();
                        if shared.lost_reason().is_none() {
                            tracing::warn!(backend = shared.backend.kind(), lock = %lease.name, error = %e,
                                "dlock: background release on drop failed; the lease expires by itself");
                        }
                    }
                });
            }
            Err(_) => {
                if let Some(w) = watchdog {
                    w.abort();
                }
                tracing::warn!(
                    "dlock: guard dropped outside a tokio runtime; the lease expires by itself"
                );
            }
        }
    }
}

/// Keeps the lease alive (or watches it run out) and marks loss.
async fn watchdog(
    shared: std::sync::Weak<GuardShared>,
    keep_alive: bool,
    loss: Option<BoxFuture<'static, String>>,
) {
    let mut loss = match loss {
        Some(f) => f.fuse(),
        None => futures::future::pending::<String>().boxed().fuse(),
    };
    let mut retry_delay = Duration::from_millis(50);
    loop {
        let Some(s) = shared.upgrade() else { return };
        let lease = s.lease().clone();
        drop(s);
        let wake = if keep_alive {
            renew_point(&lease).max(Instant::now())
        } else {
            lease.valid_until
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            reason = &mut loss => {
                if let Some(s) = shared.upgrade() { s.mark_lost(reason); }
                return;
            }
        }
        let Some(s) = shared.upgrade() else { return };
        let lease = s.lease().clone();
        let lease_len = lease.at_most;
        let current = lease.valid_until;
        if Instant::now() >= current {
            s.mark_lost(
                "lease expired: lock_at_most_for passed without a successful extension".into(),
            );
            return;
        }
        if !keep_alive || Instant::now() < renew_point(&lease) {
            // Extended in the meantime (by hand): sleep until the new point.
            continue;
        }
        let deadline = tokio::time::sleep_until(current.into());
        tokio::select! {
            r = s.extend(lease_len) => match r {
                Ok(()) => retry_delay = Duration::from_millis(50),
                Err(e) if e.is_lock_lost() => return,
                Err(e) => {
                    tracing::warn!(backend = s.backend.kind(), lock = %lease.name, error = %e, "dlock: keep-alive failed, retrying");
                    let pause = retry_delay.min(lease_len / 10);
                    retry_delay = (retry_delay * 2).min(Duration::from_secs(2));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        reason = &mut loss => { s.mark_lost(reason); return; }
                    }
                    if Instant::now() >= s.lease().valid_until {
                        s.mark_lost(format!("lease ran out while the coordinator could not be reached: {e}"));
                        return;
                    }
                }
            },
            _ = deadline => {
                s.mark_lost("lease ran out while an extension was still in flight".into());
                return;
            }
            reason = &mut loss => { s.mark_lost(reason); return; }
        }
    }
}

/// When keep-alive extends: a third of the lease after the last grant.
fn renew_point(lease: &Lease) -> Instant {
    lease
        .valid_until
        .checked_sub(lease.at_most.mul_f64(2.0 / 3.0))
        .unwrap_or(lease.acquired_at)
}
