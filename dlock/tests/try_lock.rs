//! `#[dlock::try_lock]` against a real SQLite file (and PostgreSQL with the
//! `postgres` feature): runs once, skips when held, sees errors, works on
//! methods with `locker = self.locker`, and with the process-wide default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock::Locker;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("locks.db").display())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Signals `started` once it runs, then holds the lock until `hold` fires.
#[dlock::try_lock(name = name, lock_for = "10s", locker = locker)]
async fn basic(
    locker: &Locker,
    name: &str,
    runs: Arc<AtomicUsize>,
    started: Option<oneshot::Sender<()>>,
    hold: Option<oneshot::Receiver<()>>,
) -> usize {
    runs.fetch_add(1, Ordering::SeqCst);
    if let Some(tx) = started {
        let _ = tx.send(());
    }
    if let Some(rx) = hold {
        let _ = rx.await;
    }
    42
}

/// Two calls on two nodes while the first runs: one runs, the other is
/// skipped. Ordered by signals, not sleeps.
async fn one_runs_other_skips(url: &str) {
    let a = dlock::connect(url)
        .await
        .unwrap()
        .with_owner("node-a")
        .unwrap();
    let b = dlock::connect(url)
        .await
        .unwrap()
        .with_owner("node-b")
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    // A fresh name per run: runs on a shared server never see each other.
    let name = unique("macro-basic");
    let (started_tx, started_rx) = oneshot::channel();
    let (hold_tx, hold_rx) = oneshot::channel();
    let (ra, rb) = tokio::join!(
        basic(&a, &name, runs.clone(), Some(started_tx), Some(hold_rx)),
        async {
            started_rx.await.unwrap();
            let r = basic(&b, &name, runs.clone(), None, None).await;
            hold_tx.send(()).unwrap();
            r
        }
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{ra:?} {rb:?}");
    assert_eq!((ra, rb), (Some(42), None));
    // Released afterwards (no at_least): the next call runs.
    assert_eq!(
        basic(&b, &name, runs.clone(), None, None).await.unwrap(),
        Some(42)
    );
}

#[tokio::test]
async fn sqlite_one_runs_other_skips() {
    let dir = tempfile::tempdir().unwrap();
    one_runs_other_skips(&sqlite_url(&dir)).await;
}

#[cfg(feature = "postgres")]
fn postgres_url() -> String {
    std::env::var("DLOCK_TEST_POSTGRES_URL").expect(
        "set DLOCK_TEST_POSTGRES_URL=postgres://user:pass@127.0.0.1:PORT/db \
         (scripts/coordinators.sh writes it to .run/env) to test against PostgreSQL",
    )
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_one_runs_other_skips() {
    one_runs_other_skips(&postgres_url()).await;
}

// --- errors are returned, not swallowed -----------------------------------

#[derive(Debug, PartialEq)]
struct MyError(&'static str);

#[dlock::try_lock(name = "macro-errors", lock_for = "5s", locker = locker)]
async fn fallible(locker: Locker, fail: bool) -> Result<u32, MyError> {
    if fail {
        return Err(MyError("boom"));
    }
    let n: u32 = "7".parse().map_err(|_| MyError("parse"))?;
    Ok(n)
}

#[tokio::test]
async fn body_result_and_question_mark_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let locker = dlock::connect(&sqlite_url(&dir)).await.unwrap();
    assert_eq!(fallible(locker.clone(), false).await.unwrap(), Some(Ok(7)));
    assert_eq!(
        fallible(locker.clone(), true).await.unwrap(),
        Some(Err(MyError("boom")))
    );
}

#[dlock::try_lock(name = "macro-bad-owner", owner = String::new(), locker = locker)]
async fn bad_owner(locker: Locker) {}

#[tokio::test]
async fn lock_errors_are_err_not_none() {
    let dir = tempfile::tempdir().unwrap();
    let locker = dlock::connect(&sqlite_url(&dir)).await.unwrap();
    let e = bad_owner(locker).await.unwrap_err();
    assert!(matches!(e, dlock::Error::InvalidConfig(_)), "{e}");
}

// --- lease lost while the body runs: Err(LockLost), and visible inside ----

#[dlock::try_lock(name = "macro-lost", lock_for = "600ms", locker = locker)]
async fn loses_lock(locker: Locker) -> bool {
    let lock = dlock::current_lock().expect("inside a #[try_lock] body");
    // Another operator frees the lock under us; keep-alive then fails.
    locker.force_release("macro-lost").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), lock.lost.wait())
        .await
        .is_ok()
}

#[tokio::test]
async fn lost_lease_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let locker = dlock::connect(&sqlite_url(&dir)).await.unwrap();
    let e = loses_lock(locker).await.unwrap_err();
    assert!(e.is_lock_lost(), "{e}");
}

// --- methods, self.locker, dynamic names, current_lock --------------------

struct Importer {
    locker: Locker,
    imported: std::sync::Mutex<Vec<(String, u64)>>,
}

impl Importer {
    #[dlock::try_lock(name = format!("import:{file}"), lock_for = "30s",
                      at_least = "1s", locker = self.locker)]
    async fn import(&self, file: &str) -> usize {
        let lock = dlock::current_lock().unwrap();
        assert_eq!(lock.name.as_str(), format!("import:{file}"));
        self.imported
            .lock()
            .unwrap()
            .push((file.to_string(), lock.token.get()));
        file.len()
    }

    /// By value, with an `Arc<Locker>`-typed expression.
    #[dlock::try_lock(name = "consume", lock_for = "5s", locker = Arc::new(self.locker.clone()))]
    async fn consume(self) -> usize {
        self.imported.into_inner().unwrap().len()
    }
}

#[tokio::test]
async fn methods_with_self_locker_and_dynamic_names() {
    let dir = tempfile::tempdir().unwrap();
    let locker = dlock::connect(&sqlite_url(&dir)).await.unwrap();
    let imp = Importer {
        locker,
        imported: Default::default(),
    };
    assert_eq!(imp.import("a.csv").await.unwrap(), Some(5));
    // at_least 1s: the same file again right away is skipped...
    assert_eq!(imp.import("a.csv").await.unwrap(), None);
    // ...while another file has a lock of its own.
    assert_eq!(imp.import("bb.csv").await.unwrap(), Some(6));
    {
        let got = imp.imported.lock().unwrap();
        assert_eq!(got.len(), 2);
    }
    assert!(dlock::current_lock().is_none(), "no lock outside a body");
    assert_eq!(imp.consume().await.unwrap(), Some(2));
}

// --- the future is Send: it can be spawned ---------------------------------

#[dlock::try_lock(name = "macro-send", lock_for = "5s", locker = locker)]
async fn sendable(locker: Locker) -> String {
    tokio::task::yield_now().await;
    "done".to_string()
}

#[tokio::test]
async fn future_is_send() {
    let dir = tempfile::tempdir().unwrap();
    let locker = dlock::connect(&sqlite_url(&dir)).await.unwrap();
    let h = tokio::spawn(sendable(locker));
    assert_eq!(h.await.unwrap().unwrap(), Some("done".to_string()));
}

// --- wait = ...: waits for the holder instead of skipping ------------------

#[dlock::try_lock(name = "macro-wait", lock_for = "5s", wait = "10s", locker = locker)]
async fn waits(locker: Locker) -> u64 {
    dlock::current_lock().unwrap().token.get()
}

#[tokio::test]
async fn wait_argument_waits() {
    let dir = tempfile::tempdir().unwrap();
    let locker = dlock::connect(&sqlite_url(&dir)).await.unwrap();
    let held = locker
        .try_lock("macro-wait", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let first = held.token().get();
    let releaser = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release().await.unwrap();
    };
    let (got, ()) = tokio::join!(waits(locker.clone()), releaser);
    assert!(got.unwrap().unwrap() > first);
}

// --- the process-wide default locker ---------------------------------------

#[dlock::try_lock(name = "macro-default", lock_for = "5s")]
async fn uses_default() -> &'static str {
    "ran"
}

#[tokio::test]
async fn default_locker_unset_then_set() {
    // Tests in this binary run in parallel threads; only this test touches
    // the default locker.
    let e = uses_default().await.unwrap_err().to_string();
    assert!(e.contains("set_default_locker"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    dlock::set_default_locker(dlock::connect(&sqlite_url(&dir)).await.unwrap());
    assert_eq!(uses_default().await.unwrap(), Some("ran"));
    assert!(dlock::default_locker().is_ok());
}
