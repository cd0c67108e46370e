//! Cases for waiting: a wait that runs out is `Ok(None)`, whatever the
//! process went through meanwhile.

use crate::child::Role;
use crate::ctx::{Context, Ctx};
use crate::{ensure, CaseResult};
use nix::sys::signal::Signal;
use std::time::Duration;

/// A `lock()` whose wait runs out answers `Ok(None)` also when the waiting
/// process was stopped (SIGSTOP) for longer than the wait and every request
/// deadline in it, then resumed: the clock having moved is not a
/// coordinator failure.
pub(crate) async fn wait_runs_out_as_none_after_a_pause(ctx: Ctx) -> CaseResult {
    let a = ctx.locker("owner-a").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
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
