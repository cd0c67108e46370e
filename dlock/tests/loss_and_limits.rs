//! Work stops when its lease is lost (`cancel_on_lost`), a hold has a hard
//! ceiling (`max_hold`), and `release_after` keeps a finished lock taken for
//! a while: against a real SQLite file, with a second owner as the witness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock::{LockOptions, Locker};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn nodes() -> (tempfile::TempDir, Locker, Locker) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    let a = dlock::connect(&url)
        .await
        .unwrap()
        .with_owner("node-a")
        .unwrap();
    let b = dlock::connect(&url)
        .await
        .unwrap()
        .with_owner("node-b")
        .unwrap();
    (dir, a, b)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Sets its flag when dropped: tells whether a future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until `name` is held by someone, so the work surely started.
async fn until_held(l: &Locker, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.inspect(name).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "{name} was never taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exclusive_stops_the_work_when_the_lease_is_lost() {
    let (_dir, a, b) = nodes().await;
    let name = unique("cancel");
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (d, f) = (dropped.clone(), finished.clone());
    let (a2, n2) = (a.clone(), name.clone());
    let work = tokio::spawn(async move {
        // A 3 s lease: SQLite has no loss signal, so the guard learns of the
        // loss at its next keep-alive, a second in.
        a2.run_exclusive(
            &n2,
            LockOptions::new(Duration::from_secs(3)),
            |_ctx| async move {
                let _flag = DropFlag(d);
                tokio::time::sleep(Duration::from_secs(60)).await;
                f.store(true, Ordering::SeqCst);
            },
        )
        .await
    });
    until_held(&b, &name).await;
    // The lease is taken away under the work (an operator, or an expiry).
    assert!(b.force_release(&name).await.unwrap());
    let r = tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("the work was not stopped at the loss")
        .unwrap();
    let e = r.unwrap_err();
    assert!(e.is_lock_lost(), "{e}");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the work's future was not dropped"
    );
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cancel_on_lost_the_work_finishes_and_the_answer_is_lock_lost() {
    let (_dir, a, b) = nodes().await;
    let name = unique("no-cancel");
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let (a2, n2) = (a.clone(), name.clone());
    let opts = LockOptions::new(Duration::from_secs(3)).cancel_on_lost(false);
    let work = tokio::spawn(async move {
        a2.run_exclusive(&n2, opts, |ctx| async move {
            // Runs to its own end, well after the loss it waits for.
            let _ = tokio::time::timeout(Duration::from_secs(20), ctx.lost.wait()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            f.store(true, Ordering::SeqCst);
        })
        .await
    });
    until_held(&b, &name).await;
    assert!(b.force_release(&name).await.unwrap());
    let e = work.await.unwrap().unwrap_err();
    assert!(e.is_lock_lost(), "{e}");
    assert!(finished.load(Ordering::SeqCst), "the work was cut short");
}

#[dlock::try_lock(name = name, lock_for = "3s", locker = locker)]
async fn pending_body(locker: &Locker, name: &str, dropped: Arc<AtomicBool>) {
    let _flag = DropFlag(dropped);
    std::future::pending::<()>().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_lock_body_is_stopped_at_the_loss() {
    let (_dir, a, b) = nodes().await;
    let name = unique("macro-cancel");
    let dropped = Arc::new(AtomicBool::new(false));
    let (a2, n2, d) = (a.clone(), name.clone(), dropped.clone());
    let call = tokio::spawn(async move { pending_body(&a2, &n2, d).await });
    until_held(&b, &name).await;
    assert!(b.force_release(&name).await.unwrap());
    let e = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the body was not stopped at the loss")
        .unwrap()
        .unwrap_err();
    assert!(e.is_lock_lost(), "{e}");
    assert!(dropped.load(Ordering::SeqCst));
}

/// Keep-alive carries a 400 ms lease past its length, but not past
/// `max_hold` (1.5 s): there the guard is lost, says why, and its release
/// frees the lock for the next owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_ends_a_kept_alive_hold() {
    let (_dir, a, b) = nodes().await;
    let name = unique("max-hold");
    let lease = Duration::from_millis(400);
    let max_hold = Duration::from_millis(1500);
    let t0 = Instant::now();
    let g = a
        .acquire(&name)
        .lock_for(lease)
        .max_hold(max_hold)
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(lease * 2).await;
    assert!(
        g.is_held(),
        "keep-alive did not carry the lease past its length"
    );
    assert!(b.try_lock(&name, lease).await.unwrap().is_none());
    let reason = tokio::time::timeout(Duration::from_secs(10), g.lost().wait())
        .await
        .expect("max_hold never ended the hold");
    let held_for = t0.elapsed();
    assert!(reason.contains("max_hold"), "{reason}");
    assert!(
        held_for >= max_hold - Duration::from_millis(100),
        "lost after only {held_for:?}"
    );
    assert!(!g.is_held());
    let e = g.release().await.unwrap_err();
    assert!(e.is_lock_lost(), "{e}");
    // The release still went out: the lock is free now, not at expiry.
    let next = b.try_lock(&name, lease).await.unwrap();
    assert!(
        next.is_some(),
        "the lock stayed taken after a max_hold loss and release"
    );
    next.unwrap().release().await.unwrap();
}

#[tokio::test]
async fn a_zero_max_hold_is_a_clear_error() {
    let (_dir, a, _b) = nodes().await;
    let e = a
        .acquire("zero-max-hold")
        .max_hold(Duration::ZERO)
        .try_lock()
        .await
        .unwrap_err();
    assert!(matches!(e, dlock::Error::InvalidConfig(_)), "{e:?}");
    assert!(e.to_string().contains("max_hold"), "{e}");
}

/// `release_after(hold)` keeps the lock taken for `hold` (keep-alive
/// stopped, nothing sent at the end), then the coordinator frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_after_keeps_the_lock_then_lets_it_lapse() {
    let (_dir, a, b) = nodes().await;
    let name = unique("release-after");
    let g = a
        .try_lock(&name, Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    let token = g.token();
    let hold = Duration::from_millis(1500);
    let t0 = Instant::now();
    g.release_after(hold).await.unwrap();
    // Longer than the 300 ms lease: the hold is the new length.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let info = b.inspect(&name).await.unwrap().expect("released at once");
    assert_eq!(info.owner, "node-a");
    assert!(b.try_lock(&name, hold).await.unwrap().is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        if let Some(g) = b.try_lock(&name, hold).await.unwrap() {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "the lock never lapsed: keep-alive still running?"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        t0.elapsed() >= hold - Duration::from_millis(50),
        "freed after {:?}",
        t0.elapsed()
    );
    assert!(next.token() > token);
    next.release().await.unwrap();
}
