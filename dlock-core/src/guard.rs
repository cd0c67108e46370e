//! [`LockGuard`]: a held lock with keep-alive, a loss signal and release.

use crate::clock::{self, BootInstant};
use crate::validity::Validity;
use crate::{Error, FencingToken, Lease, LockBackend, LockName, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
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
#[derive(Clone)]
pub struct LostSignal {
    validity: Arc<Validity>,
}

impl std::fmt::Debug for LostSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LostSignal")
            .field("reason", &self.reason())
            .finish()
    }
}

impl LostSignal {
    /// True once the lease is known or presumed gone (also once its local
    /// validity has run out, whether or not any task noticed).
    pub fn is_lost(&self) -> bool {
        self.validity.check().is_some()
    }

    /// The reason, once lost.
    pub fn reason(&self) -> Option<String> {
        self.validity.check()
    }

    /// Waits until the lease is lost and returns why: no later than the end
    /// of its local validity, even if the task or runtime that kept it alive
    /// is gone. Never completes for a lease that is released normally and
    /// never lost.
    pub async fn wait(&self) -> String {
        self.validity.wait_lost().await
    }

    /// Runs `work` until it completes or the lease is lost, whichever comes
    /// first. At a loss `work` is dropped where it waits (no later than the
    /// end of the lease's local validity, so before the coordinator can
    /// grant the lock to anyone else, as long as `work` reaches an `.await`)
    /// and the answer is [`Error::LockLost`] with the reason.
    ///
    /// ```no_run
    /// # async fn f(guard: dlock_core::LockGuard) -> dlock_core::Result<()> {
    /// let rows = guard.lost().until_lost(copy_rows()).await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// # async fn copy_rows() -> u64 { 0 }
    /// ```
    pub async fn until_lost<F: std::future::Future>(&self, work: F) -> Result<F::Output> {
        tokio::select! {
            // A lease already lost does not start the work.
            biased;
            reason = self.wait() => Err(Error::lost(&self.validity.name(), reason)),
            value = work => Ok(value),
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
    validity: Arc<Validity>,
    /// Serializes extend and release so a release never races an extension,
    /// and a keep-alive never works from a stale view of the lease.
    op_lock: tokio::sync::Mutex<()>,
}

impl GuardShared {
    fn lease(&self) -> Lease {
        self.validity.lease()
    }

    fn lost_error(&self, reason: String) -> Error {
        Error::lost(&self.validity.name(), reason)
    }

    /// A release the coordinator answered with "not yours" proves the lease
    /// was lost while held: latch that, so `lost()` (and `is_held()` on any
    /// clone of the signal) tells every watcher what `release()` tells its
    /// caller. Without a watch or a passed deadline nothing else would.
    fn note_lost_on_release(&self, sent: &Result<()>) {
        if let Err(Error::LockLost { reason, .. }) = sent {
            self.validity.mark_lost(reason.clone());
        }
    }

    /// Sends the release of the current lease (explicit or on drop), with
    /// its span and metrics.
    async fn send_release(&self) -> Result<()> {
        let lease = self.lease();
        let kind = self.backend.kind();
        let span = tracing::debug_span!("dlock.release", backend = kind, lock = %lease.name, token = lease.token.0);
        let r = self.backend.release(&lease).instrument(span).await;
        if self.validity.check().is_none() {
            metrics::histogram!("dlock_hold_seconds", "backend" => kind)
                .record(lease.acquired_at.elapsed().as_secs_f64());
        }
        if r.is_err() {
            metrics::counter!("dlock_release_errors_total", "backend" => kind).increment(1);
        }
        r
    }

    /// A user's extension.
    async fn extend(&self, lock_for: Duration) -> Result<()> {
        let _op = self.op_lock.lock().await;
        self.extend_locked(lock_for).await
    }

    /// The keep-alive's extension: with the lease's *current* length, read
    /// under the operation lock, so it never re-applies a length a manual
    /// extension has just replaced. Does nothing if a manual extension
    /// moved the renew point while this waited.
    async fn renew(&self) -> Result<()> {
        let _op = self.op_lock.lock().await;
        let lease = self.lease();
        if !renew_point(&lease).has_passed() {
            return Ok(());
        }
        self.extend_locked(lease.at_most).await
    }

    async fn extend_locked(&self, lock_for: Duration) -> Result<()> {
        if let Some(r) = self.validity.check() {
            return Err(self.lost_error(r));
        }
        // If the new length is shorter than what is left, count on the
        // shorter one from now on: should this call be cancelled after the
        // coordinator applied it, the guard must not believe the longer.
        let sent = BootInstant::now();
        self.validity
            .shorten_to(crate::local_valid_until(sent, lock_for));
        let lease = self.lease();
        let span = tracing::debug_span!("dlock.extend", backend = self.backend.kind(), lock = %lease.name, token = lease.token.0);
        match self.backend.extend(&lease, lock_for).instrument(span).await {
            // An answer that arrives after the loss was declared (the
            // deadline passed while it was in flight) does not revive it.
            Ok(new) => self
                .validity
                .accept_extension(new, sent)
                .map_err(|r| self.lost_error(r)),
            Err(e) => {
                metrics::counter!("dlock_extend_failures_total", "backend" => self.backend.kind())
                    .increment(1);
                if e.is_lock_lost() {
                    self.validity.mark_lost(format!("{e:#}"));
                } else if !matches!(
                    e,
                    Error::Unsupported { .. } | Error::InvalidConfig(_) | Error::InvalidName { .. }
                ) {
                    // Anything but a refusal before sending: it may land later.
                    self.validity.note_unknown_outcome(lock_for);
                }
                Err(e)
            }
        }
    }
}

/// A held lock. Keeps itself alive (when asked to), signals loss, and is
/// released by [`LockGuard::release`] or, best effort, on drop.
#[must_use = "dropping the guard releases the lock at once (in the background)"]
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
        max_hold: Option<Duration>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidConfig("dlock guards need a tokio runtime to keep their lease".into())
        })?;
        let loss = backend.loss_signal(&lease);
        let bound = backend.validity_bound(&lease);
        let validity = Arc::new(Validity::new(backend.kind(), lease, bound, max_hold));
        let shared = Arc::new(GuardShared {
            backend,
            validity,
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
        self.shared.validity.name()
    }

    /// The fencing token of this acquisition.
    pub fn token(&self) -> FencingToken {
        self.shared.lease().token
    }

    /// A copy of the current lease (its validity moves with extensions).
    pub fn lease(&self) -> Lease {
        self.shared.lease()
    }

    /// The instant (on the local clock, which counts suspended time) at
    /// which [`LockGuard::is_held`] turns false unless an extension lands
    /// first: the lease's validity, or earlier when the backend can prove
    /// less (a ZooKeeper session not heard from). It never lies beyond the
    /// coordinator's own deadline for this lease.
    pub fn valid_until(&self) -> BootInstant {
        self.shared.validity.deadline()
    }

    /// True while the lease can be proven valid by the local clock (which
    /// counts suspended time) and no loss has been detected. Turns false no
    /// later than the coordinator's expiry, and once false it stays false:
    /// the guard is then lost, [`LockGuard::lost`] completes and every
    /// operation answers [`Error::LockLost`].
    pub fn is_held(&self) -> bool {
        !self.done && self.shared.validity.check().is_none()
    }

    /// A future that completes when the lease is gone or can no longer be
    /// proven (expired without extension, extension refused, coordinator gone),
    /// no later than the end of its local validity.
    pub fn lost(&self) -> LostSignal {
        LostSignal {
            validity: self.shared.validity.clone(),
        }
    }

    /// Extends the lease to `lock_for` from now, by the coordinator's clock.
    /// [`Error::LockLost`] if it is no longer ours, or was declared lost
    /// before the coordinator's answer arrived.
    ///
    /// An extension that fails without a clear answer (a timeout, a broken
    /// connection) may still land at the coordinator later, after a later
    /// extension succeeded. So from then on the guard counts on no more than
    /// that extension's length from any later grant (and keeps itself alive
    /// at that length): what it believes never outlasts what the coordinator
    /// holds, in any order of arrival.
    pub async fn extend(&self, lock_for: Duration) -> Result<()> {
        self.shared.extend(lock_for).await
    }

    /// Releases the lock, honouring `lock_at_least_for`, and reports errors.
    /// A lease that was lost while held (also: whose local validity ran out
    /// before the release completed) is [`Error::LockLost`]: the work that
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
        shared.note_lost_on_release(&sent);
        let lost = shared.validity.check();
        shared.validity.end();
        if let Some(reason) = lost {
            return Err(shared.lost_error(reason));
        }
        sent
    }
}

impl LockGuard {
    /// Ends this hold but keeps the lock taken `hold` longer, by the
    /// coordinator's clock: a `lock_at_least_for` decided at the end. The
    /// lease is extended to `hold` from now, keep-alive stops, no release
    /// is sent, and the coordinator's expiry frees the lock. Use it to
    /// remember "this ran" for a while (the scheduler keeps each firing's
    /// lock this way, so a late node skips a firing that already ran).
    ///
    /// `hold` must be a lease the backend honours ([`Error::Unsupported`]
    /// otherwise; the guard is then released as on drop). A lease lost
    /// while held is [`Error::LockLost`], as for [`LockGuard::release`]. An
    /// extension that fails (a timeout, say) is that error; no release is
    /// sent, so the lock expires on its own: at the deadline of the last
    /// grant, or of this one if it landed after all.
    pub async fn release_after(mut self, hold: Duration) -> Result<()> {
        let shared = self.shared.clone();
        shared
            .backend
            .capabilities()
            .check_lease(shared.backend.kind(), "release_after", hold)?;
        let _op = shared.op_lock.lock().await;
        if let Some(w) = self.watchdog.take() {
            // As in release(): the watchdog must be gone before the end.
            w.abort();
            let _ = w.await;
        }
        let extended = shared.extend_locked(hold).await;
        // No release either way: the point is to keep the lock taken, and
        // an extension that failed leaves the earlier grant to expire.
        self.done = true;
        if let Err(e) = extended {
            shared.validity.end();
            return Err(e);
        }
        let lost = shared.validity.check();
        shared.validity.end();
        match lost {
            Some(reason) => Err(shared.lost_error(reason)),
            None => Ok(()),
        }
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
                    let lost = shared.validity.check();
                    let sent = shared.send_release().await;
                    shared.note_lost_on_release(&sent);
                    shared.validity.end();
                    if let Err(e) = sent {
                        if lost.is_none() && !e.is_lock_lost() {
                            let lease = shared.lease();
                            tracing::warn!(backend = shared.backend.kind(), lock = %lease.name, error = %format_args!("{e:#}"),
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

/// Keeps the lease alive (or watches it run out) and reports what the
/// backend learns on its own. Expiry itself needs no task: the validity
/// latches it whenever anyone looks, and loss waiters time it themselves;
/// this task only has to look at the deadline so the loss is logged and
/// counted promptly.
async fn watchdog(
    shared: std::sync::Weak<GuardShared>,
    keep_alive: bool,
    loss: Option<BoxFuture<'static, String>>,
) {
    let mut loss = match loss {
        Some(f) => f.fuse(),
        None => futures::future::pending::<String>().boxed().fuse(),
    };
    // Jittered: many guards that failed on one coordinator outage retry apart.
    let mut retry = crate::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.validity.check().is_some() {
            return;
        }
        let deadline = s.validity.deadline();
        // Past `max_hold` nothing is renewed: the guard runs out there.
        let renewing = keep_alive && !s.validity.reaches_ceiling();
        let wake = if renewing {
            renew_point(&s.lease()).min(deadline)
        } else {
            deadline
        };
        drop(s);
        tokio::select! {
            _ = clock::sleep_until(wake) => {}
            reason = &mut loss => {
                if let Some(s) = shared.upgrade() { s.validity.mark_lost(reason); }
                return;
            }
        }
        let Some(s) = shared.upgrade() else { return };
        if s.validity.check().is_some() {
            return;
        }
        if !keep_alive || s.validity.reaches_ceiling() || !renew_point(&s.lease()).has_passed() {
            // Not due (a bound moved, or extended by hand): sleep again.
            continue;
        }
        let deadline = s.validity.deadline();
        tokio::select! {
            r = s.renew() => match r {
                Ok(()) => retry.reset(),
                Err(e) if e.is_lock_lost() => return,
                Err(e) => {
                    let lease_len = s.lease().at_most;
                    tracing::warn!(backend = s.backend.kind(), lock = %s.validity.name(), error = %format_args!("{e:#}"), "dlock: keep-alive failed, retrying");
                    let pause = retry.next_delay().min(lease_len / 10);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        reason = &mut loss => { s.validity.mark_lost(reason); return; }
                    }
                    if s.validity.check().is_some() {
                        return;
                    }
                }
            },
            // The deadline passed with the extension still in flight: the
            // next look at the validity latches the loss.
            _ = clock::sleep_until(deadline) => {}
            reason = &mut loss => { s.validity.mark_lost(reason); return; }
        }
    }
}

/// When keep-alive extends: a third of the lease after the last grant.
fn renew_point(lease: &Lease) -> BootInstant {
    lease
        .valid_until
        .checked_sub(lease.at_most.mul_f64(2.0 / 3.0))
        .unwrap_or(lease.acquired_at)
}
