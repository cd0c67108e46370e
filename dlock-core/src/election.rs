//! Leader election on the lock contract: [`Election`], [`Leadership`],
//! [`Observer`].
//!
//! Leading is holding the election's lock with keep-alive on; the term's
//! epoch is the lock's fencing token, so epochs strictly grow across terms
//! (across owners, resignations, expiries and restarts) on every backend.
//! Because a guard's local validity ends before the coordinator's expiry,
//! a leader that loses its lease is told ([`Leadership::lost`]) before any
//! other candidate can win. Observers read the holder from the coordinator
//! every poll interval of the backend.

use crate::{FencingToken, LockGuard, LockInfo, LockName, Locker, LostSignal, Result};
use std::time::Duration;

/// How long a leader's lease lasts unless renewed, by default: a dead
/// leader is replaced after at most this (plus the backend's slack).
pub const DEFAULT_TERM_LEASE: Duration = Duration::from_secs(15);

/// The longest an observer waits before it asks again who leads.
const OBSERVE_STEP: Duration = Duration::from_secs(1);

/// One election (a name every candidate and observer uses).
///
/// ```no_run
/// # async fn f(locker: dlock_core::Locker) -> dlock_core::Result<()> {
/// let election = locker.election("scheduler")?;
/// let leadership = election.campaign().await?;
/// println!("leading in epoch {}", leadership.epoch());
/// tokio::select! {
///     reason = leadership.lost() => eprintln!("no longer leading: {reason}"),
///     _ = lead() => leadership.resign().await?,
/// }
/// # Ok(()) }
/// # async fn lead() {}
/// ```
#[derive(Clone, Debug)]
pub struct Election {
    locker: Locker,
    name: LockName,
    lease: Duration,
}

/// Who leads, in which epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's owner (node name).
    pub owner: String,
    /// The term's epoch: the fencing token of the leader's lease. Strictly
    /// greater for every later term.
    pub epoch: FencingToken,
}

impl From<LockInfo> for Leader {
    fn from(info: LockInfo) -> Self {
        Leader {
            owner: info.owner,
            epoch: info.token,
        }
    }
}

impl Locker {
    /// The election `name`, campaigned in as this locker's owner. Fails on
    /// an invalid name.
    pub fn election(&self, name: impl Into<String>) -> Result<Election> {
        let lease = self
            .backend()
            .capabilities()
            .round_up_lease(DEFAULT_TERM_LEASE);
        Ok(Election {
            locker: self.clone(),
            name: LockName::new(name)?,
            lease,
        })
    }
}

impl Election {
    /// Sets the leader's lease (renewed every third of it while leading):
    /// how long a dead leader keeps the election. It must be a lease the
    /// backend honours, or campaigning is [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The election's name.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// Waits until this node leads. Woken by the coordinator where it can
    /// notify of a release, else by polling.
    pub async fn campaign(&self) -> Result<Leadership> {
        loop {
            // In hour-long waits, each of which may run out: then again.
            if let Some(guard) = self
                .acquire()
                .wait(Duration::from_secs(3600))
                .lock()
                .await?
            {
                return Ok(self.elected(guard));
            }
        }
    }

    /// Leads if nobody does now; `Ok(None)` when another node leads.
    pub async fn try_campaign(&self) -> Result<Option<Leadership>> {
        let guard = self.acquire().try_lock().await?;
        Ok(guard.map(|g| self.elected(g)))
    }

    /// Who leads now, by the coordinator.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        let info = self.locker.backend().inspect(&self.name).await?;
        Ok(info.map(Leader::from))
    }

    /// Follows who leads: each [`Observer::next`] answers the next change
    /// (the first call: the current state). Candidates and non-candidates
    /// alike can observe.
    pub fn observe(&self) -> Observer {
        Observer {
            election: self.clone(),
            last: None,
        }
    }

    fn acquire(&self) -> crate::Acquire<'_> {
        self.locker
            .acquire(self.name.as_str())
            .lock_for(self.lease)
            .at_least(Duration::ZERO)
            .keep_alive(true)
    }

    fn elected(&self, guard: LockGuard) -> Leadership {
        tracing::info!(election = %self.name, owner = %self.locker.owner(), epoch = guard.token().0, "dlock: leading");
        metrics::counter!("dlock_elected_total", "backend" => self.locker.backend().kind())
            .increment(1);
        Leadership { guard }
    }
}

/// This node leads, until [`Leadership::resign`] or a loss.
#[derive(Debug)]
#[must_use = "dropping the leadership resigns at once (in the background)"]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    /// The term's epoch: pass it to whatever the leader writes, so a
    /// resource can refuse an older term (`... WHERE epoch < $epoch`).
    pub fn epoch(&self) -> FencingToken {
        self.guard.token()
    }

    /// True while this node can prove it leads (see [`LockGuard::is_held`]):
    /// false before another node can be elected.
    pub fn is_leader(&self) -> bool {
        self.guard.is_held()
    }

    /// Completes when leadership is lost (lease expired, coordinator gone,
    /// taken away by an operator), before another node can lead.
    pub fn lost(&self) -> LostSignal {
        self.guard.lost()
    }

    /// Steps down so another candidate can lead now. [`Error::LockLost`](crate::Error::LockLost) if
    /// leadership had been lost already.
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }
}

/// Follows an election: see [`Election::observe`].
#[derive(Debug)]
pub struct Observer {
    election: Election,
    /// What the last answer was; `None` before the first.
    last: Option<Option<Leader>>,
}

impl Observer {
    /// The next change of leader: `Some(leader)` for a new term, `None`
    /// when nobody leads. The first call answers at once with the current
    /// state. The coordinator is asked every poll interval of the backend
    /// (`Capabilities::poll_interval`, jittered, at most a second), so a
    /// term shorter than that may be missed; epochs still only grow, so a
    /// gap in them shows it.
    pub async fn next(&mut self) -> Result<Option<Leader>> {
        let backend = self.election.locker.backend().clone();
        let poll = backend.capabilities().poll_interval;
        loop {
            let now = self.election.leader().await?;
            if self.last.as_ref() != Some(&now) {
                self.last = Some(now.clone());
                return Ok(now);
            }
            // Polled, not woken: `wait_for_release` is for callers that
            // try to acquire next (on ZooKeeper it queues the caller as a
            // waiter), and an observer never does.
            tokio::time::sleep(crate::jittered(poll).min(OBSERVE_STEP)).await;
        }
    }
}
