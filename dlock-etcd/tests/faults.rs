//! Faults on the SHARED etcd: killed and restarted (`$DLOCK_TEST_COORDINATORS
//! restart --hard etcd`), and down for longer than a lease, while guards are
//! held and waiters wait. The test script runs this binary alone, after
//! everything else. The promise: no two valid holders, tokens still grow,
//! a guard whose lease is gone reports it (never silently).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{LockBackend, LockGuard, Locker};
use dlock_etcd::EtcdBackend;
use dlock_testkit::coordinators::{coordinators, env_var as env};
use dlock_testkit::{check_history, Hold};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Both tests bounce the same server: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn url() -> String {
    format!(
        "{}/faults_{:x}",
        env("DLOCK_TEST_ETCD_URL"),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    )
}

/// Monotonic nanoseconds since the first call (all holds come from this process).
fn mono_ns() -> u128 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos()
}

/// Connects, retrying while etcd is coming back.
async fn backend(url: &str) -> Arc<dyn LockBackend> {
    let t = Instant::now();
    loop {
        match EtcdBackend::connect(url).await {
            Ok(b) => return Arc::new(b),
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("connect (retrying): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect: {e}"),
        }
    }
}

/// Hammers `name` until `stop`: lock (waiting), hold briefly, release.
/// Records a hold only when its release succeeded (proof that it was valid
/// at the coordinator throughout); errors while etcd is down are counted.
async fn worker(
    locker: Locker,
    name: String,
    stop: Arc<AtomicBool>,
    holds: Arc<Mutex<Vec<Hold>>>,
    errors: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let r = locker
            .acquire(name.clone())
            .lock_for(Duration::from_secs(2))
            .wait(Duration::from_secs(3))
            .lock()
            .await;
        let guard = match r {
            Ok(Some(g)) => g,
            Ok(None) => continue,
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let start_ns = mono_ns();
        let token = guard.token().0;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let end_ns = mono_ns();
        if guard.release().await.is_ok() {
            holds.lock().unwrap().push(Hold {
                name: name.clone(),
                token,
                start_ns,
                end_ns,
            });
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A guard must never claim to hold a lock that etcd gives to nobody or to
/// someone else. Checked around a read so a lease running out mid-check is
/// not a false alarm.
async fn consistent(observer: &Locker, g: &LockGuard) -> Result<(), String> {
    if !g.is_held() {
        return Ok(());
    }
    let Ok(info) = observer.inspect(g.name().as_str().to_string()).await else {
        return Ok(()); // etcd unreachable: nothing to compare
    };
    let ours = info.as_ref().is_some_and(|i| i.token == g.token());
    if !ours && g.is_held() {
        return Err(format!(
            "guard {} (token {}) says it is held but etcd says {info:?}",
            g.name(),
            g.token()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_restart_while_guards_are_held_and_waiters_wait() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let nodes: Vec<Arc<dyn LockBackend>> = vec![
        backend(&url).await,
        backend(&url).await,
        backend(&url).await,
    ];
    let locker = |i: usize, owner: &str| {
        Locker::from_arc(nodes[i].clone())
            .with_owner(owner)
            .unwrap()
    };
    let observer = locker(0, "observer");

    // Long-lived guards: one whose lease easily outlives the outage, one
    // whose lease is about as short as etcd allows.
    let long = locker(0, "long")
        .try_lock("long", Duration::from_secs(15))
        .await
        .unwrap()
        .unwrap();
    let short = locker(1, "short")
        .try_lock("short", Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    let tokens_before = [long.token().0, short.token().0];

    // Waiters on the held names, and workers hammering a hot name.
    let stop = Arc::new(AtomicBool::new(false));
    let holds = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3 {
        tasks.spawn(worker(
            locker(i, &format!("worker{i}")),
            "hot".into(),
            stop.clone(),
            holds.clone(),
            errors.clone(),
        ));
    }
    let mut waiters = tokio::task::JoinSet::new();
    for (i, name) in ["short", "long"].into_iter().enumerate() {
        let l = locker(2 - i, &format!("waiter-{name}"));
        waiters.spawn(async move {
            let t = Instant::now();
            loop {
                // Errors while etcd is down: keep waiting (a real caller would).
                if let Ok(Some(g)) = l
                    .acquire(name)
                    .lock_for(Duration::from_secs(5))
                    .wait(Duration::from_secs(5))
                    .lock()
                    .await
                {
                    return (name, g);
                }
                assert!(
                    t.elapsed() < Duration::from_secs(90),
                    "waiter on {name} never got it"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hot_before = holds.lock().unwrap().len();
    assert!(hot_before > 0, "workers made no progress before the fault");

    let t_fault = Instant::now();
    coordinators(&["restart", "--hard", "etcd"]).await;
    let outage = t_fault.elapsed();
    eprintln!("etcd restarted (kill -9 + start) in {outage:?}");

    // Watch the guards for a while after the restart: never held-but-not-ours.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        consistent(&observer, &long).await.unwrap();
        consistent(&observer, &short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The long guard outlived the outage by far: keep-alive resumed.
    assert!(
        long.is_held(),
        "the 15 s guard did not survive a {outage:?} outage: {:?}",
        long.lost().reason()
    );
    let info = observer.inspect("long").await.unwrap().unwrap();
    assert_eq!(info.token, long.token());

    // The short guard: either still held (the outage was shorter than its
    // lease) and etcd agrees, or it reported the loss; never silently gone.
    if short.is_held() {
        let info = observer.inspect("short").await.unwrap();
        assert_eq!(info.map(|i| i.token), Some(short.token()));
        short.release().await.unwrap();
    } else {
        let reason = short
            .lost()
            .reason()
            .expect("not held but lost() never fired");
        eprintln!("short guard reported: {reason}");
        let r = short.release().await;
        assert!(r.as_ref().is_err_and(|e| e.is_lock_lost()), "{r:?}");
    }
    long.release().await.unwrap();

    // Waiters get the locks, with larger tokens.
    while let Some(r) = waiters.join_next().await {
        let (name, g) = r.unwrap();
        let before = if name == "long" {
            tokens_before[0]
        } else {
            tokens_before[1]
        };
        assert!(
            g.token().0 > before,
            "{name}: token {} not above {before}",
            g.token()
        );
        g.release().await.unwrap();
    }

    // Workers: progress after the restart, and no overlapping valid holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let all = holds.lock().unwrap().clone();
    assert!(all.len() > hot_before, "no acquisitions after the restart");
    check_history(&all).unwrap();
    let max_before = all[..hot_before].iter().map(|h| h.token).max().unwrap();
    assert!(
        all[hot_before..].iter().any(|h| h.token > max_before),
        "tokens did not grow past the restart"
    );
    eprintln!(
        "{} valid holds, {} errors during the fault",
        all.len(),
        errors.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_down_longer_than_the_lease() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let a = Locker::from_arc(backend(&url).await)
        .with_owner("a")
        .unwrap();
    let g = a
        .try_lock("x", Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    let token = g.token();

    coordinators(&["kill", "etcd"]).await;
    let t_kill = Instant::now();
    // While etcd is down: the guard reports the loss within its lease (plus
    // scheduling), and a contender gets an error, never "held by someone".
    let reason = tokio::time::timeout(Duration::from_secs(4), g.lost().wait()).await;
    let down = t_kill.elapsed();
    let contender = a.try_lock("y", Duration::from_secs(2)).await;
    coordinators(&["start", "etcd"]).await;
    let reason = reason.expect("lost() did not fire while etcd was down");
    eprintln!("lost after {down:?}: {reason}");
    assert!(!g.is_held());
    assert!(contender.is_err(), "{contender:?}");

    // After the restart etcd re-arms every lease (TTL + election timeout),
    // so the dead guard's key lingers a little, then frees; the next holder
    // gets a larger token, and the old guard's release is LockLost.
    let b = Locker::from_arc(backend(&url).await)
        .with_owner("b")
        .unwrap();
    let t = Instant::now();
    let g2 = loop {
        if let Ok(Some(g2)) = b
            .acquire("x")
            .lock_for(Duration::from_secs(2))
            .wait(Duration::from_secs(5))
            .lock()
            .await
        {
            break g2;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "x never freed after the restart"
        );
    };
    assert!(g2.token() > token);
    let r = g.release().await;
    assert!(r.as_ref().is_err_and(|e| e.is_lock_lost()), "{r:?}");
    g2.release().await.unwrap();
}
