//! Faults that restart the shared database servers: run alone and serially
//! (scripts/test.sh runs every `faults` binary after everything else).
//!
//! Needs DLOCK_TEST_COORDINATORS (scripts/coordinators.sh) and the URL of
//! each server; FAILS, never skips, when they are unset.
//!
//! The promise under test: while the database restarts, a guard either keeps
//! its lease (and nobody else can take the lock) or reports it lost
//! (`lost()` fires, `is_held()` is false) — never both silently — and the
//! fencing tokens keep growing afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock_core::{LockBackend, LockGuard, Locker};
use dlock_testkit::coordinators::{coordinators, env_var as env};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn with_query(url: &str, q: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

/// Waits until the server answers again through `b` (fresh connections).
async fn wait_until_up(b: &Arc<dyn LockBackend>) {
    let t0 = Instant::now();
    let probe = dlock_core::LockName::new("probe").unwrap();
    loop {
        match b.inspect(&probe).await {
            Ok(_) => return,
            Err(e) if t0.elapsed() < Duration::from_secs(60) => {
                eprintln!("server not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("server did not come back within 60 s: {e}"),
        }
    }
}

/// The lock is either still ours at the database, or the guard says it is
/// lost — never "held" locally while someone else can take it.
async fn check_consistent(g: &LockGuard, other: &Locker, backend: &Arc<dyn LockBackend>) -> bool {
    let name = g.name();
    let lease = g.lease();
    let before = g.is_held();
    let taken = other
        .try_lock(name.as_str(), Duration::from_secs(30))
        .await
        .expect("try_lock by another owner after the restart");
    let after = g.is_held();
    match taken {
        Some(o) => {
            assert!(
                !after,
                "{name:?}: another owner took the lock (token {}) while the first guard (token {}) \
                 still claims to hold it",
                o.token(),
                lease.token
            );
            assert!(
                o.token() > lease.token,
                "token did not grow after the restart"
            );
            let reason = tokio::time::timeout(Duration::from_secs(5), g.lost().wait())
                .await
                .unwrap_or_else(|_| panic!("{name:?}: not held any more, but lost() never fired"));
            assert!(!reason.is_empty());
            o.release().await.unwrap();
            false
        }
        None => {
            if before && after {
                let info = backend
                    .inspect(&name)
                    .await
                    .unwrap()
                    .expect("held lock must show in inspect");
                assert_eq!(
                    info.id.as_deref(),
                    Some(lease.id.as_str()),
                    "{name:?}: the guard claims the lock but the database has another holder"
                );
                assert_eq!(info.token, lease.token);
            }
            before && after
        }
    }
}

/// One restart at a time: the cases share the servers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn restart_while_held(url_var: &str, restart_args: &[&str]) {
    let _one_at_a_time = SERIAL.lock().await;
    let table = format!("dlock_f_{}", &dlock_core::new_acquisition_id()[..12]);
    let url = with_query(
        &env(url_var),
        &format!("table={table}&statement_timeout=3s"),
    );
    let a_backend = dlock_sql::connect(&url).await.unwrap();
    let b_backend = dlock_sql::connect(&url).await.unwrap();
    let a = Locker::from_arc(a_backend.clone())
        .with_owner("holder")
        .unwrap();
    let b = Locker::from_arc(b_backend.clone())
        .with_owner("other")
        .unwrap();

    // A lease long enough to outlive the restart: keep-alive must carry it through.
    let long = a
        .try_lock("long", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    // A lease the restart probably outlasts: it is kept or reported lost.
    let short = a
        .try_lock("short", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let (t_long, t_short) = (long.token(), short.token());

    let took = coordinators(&[&["restart"], restart_args].concat()).await;
    eprintln!("restart {restart_args:?} took {took:?}");
    let t_up = dlock_core::BootInstant::now();
    wait_until_up(&b_backend).await;

    // The long lease: wait for a keep-alive extension granted after the
    // restart, then it must still be ours.
    let deadline = Instant::now() + Duration::from_secs(20);
    while long.lease().valid_until < t_up + Duration::from_secs(10) {
        assert!(
            !long.lost().is_lost(),
            "a 20 s lease was lost across a {took:?} restart: {:?}",
            long.lost().reason()
        );
        assert!(
            Instant::now() < deadline,
            "no keep-alive extension succeeded after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        check_consistent(&long, &b, &b_backend).await,
        "the long lease should have survived the restart"
    );

    // The short lease: whichever way it went, it must be consistent, now and
    // after another lease length.
    check_consistent(&short, &b, &b_backend).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = check_consistent(&short, &b, &b_backend).await;
    eprintln!(
        "1 s lease after the restart: {}",
        if still { "kept" } else { "reported lost" }
    );

    long.release().await.unwrap();
    match short.release().await {
        Ok(()) => assert!(still, "released a lease the guard had reported lost"),
        Err(e) => assert!(
            e.is_lock_lost() && !still,
            "release of the short lease: {e}"
        ),
    }

    // Tokens keep growing across the restart.
    let l2 = b
        .try_lock("long", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("released lock is free");
    assert!(l2.token() > t_long, "{} <= {}", l2.token(), t_long);
    l2.release().await.unwrap();
    let s2 = b
        .acquire("short")
        .lock_for(Duration::from_secs(5))
        .wait(Duration::from_secs(10))
        .lock()
        .await
        .unwrap()
        .expect("short lock free again");
    assert!(s2.token() > t_short, "{} <= {}", s2.token(), t_short);
    s2.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_while_a_guard_is_held() {
    restart_while_held("DLOCK_TEST_POSTGRES_URL", &["postgres"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hard_restart_while_a_guard_is_held() {
    restart_while_held("DLOCK_TEST_POSTGRES_URL", &["--hard", "postgres"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_hard_restart_while_a_guard_is_held() {
    restart_while_held("DLOCK_TEST_MYSQL_URL", &["--hard", "mariadb"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_restart_while_a_guard_is_held() {
    restart_while_held("DLOCK_TEST_MYSQL_URL", &["mariadb"]).await;
}
