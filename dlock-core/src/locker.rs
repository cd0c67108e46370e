//! [`Locker`]: the backend-neutral API users call.

use crate::waiting_line::WaitingLines;
use crate::{
    default_owner, validate_owner, FencingToken, LockBackend, LockGuard, LockInfo, LockName,
    LockSpec, LostSignal, Result,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How to take a lock: lease bounds, waiting and keep-alive.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "options do nothing until passed to a locker"]
pub struct LockOptions {
    /// `lock_at_most_for`: the lease length.
    pub lock_for: Duration,
    /// `lock_at_least_for`: the minimum hold, even across an early release.
    pub at_least: Duration,
    /// How long to wait for a held lock. `None` (the default):
    /// [`Acquire::lock`] waits until it gets the lock, while
    /// [`Locker::run_exclusive`] and scheduled jobs do not wait (they skip
    /// when another owner holds it). `Some(Duration::ZERO)`: answer at once.
    pub wait: Option<Duration>,
    /// Extend the lease every third of its length while the guard lives.
    pub keep_alive: bool,
    /// A hard ceiling on one hold, counted from the acquisition: keep-alive
    /// never carries a guard past it; there the guard stops renewing and is
    /// lost (`lost()` completes, `is_held()` turns false). `None` (the
    /// default): keep-alive renews for as long as the guard lives.
    pub max_hold: Option<Duration>,
    /// For [`Locker::run_exclusive`] (and `#[try_lock]`, scheduled jobs):
    /// stop the work (drop its future) as soon as the lease is lost and
    /// answer [`Error::LockLost`](crate::Error::LockLost), rather than let
    /// it run on unprotected while another node may take the lock. On by
    /// default; turn it off for work that must not be interrupted at an
    /// `.await` (it then runs to its end and the answer is still `LockLost`).
    /// A guard from [`Acquire::lock`] is not affected: its owner watches
    /// [`LockGuard::lost`].
    pub cancel_on_lost: bool,
}

impl LockOptions {
    /// A lease of `lock_for`, no `at_least`, no wait set, keep-alive on,
    /// no `max_hold`, work cancelled on loss.
    pub fn new(lock_for: Duration) -> Self {
        LockOptions {
            lock_for,
            at_least: Duration::ZERO,
            wait: None,
            keep_alive: true,
            max_hold: None,
            cancel_on_lost: true,
        }
    }

    /// Sets `lock_at_least_for`.
    pub fn at_least(mut self, at_least: Duration) -> Self {
        self.at_least = at_least;
        self
    }

    /// Sets how long to wait for a held lock.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Turns keep-alive on or off.
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }

    /// Sets the ceiling on one hold (see [`LockOptions::max_hold`]).
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.max_hold = Some(max_hold);
        self
    }

    /// Whether [`Locker::run_exclusive`] stops the work when the lease is
    /// lost (see [`LockOptions::cancel_on_lost`]).
    pub fn cancel_on_lost(mut self, on: bool) -> Self {
        self.cancel_on_lost = on;
        self
    }
}

impl Default for LockOptions {
    /// Ten-minute lease, keep-alive on.
    fn default() -> Self {
        LockOptions::new(Duration::from_secs(600))
    }
}

/// What a [`Locker::run_exclusive`] closure receives.
#[derive(Clone, Debug)]
pub struct LockContext {
    /// The lock name.
    pub name: LockName,
    /// The fencing token to hand to the resource being protected.
    pub token: FencingToken,
    /// Completes if the lease is lost while the closure runs.
    pub lost: LostSignal,
}

/// Owner + backend + default options. Cheap to clone.
///
/// ```no_run
/// # async fn f(locker: dlock_core::Locker) -> dlock_core::Result<()> {
/// use std::time::Duration;
/// if let Some(guard) = locker.try_lock("emailLock", Duration::from_secs(600)).await? {
///     println!("running with token {}", guard.token());
///     guard.release().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Locker {
    backend: Arc<dyn LockBackend>,
    owner: String,
    defaults: LockOptions,
    /// Shared by clones (and `with_owner` copies): waiters of this process
    /// for one name queue here, so one asks the coordinator at a time.
    lines: Arc<WaitingLines>,
}

impl std::fmt::Debug for Locker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locker")
            .field("backend", &self.backend.kind())
            .field("owner", &self.owner)
            .field("defaults", &self.defaults)
            .finish()
    }
}

impl Locker {
    /// A locker on `backend` with the default owner (`host:pid`).
    pub fn new(backend: impl LockBackend) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    /// A locker on a shared backend.
    pub fn from_arc(backend: Arc<dyn LockBackend>) -> Self {
        Locker {
            backend,
            owner: default_owner(),
            defaults: LockOptions::default(),
            lines: Arc::default(),
        }
    }

    /// Sets the owner (a node name). Fails on an empty or over-long owner.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Result<Self> {
        let owner = owner.into();
        validate_owner(&owner)?;
        self.owner = owner;
        Ok(self)
    }

    /// Sets the options `acquire` starts from.
    pub fn with_defaults(mut self, defaults: LockOptions) -> Self {
        self.defaults = defaults;
        self
    }

    /// The options [`Locker::acquire`] starts from.
    pub fn defaults(&self) -> &LockOptions {
        &self.defaults
    }

    /// The owner this locker acquires as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn LockBackend> {
        &self.backend
    }

    /// Starts a builder for `name` from this locker's defaults.
    pub fn acquire(&self, name: impl Into<String>) -> Acquire<'_> {
        Acquire {
            locker: self,
            name: name.into(),
            opts: self.defaults.clone(),
        }
    }

    /// Takes `name` for `lock_for` (keep-alive on) or answers `Ok(None)` at
    /// once when someone else holds it.
    pub async fn try_lock(
        &self,
        name: impl Into<String>,
        lock_for: Duration,
    ) -> Result<Option<LockGuard>> {
        self.acquire(name).lock_for(lock_for).try_lock().await
    }

    /// Runs `f` only if `name` could be taken (waiting up to `opts.wait`;
    /// without a wait set, not at all), keeping the lease alive while it
    /// runs and releasing it afterwards.
    ///
    /// `Ok(Some(value))` when it ran, `Ok(None)` when skipped. If the lease
    /// was lost while `f` ran, the answer is [`Error::LockLost`](crate::Error::LockLost), so the
    /// caller learns the work was not protected throughout; with
    /// `cancel_on_lost` (the default) `f`'s future is dropped at the loss,
    /// before the coordinator can grant the lock to anyone else.
    ///
    /// ```no_run
    /// # async fn f(locker: dlock_core::Locker) -> dlock_core::Result<()> {
    /// use dlock_core::LockOptions;
    /// use std::time::Duration;
    /// let opts = LockOptions::new(Duration::from_secs(60)).max_hold(Duration::from_secs(3600));
    /// match locker.run_exclusive("nightly-import", opts, |ctx| async move {
    ///     println!("importing under token {}", ctx.token);
    /// }).await {
    ///     Ok(Some(())) => println!("imported"),
    ///     Ok(None) => println!("another node is importing"),
    ///     Err(e) if e.is_lock_lost() => eprintln!("stopped: {e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn run_exclusive<T, F, Fut>(
        &self,
        name: impl Into<String>,
        opts: LockOptions,
        f: F,
    ) -> Result<Option<T>>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let waits = opts.wait.is_some();
        let cancel_on_lost = opts.cancel_on_lost;
        let acquire = self.acquire(name).options(opts);
        let taken = if waits {
            acquire.lock().await?
        } else {
            acquire.try_lock().await?
        };
        let Some(guard) = taken else {
            return Ok(None);
        };
        let ctx = LockContext {
            name: guard.name(),
            token: guard.token(),
            lost: guard.lost(),
        };
        let lost = ctx.lost.clone();
        let work = f(ctx);
        let value = if cancel_on_lost {
            lost.until_lost(work).await
        } else {
            Ok(work.await)
        };
        // Sent after a loss too: the lock frees now rather than at expiry
        // (and `release` answers `LockLost` for a lease lost while held).
        let released = guard.release().await;
        let value = value?;
        released?;
        Ok(Some(value))
    }

    /// Who holds `name` now, by the coordinator.
    pub async fn inspect(&self, name: impl Into<String>) -> Result<Option<LockInfo>> {
        let name = LockName::new(name)?;
        self.backend.inspect(&name).await
    }

    /// Every lock held now, in name order, where the backend can enumerate
    /// them (`Capabilities::list`); otherwise [`crate::Error::Unsupported`].
    pub async fn list(&self) -> Result<Vec<LockInfo>> {
        let mut all = self.backend.list().await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Operator override: frees `name` whoever holds it. Returns whether a
    /// valid lease was removed.
    pub async fn force_release(&self, name: impl Into<String>) -> Result<bool> {
        let name = LockName::new(name)?;
        self.backend.force_release(&name).await
    }
}

/// Builder returned by [`Locker::acquire`].
#[derive(Debug)]
#[must_use = "call .try_lock() or .lock()"]
pub struct Acquire<'a> {
    locker: &'a Locker,
    name: String,
    opts: LockOptions,
}

impl Acquire<'_> {
    /// Sets `lock_at_most_for`.
    pub fn lock_for(mut self, d: Duration) -> Self {
        self.opts.lock_for = d;
        self
    }

    /// Sets `lock_at_least_for`.
    pub fn at_least(mut self, d: Duration) -> Self {
        self.opts.at_least = d;
        self
    }

    /// Bounds how long `lock()` waits (`Ok(None)` when it runs out).
    pub fn wait(mut self, d: Duration) -> Self {
        self.opts.wait = Some(d);
        self
    }

    /// Turns keep-alive on or off.
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.opts.keep_alive = on;
        self
    }

    /// Sets a ceiling on the hold: keep-alive stops there and the guard is
    /// lost (see [`LockOptions::max_hold`]).
    pub fn max_hold(mut self, d: Duration) -> Self {
        self.opts.max_hold = Some(d);
        self
    }

    /// Replaces all options.
    pub fn options(mut self, opts: LockOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Answers at once: a guard, or `Ok(None)` when held by someone else.
    pub async fn try_lock(mut self) -> Result<Option<LockGuard>> {
        self.opts.wait = Some(Duration::ZERO);
        self.lock().await
    }

    /// Waits for the lock, like tokio's `Mutex::lock`: until it is taken,
    /// or up to the wait set with [`Acquire::wait`] (or the options'), then
    /// `Ok(None)`. Woken by the coordinator where it can notify, else by
    /// jittered polling.
    pub async fn lock(self) -> Result<Option<LockGuard>> {
        let backend = self.locker.backend.clone();
        let kind = backend.kind();
        let name = LockName::new(self.name)?;
        let spec = LockSpec::new(name, self.locker.owner.clone(), self.opts.lock_for)?
            .with_at_least(self.opts.at_least)?;
        backend.capabilities().check_spec(kind, &spec)?;
        if self.opts.max_hold.is_some_and(|d| d.is_zero()) {
            return Err(crate::Error::InvalidConfig(format!(
                "lock {:?}: max_hold must be greater than zero (leave it unset for no ceiling)",
                spec.name.as_str()
            )));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(crate::Error::InvalidConfig(
                "dlock needs a tokio runtime (guards keep their lease on it)".into(),
            ));
        }
        let started = Instant::now();
        // `None`: wait without a deadline (none set, or one too long to
        // represent).
        let deadline = self.opts.wait.and_then(|w| started.checked_add(w));
        let span = tracing::debug_span!("dlock.acquire", backend = kind, lock = %spec.name, owner = %spec.owner);
        let lines = self.locker.lines.clone();
        let outcome = async {
            // Set once this waiter is first in its process's line: the
            // first try skips the line (a free lock costs no queueing),
            // every later one waits its turn (waiting_line.rs).
            let mut turn = None;
            loop {
                if let Some(lease) = backend.try_acquire(&spec).await? {
                    metrics::counter!("dlock_acquired_total", "backend" => kind).increment(1);
                    metrics::histogram!("dlock_wait_seconds", "backend" => kind)
                        .record(started.elapsed().as_secs_f64());
                    tracing::debug!(token = lease.token.0, "acquired");
                    return LockGuard::start(
                        backend.clone(),
                        lease,
                        self.opts.keep_alive,
                        self.opts.max_hold,
                    )
                    .map(Some);
                }
                let now = Instant::now();
                let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
                if left.is_zero() {
                    metrics::counter!("dlock_skipped_total", "backend" => kind).increment(1);
                    tracing::debug!("held by another owner");
                    return Ok(None);
                }
                if turn.is_none() {
                    let queued = lines.turn(&spec.name);
                    turn = match deadline {
                        // Out of time in the line: one last try, below,
                        // answers (`Ok(None)` if still held).
                        Some(d) => tokio::time::timeout_at(d.into(), queued).await.ok(),
                        None => Some(queued.await),
                    };
                    // The lock may have changed hands while this waiter
                    // queued: ask again before waiting at the coordinator.
                    continue;
                }
                // One wait at a time is bounded, so backends never see a huge deadline.
                let step = left.min(Duration::from_secs(60));
                match backend.wait_for_release(&spec.name, step).await {
                    // A wait step that timed out is only "no news" (a
                    // stopped or starved process sees that too): the next
                    // try_acquire asks the coordinator itself and reports
                    // it if it really cannot be reached.
                    Ok(()) | Err(crate::Error::Timeout { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        .instrument(span)
        .await;
        if outcome.is_err() {
            metrics::counter!("dlock_acquire_errors_total", "backend" => kind).increment(1);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{async_trait, Capabilities, Lease, LockBackend, LockInfo};

    /// A backend whose lock is always held by someone else: enough to
    /// exercise the waiting loop's arithmetic without a coordinator.
    struct AlwaysHeld;

    #[async_trait]
    impl LockBackend for AlwaysHeld {
        fn kind(&self) -> &'static str {
            "always-held"
        }
        fn capabilities(&self) -> Capabilities {
            let mut c = Capabilities::new();
            c.poll_interval = Duration::from_millis(5);
            c
        }
        async fn try_acquire(&self, _: &LockSpec) -> crate::Result<Option<Lease>> {
            Ok(None)
        }
        async fn extend(&self, l: &Lease, _: Duration) -> crate::Result<Lease> {
            Err(crate::Error::lost(&l.name, "never held"))
        }
        async fn release(&self, l: &Lease) -> crate::Result<()> {
            Err(crate::Error::lost(&l.name, "never held"))
        }
        async fn inspect(&self, _: &LockName) -> crate::Result<Option<LockInfo>> {
            Ok(None)
        }
        async fn force_release(&self, _: &LockName) -> crate::Result<bool> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn an_endless_wait_does_not_overflow() {
        let locker = Locker::new(AlwaysHeld);
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            locker
                .acquire("x")
                .lock_for(Duration::from_secs(1))
                .wait(Duration::MAX)
                .lock(),
        )
        .await;
        assert!(r.is_err(), "still waiting, without a panic");
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let locker = Locker::new(AlwaysHeld);
        let r = futures::executor::block_on(locker.try_lock("x", Duration::from_secs(1)));
        assert!(matches!(r, Err(crate::Error::InvalidConfig(_))), "{r:?}");
    }
}
