//! Cases for leader election: one leader at a time, epochs that only grow,
//! observers that see every term in order, a prompt hand-over on resign,
//! and a killed leader replaced within its lease plus the backend's slack.

use crate::cases::ms;
use crate::child::Role;
use crate::ctx::{Context, Ctx};
use crate::history::{check_history, mono_ns, Hold};
use crate::{ensure, CaseResult};
use dlock_core::{BootInstant, Election, Leader, Locker};
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long any single campaign in these cases may take.
const CAMPAIGN_LIMIT: Duration = Duration::from_secs(120);

fn election(l: &Locker, name: &str, lease: Duration) -> Result<Election, String> {
    Ok(l.election(name).ctx("election")?.lease(lease))
}

/// Four candidates campaign for six terms each; every term is recorded
/// from when `campaign` returned to before `resign` was sent, and `resign`
/// must succeed (the term was still valid at the coordinator). The history
/// checker proves no two terms overlapped and epochs strictly grew.
pub(crate) async fn one_leader_at_a_time(ctx: Ctx) -> CaseResult {
    const CANDIDATES: usize = 4;
    const TERMS: usize = 6;
    let name = ctx.name("election");
    let lease = ctx.lease_at_least(Duration::from_secs(10));
    let mut set = tokio::task::JoinSet::new();
    for c in 0..CANDIDATES {
        let l = ctx.locker(&format!("candidate{c}")).await?;
        let e = election(&l, &name, lease)?;
        let name = name.clone();
        set.spawn(async move {
            let mut terms = Vec::with_capacity(TERMS);
            for _ in 0..TERMS {
                let leading = tokio::time::timeout(CAMPAIGN_LIMIT, e.campaign())
                    .await
                    .map_err(|_| format!("no term within {CAMPAIGN_LIMIT:?}"))?
                    .ctx("campaign")?;
                let start_ns = mono_ns();
                if !leading.is_leader() {
                    return Err("campaign returned a leadership that is not leading".to_string());
                }
                let epoch = leading.epoch().0;
                let lead_for = rand::rng().random_range(0..5);
                tokio::time::sleep(Duration::from_millis(lead_for)).await;
                let end_ns = mono_ns();
                leading
                    .resign()
                    .await
                    .map_err(|e| format!("resign of epoch {epoch} failed: {e}"))?;
                terms.push(Hold {
                    name: name.clone(),
                    token: epoch,
                    start_ns,
                    end_ns,
                });
            }
            Ok::<_, String>(terms)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.map_err(|e| format!("candidate task: {e}"))??);
    }
    ensure!(
        all.len() == CANDIDATES * TERMS,
        "{} terms instead of {}",
        all.len(),
        CANDIDATES * TERMS
    );
    check_history(&all).map_err(|e| format!("election: {e}"))
}

/// Three candidates lead one after another, each for longer than an
/// observer needs to notice; an observer on its own connection must see
/// exactly those three terms, in order, with growing epochs.
pub(crate) async fn observers_see_every_term_in_order(ctx: Ctx) -> CaseResult {
    let name = ctx.name("election");
    let lease = ctx.lease_at_least(Duration::from_secs(10));
    let watcher = ctx.locker("observer").await?;
    let mut observer = election(&watcher, &name, lease)?.observe();
    let seen: Arc<Mutex<Vec<Option<Leader>>>> = Arc::default();
    let first = observer.next().await.ctx("first observation")?;
    ensure!(first.is_none(), "a fresh election has a leader: {first:?}");
    let log = seen.clone();
    let watching = tokio::spawn(async move {
        loop {
            match observer.next().await {
                Ok(change) => log.lock().unwrap_or_else(|p| p.into_inner()).push(change),
                Err(e) => return Err::<(), String>(format!("observe: {e}")),
            }
        }
    });
    // Longer than the observer's step (1 s) plus a poll, with room.
    let term = Duration::from_millis(2500) + ctx.caps.poll_interval * 2;
    let mut expected = Vec::new();
    for who in ["leader-a", "leader-b", "leader-c"] {
        let l = ctx.locker(who).await?;
        let leading = tokio::time::timeout(CAMPAIGN_LIMIT, election(&l, &name, lease)?.campaign())
            .await
            .map_err(|_| "no term")?
            .ctx("campaign")?;
        expected.push(Leader {
            owner: who.to_string(),
            epoch: leading.epoch(),
        });
        tokio::time::sleep(term).await;
        leading.resign().await.ctx("resign")?;
    }
    tokio::time::sleep(term).await;
    let finished = watching.is_finished();
    watching.abort();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ensure!(!finished, "the observer stopped: {seen:?}");
    let terms: Vec<Leader> = seen.iter().flatten().cloned().collect();
    ensure!(
        terms == expected,
        "the observer saw terms {terms:?}; they were {expected:?} (all changes: {seen:?})"
    );
    ensure!(
        seen.last() == Some(&None),
        "the observer did not see the last leader resign: {seen:?}"
    );
    Ok(())
}

/// A waiting candidate leads promptly once the leader resigns, in a later
/// epoch, and the resigned leadership no longer counts itself leading.
pub(crate) async fn resign_hands_over_promptly(ctx: Ctx) -> CaseResult {
    let name = ctx.name("election");
    let lease = ctx.lease_at_least(Duration::from_secs(10));
    let a = election(&ctx.locker("leader-a").await?, &name, lease)?;
    let b = election(&ctx.locker("leader-b").await?, &name, lease)?;
    let first = a.campaign().await.ctx("campaign a")?;
    let epoch_a = first.epoch();
    let waiting = tokio::spawn(async move {
        let r = tokio::time::timeout(CAMPAIGN_LIMIT, b.campaign()).await;
        (r, BootInstant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !waiting.is_finished(),
        "a second candidate was elected while the first led"
    );
    let t_resign = BootInstant::now();
    first.resign().await.ctx("resign")?;
    let (r, t_led) = waiting.await.map_err(|e| format!("candidate task: {e}"))?;
    let second = r.map_err(|_| "no hand-over")?.ctx("campaign b")?;
    let took = t_led.saturating_duration_since(t_resign);
    let limit = if ctx.caps.release_notifies_waiters {
        Duration::from_millis(1000)
    } else {
        ctx.caps.poll_interval * 2 + Duration::from_millis(1000)
    };
    ensure!(
        took <= limit,
        "the hand-over took {took:?} after the resignation (limit {limit:?})"
    );
    ensure!(
        second.epoch() > epoch_a,
        "epoch {} after epoch {epoch_a}",
        second.epoch()
    );
    second.resign().await.ctx("resign b")
}

/// A leader in another process is killed with SIGKILL: a waiting candidate
/// leads within the lease plus the backend's slack, in a later epoch.
pub(crate) async fn killed_leader_is_replaced(ctx: Ctx) -> CaseResult {
    let name = ctx.name("election");
    let lease = ctx.lease();
    let mut child = ctx.spawn_child(Role::Lead {
        name: name.clone(),
        owner: "doomed-leader".into(),
        lease_ms: ms(lease),
    })?;
    let epoch: u64 = child.expect("LEADING", Duration::from_secs(30)).await?[0]
        .parse()
        .map_err(|_| "bad epoch")?;
    let candidate = election(&ctx.locker("successor").await?, &name, lease)?;
    // Keep-alive must carry the leader past its first lease.
    tokio::time::sleep(lease + lease / 2).await;
    ensure!(
        candidate
            .try_campaign()
            .await
            .ctx("try_campaign")?
            .is_none(),
        "elected while the first leader was alive"
    );
    child.kill().await?;
    let t_kill = BootInstant::now();
    let limit = ctx.expiry_bound(lease) + ctx.caps.poll_interval * 2 + Duration::from_secs(1);
    let next = tokio::time::timeout(limit, candidate.campaign())
        .await
        .map_err(|_| format!("no new leader within {limit:?} of the kill"))?
        .ctx("campaign")?;
    let took = t_kill.elapsed();
    ensure!(
        next.epoch().0 > epoch,
        "epoch {} after the killed leader's {epoch} (took {took:?})",
        next.epoch()
    );
    next.resign().await.ctx("resign")
}
