//! `dlock::test` and `memory://`: code that takes locks can be unit-tested
//! without a server, and `assert_locked!` tells whether code runs under
//! its lock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock::Locker;
use std::time::Duration;
use tokio::sync::oneshot;

/// Runs under `name`; asserts it does, then waits for `hold` if given.
#[dlock::try_lock(name = name, lock_for = "30s", locker = locker)]
async fn guarded(
    locker: &Locker,
    name: &str,
    expect: &str,
    started: Option<oneshot::Sender<()>>,
    hold: Option<oneshot::Receiver<()>>,
) -> u64 {
    dlock::assert_locked!();
    dlock::assert_locked!(expect);
    if let Some(tx) = started {
        let _ = tx.send(());
    }
    if let Some(rx) = hold {
        let _ = rx.await;
    }
    dlock::current_lock().unwrap().token.get()
}

/// The message of the panic `f` ends in; `None` when it returns.
async fn panic_of(f: impl std::future::Future<Output = ()> + Send + 'static) -> Option<String> {
    let e = tokio::spawn(f).await.err()?;
    let p = e.into_panic();
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
}

#[tokio::test]
async fn assert_locked_passes_under_the_lock_and_panics_elsewhere() {
    let locker = dlock::test::locker();
    assert_eq!(
        guarded(&locker, "report", "report", None, None)
            .await
            .unwrap(),
        Some(1)
    );

    // Outside any locked body.
    let msg = panic_of(async { dlock::assert_locked!() }).await.unwrap();
    assert!(msg.contains("no dlock lock is held"), "{msg}");

    // Under another lock than the one named.
    let l = locker.clone();
    let msg = panic_of(async move {
        guarded(&l, "report", "invoices", None, None).await.unwrap();
    })
    .await
    .unwrap();
    assert!(
        msg.contains("\"report\"") && msg.contains("\"invoices\""),
        "{msg}"
    );
}

#[tokio::test]
async fn nodes_on_one_named_store_exclude_each_other() {
    let store = format!("memory://nodes-{}", uuid::Uuid::new_v4().simple());
    let a = dlock::connect(&store)
        .await
        .unwrap()
        .with_owner("a")
        .unwrap();
    let b = dlock::connect(&store)
        .await
        .unwrap()
        .with_owner("b")
        .unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let (hold_tx, hold_rx) = oneshot::channel();
    let (ra, rb) = tokio::join!(
        guarded(&a, "job", "job", Some(started_tx), Some(hold_rx)),
        async {
            started_rx.await.unwrap();
            let skipped = guarded(&b, "job", "job", None, None).await;
            let held_by = b.inspect("job").await.unwrap().map(|i| i.owner);
            hold_tx.send(()).unwrap();
            (skipped, held_by)
        }
    );
    assert_eq!(ra.unwrap(), Some(1));
    let (skipped, held_by) = rb;
    assert_eq!(skipped.unwrap(), None, "b ran while a held the lock");
    assert_eq!(held_by.as_deref(), Some("a"));
    // Free again, and the token grew.
    assert_eq!(
        guarded(&b, "job", "job", None, None).await.unwrap(),
        Some(2)
    );

    // A private store is just that: a second `memory://` sees nothing.
    let private_a = dlock::connect("memory://").await.unwrap();
    let private_b = dlock::connect("memory://").await.unwrap();
    let g = private_a
        .try_lock("job", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(private_b
        .try_lock("job", Duration::from_secs(30))
        .await
        .unwrap()
        .is_some());
    g.release().await.unwrap();
}

#[tokio::test]
async fn an_unavailable_store_fails_every_call_with_a_transient_error() {
    let name = format!("down-{}", uuid::Uuid::new_v4().simple());
    let locker = dlock::test::shared_locker(&name, "a").unwrap();
    let g = locker
        .try_lock("held", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let store = dlock::memory::MemoryBackend::shared(&name);
    store.set_available(false);
    let e = locker
        .try_lock("other", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:#}");
    assert!(e.to_string().contains("set_available(false)"), "{e}");
    let e = dlock::connect(&format!("memory://{name}"))
        .await
        .unwrap_err();
    assert!(matches!(e, dlock::Error::Connect { .. }), "{e:?}");
    // Back up: the lock held all along is still held, by its guard.
    store.set_available(true);
    assert!(g.is_held());
    g.release().await.unwrap();
}

#[tokio::test]
async fn settings_a_backend_cannot_use_are_errors() {
    let opts = dlock::ConnectOptions::new().password("p");
    let e = dlock::connect_with("memory://x", &opts).await.unwrap_err();
    assert!(e.to_string().contains("ConnectOptions::password"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    let e = dlock::connect_with(&url, &opts).await.unwrap_err();
    assert!(e.to_string().contains("ConnectOptions::password"), "{e}");
    assert!(dlock::connect_with(&url, &dlock::ConnectOptions::new())
        .await
        .is_ok());
}

#[tokio::test]
async fn memory_urls_are_checked() {
    for (url, want) in [
        ("memory://x?ttl=1s", "unknown option \"ttl\""),
        ("memory://x/y", "store name only"),
        ("memory://u@x", "store name only"),
        ("memory://:pw@x", "store name only"),
    ] {
        let e = dlock::connect(url).await.unwrap_err();
        assert!(matches!(e, dlock::Error::InvalidConfig(_)), "{url}: {e:?}");
        assert!(e.to_string().contains(want), "{url}: {e}");
    }
}

/// Waits until its lock is lost, then asserts it is held (it runs on
/// after the loss: `cancel_on_lost = false`).
#[dlock::try_lock(name = "lost-job", lock_for = "1s", locker = locker, cancel_on_lost = false)]
async fn asserts_after_loss(locker: &Locker, started: oneshot::Sender<()>) {
    let _ = started.send(());
    let lost = dlock::current_lock().unwrap().lost;
    tokio::time::timeout(Duration::from_secs(10), lost.wait())
        .await
        .expect("the loss was never signalled");
    dlock::assert_locked!();
}

#[tokio::test]
async fn assert_locked_panics_once_the_lock_is_lost() {
    let name = format!("lost-{}", uuid::Uuid::new_v4().simple());
    let locker = dlock::test::shared_locker(&name, "a").unwrap();
    let operator = dlock::test::shared_locker(&name, "operator").unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let l = locker.clone();
    let run = tokio::spawn(async move {
        let _ = asserts_after_loss(&l, started_tx).await;
    });
    started_rx.await.unwrap();
    assert!(operator.force_release("lost-job").await.unwrap());
    let p = run.await.unwrap_err().into_panic();
    let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("was lost"), "{msg}");
}
