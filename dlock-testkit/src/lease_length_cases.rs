//! Cases for how long the coordinator keeps a lease: `at_least` counted from
//! the acquisition, an extension lasting exactly what it asked for, and
//! extensions the backend cannot honour refused, never rounded.

use crate::cases::{
    is_unsupported, just_under, must_be_held, round_up, take_when_free, take_with_at_least,
    take_without_keep_alive,
};
use crate::ctx::{Context, Ctx};
use crate::{ensure, CaseResult};
use dlock_core::BootInstant;
use std::time::Duration;

/// `lock_at_least_for` runs from the acquisition, by the coordinator's
/// clock: a lock released two thirds into its `at_least` is free again by
/// `acquired + at_least` (plus the declared slack), not `at_least` after
/// the release.
pub(crate) async fn at_least_counts_from_acquisition(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let at_least = round_up(Duration::from_secs(3), ctx.caps.lease_granularity);
    let at_most = ctx.lease_at_least(at_least + Duration::from_secs(10));
    let t0 = BootInstant::now();
    let g = take_with_at_least(&a, &name, at_most, at_least).await?;
    // Released with a third of at_least left: counted from the release, the
    // hold would end two seconds after the bound below.
    tokio::time::sleep(at_least * 2 / 3).await;
    g.release().await.ctx("release two thirds into at_least")?;
    must_be_held(
        &b,
        &name,
        at_most,
        "lock_at_least_for has not passed since the acquisition",
    )
    .await?;
    let (g2, took) = take_when_free(&b, &name, at_most, t0, ctx.at_least_bound(at_least))
        .await
        .map_err(|e| format!("at_least must count from the acquisition, not the release: {e}"))?;
    ensure!(
        took >= just_under(at_least),
        "lock_at_least_for {at_least:?} ended after only {took:?}"
    );
    g2.release().await.ctx("release")
}

/// `extend(lease, lock_for)` makes the lease expire `lock_for` after the
/// extension, by the coordinator's clock: not the acquisition's `at_most`
/// again, not twice `lock_for`, not `lock_for` added to the old deadline.
pub(crate) async fn extend_sets_the_requested_length(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let g_ = ctx.caps.lease_granularity;
    let at_most = ctx.lease_at_least(round_up(Duration::from_millis(2500), g_));
    let lock_for = ctx.lease_at_least(round_up(at_most * 3 / 2, g_));
    let g = take_without_keep_alive(&a, &name, at_most).await?;
    let t_ext = BootInstant::now();
    g.extend(lock_for).await.ctx("extend")?;
    // Past the acquisition's at_most, before lock_for after the extension.
    let probe = at_most + (lock_for - at_most) / 2;
    tokio::time::sleep(probe.saturating_sub(t_ext.elapsed())).await;
    must_be_held(
        &b,
        &name,
        at_most,
        &format!("it was extended to {lock_for:?} {probe:?} ago (at_most was {at_most:?})"),
    )
    .await?;
    let (g2, took) = take_when_free(&b, &name, at_most, t_ext, ctx.expiry_bound(lock_for))
        .await
        .map_err(|e| format!("an extension to {lock_for:?} lasted too long: {e}"))?;
    ensure!(
        took >= just_under(lock_for),
        "an extension to {lock_for:?} ended after only {took:?}"
    );
    ensure!(
        !g.is_held(),
        "another owner took the lock while the extended guard still counted itself valid"
    );
    drop(g);
    g2.release().await.ctx("release")
}

/// Paired with a declared minimum lease: an *extension* below it is
/// `Unsupported` too (never silently lengthened to the minimum), and the
/// lease is unchanged.
pub(crate) async fn extension_below_minimum_is_unsupported(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let a = ctx.locker_on(&backend, "owner-a");
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let gr = ctx.caps.lease_granularity;
    let below = if ctx.caps.min_lease > gr && ctx.caps.min_lease - gr >= gr {
        ctx.caps.min_lease - gr
    } else {
        ctx.caps.min_lease / 2
    };
    let g = take_without_keep_alive(&a, &name, lease).await?;
    let r = backend.extend(&g.lease(), below).await;
    ensure!(
        is_unsupported(&r),
        "an extension to {below:?}, below the declared minimum {:?}, answered {r:?}",
        ctx.caps.min_lease
    );
    must_be_held(&b, &name, lease, "a refused extension must change nothing").await?;
    g.release().await.ctx("release")
}
