//! The single list of conformance cases.

use crate::child::{After, Role};
use crate::ctx::{Context, Ctx};
use crate::history::{check_history, work, Hold};
use crate::proxy::redirect;
use crate::{
    broken_coordinator_cases, election_cases, lease_length_cases, name_cases, send_instant_cases,
    validity_cases, waiting_cases,
};
use crate::{ensure, CaseResult};
use dlock_core::BootInstant;
use dlock_core::{Capabilities, Error, Lease, LockBackend, LockGuard, Locker};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What a case needs from the backend's capabilities. A case whose needs are
/// not met is reported *ignored*, never passed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// The coordinator is reached over the network.
    pub networked: bool,
    /// `at_least` holds after the holder process exits.
    pub at_least_survives_exit: bool,
    /// The backend declares a minimum lease above 1 ms.
    pub min_lease_above_1ms: bool,
    /// The backend declares a lease granularity coarser than 1 µs.
    pub coarse_granularity: bool,
    /// The backend declares a maximum lease.
    pub max_lease: bool,
    /// Expiry is decided by a clock outside the client process.
    pub server_clock: bool,
    /// The backend can list held locks.
    pub list: bool,
    /// The backend declares it cannot list held locks.
    pub no_list: bool,
    /// Holders in other processes (the suite's child processes) share locks
    /// with this one.
    pub processes: bool,
}

impl Needs {
    /// Whether `caps` meets these needs.
    pub fn met_by(&self, caps: &Capabilities) -> bool {
        (!self.networked || caps.networked)
            && (!self.at_least_survives_exit || caps.at_least_survives_exit)
            && (!self.min_lease_above_1ms || caps.min_lease > Duration::from_millis(1))
            && (!self.coarse_granularity || caps.lease_granularity > Duration::from_micros(1))
            && (!self.max_lease || caps.max_lease.is_some())
            && (!self.server_clock || caps.server_clock)
            && (!self.list || caps.list)
            && (!self.no_list || !caps.list)
            && (!self.processes || caps.shared_across_processes)
    }
}

type CaseFn = Arc<dyn Fn(Ctx) -> BoxFuture<'static, CaseResult> + Send + Sync>;

/// One conformance case.
#[derive(Clone)]
pub struct Case {
    /// Test name (the part after `conformance::<backend>::`).
    pub name: &'static str,
    /// Capabilities it requires.
    pub needs: Needs,
    /// The case body.
    pub run: CaseFn,
}

fn case<F, Fut>(name: &'static str, needs: Needs, f: F) -> Case
where
    F: Fn(Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CaseResult> + Send + 'static,
{
    Case {
        name,
        needs,
        run: Arc::new(move |c| Box::pin(f(c))),
    }
}

/// Every case, in order. The single source of truth for the suite.
pub fn cases() -> Vec<Case> {
    let none = Needs::default();
    vec![
        case("exclusive_try", none, exclusive_try),
        case("independent_names", none, independent_names),
        case("release_then_reacquire", none, release_then_reacquire),
        case("only_owner_releases", none, only_owner_releases),
        case("only_owner_extends", none, only_owner_extends),
        case(
            "stale_lease_gets_lock_lost",
            none,
            stale_lease_gets_lock_lost,
        ),
        case(
            "release_after_loss_is_lock_lost",
            none,
            release_after_loss_is_lock_lost,
        ),
        case("expired_lease_is_stale", none, expired_lease_is_stale),
        case("released_lease_is_stale", none, released_lease_is_stale),
        case(
            "drop_releases_in_background",
            none,
            drop_releases_in_background,
        ),
        case("expiry_after_at_most", none, expiry_after_at_most),
        case("at_least_after_release", none, at_least_after_release),
        case(
            "at_least_counts_from_acquisition",
            none,
            lease_length_cases::at_least_counts_from_acquisition,
        ),
        case(
            "extend_sets_the_requested_length",
            none,
            lease_length_cases::extend_sets_the_requested_length,
        ),
        case(
            "at_least_after_exit",
            Needs {
                at_least_survives_exit: true,
                processes: true,
                ..none
            },
            at_least_after_exit,
        ),
        case(
            "at_least_after_exit_without_release",
            Needs {
                at_least_survives_exit: true,
                processes: true,
                ..none
            },
            validity_cases::at_least_after_exit_without_release,
        ),
        case("tokens_strictly_increase", none, tokens_strictly_increase),
        case("wait_wakes_on_release", none, wait_wakes_on_release),
        case("wait_honours_timeout", none, wait_honours_timeout),
        case(
            "waiters_of_one_locker_take_turns",
            none,
            waiting_cases::waiters_of_one_locker_take_turns,
        ),
        case(
            "wait_runs_out_as_none_after_a_pause",
            Needs {
                processes: true,
                ..none
            },
            waiting_cases::wait_runs_out_as_none_after_a_pause,
        ),
        case(
            "keep_alive_survives_many_leases",
            none,
            keep_alive_survives_many_leases,
        ),
        case(
            "lost_fires_without_keep_alive",
            none,
            lost_fires_without_keep_alive,
        ),
        case(
            "is_held_false_is_final",
            none,
            validity_cases::is_held_false_is_final,
        ),
        case(
            "lost_fires_after_runtime_shutdown",
            none,
            validity_cases::lost_fires_after_runtime_shutdown,
        ),
        case(
            "validity_counts_from_the_send",
            none,
            send_instant_cases::validity_counts_from_the_send,
        ),
        case(
            "extension_validity_counts_from_the_send",
            none,
            send_instant_cases::extension_validity_counts_from_the_send,
        ),
        case(
            "keep_alive_validity_never_outlives_the_coordinator",
            none,
            send_instant_cases::keep_alive_validity_never_outlives_the_coordinator,
        ),
        case(
            "delayed_short_extend_never_outlives_the_guard",
            none,
            validity_cases::delayed_short_extend_never_outlives_the_guard,
        ),
        case(
            "keep_alive_keeps_a_manual_shortening",
            none,
            validity_cases::keep_alive_keeps_a_manual_shortening,
        ),
        case(
            "late_extend_answer_does_not_revive",
            Needs {
                networked: true,
                ..none
            },
            validity_cases::late_extend_answer_does_not_revive,
        ),
        case(
            "lost_fires_when_coordinator_gone",
            Needs {
                networked: true,
                ..none
            },
            lost_fires_when_coordinator_gone,
        ),
        case(
            "every_operation_errs_after_the_coordinator_breaks",
            none,
            broken_coordinator_cases::every_operation_errs_after_the_coordinator_breaks,
        ),
        case(
            "unreachable_coordinator_is_err_fast",
            none,
            unreachable_coordinator_is_err_fast,
        ),
        case("odd_names", none, odd_names),
        case("name_bounds", none, name_bounds),
        case(
            "long_names_are_distinct",
            none,
            name_cases::long_names_are_distinct,
        ),
        case(
            "skewed_client_clock",
            Needs {
                server_clock: true,
                processes: true,
                ..none
            },
            skewed_client_clock,
        ),
        case(
            "sigkill_frees_lock",
            Needs {
                processes: true,
                ..none
            },
            sigkill_frees_lock,
        ),
        case("concurrency_no_overlap", none, concurrency_no_overlap),
        case("inspect_reports_holder", none, inspect_reports_holder),
        case("force_release_frees_lock", none, force_release_frees_lock),
        case(
            "lost_fires_when_release_finds_the_lock_taken",
            none,
            lost_fires_when_release_finds_the_lock_taken,
        ),
        case(
            "list_reports_held_locks",
            Needs { list: true, ..none },
            list_reports_held_locks,
        ),
        case(
            "list_unsupported_is_clear",
            Needs {
                no_list: true,
                ..none
            },
            list_unsupported_is_clear,
        ),
        case("invalid_spec_rejected", none, invalid_spec_rejected),
        case(
            "shortest_lease_is_honoured",
            none,
            shortest_lease_is_honoured,
        ),
        case(
            "lease_below_minimum_is_unsupported",
            Needs {
                min_lease_above_1ms: true,
                ..none
            },
            lease_below_minimum_is_unsupported,
        ),
        case(
            "extension_below_minimum_is_unsupported",
            Needs {
                min_lease_above_1ms: true,
                ..none
            },
            lease_length_cases::extension_below_minimum_is_unsupported,
        ),
        case(
            "lease_off_granularity_is_unsupported",
            Needs {
                coarse_granularity: true,
                ..none
            },
            lease_off_granularity_is_unsupported,
        ),
        case(
            "lease_above_maximum_is_unsupported",
            Needs {
                max_lease: true,
                ..none
            },
            lease_above_maximum_is_unsupported,
        ),
        case(
            "election_one_leader_at_a_time",
            none,
            election_cases::one_leader_at_a_time,
        ),
        case(
            "election_observers_see_every_term_in_order",
            none,
            election_cases::observers_see_every_term_in_order,
        ),
        case(
            "election_resign_hands_over_promptly",
            none,
            election_cases::resign_hands_over_promptly,
        ),
        case(
            "election_killed_leader_is_replaced",
            Needs {
                processes: true,
                ..none
            },
            election_cases::killed_leader_is_replaced,
        ),
    ]
}

// ---------------------------------------------------------------- helpers

pub(crate) async fn must_take(
    l: &Locker,
    name: &str,
    lease: Duration,
) -> Result<LockGuard, String> {
    l.try_lock(name, lease)
        .await
        .ctx(&format!("try_lock {name:?} by {}", l.owner()))?
        .ok_or_else(|| format!("{} could not take the free lock {name:?}", l.owner()))
}

pub(crate) async fn must_be_held(l: &Locker, name: &str, lease: Duration, why: &str) -> CaseResult {
    let g = l
        .try_lock(name, lease)
        .await
        .ctx(&format!("try_lock {name:?} by {}", l.owner()))?;
    ensure!(g.is_none(), "{} took {name:?} although {why}", l.owner());
    Ok(())
}

/// Takes the free lock `name` with a lease of `lease` and no keep-alive
/// (the lease then ends by itself), or fails the case.
pub(crate) async fn take_without_keep_alive(
    l: &Locker,
    name: &str,
    lease: Duration,
) -> Result<LockGuard, String> {
    l.acquire(name)
        .lock_for(lease)
        .keep_alive(false)
        .try_lock()
        .await
        .ctx("acquire")?
        .ok_or_else(|| format!("free lock {name:?} not taken"))
}

/// Takes the free lock `name` for `at_most` with `lock_at_least_for` of
/// `at_least`, keep-alive off (so nothing but the coordinator times it).
pub(crate) async fn take_with_at_least(
    l: &Locker,
    name: &str,
    at_most: Duration,
    at_least: Duration,
) -> Result<LockGuard, String> {
    l.acquire(name)
        .lock_for(at_most)
        .at_least(at_least)
        .keep_alive(false)
        .try_lock()
        .await
        .ctx("acquire")?
        .ok_or_else(|| format!("free lock {name:?} not taken"))
}

/// Polls `try_lock` until it succeeds or `limit` passes; returns the guard
/// and the time from `since` to the successful answer.
///
/// `limit` is stretched by twice the slowest `try_lock` seen while polling:
/// the attempt under way when the lock frees cannot see it, the next one
/// answers a round trip later, and a round trip measured here and now is
/// the one that counts.
pub(crate) async fn take_when_free(
    l: &Locker,
    name: &str,
    lease: Duration,
    since: BootInstant,
    limit: Duration,
) -> Result<(LockGuard, Duration), String> {
    let mut slowest = Duration::ZERO;
    loop {
        let asked = BootInstant::now();
        if let Some(g) = l
            .try_lock(name, lease)
            .await
            .ctx(&format!("try_lock {name:?}"))?
        {
            return Ok((g, since.elapsed()));
        }
        slowest = slowest.max(asked.elapsed());
        let stretched = limit + slowest * 2;
        // Judged by when the question was sent, not when its answer was
        // read: a test process starved of CPU after the answer came back
        // (CI compiling beside it) must not turn a correct "held" into a
        // lease that overstayed.
        ensure!(
            asked.saturating_duration_since(since) < stretched,
            "{name:?} was still held {stretched:?} after it should have been free (a bound of \
             {limit:?}, plus twice the slowest try_lock, {slowest:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn forged(lease: &Lease) -> Lease {
    let mut f = lease.clone();
    f.id = dlock_core::new_acquisition_id();
    f.owner = "mallory".into();
    f
}

pub(crate) fn is_lost<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(e) if e.is_lock_lost())
}

pub(crate) fn is_unsupported<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Unsupported { .. }))
}

/// A little under `d`: what "not before `d`" allows for clock-rate drift.
pub(crate) fn just_under(d: Duration) -> Duration {
    d.mul_f64(0.98).saturating_sub(Duration::from_millis(5))
}

pub(crate) fn round_up(d: Duration, g: Duration) -> Duration {
    let g = g.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(d.as_nanos().div_ceil(g) * g).unwrap_or(u64::MAX))
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------- cases

async fn exclusive_try(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let g = must_take(&a, &name, lease).await?;
    ensure!(g.is_held(), "a fresh guard does not report is_held()");
    must_be_held(&b, &name, lease, "owner-a holds it").await?;
    must_be_held(
        &a,
        &name,
        lease,
        "owner-a already holds it (locks are not re-entrant)",
    )
    .await?;
    g.release().await.ctx("release")
}

async fn independent_names(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let lease = ctx.lease() * 5;
    let base = ctx.name("n");
    let names = [
        base.clone(),
        format!("{base}/child"),
        format!("{base}x"),
        format!("{base}Email"),
        format!("{base}email"),
        format!("{base}email "),
        format!("{base}%"),
        format!("{base}_"),
    ];
    let mut guards = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let l = if i % 2 == 0 { &a } else { &b };
        guards.push(
            must_take(l, n, lease)
                .await
                .map_err(|e| format!("{e} (while {} other names were held)", i))?,
        );
    }
    for n in &names {
        must_be_held(&a, n, lease, "it is held").await?;
    }
    for g in guards {
        g.release().await.ctx("release")?;
    }
    Ok(())
}

async fn release_then_reacquire(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let g = must_take(&a, &name, lease).await?;
    let t1 = g.token();
    g.release().await.ctx("release")?;
    let g2 = must_take(&b, &name, lease)
        .await
        .map_err(|e| format!("right after release: {e}"))?;
    ensure!(
        g2.token() > t1,
        "token {} after release is not greater than {t1}",
        g2.token()
    );
    g2.release().await.ctx("second release")
}

async fn only_owner_releases(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let a = ctx.locker_on(&backend, "owner-a");
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let g = must_take(&a, &name, lease).await?;
    let r = backend.release(&forged(&g.lease())).await;
    ensure!(
        is_lost(&r),
        "releasing with another acquisition's lease answered {r:?}, expected LockLost"
    );
    must_be_held(&b, &name, lease, "the forged release must change nothing").await?;
    ensure!(
        g.is_held(),
        "the real holder lost its lock to a forged release"
    );
    g.release().await.ctx("real release")
}

async fn only_owner_extends(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let a = ctx.locker_on(&backend, "owner-a");
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    let r = backend.extend(&forged(&g.lease()), lease * 4).await;
    ensure!(
        is_lost(&r),
        "extending with another acquisition's lease answered {r:?}, expected LockLost"
    );
    // The forged extension must not have lengthened the lease: it frees on time.
    let b = ctx.locker("owner-b").await?;
    let (g2, _) = take_when_free(
        &b,
        &name,
        lease * 5,
        g.lease().acquired_at,
        ctx.expiry_bound(lease),
    )
    .await?;
    g2.release().await.ctx("release")
}

async fn stale_lease_gets_lock_lost(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let a = ctx.locker_on(&backend, "owner-a");
    let (b, c) = (ctx.locker("owner-b").await?, ctx.locker("owner-c").await?);
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    let old = g.lease();
    let (g2, _) = take_when_free(
        &b,
        &name,
        lease * 5,
        old.acquired_at,
        ctx.expiry_bound(lease),
    )
    .await?;
    ensure!(
        BootInstant::now() >= old.valid_until,
        "taken over while the old lease was locally still valid"
    );
    ensure!(
        g2.token() > old.token,
        "new holder's token {} not above the expired one {}",
        g2.token(),
        old.token
    );
    let r = backend.extend(&old, lease).await;
    ensure!(
        is_lost(&r),
        "extending an expired, taken-over lease answered {r:?}"
    );
    let r = backend.release(&old).await;
    ensure!(
        is_lost(&r),
        "releasing an expired, taken-over lease answered {r:?}"
    );
    must_be_held(
        &c,
        &name,
        lease,
        "owner-b holds it and the stale calls must change nothing",
    )
    .await?;
    ensure!(
        g2.is_held(),
        "the new holder lost its lock to a stale lease"
    );
    drop(g);
    g2.release().await.ctx("release")
}

async fn release_after_loss_is_lock_lost(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    let (g2, _) = take_when_free(
        &b,
        &name,
        lease * 5,
        g.lease().acquired_at,
        ctx.expiry_bound(lease),
    )
    .await?;
    ensure!(
        !g.is_held(),
        "is_held() still true after the lease expired and was taken over"
    );
    let r = g.release().await;
    ensure!(
        is_lost(&r),
        "release of a lost guard answered {r:?}, expected LockLost (loss is never silent)"
    );
    ensure!(g2.is_held(), "new holder affected");
    g2.release().await.ctx("release")
}

async fn expiry_after_at_most(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease();
    let t0 = BootInstant::now();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    // Counted from the answer, as in shortest_lease_is_honoured.
    let limit = ctx.expiry_bound(lease) + t0.elapsed();
    let (g2, took) = take_when_free(&b, &name, lease * 5, t0, limit).await?;
    ensure!(
        BootInstant::now() >= g.lease().valid_until && !g.is_held(),
        "another owner took the lock while the first guard still counted itself valid"
    );
    ensure!(
        took >= just_under(lease),
        "lock of {lease:?} was free again after only {took:?}"
    );
    drop(g);
    g2.release().await.ctx("release")
}

async fn at_least_after_release(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let at_least = round_up(Duration::from_secs(2), ctx.caps.lease_granularity);
    // at_most far beyond at_least: a release that ignored at_least, or did
    // nothing, cannot pass by the lease simply running out.
    let at_most = ctx.lease_at_least(at_least + Duration::from_secs(10));
    let t0 = BootInstant::now();
    let g = take_with_at_least(&a, &name, at_most, at_least).await?;
    g.release().await.ctx("early release")?;
    must_be_held(
        &b,
        &name,
        at_most,
        "it was released before lock_at_least_for passed",
    )
    .await?;
    let (g2, took) = take_when_free(&b, &name, at_most, t0, ctx.at_least_bound(at_least)).await?;
    ensure!(
        took >= just_under(at_least),
        "lock_at_least_for {at_least:?} ended after only {took:?}"
    );
    g2.release().await.ctx("release")
}

async fn at_least_after_exit(ctx: Ctx) -> CaseResult {
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let at_least = round_up(Duration::from_secs(2), ctx.caps.lease_granularity);
    let at_most = ctx.lease_at_least(at_least + Duration::from_secs(10));
    let t_spawn = BootInstant::now();
    let mut child = ctx.spawn_child(Role::Hold {
        name: name.clone(),
        owner: "child".into(),
        at_most_ms: ms(at_most),
        at_least_ms: ms(at_least),
        keep_alive: false,
        wait_ms: 0,
        after: After::ReleaseAndExit,
    })?;
    let token: u64 = child.expect("ACQUIRED", Duration::from_secs(30)).await?[0]
        .parse()
        .map_err(|_| "bad token")?;
    child.expect("RELEASED", Duration::from_secs(30)).await?;
    let t_released = BootInstant::now();
    ensure!(
        child.wait(Duration::from_secs(10)).await?,
        "child exited with failure"
    );
    must_be_held(
        &b,
        &name,
        at_most,
        "its holder released early and exited within lock_at_least_for",
    )
    .await?;
    let bound = ctx.at_least_bound(at_least);
    let (g, _) = take_when_free(&b, &name, at_most, t_released, bound).await?;
    let since_spawn = t_spawn.elapsed();
    ensure!(
        since_spawn >= just_under(at_least),
        "lock_at_least_for {at_least:?} ended {since_spawn:?} after the holder started"
    );
    ensure!(
        g.token().0 > token,
        "token {} not above the child's {token}",
        g.token()
    );
    g.release().await.ctx("release")
}

async fn tokens_strictly_increase(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease();
    let mut seen = Vec::new();
    // across owners and releases
    for l in [&a, &b, &a] {
        let g = must_take(l, &name, lease * 5).await?;
        seen.push(g.token().0);
        g.release().await.ctx("release")?;
    }
    // across an expiry
    let g = take_without_keep_alive(&a, &name, lease).await?;
    seen.push(g.token().0);
    let (g2, _) = take_when_free(
        &b,
        &name,
        lease * 5,
        g.lease().acquired_at,
        ctx.expiry_bound(lease),
    )
    .await?;
    seen.push(g2.token().0);
    drop(g);
    g2.release().await.ctx("release")?;
    // across a reconnect
    drop(a);
    let c = ctx.locker("owner-c").await?;
    let g = must_take(&c, &name, lease * 5).await?;
    seen.push(g.token().0);
    g.release().await.ctx("release")?;
    ensure!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "tokens did not strictly increase: {seen:?}"
    );
    Ok(())
}

async fn wait_wakes_on_release(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let g = must_take(&a, &name, lease).await?;
    let n2 = name.clone();
    let waiter = tokio::spawn(async move {
        let r = b
            .acquire(n2)
            .lock_for(lease)
            .wait(Duration::from_secs(60) + lease)
            .lock()
            .await;
        (r, BootInstant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        !waiter.is_finished(),
        "the waiter returned while the lock was held"
    );
    let t_rel = BootInstant::now();
    g.release().await.ctx("release")?;
    let (r, t_got) = waiter.await.map_err(|e| format!("waiter task: {e}"))?;
    let g2 = r
        .ctx("lock() while waiting")?
        .ok_or("lock() gave up although the lock was released")?;
    let woke = t_got.saturating_duration_since(t_rel);
    let limit = if ctx.caps.release_notifies_waiters {
        Duration::from_millis(1000)
    } else {
        ctx.caps.poll_interval * 2 + Duration::from_millis(1000)
    };
    ensure!(
        woke <= limit,
        "waiter took {woke:?} to notice the release (limit {limit:?}, notifies: {})",
        ctx.caps.release_notifies_waiters
    );
    g2.release().await.ctx("release")
}

async fn wait_honours_timeout(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let g = must_take(&a, &name, lease).await?;
    let wait = Duration::from_millis(1500);
    let t0 = BootInstant::now();
    let r = b
        .acquire(&name)
        .lock_for(lease)
        .wait(wait)
        .lock()
        .await
        .ctx("lock() with a timeout")?;
    let took = t0.elapsed();
    ensure!(
        r.is_none(),
        "lock() returned a guard while another owner held the lock"
    );
    ensure!(
        took >= wait - Duration::from_millis(10),
        "lock() gave up after {took:?}, before its {wait:?} wait"
    );
    ensure!(
        took <= wait + ctx.caps.poll_interval + Duration::from_secs(2),
        "lock() overran its {wait:?} wait: {took:?}"
    );
    g.release().await.ctx("release")
}

async fn keep_alive_survives_many_leases(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = a
        .acquire(&name)
        .lock_for(lease)
        .keep_alive(true)
        .try_lock()
        .await
        .ctx("acquire")?
        .ok_or("free lock not taken")?;
    let lost = g.lost();
    let t0 = BootInstant::now();
    while t0.elapsed() < lease.mul_f64(3.5) {
        ensure!(
            g.is_held(),
            "keep-alive lost the lock after {:?} (lease {lease:?}): {:?}",
            t0.elapsed(),
            lost.reason()
        );
        must_be_held(&b, &name, lease, "its holder keeps it alive").await?;
        tokio::time::sleep(lease / 4).await;
    }
    ensure!(
        !lost.is_lost(),
        "lost() fired although keep-alive was on: {:?}",
        lost.reason()
    );
    g.release().await.ctx("release after keep-alive")
}

async fn lost_fires_without_keep_alive(ctx: Ctx) -> CaseResult {
    let a = ctx.locker("owner-a").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let t0 = BootInstant::now();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    ensure!(g.is_held(), "fresh guard not held");
    let reason = tokio::time::timeout(lease + Duration::from_secs(1), g.lost().wait())
        .await
        .map_err(|_| {
            format!(
                "lost() did not fire within {:?} of a {lease:?} lease without keep-alive",
                lease + Duration::from_secs(1)
            )
        })?;
    ensure!(
        t0.elapsed() <= lease + Duration::from_millis(500),
        "lost() fired late"
    );
    ensure!(!reason.is_empty(), "lost() gave no reason");
    ensure!(!g.is_held(), "is_held() still true after lost() fired");
    let r = g.release().await;
    ensure!(
        is_lost(&r),
        "release after loss answered {r:?}, expected LockLost"
    );
    Ok(())
}

async fn lost_fires_when_coordinator_gone(ctx: Ctx) -> CaseResult {
    let (mut proxy, a) = ctx.locker_through_proxy("owner-a").await?;
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = must_take(&a, &name, lease).await?;
    tokio::time::sleep(lease / 2).await;
    ensure!(g.is_held(), "guard not held before the cut");
    proxy.cut();
    let t_cut = BootInstant::now();
    let limit = lease + Duration::from_secs(2);
    let reason = tokio::time::timeout(limit, g.lost().wait())
        .await
        .map_err(|_| {
            format!("lost() did not fire within {limit:?} after the coordinator became unreachable")
        })?;
    ensure!(!g.is_held(), "is_held() true after lost(): {reason}");
    let (g2, _) = take_when_free(&b, &name, lease * 5, t_cut, ctx.expiry_bound(lease)).await?;
    ensure!(g2.token() > g.token(), "token did not grow after the cut");
    g2.release().await.ctx("release")?;
    let r = tokio::time::timeout(Duration::from_secs(30), g.release())
        .await
        .map_err(|_| "release through a dead connection hung for 30 s".to_string())?;
    ensure!(
        r.is_err(),
        "release through a cut connection of a lost lease answered Ok"
    );
    Ok(())
}

async fn unreachable_coordinator_is_err_fast(ctx: Ctx) -> CaseResult {
    let url = match &ctx.unreachable_url {
        Some(u) => u.clone(),
        None => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").ctx("bind")?;
            let addr = l.local_addr().ctx("addr")?;
            drop(l);
            redirect(&ctx.url, addr)
                .ok_or("no host:port in the URL; give Suite::unreachable_url")?
        }
    };
    let t0 = BootInstant::now();
    let limit = Duration::from_secs(20);
    let r = tokio::time::timeout(limit, async {
        match (ctx.connect)(url.clone()).await {
            Err(e) => Err(e),
            Ok(b) => b
                .try_acquire(&ctx.spec("x", "owner-a", ctx.lease()))
                .await
                .map(|_| ()),
        }
    })
    .await
    .map_err(|_| format!("connect + acquire on an unreachable coordinator hung for {limit:?}"))?;
    match r {
        Ok(()) => Err("an unreachable coordinator answered Ok".into()),
        Err(e) if e.is_lock_lost() => Err(format!("unreachable coordinator gave LockLost: {e}")),
        Err(e) => {
            let msg = e.to_string();
            ensure!(!msg.is_empty(), "empty error");
            ensure!(t0.elapsed() < limit, "took too long");
            Ok(())
        }
    }
}

/// Names that break naive SQL, paths, URLs and collations.
pub fn odd_name_list() -> Vec<String> {
    let mut v: Vec<String> = [
        "quote'",
        "dq\"",
        "pct%",
        "%",
        "_",
        "under_",
        "slash/x",
        "/lead",
        "trail/",
        "a//b",
        "..",
        ".",
        "a/../b",
        "semi;colon",
        "back\\slash",
        "sp ace",
        "Email",
        "email",
        "email ",
        " email",
        "ünïcødé ✓ 锁",
        "🔒",
        "*",
        "?q#h&x=1",
        "tab\tnew\nline",
        "$(rm)",
        "--",
        "null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(255));
    v.push(format!("{}x", "é".repeat(127)));
    v
}

async fn odd_names(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let lease = ctx.lease() * 10;
    let names = odd_name_list();
    let mut guards = Vec::new();
    for n in &names {
        guards.push(
            must_take(&a, n, lease)
                .await
                .map_err(|e| format!("odd name {n:?}: {e}"))?,
        );
    }
    for (n, g) in names.iter().zip(&guards) {
        must_be_held(&b, n, lease, "it is held")
            .await
            .map_err(|e| format!("odd name {n:?}: {e}"))?;
        let info = b
            .inspect(n)
            .await
            .ctx(&format!("inspect {n:?}"))?
            .ok_or_else(|| format!("inspect {n:?}: not held?"))?;
        ensure!(
            info.name.as_str() == n,
            "inspect of {n:?} named {:?}",
            info.name
        );
        ensure!(
            info.owner == "owner-a",
            "inspect of {n:?} says owner {:?}",
            info.owner
        );
        ensure!(
            info.token == g.token(),
            "inspect of {n:?} says token {} not {}",
            info.token,
            g.token()
        );
    }
    for g in guards {
        g.release().await.ctx("release")?;
    }
    for n in &names {
        let g = must_take(&b, n, lease)
            .await
            .map_err(|e| format!("after release, {n:?}: {e}"))?;
        g.release().await.ctx("release")?;
    }
    Ok(())
}

async fn name_bounds(ctx: Ctx) -> CaseResult {
    let a = ctx.locker("owner-a").await?;
    let lease = ctx.lease();
    for bad in [
        String::new(),
        "x".repeat(256),
        format!("{}xy", "é".repeat(127)),
    ] {
        let r = a.try_lock(bad.clone(), lease).await;
        ensure!(
            matches!(r, Err(Error::InvalidName { .. })),
            "name of {} bytes answered {r:?}",
            bad.len()
        );
    }
    let r = a.inspect("").await;
    ensure!(
        matches!(r, Err(Error::InvalidName { .. })),
        "inspect of an empty name answered {r:?}"
    );
    let g = must_take(&a, &"y".repeat(255), lease).await?;
    g.release().await.ctx("release")
}

fn faketime_lib() -> Result<String, String> {
    for p in [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ] {
        if std::path::Path::new(p).exists() {
            return Ok(p.to_string());
        }
    }
    Err("libfaketime is not installed (Debian package faketime; scripts/install-deps.sh installs it)".into())
}

fn wall_ms_now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0)
}

async fn skewed_client_clock(ctx: Ctx) -> CaseResult {
    let lib = faketime_lib()?;
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let skew = |offset: &'static str| {
        [
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME_NO_CACHE", "1"),
        ]
    };
    // A holder whose clock runs two hours ahead: the lock must not look expired to anyone.
    let ahead = skew("+2h");
    let t_spawn = BootInstant::now();
    let mut child = ctx.spawn_child_env(
        Role::Hold {
            name: name.clone(),
            owner: "skewed-ahead".into(),
            at_most_ms: ms(lease),
            at_least_ms: 0,
            keep_alive: false,
            wait_ms: 0,
            after: After::Hang,
        },
        &ahead,
    )?;
    let w = child.expect("ACQUIRED", Duration::from_secs(30)).await?;
    let token: u64 = w[0].parse().map_err(|_| "bad token")?;
    let child_clock: i128 = w
        .get(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no clock in child line")?;
    let offset = child_clock - wall_ms_now();
    ensure!(
        (offset - 7_200_000).abs() < 120_000,
        "faketime had no effect: the child's clock is {offset} ms off, expected +2h"
    );
    must_be_held(&b, &name, lease, "a holder with a fast clock holds it").await?;
    let (g, _) = take_when_free(
        &b,
        &name,
        lease * 10,
        t_spawn,
        ctx.expiry_bound(lease) + Duration::from_secs(3),
    )
    .await?;
    let held_for = t_spawn.elapsed();
    ensure!(
        held_for >= just_under(lease),
        "the fast-clock holder's lease ended after {held_for:?}"
    );
    ensure!(g.token().0 > token, "token did not grow");
    child.kill().await?;
    // A contender whose clock runs two hours behind must still see the lock held...
    let behind = skew("-2h");
    let try_role = Role::Try {
        name: name.clone(),
        owner: "skewed-behind".into(),
        at_most_ms: ms(lease),
    };
    let mut c = ctx.spawn_child_env(try_role.clone(), &behind)?;
    let line = c.next_line(Duration::from_secs(30)).await?;
    ensure!(
        line.starts_with("HELD"),
        "a slow-clock contender got a held lock: {line}"
    );
    c.wait(Duration::from_secs(10)).await?;
    let t_b = g.token().0;
    g.release().await.ctx("release")?;
    // ...and take it once free, with a larger token.
    let mut c = ctx.spawn_child_env(try_role, &behind)?;
    let w = c.expect("ACQUIRED", Duration::from_secs(30)).await?;
    let t_c: u64 = w[0].parse().map_err(|_| "bad token")?;
    ensure!(t_c > t_b, "slow-clock holder's token {t_c} not above {t_b}");
    c.wait(Duration::from_secs(10)).await?;
    Ok(())
}

async fn sigkill_frees_lock(ctx: Ctx) -> CaseResult {
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let lease = ctx.lease();
    let mut child = ctx.spawn_child(Role::Hold {
        name: name.clone(),
        owner: "doomed".into(),
        at_most_ms: ms(lease),
        at_least_ms: 0,
        keep_alive: true,
        wait_ms: 0,
        after: After::Hang,
    })?;
    let token: u64 = child.expect("ACQUIRED", Duration::from_secs(30)).await?[0]
        .parse()
        .map_err(|_| "bad token")?;
    // Keep-alive must carry it past its first lease.
    tokio::time::sleep(lease + lease / 2).await;
    must_be_held(&b, &name, lease, "the child holds it with keep-alive").await?;
    child.kill().await?;
    let t_kill = BootInstant::now();
    must_be_held(&b, &name, lease, "its holder was killed only just now").await?;
    let (g, took) = take_when_free(&b, &name, lease * 5, t_kill, ctx.expiry_bound(lease)).await?;
    ensure!(
        g.token().0 > token,
        "token did not grow after the holder was killed"
    );
    let _ = took;
    g.release().await.ctx("release")
}

async fn concurrency_no_overlap(ctx: Ctx) -> CaseResult {
    const TASKS: usize = 8;
    const PROCS: usize = 3;
    const PROC_TASKS: usize = 2;
    const PER_TASK: usize = 143; // (8 + 3*2) * 143 = 2002 acquisitions
    let names: Vec<String> = (0..3).map(|i| ctx.name(&format!("hot{i}"))).collect();
    // Holds last about a millisecond; a long lease keeps a slow machine from
    // turning scheduling delays into expiries.
    let lease = ctx.lease_at_least(Duration::from_secs(10));
    let mut children = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for p in 0..PROCS {
        if ctx.caps.shared_across_processes {
            children.push(ctx.spawn_child(Role::Work {
                names: names.clone(),
                tasks: PROC_TASKS,
                per_task: PER_TASK,
                lease_ms: ms(lease),
                owner: format!("proc{p}"),
            })?);
        } else {
            // An in-process store: each "process" is a connection of its own.
            let backend: Arc<dyn LockBackend> = ctx.fresh().await?;
            for t in 0..PROC_TASKS {
                let l = ctx.locker_on(&backend, &format!("proc{p}-{t}"));
                set.spawn(work(l, names.clone(), PER_TASK, lease, t % 2 == 1));
            }
        }
    }
    let backend: Arc<dyn LockBackend> = ctx.fresh().await?;
    for t in 0..TASKS {
        let l = ctx.locker_on(&backend, &format!("task{t}"));
        let names = names.clone();
        set.spawn(work(l, names, PER_TASK, lease, t % 2 == 1));
    }
    let mut all: Vec<Hold> = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.map_err(|e| format!("task: {e}"))??);
    }
    for mut c in children {
        all.extend(c.holds(Duration::from_secs(300)).await?);
    }
    ensure!(
        all.len() >= 2000,
        "only {} acquisitions recorded",
        all.len()
    );
    check_history(&all)
}

async fn inspect_reports_holder(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    ensure!(
        b.inspect(&name).await.ctx("inspect free")?.is_none(),
        "inspect of a never-taken lock reports a holder"
    );
    let lease = ctx.lease() * 5;
    let g = must_take(&a, &name, lease).await?;
    let info = b
        .inspect(&name)
        .await
        .ctx("inspect")?
        .ok_or("inspect of a held lock says free")?;
    ensure!(info.owner == "owner-a", "inspect owner {:?}", info.owner);
    ensure!(
        info.token == g.token(),
        "inspect token {} vs {}",
        info.token,
        g.token()
    );
    if let (Some(at), Some(until)) = (info.locked_at, info.lock_until) {
        ensure!(
            until > at,
            "lock_until {until:?} not after locked_at {at:?}"
        );
    }
    g.release().await.ctx("release")?;
    ensure!(
        b.inspect(&name)
            .await
            .ctx("inspect after release")?
            .is_none(),
        "inspect after release reports a holder"
    );
    Ok(())
}

/// A guard whose release finds the lock someone else's was lost while
/// held: `release()` says `LockLost`, and `lost()` must say so too (a task
/// watching `lost()` beside the work must not be told less than the one that
/// released). Taken over through `force_release`, so that no watch or
/// validity deadline can have reported it first on a backend without one.
async fn lost_fires_when_release_finds_the_lock_taken(ctx: Ctx) -> CaseResult {
    let (g, g2, _) = taken_over_by_force(&ctx).await?;
    let lost = g.lost();
    let r = g.release().await;
    ensure!(
        is_lost(&r),
        "release of a lock taken over answered {r:?}, expected LockLost"
    );
    ensure!(
        tokio::time::timeout(Duration::from_secs(1), lost.wait())
            .await
            .is_ok(),
        "release() answered LockLost, but lost() had not completed a second later: the \
         loss was told to one caller and hidden from the other"
    );
    g2.release().await.ctx("release")
}

/// Owner A takes a lock (lease: five test leases), owner B force-releases
/// it and takes it: A's guard, B's guard, and B's locker.
async fn taken_over_by_force(ctx: &Ctx) -> Result<(LockGuard, LockGuard, Locker), String> {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    let g = must_take(&a, &name, lease).await?;
    ensure!(
        b.force_release(&name).await.ctx("force_release")?,
        "force_release of a held lock answered false"
    );
    let g2 = must_take(&b, &name, lease)
        .await
        .map_err(|e| format!("after force_release: {e}"))?;
    Ok((g, g2, b))
}

async fn force_release_frees_lock(ctx: Ctx) -> CaseResult {
    let (g, g2, b) = taken_over_by_force(&ctx).await?;
    let name = ctx.name("x");
    let lease = ctx.lease() * 5;
    ensure!(
        g2.token() > g.token(),
        "token did not grow after force_release"
    );
    let r = g.extend(lease).await;
    ensure!(
        is_lost(&r),
        "extend by the forcibly released holder answered {r:?}"
    );
    let r = g.release().await;
    ensure!(
        is_lost(&r),
        "release by the forcibly released holder answered {r:?}"
    );
    ensure!(g2.is_held(), "new holder affected");
    g2.release().await.ctx("release")?;
    ensure!(
        !b.force_release(&name).await.ctx("force_release free")?,
        "force_release of a free lock answered true"
    );
    Ok(())
}

async fn invalid_spec_rejected(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease();
    let r = a.try_lock(&name, Duration::ZERO).await;
    ensure!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "zero lock_for answered {r:?}"
    );
    let r = a
        .acquire(&name)
        .lock_for(lease)
        .at_least(lease * 2)
        .try_lock()
        .await;
    ensure!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "at_least > at_most answered {r:?}"
    );
    let g = must_take(&b, &name, lease)
        .await
        .map_err(|e| format!("rejected requests must change nothing: {e}"))?;
    g.release().await.ctx("release")
}

async fn shortest_lease_is_honoured(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let shortest = ctx
        .caps
        .test_lease(Duration::ZERO)
        .max(Duration::from_millis(200));
    let shortest = round_up(shortest, ctx.caps.lease_granularity);
    let t0 = BootInstant::now();
    let g = a
        .acquire(&name)
        .lock_for(shortest)
        .keep_alive(false)
        .try_lock()
        .await
        .ctx(&format!("the declared shortest lease {shortest:?}"))?
        .ok_or("free lock not taken")?;
    // The coordinator starts the lease somewhere between the send (t0) and
    // the answer: a starved acquire moves the latest free time by its own
    // length, not by a bug. (A lease even 1 s too long still fails this.)
    let limit = ctx.expiry_bound(shortest) + t0.elapsed();
    let (g2, took) = take_when_free(
        &b,
        &name,
        shortest.max(Duration::from_secs(1)) * 5,
        t0,
        limit,
    )
    .await?;
    ensure!(
        took >= just_under(shortest),
        "the shortest lease {shortest:?} ended after {took:?}"
    );
    drop(g);
    g2.release().await.ctx("release")
}

async fn lease_below_minimum_is_unsupported(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let g = ctx.caps.lease_granularity;
    let below = if ctx.caps.min_lease > g && ctx.caps.min_lease - g >= g {
        ctx.caps.min_lease - g
    } else {
        ctx.caps.min_lease / 2
    };
    let r = backend
        .try_acquire(&ctx.spec(&ctx.name("x"), "owner-a", below))
        .await;
    ensure!(
        is_unsupported(&r),
        "a lease of {below:?} below the declared minimum {:?} answered {r:?}",
        ctx.caps.min_lease
    );
    Ok(())
}

async fn lease_off_granularity_is_unsupported(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let odd = ctx.lease() + ctx.caps.lease_granularity / 2;
    let r = backend
        .try_acquire(&ctx.spec(&ctx.name("x"), "owner-a", odd))
        .await;
    ensure!(
        is_unsupported(&r),
        "a lease of {odd:?}, not a multiple of {:?}, answered {r:?}",
        ctx.caps.lease_granularity
    );
    Ok(())
}

async fn lease_above_maximum_is_unsupported(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let max = ctx.caps.max_lease.ok_or("no max")?;
    let over = round_up(max + ctx.caps.lease_granularity, ctx.caps.lease_granularity);
    let r = backend
        .try_acquire(&ctx.spec(&ctx.name("x"), "owner-a", over))
        .await;
    ensure!(
        is_unsupported(&r),
        "a lease of {over:?} above the declared maximum {max:?} answered {r:?}"
    );
    Ok(())
}

async fn expired_lease_is_stale(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let a = ctx.locker_on(&backend, "owner-a");
    let name = ctx.name("x");
    let lease = ctx.lease();
    let g = take_without_keep_alive(&a, &name, lease).await?;
    let old = g.lease();
    // Expired at the coordinator, and nobody took it over. The guard stays
    // alive (no keep-alive): dropping it would release the lease, and this
    // case would test a released lease instead of an expired one.
    tokio::time::sleep(lease + ctx.caps.expiry_slack + Duration::from_millis(200)).await;
    let r = backend.extend(&old, lease).await;
    ensure!(
        is_lost(&r),
        "extending an expired (not taken over) lease answered {r:?}, expected LockLost"
    );
    let r = backend.release(&old).await;
    ensure!(
        is_lost(&r),
        "releasing an expired (not taken over) lease answered {r:?}, expected LockLost"
    );
    let b = ctx.locker("owner-b").await?;
    let g2 = must_take(&b, &name, lease)
        .await
        .map_err(|e| format!("the stale calls must not revive it: {e}"))?;
    drop(g);
    g2.release().await.ctx("release")
}

async fn released_lease_is_stale(ctx: Ctx) -> CaseResult {
    let backend = ctx.fresh().await?;
    let a = ctx.locker_on(&backend, "owner-a");
    let b = ctx.locker("owner-b").await?;
    let name = ctx.name("x");
    let at_least = round_up(Duration::from_secs(2), ctx.caps.lease_granularity);
    let at_most = ctx.lease_at_least(at_least + Duration::from_secs(10));
    let t0 = BootInstant::now();
    let g = take_with_at_least(&a, &name, at_most, at_least).await?;
    let old = g.lease();
    g.release().await.ctx("release")?;
    // Still taken (at_least), but the released lease is no longer anyone's to use.
    let r = backend.extend(&old, at_most).await;
    ensure!(
        is_lost(&r),
        "extending a released lease answered {r:?}, expected LockLost"
    );
    let r = backend.release(&old).await;
    ensure!(
        is_lost(&r),
        "releasing a released lease twice answered {r:?}, expected LockLost"
    );
    let (g2, _) = take_when_free(&b, &name, at_most, t0, ctx.at_least_bound(at_least))
        .await
        .map_err(|e| format!("after the stale extend of a released lease: {e}"))?;
    g2.release().await.ctx("release")
}

async fn drop_releases_in_background(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let name = ctx.name("x");
    let lease = ctx.lease_at_least(Duration::from_secs(30));
    let g = must_take(&a, &name, lease).await?;
    let t0 = BootInstant::now();
    drop(g);
    let (g2, took) = take_when_free(&b, &name, lease, t0, Duration::from_secs(5))
        .await
        .map_err(|e| format!("a dropped guard did not release: {e}"))?;
    ensure!(took < lease, "freed only by expiry");
    g2.release().await.ctx("release")
}

async fn list_reports_held_locks(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let lease = ctx.lease() * 5;
    // Names that sort and encode awkwardly, so list() must decode them exactly.
    let names = [
        ctx.name("a/b"),
        ctx.name("a"),
        ctx.name("ünï %"),
        ctx.name("z"),
    ];
    let mut guards = Vec::new();
    for n in &names[..3] {
        guards.push(must_take(&a, n, lease).await?);
    }
    let freed = must_take(&b, &names[3], lease).await?;
    freed.release().await.ctx("release")?;
    let listed = b.list().await.ctx("list")?;
    let mine: Vec<_> = listed
        .iter()
        .filter(|i| i.name.as_str().starts_with(ctx.case))
        .collect();
    let mut want: Vec<&String> = names[..3].iter().collect();
    want.sort();
    let got: Vec<&str> = mine.iter().map(|i| i.name.as_str()).collect();
    ensure!(
        got == want.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "list() gave {got:?}, expected exactly the held {want:?} in name order (not the released one)"
    );
    for (info, g) in mine.iter().zip({
        let mut gs: Vec<&LockGuard> = guards.iter().collect();
        gs.sort_by_key(|g| g.name());
        gs
    }) {
        ensure!(info.owner == "owner-a", "list() owner {:?}", info.owner);
        ensure!(
            info.token == g.token(),
            "list() token {} vs {}",
            info.token,
            g.token()
        );
    }
    for g in guards {
        g.release().await.ctx("release")?;
    }
    let left = b.list().await.ctx("list after release")?;
    ensure!(
        !left.iter().any(|i| i.name.as_str().starts_with(ctx.case)),
        "list() still reports released locks: {left:?}"
    );
    Ok(())
}

async fn list_unsupported_is_clear(ctx: Ctx) -> CaseResult {
    let a = ctx.locker("owner-a").await?;
    let r = a.list().await;
    ensure!(
        is_unsupported(&r),
        "list() on a backend declaring list: false answered {r:?}"
    );
    Ok(())
}
