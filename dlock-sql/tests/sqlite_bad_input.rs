//! Bad input for the SQLite adapter: each gets a clear error and loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{Error, LockBackend, LockName, LockSpec, Locker};
use dlock_sql::SqliteBackend;
use dlock_testkit::bad_input::{huge_timeout_verdict, no_panic};
use std::time::Duration;

fn url_in(dir: &std::path::Path, file: &str, query: &str) -> String {
    format!("sqlite://{}/{file}{query}", dir.display())
}

#[tokio::test]
async fn missing_directory_is_a_connect_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(&dir.path().join("nope"), "x.db", "");
    let e = SqliteBackend::connect(&url).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("does not exist") && msg.contains("nope"),
        "{msg}"
    );
    assert!(!dir.path().join("nope").exists(), "nothing may be created");
}

#[tokio::test]
async fn unwritable_directory_is_a_connect_error() {
    // Root ignores permission bits, so use a directory no one can create files in.
    let e = SqliteBackend::connect("sqlite:///proc/dlock-test.db")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("/proc/dlock-test.db"), "{e}");
}

#[tokio::test]
async fn malformed_urls_are_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    for (url, needle) in [
        ("sqlite:".to_string(), "no file path"),
        ("sqlite://".to_string(), "no file path"),
        (url_in(dir.path(), "x.db", "?table=bad-name"), "table name"),
        (url_in(dir.path(), "x.db", "?table=x%22;drop"), "table name"),
        (url_in(dir.path(), "x.db", "?pool_size=0"), "pool_size"),
        (
            url_in(dir.path(), "x.db", "?connect_timeout=soon"),
            "connect_timeout",
        ),
        (
            url_in(dir.path(), "x.db", "?create_table=maybe"),
            "create_table",
        ),
        (
            url_in(dir.path(), "x.db", "?colour=blue"),
            "unknown sqlite URL option",
        ),
        ("postgres-ish:x".to_string(), "not a sqlite"),
    ] {
        let e = SqliteBackend::connect(&url).await.unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{url}: {e:?}");
        assert!(e.to_string().contains(needle), "{url}: {e}");
    }
    // None of them created a database file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn table_with_wrong_columns_names_the_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let plain = SqliteBackend::connect(&url_in(dir.path(), "x.db", ""))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE old_locks (name TEXT PRIMARY KEY, owner TEXT, lock_until INTEGER)")
        .execute(plain.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO old_locks VALUES ('keep-me', 'someone', 1)")
        .execute(plain.pool())
        .await
        .unwrap();
    let e = SqliteBackend::connect(&url_in(dir.path(), "x.db", "?table=old_locks"))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
    for col in ["acquisition_id", "token", "locked_at"] {
        assert!(msg.contains(col), "{msg}");
    }
    assert!(!msg.contains("lacks column(s) name"), "{msg}");
    // The existing table and its row are untouched.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM old_locks WHERE name = 'keep-me'")
        .fetch_one(plain.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn create_table_false_requires_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let e = SqliteBackend::connect(&url_in(
        dir.path(),
        "x.db",
        "?create_table=false&table=absent",
    ))
    .await
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(e.to_string().contains("migrations/sqlite"), "{e}");
}

#[tokio::test]
async fn in_memory_database_works_within_the_process() {
    let b = SqliteBackend::connect("sqlite::memory:").await.unwrap();
    let locker = Locker::new(b).with_owner("me").unwrap();
    let g = locker
        .try_lock("x", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(locker
        .try_lock("x", Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    g.release().await.unwrap();
}

#[tokio::test]
async fn token_counter_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(dir.path(), "x.db", "");
    let name = LockName::new("job").unwrap();
    let spec = LockSpec::new(name, "me", Duration::from_secs(5)).unwrap();
    let first = {
        let b = SqliteBackend::connect(&url).await.unwrap();
        let lease = b.try_acquire(&spec).await.unwrap().unwrap();
        b.release(&lease).await.unwrap();
        b.pool().close().await;
        lease.token
    };
    let b = SqliteBackend::connect(&url).await.unwrap();
    let lease = b.try_acquire(&spec).await.unwrap().unwrap();
    assert!(lease.token > first, "{:?} then {:?}", first, lease.token);
}

#[tokio::test]
async fn backend_rejects_what_it_cannot_honour_itself() {
    // The backend checks specs itself, not only the Locker in front of it.
    let b = SqliteBackend::connect("sqlite::memory:").await.unwrap();
    let mut spec =
        LockSpec::new(LockName::new("x").unwrap(), "me", Duration::from_secs(1)).unwrap();
    spec.at_most = Duration::from_secs(u64::MAX / 4);
    let e = b.try_acquire(&spec).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    spec.at_most = Duration::ZERO;
    let e = b.try_acquire(&spec).await.unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
}

/// Timeouts beyond 1h are a clear InvalidConfig naming the option and the
/// maximum, never a panic; 1h itself works.
#[tokio::test]
async fn huge_timeouts_are_invalid_config_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = Vec::new();
    for opt in ["connect_timeout", "statement_timeout", "busy_timeout"] {
        for v in ["18446744073709551615s", "100000000000s", "61min"] {
            let what = format!("{opt}={v}");
            let u = url_in(dir.path(), "huge.db", &format!("?{what}"));
            let r = no_panic(async move {
                let b = SqliteBackend::connect(&u).await?;
                let spec =
                    LockSpec::new(LockName::new("huge").unwrap(), "me", Duration::from_secs(5))?;
                let l = b.try_acquire(&spec).await?.expect("lock is free");
                let l = b.extend(&l, Duration::from_secs(5)).await?;
                b.release(&l).await
            })
            .await;
            bad.extend(huge_timeout_verdict(&what, opt, r));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    let u = url_in(
        dir.path(),
        "huge.db",
        "?connect_timeout=1h&statement_timeout=1h&busy_timeout=1h",
    );
    let b = SqliteBackend::connect(&u).await.unwrap();
    let spec = LockSpec::new(LockName::new("huge").unwrap(), "me", Duration::from_secs(5)).unwrap();
    let l = b.try_acquire(&spec).await.unwrap().unwrap();
    b.release(&l).await.unwrap();
}
