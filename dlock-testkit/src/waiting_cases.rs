//! Cases for waiting: a wait that runs out is `Ok(None)`, whatever the
//! process went through meanwhile.

use crate::bench::counting::{Counting, Counts};
use crate::cases::must_take;
use crate::child::Role;
use crate::ctx::{Context, Ctx};
use crate::{ensure, CaseResult};
use dlock_core::LockBackend;
use nix::sys::signal::Signal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `lock()` whose wait runs out answers `Ok(None)` also when the waiting
/// process was stopped (SIGSTOP) for longer than the wait and every request
/// deadline in it, then resumed: the clock having moved is not a
/// coordinator failure.
pub(crate) async fn wait_runs_out_as_none_after_a_pause(ctx: Ctx) -> CaseResult {
    let a = ctx.locker("owner-a").await?;
    let name = ctx.name("x");
    // At least 3 s: the parent keeps its lock alive for the whole 13 s case,
    // and under a loaded CI one keep-alive of a 1 s lease arriving late is
    // a lost lock, which is not what this case is about.
    let lease = ctx.lease_at_least(Duration::from_secs(3));
    // Held (kept alive) by the parent for the whole case.
    let g = a
        .try_lock(&name, lease)
        .await
        .ctx("acquire")?
        .ok_or("free lock not taken")?;
    let wait = lease.max(Duration::from_secs(3));
    let mut child = ctx.spawn_child(Role::Wait {
        name: name.clone(),
        owner: "owner-b".into(),
        at_most_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
    })?;
    child.expect("WAITING", Duration::from_secs(30)).await?;
    // Let the child get well into its wait (a request in flight), then
    // stop it for longer than the wait plus any request deadline in it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.signal(Signal::SIGSTOP)?;
    tokio::time::sleep(wait + Duration::from_secs(10)).await;
    child.signal(Signal::SIGCONT)?;
    let line = child.next_line(Duration::from_secs(20)).await;
    ensure!(
        line.as_deref() == Ok("HELD"),
        "after a pause, a wait for a lock held all along answered {line:?}, expected HELD \
         (Ok(None))"
    );
    ensure!(g.is_held(), "the parent lost its lock meanwhile");
    g.release().await.ctx("release")?;
    Ok(())
}

/// The waiters of one `Locker` for one name take the lock in the order
/// they asked, and only the first in line asks the coordinator: a release
/// costs the process a couple of acquire requests, not one per waiter
/// (dlock-core's waiting lines).
pub(crate) async fn waiters_of_one_locker_take_turns(ctx: Ctx) -> CaseResult {
    const WAITERS: usize = 12;
    let holder = ctx.locker("holder").await?;
    let counts = Arc::new(Counts::default());
    let counting: Arc<dyn LockBackend> = Arc::new(Counting {
        inner: ctx.fresh().await?,
        counts: counts.clone(),
    });
    let waiters = ctx.locker_on(&counting, "waiters");
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let held = must_take(&holder, &name, lease).await?;
    // Warm the connection up (a pool grows to what a waiter and the first
    // in line use at once), so no waiter's first try is slow enough to
    // let the next one into the line before it.
    let warm: Vec<_> = (0..4)
        .map(|k| waiters.inspect(format!("{name}-{k}")))
        .collect();
    for r in futures::future::join_all(warm).await {
        r.ctx("inspect")?;
    }
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let (l, name, order) = (waiters.clone(), name.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let g = l
                .acquire(name)
                .lock_for(lease)
                .wait(Duration::from_secs(60) + lease)
                .lock()
                .await
                .map_err(|e| format!("waiter {i}: {e:#}"))?
                .ok_or_else(|| format!("waiter {i} gave up"))?;
            order.lock().unwrap_or_else(|p| p.into_inner()).push(i);
            tokio::time::sleep(Duration::from_millis(2)).await;
            g.release()
                .await
                .map_err(|e| format!("waiter {i}: release: {e:#}"))
        }));
        // Each one waits (its first try answered) before the next asks.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counts.reset();
    held.release().await.ctx("release")?;
    for t in tasks {
        t.await.map_err(|e| format!("waiter task: {e}"))??;
    }
    let order = order.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ensure!(
        order == (0..WAITERS).collect::<Vec<_>>(),
        "the waiters of one locker took the lock out of the order they asked in: {order:?}"
    );
    // Per release: the next in line asks once while the previous one still
    // holds, once when woken; a polling backend's poll may add one.
    let (attempts, _) = counts.read();
    let bound = 3 * WAITERS as u64 + 2;
    ensure!(
        attempts <= bound,
        "{WAITERS} waiters of one locker made {attempts} acquire requests to take the lock \
         once each (at most {bound}): each release woke every waiter, not the first in line"
    );
    Ok(())
}
