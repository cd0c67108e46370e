//! Cases for one promise: local validity never outlives the coordinator.
//! A lease's local validity counts from the moment its request was *sent*
//! (the coordinator's lease starts later), never from the moment its answer
//! was read — for the grant, for an extension, and for every keep-alive
//! renewal. A client that reads an answer late must not believe longer.
//!
//! Two checks, both free of any comparison between this host's clock and
//! the coordinator's:
//! - where `inspect` reports `lock_until`, a watcher on a connection of its
//!   own notes the local instant it first sees each new coordinator
//!   deadline; the lease applied no later than that, so the local validity
//!   may not exceed that instant plus the lease length;
//! - on every backend, another owner polls for the lock once nobody renews
//!   it; when it gets it, the local validity must already have passed.

use crate::cases::take_when_free;
use crate::ctx::{Context, Ctx};
use crate::proxy::Proxy;
use crate::{ensure, CaseResult};
use dlock_core::{BootInstant, LockBackend, LockInfo, LockName, Locker};
use std::future::Future;
use std::task::Poll;
use std::time::{Duration, SystemTime};

/// How long an answer is left unread once its request applied.
const HOLD_BACK: Duration = Duration::from_millis(300);

/// How long the latency proxy holds each answer (networked backends).
/// (A renewal may take a few round trips: a pool's connection check, a
/// prepare, the statement.)
const ANSWER_DELAY: Duration = Duration::from_millis(150);

/// How far behind the guard's reading the watcher may see the renewal that
/// produced it, besides the case's measured margin (which covers the
/// watcher's round trip): the watcher polls every 10 ms.
const SIGHTING_LAG: Duration = Duration::from_millis(150);

/// Drives `op` to its answer, but reads the answer late. Between polls a
/// watcher inspects the lock; once `applied` says the request took effect
/// at the coordinator, the answer is left unread for [`HOLD_BACK`]. When
/// `applied` cannot tell (the backend reports no `lock_until`), the answer
/// is held back anyway after the first 50 ms watch, by when a client that
/// sends from a task of its own has sent it. Returns the answer and the
/// instant the watcher first saw the request applied, if it could.
async fn answer_read_late<T>(
    op: impl Future<Output = T>,
    watcher: &dyn LockBackend,
    name: &LockName,
    applied: impl Fn(&Option<LockInfo>) -> Option<bool>,
) -> Result<(T, Option<BootInstant>), String> {
    let t0 = BootInstant::now();
    let mut op = std::pin::pin!(op);
    let mut held_back = false;
    let mut hold_done = false;
    let mut seen = None;
    loop {
        if let Poll::Ready(r) = futures::poll!(&mut op) {
            return Ok((r, seen));
        }
        if !held_back {
            let mut blind = false;
            let watch_until = BootInstant::now() + Duration::from_millis(50);
            while !held_back && !watch_until.has_passed() {
                let info = watcher
                    .inspect(name)
                    .await
                    .ctx("inspect while the request is in flight")?;
                match applied(&info) {
                    Some(true) => {
                        seen = Some(BootInstant::now());
                        held_back = true;
                    }
                    Some(false) => {}
                    None => {
                        blind = true;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            held_back |= blind;
        }
        if held_back && !hold_done {
            tokio::time::sleep(HOLD_BACK).await;
            hold_done = true;
        } else if hold_done {
            // Read on, without spinning.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "the request did not answer within 30 s"
        );
    }
}

/// Local validity of an acquisition counts from the send: its answer is
/// read 300 ms after the grant applied, and another owner that gets the
/// lock once it runs out must find that validity already passed.
pub(crate) async fn validity_counts_from_the_send(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let watcher = ctx.fresh().await?;
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let spec = ctx.spec(&name, "owner-a", lease);
    let t0 = BootInstant::now();
    let (answer, seen) =
        answer_read_late(backend.try_acquire(&spec), &*watcher, &spec.name, |info| {
            Some(info.as_ref().is_some_and(|i| i.owner == "owner-a"))
        })
        .await?;
    let granted = answer.ctx("acquire")?.ok_or("free lock not taken")?;
    let late = ReadLate {
        what: "the grant",
        valid_until: granted.valid_until,
        seen,
        length: lease,
    };
    late.holds(&ctx, &b, &name, t0).await
}

/// The same for an extension: its answer is read 300 ms after it applied
/// (when `inspect` shows the new deadline), and the extended validity may
/// not outlive the coordinator's.
pub(crate) async fn extension_validity_counts_from_the_send(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let watcher = ctx.fresh().await?;
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let lock_for = lease;
    let spec = ctx.spec(&name, "owner-a", lease);
    let granted = backend
        .try_acquire(&spec)
        .await
        .ctx("acquire")?
        .ok_or("free lock not taken")?;
    let before = watcher
        .inspect(&spec.name)
        .await
        .ctx("inspect after the grant")?
        .and_then(|i| i.lock_until);
    let t_sent = BootInstant::now();
    let (answer, seen) = answer_read_late(
        backend.extend(&granted, lock_for),
        &*watcher,
        &spec.name,
        |info| {
            before.map(|old| {
                info.as_ref()
                    .and_then(|i| i.lock_until)
                    .is_some_and(|u| u > old)
            })
        },
    )
    .await?;
    let extended = answer.ctx("extend")?;
    let late = ReadLate {
        what: "the extension",
        valid_until: extended.valid_until,
        seen,
        length: lock_for,
    };
    late.holds(&ctx, &b, &name, t_sent).await
}

/// A validity whose answer was read [`HOLD_BACK`] after its request applied.
struct ReadLate {
    /// What granted it, for the messages.
    what: &'static str,
    /// The validity the answer gave.
    valid_until: BootInstant,
    /// When the watcher first saw the request applied, if it could.
    seen: Option<BootInstant>,
    /// The lease length requested.
    length: Duration,
}

impl ReadLate {
    /// Checks it against the sighting (the lease applied no later), then
    /// polls with `b` from `since` until the lock is free: by then the
    /// validity must have ended.
    async fn holds(&self, ctx: &Ctx, b: &Locker, name: &str, since: BootInstant) -> CaseResult {
        let what = self.what;
        if let Some(seen) = self.seen {
            let bound = seen + self.length;
            ensure!(
                self.valid_until <= bound,
                "{what}, seen applied at the coordinator and read {HOLD_BACK:?} later, counts \
                 itself valid {:?} beyond that sighting plus {:?}: local validity must count \
                 from the send",
                self.valid_until.saturating_duration_since(bound),
                self.length
            );
        }
        // The lease ends `expiry_bound` after it started at the coordinator,
        // which is by the sighting at the latest: a request that took long
        // to apply (a starved machine) moves the free time with it.
        let started_by = self.seen.unwrap_or(since);
        let limit = ctx.expiry_bound(self.length) + started_by.saturating_duration_since(since);
        let (g2, _) = take_when_free(b, name, ctx.lease() * 5, since, limit).await?;
        let now = BootInstant::now();
        ensure!(
            now >= self.valid_until,
            "another owner took the lock while {what} still counted itself valid for {:?} (its \
             answer was read {HOLD_BACK:?} after it applied, seen: {}); local validity must \
             count from the send",
            self.valid_until.saturating_duration_since(now),
            self.seen.is_some()
        );
        g2.release().await.ctx("release")
    }
}

/// A guard kept alive (a 4 s lease or the minimum), on a networked backend through a proxy that delivers
/// every answer 150 ms late: after the grant and after each of two
/// renewals, its validity never lies beyond the coordinator's deadline for
/// that renewal; then the proxy is cut, and when another owner gets the
/// lock, the guard's last validity has passed and `is_held()` is false.
pub(crate) async fn keep_alive_validity_never_outlives_the_coordinator(ctx: Ctx) -> CaseResult {
    let watcher = ctx.fresh().await?;
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lock_name = LockName::new(name.clone()).ctx("name")?;
    // Long enough that a renewal of several delayed round trips (a pool's
    // connection check, a prepare, the statement: 3 x 150 ms on PostgreSQL)
    // lands in time on a loaded machine; 2 s was lost once in CI.
    let lease = ctx.lease_at_least(Duration::from_secs(4));
    let (mut proxy, a): (Option<Proxy>, Locker) = if ctx.caps.networked {
        let (p, a) = ctx.locker_through_proxy("owner-a").await?;
        p.delay_answers(ANSWER_DELAY);
        (Some(p), a)
    } else {
        (None, ctx.locker("owner-a").await?)
    };
    // The watcher's first look opens its connection: not while it times
    // the grant's sighting.
    watcher.inspect(&lock_name).await.ctx("inspect")?;
    let lag = SIGHTING_LAG + ctx.margin();
    let t0 = BootInstant::now();
    let g = a
        .try_lock(&name, lease)
        .await
        .ctx("acquire")?
        .ok_or("free lock not taken")?;
    // (read at, validity) each time the guard's belief moved, and
    // (first seen at, deadline) each time the coordinator's moved.
    let mut beliefs = vec![(BootInstant::now(), g.valid_until())];
    let mut sightings: Vec<(BootInstant, SystemTime)> = Vec::new();
    let limit = lease * 4 + Duration::from_secs(10);
    let mut settle = 0;
    while settle < 10 {
        let v = g.valid_until();
        if beliefs.last().is_some_and(|(_, last)| *last != v) {
            beliefs.push((BootInstant::now(), v));
        }
        let info = watcher.inspect(&lock_name).await.ctx("inspect")?;
        if let Some(u) = info.and_then(|i| i.lock_until) {
            if sightings.last().is_none_or(|(_, last)| *last != u) {
                sightings.push((BootInstant::now(), u));
            }
        }
        ensure!(
            g.is_held(),
            "the kept-alive guard was lost: {:?}",
            g.lost().reason()
        );
        ensure!(
            t0.elapsed() < limit,
            "keep-alive moved the guard's validity {} times in {limit:?}, expected 2 renewals",
            beliefs.len() - 1
        );
        // Two renewals, then a few more looks so the last one is sighted.
        if beliefs.len() >= 3 {
            settle += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !sightings.is_empty() {
        for (k, (read, v)) in beliefs.iter().enumerate() {
            let seen = sightings
                .iter()
                .rev()
                .find(|(t, _)| *t <= *read + lag)
                .map(|(t, _)| *t)
                .ok_or_else(|| {
                    format!(
                        "the guard counted on a lease (belief {k}) more than {lag:?} before \
                         the coordinator showed one"
                    )
                })?;
            ensure!(
                *v <= seen + lease,
                "belief {k} of the kept-alive guard (0: the grant) lies {:?} beyond the \
                 coordinator's deadline as first seen (answers delayed {ANSWER_DELAY:?}: \
                 {}); local validity must count from the send",
                v.saturating_duration_since(seen + lease),
                proxy.is_some()
            );
        }
    }
    let Some(p) = proxy.as_mut() else {
        return g.release().await.ctx("release");
    };
    p.cut();
    let t_cut = BootInstant::now();
    let (g2, _) = take_when_free(&b, &name, lease * 5, t_cut, ctx.expiry_bound(lease)).await?;
    let now = BootInstant::now();
    let last = g.valid_until();
    ensure!(
        now >= last && !g.is_held(),
        "another owner took the lock while the cut-off guard still counted itself valid for \
         {:?} (is_held: {}; answers were delayed {ANSWER_DELAY:?}); local validity must count \
         from the send",
        last.saturating_duration_since(now),
        g.is_held()
    );
    g2.release().await.ctx("release")
}
