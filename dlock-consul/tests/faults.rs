//! Faults of the shared Consul server (`DLOCK_TEST_CONSUL_URL`), restarted
//! through `$DLOCK_TEST_COORDINATORS` while guards are held. The test script
//! runs this binary alone, after everything else. The promise under test:
//! never two valid holders, tokens still grow, and a guard whose lease is
//! gone says so (`lost()` / `is_held()`), never silently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::consul_url;
use dlock_consul::ConsulBackend;
use dlock_core::{FencingToken, LockBackend, LockGuard, LockName, LockSpec, Locker};
use dlock_testkit::coordinators::coordinators;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cases restart the same server: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEASE: Duration = Duration::from_secs(10);

/// Waits until the agent answers a consistent read again.
async fn until_serving(url: &str) {
    let t0 = Instant::now();
    loop {
        if let Ok(b) = ConsulBackend::connect(url).await {
            if b.inspect(&LockName::new("probe").unwrap()).await.is_ok() {
                return;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "Consul did not come back within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Held {
    name: String,
    guard: LockGuard,
    token: FencingToken,
}

/// A contender that keeps trying every name and checks, the moment it gets
/// one, that the guard for it no longer claims to hold it.
fn contend(
    url: String,
    held: Arc<Vec<Held>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, FencingToken)>> {
    tokio::spawn(async move {
        let mut got: Vec<(String, FencingToken)> = Vec::new();
        let mut backend: Option<ConsulBackend> = None;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if backend.is_none() {
                backend = ConsulBackend::connect(&url).await.ok();
            }
            let Some(b) = &backend else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            for h in held.iter() {
                if got.iter().any(|(n, _)| *n == h.name) {
                    continue;
                }
                let spec =
                    LockSpec::new(LockName::new(h.name.clone()).unwrap(), "contender", LEASE)
                        .unwrap();
                if let Ok(Some(lease)) = b.try_acquire(&spec).await {
                    assert!(
                        !h.guard.is_held(),
                        "TWO VALID HOLDERS: the contender took {:?} (token {}) while its guard (token {}) still reports is_held()",
                        h.name,
                        lease.token,
                        h.token
                    );
                    assert!(
                        lease.token > h.token,
                        "token did not grow: {} after {}",
                        lease.token,
                        h.token
                    );
                    got.push((h.name.clone(), lease.token));
                    // Keep it: the contender is now the holder.
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got
    })
}

async fn take(l: &Locker, name: &str, keep_alive: bool) -> Held {
    let guard = l
        .acquire(name)
        .lock_for(LEASE)
        .keep_alive(keep_alive)
        .try_lock()
        .await
        .unwrap()
        .expect("free lock");
    Held {
        name: name.to_string(),
        token: guard.token(),
        guard,
    }
}

/// Restart (graceful or `--hard`) while guards are held: sessions and keys
/// survive (the server has a data dir), the guards with keep-alive carry
/// on, the one without reports loss at its expiry, and every later token is
/// larger than every earlier one.
async fn restart_while_held(hard: bool) {
    let (url, _) = consul_url();
    until_serving(&url).await;
    let b = ConsulBackend::connect(&url).await.unwrap();
    let l = Locker::new(b.clone()).with_owner("holder").unwrap();
    let held = Arc::new(vec![
        take(&l, "fault/kept-1", true).await,
        take(&l, "fault/kept-2", true).await,
        take(&l, "fault/unrenewed", false).await,
    ]);
    let max_before = held.iter().map(|h| h.token).max().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let contender = contend(url.clone(), held.clone(), stop.clone());

    let t_restart = Instant::now();
    if hard {
        coordinators(&["restart", "--hard", "consul"]).await;
    } else {
        coordinators(&["restart", "consul"]).await;
    }
    until_serving(&url).await;
    let down_for = t_restart.elapsed();

    // Watch for three lease lengths past the restart.
    let watch_until = Instant::now() + LEASE * 3;
    while Instant::now() < watch_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = contender.await.unwrap();

    for h in held.iter() {
        let taken = got.iter().find(|(n, _)| *n == h.name);
        let lost = h.guard.lost().reason();
        eprintln!(
            "{} (hard: {hard}, down {down_for:?}): token {}, lost: {lost:?}, taken over: {taken:?}",
            h.name, h.token
        );
        if let Some((_, t)) = taken {
            assert!(
                lost.is_some() && !h.guard.is_held(),
                "{} was taken over (token {t}) but its guard never reported loss",
                h.name
            );
        }
        if h.name == "fault/unrenewed" {
            assert!(
                lost.is_some(),
                "the unrenewed guard outlived its lease silently"
            );
            assert!(
                taken.is_some(),
                "the unrenewed lock was never freed (down for {down_for:?})"
            );
        } else if lost.is_none() {
            assert!(h.guard.is_held(), "{}: neither held nor lost", h.name);
            assert!(taken.is_none());
        }
    }
    // Raft indexes survived the restart: a brand-new lock gets a larger token.
    let fresh = l.try_lock("fault/after", LEASE).await.unwrap().unwrap();
    assert!(
        fresh.token() > max_before,
        "token {} after restart <= {} before",
        fresh.token(),
        max_before
    );
    fresh.release().await.unwrap();
    for h in Arc::try_unwrap(held).ok().unwrap() {
        let r = h.guard.release().await;
        if h.name == "fault/unrenewed" {
            assert!(r.unwrap_err().is_lock_lost());
        } else if let Err(e) = r {
            assert!(e.is_lock_lost(), "{}: {e}", h.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_while_guards_are_held() {
    let _serial = SERIAL.lock().await;
    restart_while_held(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_restart_while_guards_are_held() {
    let _serial = SERIAL.lock().await;
    restart_while_held(true).await;
}

/// The server is down for longer than the lease: the guard reports loss
/// (it can no longer prove its lease). After the restart Consul re-arms the
/// session timers, so the old session may hold the key up to 2 x TTL
/// longer; the contender must wait for that, never overlap, and get a
/// larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_the_lease_is_reported_as_loss() {
    let _serial = SERIAL.lock().await;
    let (url, _) = consul_url();
    until_serving(&url).await;
    let b = ConsulBackend::connect(&url).await.unwrap();
    let l = Locker::new(b.clone()).with_owner("holder").unwrap();
    let held = Arc::new(vec![take(&l, "fault/outage", true).await]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    coordinators(&["kill", "consul"]).await;
    let t_kill = Instant::now();
    let reason = tokio::time::timeout(LEASE + Duration::from_secs(3), held[0].guard.lost().wait())
        .await
        .expect("lost() did not fire although the server stayed down past the lease");
    assert!(!held[0].guard.is_held(), "{reason}");
    assert!(t_kill.elapsed() < LEASE + Duration::from_secs(2));
    coordinators(&["start", "consul"]).await;
    until_serving(&url).await;

    let contender = contend(url.clone(), held.clone(), stop.clone());
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if contender.is_finished() || t0.elapsed() > LEASE * 3 + Duration::from_secs(5) {
            break;
        }
        if b.inspect(&LockName::new("fault/outage").unwrap())
            .await
            .ok()
            .flatten()
            .is_some_and(|i| i.owner == "contender")
        {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = contender.await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "the lock was not free within 3 leases of the restart"
    );
    assert!(got[0].1 > held[0].token);
    let h = Arc::try_unwrap(held).ok().unwrap().pop().unwrap();
    assert!(h.guard.release().await.unwrap_err().is_lock_lost());
}
