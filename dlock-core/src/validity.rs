//! One guard's validity: its lease, every bound on how long the lease can be
//! proven, and the latched loss. `is_held()`, `lost()` and every operation
//! on the guard read the same state, so they can never tell the user two
//! different things.
//!
//! Rules:
//! - the deadline is the minimum of every bound: the lease's own local
//!   validity, where the backend has one its [`ValidityBound`], and the
//!   user's `max_hold` ceiling, counted from the acquisition's send instant;
//! - nothing has to run for the deadline to take effect: whoever looks
//!   first after it passed (`is_held`, `lost()`, an operation) latches the
//!   loss;
//! - a loss is final: once latched, nothing un-loses the guard.

use crate::clock::{self, BootInstant};
use crate::{local_valid_until, Lease, LockName};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// A backend's own bound on how long a lease can be proven valid, besides
/// the lease's length: for example a ZooKeeper session's last proof of life
/// plus the part of the session timeout the server may use. Called on every
/// `is_held()`, so it must be cheap and must not block. The instant it
/// returns may move later over time, never earlier than the truth.
pub type ValidityBound = Arc<dyn Fn() -> BootInstant + Send + Sync>;

struct State {
    lease: Lease,
    /// The shortest extension whose outcome is unknown (it timed out or its
    /// connection broke): it may still land at the coordinator at any later
    /// time and set the deadline to *its* length from then. From then on the
    /// guard never believes more than that length from any later grant.
    unknown_floor: Option<Duration>,
    lost: Option<String>,
    /// Released on purpose (explicitly or on drop): the loss signal then
    /// never completes.
    ended: bool,
}

pub(crate) struct Validity {
    kind: &'static str,
    state: Mutex<State>,
    /// Bumped on every change of `state`, to wake loss waiters.
    changed: watch::Sender<u64>,
    bound: Option<ValidityBound>,
    /// `max_hold`: the instant no extension may carry the guard past, and
    /// the length it was set from (for the loss reason).
    ceiling: Option<(BootInstant, Duration)>,
}

impl Validity {
    pub(crate) fn new(
        kind: &'static str,
        lease: Lease,
        bound: Option<ValidityBound>,
        max_hold: Option<Duration>,
    ) -> Self {
        // A ceiling too far out to represent is no ceiling.
        let ceiling = max_hold.and_then(|d| Some((lease.acquired_at.checked_add(d)?, d)));
        Validity {
            kind,
            state: Mutex::new(State {
                lease,
                unknown_floor: None,
                lost: None,
                ended: false,
            }),
            changed: watch::channel(0).0,
            bound,
            ceiling,
        }
    }

    /// The `max_hold` ceiling, if one was set.
    pub(crate) fn ceiling(&self) -> Option<BootInstant> {
        self.ceiling.map(|(at, _)| at)
    }

    /// True when the current grant already lasts to the `max_hold` ceiling,
    /// so extending it would prove nothing more: keep-alive stops.
    pub(crate) fn reaches_ceiling(&self) -> bool {
        self.ceiling()
            .is_some_and(|c| self.state().lease.valid_until >= c)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn lease(&self) -> Lease {
        self.state().lease.clone()
    }

    pub(crate) fn name(&self) -> LockName {
        self.state().lease.name.clone()
    }

    /// The instant after which the lease can no longer be proven valid.
    pub(crate) fn deadline(&self) -> BootInstant {
        let own = self.state().lease.valid_until;
        let own = match self.ceiling() {
            Some(c) => own.min(c),
            None => own,
        };
        match &self.bound {
            Some(b) => own.min(b()),
            None => own,
        }
    }

    /// Why the lease is lost, if it is. Latches a passed deadline as a loss
    /// (so this is the one place where "time ran out" turns into "lost").
    pub(crate) fn check(&self) -> Option<String> {
        let (own, lost) = {
            let s = self.state();
            (s.lease.valid_until, s.lost.clone())
        };
        if lost.is_some() {
            return lost;
        }
        let now = BootInstant::now();
        // The ceiling names itself only when it is what ran out first.
        if let Some((_, max_hold)) = self.ceiling.filter(|(at, _)| now >= *at && *at <= own) {
            self.mark_lost(format!(
                "held for max_hold ({}): keep-alive stops renewing there and the hold ends",
                humantime::format_duration(max_hold)
            ));
        } else if now >= own {
            self.mark_lost(
                "lease ran out: lock_at_most_for passed without a successful extension".into(),
            );
        } else if let Some(b) = &self.bound {
            if now >= b() {
                self.mark_lost(format!(
                    "the {} backend can no longer prove the lease alive (its session or \
                     shared lease may have expired at the coordinator)",
                    self.kind
                ));
            }
        }
        self.state().lost.clone()
    }

    /// Latches a loss; the first reason wins. Returns whether this call did it.
    pub(crate) fn mark_lost(&self, reason: String) -> bool {
        let name = {
            let mut s = self.state();
            if s.lost.is_some() || s.ended {
                return false;
            }
            s.lost = Some(reason.clone());
            s.lease.name.clone()
        };
        self.bump();
        tracing::warn!(backend = self.kind, lock = %name, %reason, "dlock lease lost");
        metrics::counter!("dlock_lost_total", "backend" => self.kind).increment(1);
        true
    }

    /// Takes a newly extended lease, unless the guard was lost while the
    /// extension was in flight (its deadline passed, or a loss was
    /// reported): then the answer comes too late and the loss stands.
    ///
    /// `sent` is the local instant taken before the extension was sent. An
    /// earlier extension whose outcome is unknown caps what the new one is
    /// believed to give (see [`Validity::note_unknown_outcome`]).
    pub(crate) fn accept_extension(&self, mut new: Lease, sent: BootInstant) -> Result<(), String> {
        if let Some(r) = self.check() {
            return Err(r);
        }
        {
            let mut s = self.state();
            if let Some(r) = &s.lost {
                return Err(r.clone());
            }
            if let Some(floor) = s.unknown_floor.filter(|f| *f < new.at_most) {
                new.valid_until = new.valid_until.min(local_valid_until(sent, floor));
                new.at_most = floor;
            }
            s.lease = new;
        }
        self.bump();
        Ok(())
    }

    /// Counts on the lease ending no later than `until` from now on (before
    /// a shortening extension is sent: should it apply, the guard must not
    /// believe the longer one).
    pub(crate) fn shorten_to(&self, until: BootInstant) {
        let mut s = self.state();
        if until < s.lease.valid_until {
            s.lease.valid_until = until;
        }
    }

    /// An extension of `lock_for` failed without a clear answer (timed out,
    /// connection broken): it may have applied, or may still apply later —
    /// a request stuck in a slow connection can land after a later
    /// extension succeeded and move the coordinator's deadline back to
    /// `lock_for` from then. That deadline is never earlier than `lock_for`
    /// after any later extension's send instant, so capping every later
    /// grant at `lock_for` keeps the guard's belief at or below the
    /// coordinator's in every order of arrival ("later wins" for the guard).
    pub(crate) fn note_unknown_outcome(&self, lock_for: Duration) {
        let mut s = self.state();
        s.unknown_floor = Some(s.unknown_floor.map_or(lock_for, |f| f.min(lock_for)));
    }

    /// The lease was released on purpose: the loss signal never completes.
    pub(crate) fn end(&self) {
        self.state().ended = true;
        self.bump();
    }

    fn is_ended(&self) -> bool {
        self.state().ended
    }

    /// Completes with the reason once the lease is lost, no later than its
    /// deadline (whether or not any other task runs); never completes for a
    /// lease that was released without loss.
    pub(crate) async fn wait_lost(&self) -> String {
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(r) = self.check() {
                return r;
            }
            if self.is_ended() {
                futures::future::pending::<()>().await;
            }
            let deadline = self.deadline();
            tokio::select! {
                _ = rx.changed() => {}
                _ = clock::sleep_until(deadline) => {}
            }
        }
    }
}
