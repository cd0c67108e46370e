//! What waits and what does not, against a real SQLite file: `lock()` waits
//! like tokio's `Mutex::lock` when no wait is set, `.wait(d)` bounds it,
//! and `run_exclusive` without a wait skips a held lock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock::{LockGuard, LockOptions, Locker};
use std::time::Duration;

/// Node A holds "job" (30 s lease); returns its guard and node B's locker,
/// both on one SQLite file in `dir`.
async fn held_by_another_node(dir: &tempfile::TempDir) -> (LockGuard, Locker) {
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
    let held = a
        .try_lock("job", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a free lock was not taken");
    (held, b)
}

/// A lock() with no wait set is still waiting while the lock is held, and
/// gets the lock once it is released: it never answers "held" by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_without_a_wait_waits_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let (held, b) = held_by_another_node(&dir).await;
    let waiter = tokio::spawn(async move {
        b.acquire("job")
            .lock_for(Duration::from_secs(30))
            .lock()
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiter.is_finished(),
        "lock() without a wait answered while the lock was held"
    );
    held.release().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("lock() did not take the released lock within 10 s")
        .unwrap()
        .unwrap();
    let g = got.expect("lock() without a wait answered Ok(None)");
    g.release().await.unwrap();
}

/// `.wait(d)` bounds the wait: `Ok(None)` after about `d` while held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_wait_runs_out_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let (held, b) = held_by_another_node(&dir).await;
    let t0 = std::time::Instant::now();
    let r = b
        .acquire("job")
        .lock_for(Duration::from_secs(30))
        .wait(Duration::from_millis(500))
        .lock()
        .await
        .unwrap();
    assert!(r.is_none(), "a held lock was taken");
    assert!(
        t0.elapsed() >= Duration::from_millis(490),
        "gave up after {:?}",
        t0.elapsed()
    );
    held.release().await.unwrap();
}

/// run_exclusive without a wait skips a held lock at once (ShedLock's
/// behaviour for scheduled work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exclusive_without_a_wait_skips() {
    let dir = tempfile::tempdir().unwrap();
    let (held, b) = held_by_another_node(&dir).await;
    let ran = tokio::time::timeout(
        Duration::from_secs(5),
        b.run_exclusive(
            "job",
            LockOptions::new(Duration::from_secs(30)),
            |_| async { 1 },
        ),
    )
    .await
    .expect("run_exclusive without a wait waited for a held lock")
    .unwrap();
    assert_eq!(ran, None, "ran while another node held the lock");
    held.release().await.unwrap();
}
