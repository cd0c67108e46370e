//! Scale, as `scripts/bench.sh` measures it: does an acquire slow down with
//! many names held, and how many acquire attempts does one release cost
//! when many clients wait on one name (a herd woken by every release costs
//! O(waiters); a queue costs O(1)).

use super::counting::{Counting, Counts};
use super::{env_or, smoke_run, uncontended_acquire, Settings};
use dlock_core::{LockBackend, LockGuard, Locker};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How big the scale run is: `BENCH_FEW_NAMES` (10) and
/// `BENCH_MANY_NAMES` (100,000) names held, `BENCH_WAITERS` (256) waiters
/// over `BENCH_WAITER_CONNECTIONS` (8) connections. Under
/// `cargo test --benches` a tiny smoke run.
#[derive(Clone, Copy, Debug)]
pub struct ScaleSettings {
    /// Names held while the small acquire sample is taken.
    pub few: usize,
    /// Names held while the large acquire sample is taken.
    pub many: usize,
    /// Clients waiting on one name.
    pub waiters: usize,
    /// Connections the waiters share (a coordinator caps connections:
    /// PostgreSQL allows 100 by default).
    pub waiter_connections: usize,
}

impl ScaleSettings {
    /// From the environment, as [`Settings::from_env`].
    pub fn from_env() -> Self {
        if smoke_run() {
            return ScaleSettings {
                few: 10,
                many: 50,
                waiters: 4,
                waiter_connections: 2,
            };
        }
        ScaleSettings {
            few: env_or("BENCH_FEW_NAMES", 10),
            many: env_or("BENCH_MANY_NAMES", 100_000),
            waiters: env_or("BENCH_WAITERS", 256),
            waiter_connections: env_or("BENCH_WAITER_CONNECTIONS", 8).max(1),
        }
    }
}

/// What the scale run showed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Scale {
    /// Names held during the small sample.
    pub few_names: usize,
    /// Uncontended acquire p50 (µs) of a free name, `few_names` held.
    pub few_p50_us: f64,
    /// Names held during the large sample.
    pub many_names: usize,
    /// Uncontended acquire p50 (µs) of a free name, `many_names` held.
    pub many_p50_us: f64,
    /// `many_p50_us ÷ few_p50_us` (target ≤ 1.1).
    pub many_over_few: f64,
    /// How long taking the `many_names` took, in seconds (32 at a time).
    pub fill_seconds: f64,
    /// Clients that waited on one name.
    pub waiters: usize,
    /// Connections they shared.
    pub waiter_connections: usize,
    /// Acquire attempts (requests) per release while the waiters drained
    /// one by one (O(1) target: about 1).
    pub attempts_per_release: f64,
    /// Waits (a watch, a blocking query, a LISTEN wait or a poll sleep)
    /// per release.
    pub waits_per_release: f64,
    /// How long the drain took, in seconds.
    pub drain_seconds: f64,
}

/// Long enough that no held name expires during the run.
const HOLD_FOR: Duration = Duration::from_secs(3600);
/// How many acquires (or releases) are in flight while filling.
const IN_FLIGHT: usize = 32;

/// Takes `{prefix}-{i}` for each `i` in `range`, `IN_FLIGHT` at a time.
async fn hold_names(
    locker: &Locker,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> Result<Vec<LockGuard>, String> {
    futures::stream::iter(range)
        .map(|i| {
            let (l, name) = (locker.clone(), format!("{prefix}-{i}"));
            async move {
                l.acquire(name.as_str())
                    .lock_for(HOLD_FOR)
                    .keep_alive(false)
                    .try_lock()
                    .await
                    .map_err(|e| format!("hold {name}: {e:#}"))?
                    .ok_or_else(|| format!("hold {name}: already held"))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

async fn release_all(guards: Vec<LockGuard>) -> Result<(), String> {
    futures::stream::iter(guards)
        .map(|g| async move { g.release().await.map_err(|e| format!("release: {e:#}")) })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// `waiters` clients (over the counting backends in `lockers`) wait on a
/// held name; the holder releases, and they take it one after another,
/// each holding 1 ms. Returns (attempts, waits) per release and the
/// drain's length. Counting starts after every waiter has settled into its
/// wait, so a first try or a poll before the release is not counted.
async fn herd(
    holder: &Locker,
    lockers: &[Locker],
    counts: &Counts,
    waiters: usize,
) -> Result<(f64, f64, f64), String> {
    let name = format!("herd-{}", std::process::id());
    let lock_for = Duration::from_secs(10);
    let held = holder
        .acquire(name.as_str())
        .lock_for(HOLD_FOR)
        .keep_alive(false)
        .try_lock()
        .await
        .map_err(|e| format!("herd holder: {e:#}"))?
        .ok_or("herd holder: the name is held")?;
    let tasks: Vec<_> = (0..waiters)
        .filter_map(|i| lockers.get(i % lockers.len().max(1)).map(|l| (i, l)))
        .map(|(i, l)| {
            // An owner each: the herd is `waiters` distinct clients.
            let l = l.clone().with_owner(format!("waiter-{i}"));
            let name = name.clone();
            tokio::spawn(async move {
                let l = l.map_err(|e| format!("waiter {i}: {e}"))?;
                let g = l
                    .acquire(name.as_str())
                    .lock_for(lock_for)
                    .keep_alive(false)
                    .wait(Duration::from_secs(300))
                    .lock()
                    .await
                    .map_err(|e| format!("waiter {i}: {e:#}"))?
                    .ok_or_else(|| format!("waiter {i}: waited 300 s"))?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                g.release()
                    .await
                    .map_err(|e| format!("waiter {i}: release: {e:#}"))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    counts.reset();
    let t = Instant::now();
    held.release()
        .await
        .map_err(|e| format!("herd holder: release: {e:#}"))?;
    for r in futures::future::join_all(tasks).await {
        r.map_err(|e| format!("a waiter task failed: {e}"))??;
    }
    let drain = t.elapsed().as_secs_f64();
    let (attempts, waits) = counts.read();
    let n = waiters.max(1) as f64;
    Ok((attempts as f64 / n, waits as f64 / n, drain))
}

/// The scale run: the acquire sample with `few` then `many` names held
/// (through `locker`), then the herd of `waiters` on
/// `waiter_connections` fresh connections from `connect`.
pub async fn scale<B, F, Fut>(
    locker: &Locker,
    connect: F,
    s: Settings,
    sc: ScaleSettings,
) -> Result<Scale, String>
where
    B: LockBackend + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = dlock_core::Result<B>>,
{
    let prefix = format!("scale-{}", std::process::id());
    let probe = format!("{prefix}-probe");
    let lock_for = Duration::from_secs(10);
    let mut held = hold_names(locker, &prefix, 0..sc.few).await?;
    let few = uncontended_acquire("few", locker, &probe, lock_for, s).await?;
    let t = Instant::now();
    held.extend(hold_names(locker, &prefix, sc.few..sc.many.max(sc.few)).await?);
    let fill_seconds = t.elapsed().as_secs_f64();
    let many = uncontended_acquire("many", locker, &probe, lock_for, s).await?;
    release_all(held).await?;

    let counts = Arc::new(Counts::default());
    let mut lockers = Vec::with_capacity(sc.waiter_connections);
    for c in 0..sc.waiter_connections {
        let inner = connect().await.map_err(|e| format!("connect: {e:#}"))?;
        let counting = Counting {
            inner: Arc::new(inner),
            counts: counts.clone(),
        };
        lockers.push(
            Locker::new(counting)
                .with_owner(format!("waiters-{c}"))
                .map_err(|e| e.to_string())?,
        );
    }
    let (attempts, waits, drain) = herd(locker, &lockers, &counts, sc.waiters).await?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(Scale {
        few_names: sc.few,
        few_p50_us: us(few.p50()),
        many_names: sc.many.max(sc.few),
        many_p50_us: us(many.p50()),
        many_over_few: many.p50().as_secs_f64() / few.p50().as_secs_f64().max(1e-9),
        fill_seconds,
        waiters: sc.waiters,
        waiter_connections: sc.waiter_connections,
        attempts_per_release: attempts,
        waits_per_release: waits,
        drain_seconds: drain,
    })
}
