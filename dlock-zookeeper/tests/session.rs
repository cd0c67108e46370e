//! Session behaviour through a loopback proxy: a reconnect within the session
//! keeps every guard; losing the ensemble fires `lost()` on every guard of the
//! session at once, and the locks pass to others with larger tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dlock_core::{BootInstant, LockGuard, Locker};
use dlock_zookeeper::ZookeeperBackend;
use std::time::{Duration, Instant};

async fn through(proxy: &Proxy, root: &str) -> Locker {
    let u = url_for(&proxy.addr.to_string(), None, root, "");
    let b = ZookeeperBackend::connect(&u).await.unwrap();
    Locker::new(b).with_owner("proxied").unwrap()
}

async fn direct(root: &str, owner: &str) -> Locker {
    let b = ZookeeperBackend::connect(&url(root)).await.unwrap();
    Locker::new(b).with_owner(owner).unwrap()
}

async fn take(l: &Locker, name: &str, lease: Duration, keep_alive: bool) -> LockGuard {
    l.acquire(name)
        .lock_for(lease)
        .keep_alive(keep_alive)
        .try_lock()
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name} not free"))
}

#[tokio::test]
async fn reconnect_within_the_session_keeps_every_guard() {
    let root = unique_root("blip");
    let proxy = Proxy::start(upstream()).await;
    let a = through(&proxy, &root).await;
    let other = direct(&root, "other").await;
    // One guard renews itself, one does not and relies on its 30 s lease.
    let g1 = take(&a, "one", Duration::from_secs(3), true).await;
    let g2 = take(&a, "two", Duration::from_secs(30), false).await;
    for _ in 0..3 {
        proxy.drop_connections();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    for g in [&g1, &g2] {
        assert!(g.is_held(), "{:?} lost: {:?}", g.name(), g.lost().reason());
    }
    for n in ["one", "two"] {
        assert!(
            other
                .try_lock(n, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "{n} was free although its holder's session survived"
        );
    }
    g2.extend(Duration::from_secs(30)).await.unwrap();
    g1.release().await.unwrap();
    g2.release().await.unwrap();
}

#[tokio::test]
async fn losing_the_ensemble_fires_lost_on_every_guard_at_once() {
    let root = unique_root("cut");
    let mut proxy = Proxy::start(upstream()).await;
    let a = through(&proxy, &root).await;
    let other = direct(&root, "other").await;
    let g1 = take(&a, "one", Duration::from_secs(60), true).await;
    let g2 = take(&a, "two", Duration::from_secs(60), false).await;
    let (t1, t2) = (g1.token(), g2.token());
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    let t_cut = Instant::now();
    // From the cut on, another owner keeps trying: it must not get a lock
    // before that lock's old guard has reported the loss.
    let mut takers = Vec::new();
    for (n, t) in [("one", t1), ("two", t2)] {
        let other = other.clone();
        takers.push(tokio::spawn(async move {
            loop {
                if let Some(g) = other.try_lock(n, Duration::from_secs(5)).await.unwrap() {
                    let at = Instant::now();
                    assert!(g.token() > t, "{n}: token did not grow");
                    g.release().await.unwrap();
                    return at;
                }
                assert!(t_cut.elapsed() < Duration::from_secs(15), "{n} never freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // Without an answer for 2/3 of the 4 s session timeout, the session can no
    // longer be proven alive: both guards must say so, long before their
    // 60 s leases run out, and before the server can expire the session.
    let (r1, r2) = tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(g1.lost(), g2.lost())
    })
    .await
    .expect("lost() did not fire after the ensemble vanished");
    let t_lost = Instant::now();
    let took = t_lost - t_cut;
    assert!(took < Duration::from_secs(4), "lost after {took:?}");
    assert!(
        r1.contains("session") && r2.contains("session"),
        "{r1} / {r2}"
    );
    assert!(!g1.is_held() && !g2.is_held());
    // The server expires the session; the locks pass on with larger tokens,
    // only after the old guards said they were lost.
    for t in takers {
        let taken = t.await.unwrap();
        assert!(
            taken > t_lost,
            "taken over {:?} before lost() fired",
            t_lost - taken
        );
    }
    assert!(g1.release().await.unwrap_err().is_lock_lost());
    assert!(g2.release().await.unwrap_err().is_lock_lost());
    // The backend opens a new session once the ensemble is reachable again.
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        a.try_lock("three", Duration::from_secs(5)),
    )
    .await;
    assert!(
        matches!(again, Ok(Err(_))),
        "still cut: expected an error, got {again:?}"
    );
    let _back = Proxy::start_on(proxy.addr, upstream()).await;
    let g3 = a
        .try_lock("three", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(g3.token() > t2);
    g3.release().await.unwrap();
}

/// A holder whose process is paused (here: its only runtime thread blocked)
/// longer than the session timeout must not believe its lock on resume: the
/// ensemble expired its session meanwhile and another owner took the lock.
/// `is_held()` is the first thing it asks after the pause, before any of
/// its background tasks could run.
#[tokio::test]
async fn is_held_is_false_on_resume_after_a_pause_past_the_session_timeout() {
    let root = unique_root("pause");
    let holder_url = url(&root); // 4 s sessions
    let (took_tx, took_rx) = tokio::sync::oneshot::channel::<u64>();
    let holder = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let b = ZookeeperBackend::connect(&holder_url).await.unwrap();
            let l = Locker::new(b).with_owner("paused").unwrap();
            // A long lease with keep-alive: only the session can end it.
            let g = take(&l, "job", Duration::from_secs(60), true).await;
            took_tx.send(g.token().get()).unwrap();
            // The pause: nothing of this runtime runs for 12 s (3 × the
            // session timeout).
            std::thread::sleep(Duration::from_secs(12));
            let held = g.is_held();
            (held, BootInstant::now(), g.token().get())
        })
    });
    let t_holder = took_rx.await.unwrap();
    let other = direct(&root, "other").await;
    let g = other
        .acquire("job")
        .lock_for(Duration::from_secs(30))
        .wait(Duration::from_secs(20))
        .lock()
        .await
        .unwrap()
        .expect("the paused holder's session never expired");
    let t_other = BootInstant::now();
    assert!(g.token().get() > t_holder);
    let (held, t_resume, _) = tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    assert!(
        t_resume > t_other,
        "the pause ended before the other owner got the lock: the test proves nothing"
    );
    assert!(
        !held,
        "the paused holder's is_held() answered true on resume, while another owner \
         (token {}) had held the lock for {:?}",
        g.token(),
        t_resume.saturating_duration_since(t_other)
    );
    g.release().await.unwrap();
}

/// An acquire whose connection breaks after its create reached the server
/// but before the answer came back (its member died or was cut off) is
/// asked again once the client has reconnected within the session: it
/// takes the lock instead of failing, and the node the lost create made is
/// gone (another owner gets the lock the moment it is released).
#[tokio::test]
async fn an_acquire_whose_answer_is_lost_is_asked_again_after_the_reconnect() {
    let root = unique_root("lost-answer");
    let proxy = dlock_testkit::Proxy::start(upstream()).await.unwrap();
    let u = url_for(&proxy.addr().to_string(), None, &root, "");
    let a = Locker::new(ZookeeperBackend::connect(&u).await.unwrap())
        .with_owner("proxied")
        .unwrap();
    let other = direct(&root, "other").await;
    for round in 0..3 {
        let name = format!("lost-{round}");
        // The lock's directory exists (so the lost create is applied).
        take(&a, &name, Duration::from_secs(30), false)
            .await
            .release()
            .await
            .unwrap();
        proxy.stall();
        let (taken, ()) = tokio::join!(a.try_lock(name.as_str(), Duration::from_secs(30)), async {
            // The create and the queue read reach the server; their
            // answers are held, then dropped with the connection.
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.reset();
            proxy.resume();
        });
        let g = taken
            .unwrap_or_else(|e| panic!("round {round}: the acquire failed: {e:#}"))
            .unwrap_or_else(|| panic!("round {round}: {name} was free, yet not taken"));
        assert!(
            other
                .try_lock(name.as_str(), Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "round {round}: another owner got {name} while it was held"
        );
        let token = g.token();
        g.release().await.unwrap();
        let next = other
            .try_lock(name.as_str(), Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap_or_else(|| {
                panic!("round {round}: {name} stayed taken after release: the lost create's node is left")
            });
        assert!(next.token() > token);
        next.release().await.unwrap();
    }
}
