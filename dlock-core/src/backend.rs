//! The trait every coordinator adapter implements.

use crate::{Error, Lease, LockInfo, LockName, LockSpec, Result, ValidityBound};
use async_trait::async_trait;
use futures::future::BoxFuture;
use rand::Rng;
use std::time::Duration;

/// What a backend can and cannot do; the conformance suite reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Shortest `lock_at_most_for` the backend honours.
    pub min_lease: Duration,
    /// Longest `lock_at_most_for` the backend honours, if bounded.
    pub max_lease: Option<Duration>,
    /// Leases must be a whole multiple of this (e.g. one second on etcd).
    /// A lease that is not is rejected as `Unsupported`, never rounded.
    pub lease_granularity: Duration,
    /// How much later than `at_most` an abandoned lock may become free.
    pub expiry_slack: Duration,
    /// How much later than `acquired + at_least` a lock released early may
    /// become free (backends that time the `at_least` hold with coarse
    /// leases, e.g. whole seconds with a minimum, hold it a little longer;
    /// never shorter).
    pub at_least_slack: Duration,
    /// Whether a release wakes waiters at once (otherwise they poll).
    pub release_notifies_waiters: bool,
    /// Whether `lock_at_least_for` holds after the holder process exits.
    pub at_least_survives_exit: bool,
    /// Whether the coordinator is reached over the network (so it can be
    /// "gone" while the process lives).
    pub networked: bool,
    /// Polling interval used by the default `wait_for_release`.
    pub poll_interval: Duration,
    /// Whether expiry is decided by a clock outside the client process (a
    /// server's). False for embedded SQLite, whose "coordinator clock" is the
    /// host clock as read by whichever process runs the statement.
    pub server_clock: bool,
    /// Whether [`LockBackend::list`] can enumerate the held locks.
    pub list: bool,
    /// Whether backends in different processes, connected to the same
    /// URL, share locks. False only for an in-process store (tests).
    pub shared_across_processes: bool,
}

impl Capabilities {
    /// Defaults for a backend with no limits worth declaring.
    pub fn new() -> Self {
        Capabilities {
            min_lease: Duration::from_millis(1),
            max_lease: None,
            lease_granularity: Duration::from_micros(1),
            expiry_slack: Duration::from_millis(50),
            at_least_slack: Duration::from_millis(50),
            release_notifies_waiters: false,
            at_least_survives_exit: true,
            networked: true,
            poll_interval: Duration::from_millis(200),
            server_clock: true,
            list: false,
            shared_across_processes: true,
        }
    }

    /// Checks a requested lease length against these capabilities.
    pub fn check_lease(&self, backend: &'static str, what: &str, lease: Duration) -> Result<()> {
        if lease < self.min_lease {
            return Err(Error::unsupported(
                backend,
                format!(
                    "{what} of {lease:?} is shorter than the shortest lease this backend honours ({:?})",
                    self.min_lease
                ),
            ));
        }
        if let Some(max) = self.max_lease {
            if lease > max {
                return Err(Error::unsupported(
                    backend,
                    format!("{what} of {lease:?} is longer than the longest lease this backend honours ({max:?})"),
                ));
            }
        }
        let g = self.lease_granularity.as_nanos();
        if g > 1 && lease.as_nanos() % g != 0 {
            return Err(Error::unsupported(
                backend,
                format!(
                    "{what} of {lease:?} is not a whole multiple of {:?}; this backend would have to round it",
                    self.lease_granularity
                ),
            ));
        }
        Ok(())
    }

    /// Checks every duration of a spec against these capabilities.
    pub fn check_spec(&self, backend: &'static str, spec: &LockSpec) -> Result<()> {
        spec.validate()?;
        self.check_lease(backend, "lock_at_most_for", spec.at_most)?;
        if !spec.at_least.is_zero() {
            let g = self.lease_granularity.as_nanos();
            if g > 1 && spec.at_least.as_nanos() % g != 0 {
                return Err(Error::unsupported(
                    backend,
                    format!(
                        "lock_at_least_for of {:?} is not a whole multiple of {:?}",
                        spec.at_least, self.lease_granularity
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The shortest lease the conformance suite should use: at least
    /// `floor`, at least `min_lease`, rounded up to the granularity.
    pub fn test_lease(&self, floor: Duration) -> Duration {
        self.round_up_lease(floor)
    }

    /// The shortest lease this backend honours that is at least `floor`:
    /// at least `min_lease`, rounded up to the granularity (not capped at
    /// `max_lease`). For callers to whom a longer lease is always safe.
    pub fn round_up_lease(&self, floor: Duration) -> Duration {
        let want = floor.max(self.min_lease);
        let g = self.lease_granularity.as_nanos().max(1);
        let n = want.as_nanos().div_ceil(g) * g;
        Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}

/// A coordinator adapter. Implementations are cheap to share (`Arc`) and
/// every network call has a deadline.
///
/// The [`crate::Locker`] builds everything users see on these few calls.
#[async_trait]
pub trait LockBackend: Send + Sync + 'static {
    /// Short backend kind, e.g. `"sqlite"`, used in errors and metrics.
    fn kind(&self) -> &'static str;

    /// What this backend can and cannot do.
    fn capabilities(&self) -> Capabilities;

    /// Takes the lock in one atomic operation at the coordinator, or answers
    /// `Ok(None)` when another valid lease holds it. The coordinator's clock
    /// decides expiry; the returned token is strictly greater than every
    /// earlier token for this name.
    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>>;

    /// Extends this exact lease so it expires `lock_for` from now, by the
    /// coordinator's clock. [`Error::LockLost`] if the lease is no longer
    /// the valid holder; nothing changes then.
    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease>;

    /// Releases this exact lease, honouring `at_least`: the lock stays taken
    /// until `acquired + at_least` by the coordinator's clock. Releasing a
    /// stale lease is [`Error::LockLost`] and changes nothing.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Who holds `name` now, if anyone holds a valid lease.
    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>>;

    /// Every lock held now (valid leases only), in any order. Backends that
    /// cannot enumerate answer [`Error::Unsupported`] (the default) and
    /// declare `list: false`.
    async fn list(&self) -> Result<Vec<LockInfo>> {
        Err(Error::unsupported(
            self.kind(),
            "listing locks; inspect them one name at a time",
        ))
    }

    /// Operator override: frees `name` whoever holds it, ignoring `at_least`.
    /// Returns whether a valid lease was removed. The token counter survives.
    async fn force_release(&self, name: &LockName) -> Result<bool>;

    /// Returns when `name` may have become free, or after at most `max_wait`.
    /// The default sleeps a jittered poll interval; backends that can be
    /// notified (LISTEN/NOTIFY, watches, blocking queries) override it.
    /// Only for a caller that tries to acquire `name` next: a backend may
    /// queue the caller as a waiter here (ZooKeeper keeps a ticket node in
    /// the lock's queue for the next attempt), so a caller that only wants
    /// to watch must poll [`LockBackend::inspect`] instead.
    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        let _ = name;
        tokio::time::sleep(jittered(self.capabilities().poll_interval).min(max_wait)).await;
        Ok(())
    }

    /// A future that completes when the backend learns, on its own, that
    /// `lease` is gone (a ZooKeeper session expired, an etcd keep-alive
    /// stream failed). `None` when the backend has no such signal; the guard
    /// then relies on extension results and local validity.
    fn loss_signal(&self, lease: &Lease) -> Option<BoxFuture<'static, String>> {
        let _ = lease;
        None
    }

    /// A bound on how long `lease` can be proven valid besides its own
    /// length, for a backend whose leases can end sooner than
    /// `lock_at_most_for` (a ZooKeeper session that may expire first).
    /// The guard takes the minimum of both in `is_held()` and `lost()`.
    /// `None` (the default): the lease's own validity is the only bound.
    fn validity_bound(&self, lease: &Lease) -> Option<ValidityBound> {
        let _ = lease;
        None
    }
}

/// `base` scaled by a random factor in [0.5, 1.5), so pollers spread out.
pub fn jittered(base: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.5..1.5);
    base.mul_f64(f)
}
