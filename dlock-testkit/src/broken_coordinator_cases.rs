//! The error path after connect: once the coordinator breaks under a
//! connected backend, every operation answers `Err` — never `Ok(None)`
//! ("someone else holds it"), never a lease, never `Ok(())`.

use crate::ctx::{Context, Ctx};
use crate::{ensure, CaseResult};
use dlock_core::{Lease, LockBackend, LockName, Locker};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;

/// How long one operation on the broken coordinator may take to fail.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Breaks the coordinator under a connected backend every way the suite
/// can — by cutting a proxy (networked backends), and with the suite's
/// [`crate::Suite::break_coordinator`] hook (in a namespace of its own) —
/// and asks every operation of that backend, all at once: each must answer
/// `Err` within 30 s, an error that prints its source once.
pub(crate) async fn every_operation_errs_after_the_coordinator_breaks(ctx: Ctx) -> CaseResult {
    let mut ways = 0;
    if ctx.caps.networked {
        let (mut proxy, broken) = ctx.backend_through_proxy().await?;
        let other = ctx.fresh().await?;
        let held = prepare(&ctx, &broken, &other).await?;
        proxy.cut();
        every_operation_errs(&ctx, broken, &held)
            .await
            .map_err(|e| format!("after the proxy to the coordinator was cut: {e}"))?;
        // The coordinator itself is fine: tidy up.
        let _ = other.release(&held.by_other).await;
        ways += 1;
    }
    if let Some(hook) = ctx.break_coordinator.clone() {
        let url = ctx.own_namespace_url().ok_or(
            "Suite::break_coordinator needs Suite::namespace: breaking the coordinator of one \
             case must not break the others'",
        )?;
        let broken = ctx.connect_url(&url).await?;
        let other = ctx.connect_url(&url).await?;
        let held = prepare(&ctx, &broken, &other).await?;
        tokio::time::timeout(ANSWER_WITHIN, hook(url))
            .await
            .map_err(|_| format!("Suite::break_coordinator took more than {ANSWER_WITHIN:?}"))?
            .map_err(|e| format!("Suite::break_coordinator failed: {e}"))?;
        every_operation_errs(&ctx, broken, &held)
            .await
            .map_err(|e| format!("after Suite::break_coordinator: {e}"))?;
        ways += 1;
    }
    ensure!(
        ways > 0,
        "nothing can break this embedded backend's coordinator after connect: give \
         Suite::break_coordinator (drop the lock table, revoke the credentials)"
    );
    Ok(())
}

/// What the broken backend is asked about.
struct Held {
    /// A lease the broken backend holds.
    mine: Lease,
    /// A lease another connection holds.
    by_other: Lease,
}

/// Before the break: the backend to be broken holds one lock, another
/// connection holds a second.
async fn prepare(
    ctx: &Ctx,
    broken: &Arc<dyn LockBackend>,
    other: &Arc<dyn LockBackend>,
) -> Result<Held, String> {
    let long = ctx.lease_at_least(Duration::from_secs(60));
    let mine = broken
        .try_acquire(&ctx.spec(&ctx.name("mine"), "owner-a", long))
        .await
        .ctx("acquire before the break")?
        .ok_or("free lock not taken before the break")?;
    let by_other = other
        .try_acquire(&ctx.spec(&ctx.name("theirs"), "owner-b", long))
        .await
        .ctx("acquire by another connection before the break")?
        .ok_or("free lock not taken by another connection before the break")?;
    Ok(Held { mine, by_other })
}

/// Every operation of `broken`, concurrently; each must be `Err`.
async fn every_operation_errs(ctx: &Ctx, broken: Arc<dyn LockBackend>, held: &Held) -> CaseResult {
    let lease = ctx.lease();
    let fresh_name = ctx.spec(&ctx.name("fresh"), "owner-a", lease);
    let theirs = ctx.spec(held.by_other.name.as_str(), "owner-a", lease);
    let mine_name: LockName = held.mine.name.clone();
    let locker = Locker::from_arc(broken.clone())
        .with_owner("owner-a")
        .ctx("locker")?;
    let b = &broken;
    let answers = futures::future::join_all([
        answer(
            "try_acquire of a free lock",
            async { b.try_acquire(&fresh_name).await.map(|r| format!("{r:?}")) }.boxed(),
        ),
        answer(
            "try_acquire of a lock another owner holds",
            async { b.try_acquire(&theirs).await.map(|r| format!("{r:?}")) }.boxed(),
        ),
        answer(
            "extend of a held lease",
            async { b.extend(&held.mine, lease).await.map(|r| format!("{r:?}")) }.boxed(),
        ),
        answer(
            "release of a held lease",
            async { b.release(&held.mine).await.map(|r| format!("{r:?}")) }.boxed(),
        ),
        answer(
            "inspect",
            async { b.inspect(&mine_name).await.map(|r| format!("{r:?}")) }.boxed(),
        ),
        answer(
            "list",
            async { b.list().await.map(|r| format!("{r:?}")) }.boxed(),
        ),
        answer(
            "force_release",
            async {
                b.force_release(&held.by_other.name)
                    .await
                    .map(|r| format!("{r:?}"))
            }
            .boxed(),
        ),
        answer(
            "Locker::lock waiting 2 s for a lock another owner holds",
            async {
                locker
                    .acquire(held.by_other.name.as_str())
                    .lock_for(lease)
                    .wait(Duration::from_secs(2))
                    .lock()
                    .await
                    .map(|r| format!("{:?}", r.map(|g| g.token())))
            }
            .boxed(),
        ),
    ])
    .await;
    let wrong: Vec<String> = answers.into_iter().filter_map(|r| r.err()).collect();
    ensure!(
        wrong.is_empty(),
        "operations on a broken coordinator must answer Err: {}",
        wrong.join("; ")
    );
    Ok(())
}

/// `Ok(())` when `op` answered `Err` in time; otherwise what it did.
async fn answer(
    what: &'static str,
    op: BoxFuture<'_, dlock_core::Result<String>>,
) -> Result<(), String> {
    match tokio::time::timeout(ANSWER_WITHIN, op).await {
        Err(_) => Err(format!("{what} did not answer within {ANSWER_WITHIN:?}")),
        Ok(Ok(v)) => Err(format!("{what} answered Ok({v})")),
        Ok(Err(e)) => match crate::bad_input::report_defect(&e) {
            None => Ok(()),
            Some(defect) => Err(format!("{what}: {defect}")),
        },
    }
}
