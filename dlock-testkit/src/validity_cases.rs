//! Cases for a guard's validity: `is_held() == false` is final, and the
//! loss signal is never late, whoever else is (or is not) running.

use crate::cases::{is_lost, just_under, ms, round_up, take_without_keep_alive};
use crate::child::{After, Role};
use crate::ctx::{Context, Ctx};
use crate::delayed_extend::{DelayedFirstExtend, Fault};
use crate::{ensure, CaseResult};
use dlock_core::{clock, BootInstant, LockGuard};
use std::time::Duration;

/// Once `is_held()` answered false, the guard is lost for good: `lost()`
/// has completed, and `extend` and `release` answer `LockLost` — even in the
/// instant after the local deadline, when the coordinator may still hold
/// the lease for its safety margin (and would accept both).
pub(crate) async fn is_held_false_is_final(ctx: Ctx) -> CaseResult {
    let a = ctx.locker("owner-a").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    let until = g.lease().valid_until;
    // Sleep to just before the local deadline, then look as often as the
    // runtime lets us, so the first `false` is seen before any background
    // task could notice the deadline.
    clock::sleep_until(
        until
            .checked_sub(Duration::from_millis(30))
            .unwrap_or(until),
    )
    .await;
    let limit = until + Duration::from_secs(2);
    while g.is_held() {
        ensure!(
            !limit.has_passed(),
            "is_held() still true 2 s after the local deadline"
        );
        tokio::task::yield_now().await;
    }
    ensure!(
        g.lost().is_lost(),
        "is_held() answered false but lost() has not completed"
    );
    let r = g.extend(lease).await;
    ensure!(
        is_lost(&r),
        "extend right after is_held() == false answered {r:?}, expected LockLost"
    );
    ensure!(!g.is_held(), "is_held() turned true again after an extend");
    let r = g.release().await;
    ensure!(
        is_lost(&r),
        "release right after is_held() == false answered {r:?}, expected LockLost"
    );
    Ok(())
}

/// `lost()` completes by the end of local validity even when the runtime
/// that ran the guard's keep-alive has shut down (nothing renews the lease
/// any more, so it must be reported lost, not hang).
pub(crate) async fn lost_fires_after_runtime_shutdown(ctx: Ctx) -> CaseResult {
    let a = ctx.locker("owner-a").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<Option<LockGuard>, String>>();
    {
        let a = a.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("runtime: {e}")));
                    return;
                }
            };
            let r = rt
                .block_on(a.acquire(&name).lock_for(lease).try_lock())
                .map_err(|e| format!("acquire: {e}"));
            // The guard leaves with its keep-alive task's runtime shut down.
            drop(rt);
            let _ = tx.send(r);
        });
    }
    let g = rx
        .await
        .map_err(|_| "the acquiring thread died".to_string())??
        .ok_or("free lock not taken")?;
    let t0 = BootInstant::now();
    let limit = g.lease().remaining() + Duration::from_secs(1);
    let reason = tokio::time::timeout(limit, g.lost().wait())
        .await
        .map_err(|_| {
            format!(
                "lost() did not complete within {limit:?} although the runtime keeping the \
                 lease alive is gone"
            )
        })?;
    ensure!(!reason.is_empty(), "lost() gave no reason");
    ensure!(!g.is_held(), "is_held() true after lost() completed");
    ensure!(
        t0.elapsed() <= limit,
        "lost() completed {:?} after the guard came back",
        t0.elapsed()
    );
    let r = g.release().await;
    ensure!(
        is_lost(&r),
        "release after the loss answered {r:?}, expected LockLost"
    );
    Ok(())
}

/// An extension sent just before the local deadline whose answer arrives
/// after it (the coordinator applied it; a proxy held the answer) does not
/// revive the guard: it answers `LockLost`, and `is_held()` stays false.
/// Otherwise a guard could report "not held" (and `lost()` fire) and then
/// "held" again, after its owner already stopped or handed over work.
pub(crate) async fn late_extend_answer_does_not_revive(ctx: Ctx) -> CaseResult {
    let (proxy, a) = ctx.locker_through_proxy("owner-a").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    let until = g.lease().valid_until;
    let before = Duration::from_millis(150);
    clock::sleep_until(until.checked_sub(before).unwrap_or(until)).await;
    proxy.stall();
    let lost_seen = g.lost();
    let (r, ()) = tokio::join!(g.extend(lease), async {
        // Hold the answer until the local deadline has passed and the loss
        // was reported, then deliver it.
        let _ = tokio::time::timeout(before * 4, lost_seen.wait()).await;
        proxy.resume();
    });
    ensure!(
        is_lost(&r),
        "an extension answered after the local deadline returned {r:?}, expected LockLost"
    );
    ensure!(
        !g.is_held(),
        "is_held() turned true again after the late answer"
    );
    ensure!(g.lost().is_lost(), "lost() un-fired after the late answer");
    // The late extension did apply at the coordinator: the release that
    // follows (matched on this acquisition) frees the lock for others.
    let r = g.release().await;
    ensure!(
        is_lost(&r),
        "release after the loss answered {r:?}, expected LockLost"
    );
    Ok(())
}

/// Later wins: a short extension that timed out, then landed at the
/// coordinator *after* a later, longer extension succeeded, must not leave
/// the guard believing the longer one — otherwise another owner gets the
/// lock while this guard still answers `is_held() == true`.
pub(crate) async fn delayed_short_extend_never_outlives_the_guard(ctx: Ctx) -> CaseResult {
    let short = ctx.lease();
    let long = ctx.lease_at_least(short * 3);
    let delay = Duration::from_millis(300);
    let (backend, landed) = DelayedFirstExtend::wrap(ctx.fresh().await?, Fault::LandLater, delay);
    let a = ctx.locker_on(&backend, "owner-a");
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let g = take_without_keep_alive(&a, &name, long).await?;
    // The short extension "times out" (it is still on its way) ...
    let r = g.extend(short).await;
    ensure!(
        r.as_ref().is_err_and(|e| !e.is_lock_lost()),
        "the held-back extension answered {r:?}, expected a timeout"
    );
    // ... the guard extends again, long, and that one succeeds ...
    g.extend(long).await.ctx("extend after the timeout")?;
    // ... and then the short one lands.
    let landed = tokio::time::timeout(delay + Duration::from_secs(10), landed)
        .await
        .map_err(|_| "the held-back extension never landed".to_string())?
        .map_err(|_| "the held-back extension was dropped".to_string())?;
    let limit = landed.sent + short + ctx.expiry_bound(short);
    loop {
        if let Some(other) = b.try_lock(&name, short).await.ctx("try_lock by owner-b")? {
            let held = g.is_held();
            other.release().await.ctx("release by owner-b")?;
            ensure!(
                !held,
                "owner-b took the lock (the late short extension applied: {}) while the first \
                 guard still answered is_held() == true",
                landed.applied
            );
            break;
        }
        if limit.has_passed() {
            // The coordinator refused the late extension, or kept the later
            // deadline: nobody else got in.
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = g.release().await;
    Ok(())
}

/// `lock_at_least_for` holds however the holder ends: here its process
/// exits right after acquiring, without releasing (no background release
/// runs), and the lock must stay taken until `acquired + at_least`.
pub(crate) async fn at_least_after_exit_without_release(ctx: Ctx) -> CaseResult {
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    // Longer than a session-based backend's session timeout (and its
    // expiry slack), so "the session ended" cannot pass for at_least.
    let at_least = round_up(Duration::from_secs(10), ctx.caps.lease_granularity);
    let at_most = ctx.lease_at_least(at_least * 2);
    let t_spawn = BootInstant::now();
    let mut child = ctx.spawn_child(Role::Hold {
        name: name.clone(),
        owner: "child".into(),
        at_most_ms: ms(at_most),
        at_least_ms: ms(at_least),
        keep_alive: true,
        wait_ms: 0,
        after: After::ExitWithoutRelease,
    })?;
    let token: u64 = child.expect("ACQUIRED", Duration::from_secs(30)).await?[0]
        .parse()
        .map_err(|_| "bad token")?;
    ensure!(
        child.wait(Duration::from_secs(10)).await?,
        "child exited with failure"
    );
    // The child acquired after t_spawn, so at_least runs at least until
    // t_spawn + at_least.
    let until = t_spawn + just_under(at_least);
    while !until.has_passed() {
        if let Some(g) = b
            .try_lock(&name, at_most)
            .await
            .ctx("try_lock by owner-b")?
        {
            let early = until.saturating_duration_since(BootInstant::now());
            let t = g.token();
            let _ = g.release().await;
            return Err(format!(
                "the lock was free {early:?} before lock_at_least_for {at_least:?} ended \
                 (holder's token {token}, ours {t}); the holder exited without releasing"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A manual shortening is not undone by keep-alive: the keep-alive that
/// came due while the manual extension was in flight (and waited for it)
/// renews with the lease's length as it is *then*, not the length it read
/// before waiting.
pub(crate) async fn keep_alive_keeps_a_manual_shortening(ctx: Ctx) -> CaseResult {
    let short = ctx.lease();
    let long = ctx.lease_at_least(short * 3);
    // Less than a third of `short`, so the shortened lease is not yet due.
    let delay = (short / 5).min(Duration::from_millis(300));
    let (backend, answered) =
        DelayedFirstExtend::wrap(ctx.fresh().await?, Fault::AnswerLate, delay);
    let a = ctx.locker_on(&backend, "owner-a");
    let name = ctx.name("x");
    let g = a
        .acquire(&name)
        .lock_for(long)
        .keep_alive(true)
        .try_lock()
        .await
        .ctx("acquire")?
        .ok_or("free lock not taken")?;
    // Shorten just before keep-alive's renew point (a third into the lease),
    // with the answer held across it: keep-alive comes due meanwhile.
    let renew_at = g.lease().acquired_at + long / 3;
    clock::sleep_until(renew_at.checked_sub(delay / 2).unwrap_or(renew_at)).await;
    g.extend(short).await.ctx("shortening extend")?;
    let landed = answered
        .await
        .map_err(|_| "the shortening extension was never sent".to_string())?;
    ensure!(landed.applied, "the shortening extension was refused");
    // Give the keep-alive that waited its turn time to act.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let now = g.lease().at_most;
    ensure!(
        now == short,
        "after a manual extend to {short:?}, keep-alive put the lease back to {now:?}"
    );
    ensure!(g.is_held(), "the guard lost its lease");
    g.release().await.ctx("release")
}
