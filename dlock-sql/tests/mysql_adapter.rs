//! MySQL/MariaDB adapter tests against a real server: URL options, bad input,
//! schema problems, byte-exact names, the one-statement acquire under
//! concurrency. Reads DLOCK_TEST_MYSQL_URL and FAILS (never skips) when unset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock_core::{Error, LockBackend, LockName, LockSpec, Locker};
use dlock_sql::{MysqlBackend, SqlOptions};
use dlock_testkit::bad_input::{
    acquire_extend_release, huge_timeout_verdict, no_panic, report_defect,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn base_url() -> String {
    std::env::var("DLOCK_TEST_MYSQL_URL").unwrap_or_else(|_| {
        panic!(
            "set DLOCK_TEST_MYSQL_URL=mysql://user:password@127.0.0.1:PORT/db \
             (scripts/coordinators.sh writes it to .run/env)"
        )
    })
}

fn fresh_table() -> String {
    format!("dlock_t_{}", &dlock_core::new_acquisition_id()[..12])
}

fn with_query(url: &str, q: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{q}")
}

async fn backend() -> (MysqlBackend, String) {
    let table = fresh_table();
    let b = MysqlBackend::connect(&with_query(&base_url(), &format!("table={table}")))
        .await
        .unwrap();
    (b, table)
}

async fn drop_table(b: &MysqlBackend, table: &str) {
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(b.pool())
        .await
        .unwrap();
}

fn spec(name: &str, secs: u64) -> LockSpec {
    LockSpec::new(
        LockName::new(name).unwrap(),
        "tester",
        Duration::from_secs(secs),
    )
    .unwrap()
}

#[tokio::test]
async fn basic_cycle_and_tokens() {
    let (b, table) = backend().await;
    let l1 = b.try_acquire(&spec("job", 30)).await.unwrap().unwrap();
    assert_eq!(l1.token.get(), 1, "first acquisition of a new name");
    assert!(b.try_acquire(&spec("job", 30)).await.unwrap().is_none());
    assert!(b.try_acquire(&spec("job", 30)).await.unwrap().is_none());
    let info = b.inspect(&l1.name).await.unwrap().unwrap();
    assert_eq!(info.token, l1.token);
    assert_eq!(info.owner, "tester");
    assert_eq!(info.id.as_deref(), Some(l1.id.as_str()));
    let len = info
        .lock_until
        .unwrap()
        .duration_since(info.locked_at.unwrap())
        .unwrap();
    assert_eq!(len, Duration::from_secs(30), "lock_until - locked_at");
    let l1 = b.extend(&l1, Duration::from_secs(60)).await.unwrap();
    b.release(&l1).await.unwrap();
    assert!(b.release(&l1).await.unwrap_err().is_lock_lost());
    assert!(b
        .extend(&l1, Duration::from_secs(5))
        .await
        .unwrap_err()
        .is_lock_lost());
    let l2 = b.try_acquire(&spec("job", 30)).await.unwrap().unwrap();
    assert_eq!(l2.token.get(), 2);
    assert!(b.force_release(&l2.name).await.unwrap());
    assert!(!b.force_release(&l2.name).await.unwrap());
    let l3 = b.try_acquire(&spec("job", 30)).await.unwrap().unwrap();
    assert_eq!(l3.token.get(), 3);
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn release_with_at_least_equal_to_lease_is_not_lost() {
    // The release writes the value lock_until already has: the driver's
    // "found rows" flag must still count the row.
    let (b, table) = backend().await;
    let s = spec("same", 5)
        .with_at_least(Duration::from_secs(5))
        .unwrap();
    let l = b.try_acquire(&s).await.unwrap().unwrap();
    b.release(&l).await.unwrap();
    assert!(b.try_acquire(&spec("same", 5)).await.unwrap().is_none());
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn case_and_trailing_spaces_make_different_locks() {
    let (b, table) = backend().await;
    for n in ["Email", "email", "email ", "EMAIL", "émail", "e\u{301}mail"] {
        assert!(
            b.try_acquire(&spec(n, 30)).await.unwrap().is_some(),
            "{n:?} collided with another name"
        );
    }
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(n, 6);
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn odd_names_are_stored_and_matched_exactly() {
    let (b, table) = backend().await;
    let long = "x".repeat(255);
    let long_utf8 = "é".repeat(127);
    let names = [
        "it's \"quoted\" `back`",
        "100%_done",
        "a;b; DROP TABLE x; --",
        "back\\slash\\",
        "ünïcødé 锁 🔒",
        "%",
        "_",
        "\\%",
        long.as_str(),
        long_utf8.as_str(),
    ];
    let mut leases = Vec::new();
    for n in names {
        let l = b
            .try_acquire(&spec(n, 30))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{n:?} should be free: names must not collide"));
        leases.push(l);
    }
    for (n, l) in names.iter().zip(&leases) {
        let info = b
            .inspect(&LockName::new(*n).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.id.as_deref(), Some(l.id.as_str()), "{n:?}");
        assert!(
            b.try_acquire(&spec(n, 30)).await.unwrap().is_none(),
            "{n:?}"
        );
    }
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar(&format!("SELECT name FROM {table} ORDER BY name"))
            .fetch_all(b.pool())
            .await
            .unwrap();
    let mut want: Vec<Vec<u8>> = names.iter().map(|s| s.as_bytes().to_vec()).collect();
    want.sort();
    assert_eq!(stored, want, "names stored byte for byte");
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn concurrent_acquires_on_one_statement_are_exclusive() {
    // Many tasks race for a few names on a short lease, over many rounds:
    // every winner gets a distinct token, the winners' tokens per name grow,
    // and no two winners of one name hold at once (checked with the
    // database's own record of who holds it).
    let (b, table) = backend().await;
    let b = Arc::new(b);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for i in 0..60 {
                let name = format!("n{}", (i + w) % 3);
                let s = LockSpec::new(
                    LockName::new(name.clone()).unwrap(),
                    format!("w{w}"),
                    Duration::from_secs(30),
                )
                .unwrap();
                if let Some(l) = b.try_acquire(&s).await.unwrap() {
                    let info = b.inspect(&l.name).await.unwrap().unwrap();
                    assert_eq!(
                        info.id.as_deref(),
                        Some(l.id.as_str()),
                        "someone else holds {name}"
                    );
                    assert_eq!(info.token, l.token);
                    b.release(&l).await.unwrap();
                    won.push((name, l.token.get()));
                }
            }
            won
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert!(all.len() >= 3);
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(distinct.len(), all.len(), "a token was handed out twice");
    for n in ["n0", "n1", "n2"] {
        let mut toks: Vec<u64> = all
            .iter()
            .filter(|(m, _)| m == n)
            .map(|(_, t)| *t)
            .collect();
        toks.sort_unstable();
        let count = toks.len() as u64;
        // Every successful acquisition bumped the counter exactly once.
        assert_eq!(toks, (1..=count).collect::<Vec<_>>(), "{n}");
    }
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_fast() {
    let mut url = url::Url::parse(&base_url()).unwrap();
    url.set_password(Some("definitely-wrong")).unwrap();
    let started = Instant::now();
    let err = MysqlBackend::connect(&with_query(url.as_str(), "connect_timeout=5s"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6));
    let full = format!("{err:#}");
    assert!(
        matches!(
            err,
            Error::Denied {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{full}");
    assert!(err.to_string().contains("password"), "{err}");
    assert_eq!(full.matches("Access denied").count(), 1, "{full}");
    assert_eq!(report_defect(&err), None);
    assert!(
        !full.contains("definitely-wrong") && !format!("{err:?}").contains("definitely-wrong"),
        "password echoed: {full}"
    );
}

#[tokio::test]
async fn connect_with_keeps_the_password_out_of_the_url() {
    let full = url::Url::parse(&base_url()).unwrap();
    let password = full.password().unwrap().to_string();
    let mut bare = full.clone();
    bare.set_password(None).unwrap();
    let table = fresh_table();
    let url = with_query(bare.as_str(), &format!("table={table}"));
    let opts = dlock_core::ConnectOptions::new()
        .password(password.clone())
        .tls_roots(dlock_core::TlsRoots::System);
    let b = MysqlBackend::connect_with(&url, &opts).await.unwrap();
    let l = b.try_acquire(&spec("job", 30)).await.unwrap().unwrap();
    b.release(&l).await.unwrap();
    let wrong = dlock_core::ConnectOptions::new().password("definitely-wrong");
    let e = MysqlBackend::connect_with(full.as_str(), &wrong)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn a_database_the_user_may_not_use_is_denied() {
    let mut url = url::Url::parse(&base_url()).unwrap();
    url.set_path("/mysql");
    let err = MysqlBackend::connect(url.as_str()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Denied {
                operation: "connect",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:#}");
    assert!(err.to_string().contains("GRANT"), "{err}");
    assert_eq!(report_defect(&err), None);
}

#[tokio::test]
async fn unreachable_host_fails_within_connect_timeout() {
    let started = Instant::now();
    let err = MysqlBackend::connect("mysql://u:secret@127.0.0.1:1/db?connect_timeout=2s")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.is_transient(), "{err:#}");
    assert_eq!(report_defect(&err), None);
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = MysqlBackend::connect(&format!(
        "mariadb://u:secret@127.0.0.1:{port}/db?connect_timeout=1s"
    ))
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("connect_timeout"), "{err}");
    drop(silent);
}

#[tokio::test]
async fn url_options_are_validated() {
    for (url, want) in [
        ("mysql://u@h/db?table=a-b", "table name"),
        ("mysql://u@h/db?table=s.t", "table name"),
        ("mysql://u@h/db?pool_size=0", "pool_size"),
        ("mysql://u@h/db?frobnicate=1", "unknown mysql URL option"),
        ("mysql://u@h/db?statement_timeout=0s", "statement_timeout"),
        ("mysql://u@h/db?ssl-mode=sometimes", "ssl"),
        ("mysql://u@h?table=t", "names no database"),
        ("ftp://u@h/db", "scheme"),
    ] {
        let err = MysqlBackend::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{url}: {err}");
        assert!(err.to_string().contains(want), "{url}: {err}");
    }
}

#[tokio::test]
async fn user_and_password_as_query_options_and_mariadb_scheme() {
    let url = url::Url::parse(&base_url()).unwrap();
    let (user, pass) = (
        url.username().to_string(),
        url.password().unwrap().to_string(),
    );
    let mut bare = url.clone();
    bare.set_username("").unwrap();
    bare.set_password(None).unwrap();
    let table = fresh_table();
    let u = with_query(
        &bare.as_str().replacen("mysql://", "mariadb://", 1),
        &format!("user={user}&password={pass}&table={table}&ssl-mode=disabled&pool_size=2"),
    );
    let b = dlock_sql::connect(&u).await.unwrap();
    assert_eq!(b.kind(), "mysql");
    assert!(b.try_acquire(&spec("x", 5)).await.unwrap().is_some());
    let m = MysqlBackend::connect(&u).await.unwrap();
    assert_eq!(m.options().pool_size, 2);
    assert!(!format!("{m:?}").contains(&format!(":{pass}@")));
    drop_table(&m, &table).await;
}

#[tokio::test]
async fn old_schema_table_names_the_missing_column() {
    let (b, _) = backend().await;
    let table = fresh_table();
    sqlx::query(&format!(
        "CREATE TABLE {table} (name VARBINARY(255) PRIMARY KEY, owner VARCHAR(255), \
         locked_at DATETIME(6), lock_until DATETIME(6))"
    ))
    .execute(b.pool())
    .await
    .unwrap();
    let err = MysqlBackend::connect(&with_query(&base_url(), &format!("table={table}")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidConfig(_)), "{msg}");
    assert!(msg.contains("acquisition_id"), "{msg}");
    assert!(msg.contains("token"), "{msg}");
    assert!(msg.contains(&table), "{msg}");
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn case_insensitive_name_column_is_refused() {
    let (b, _) = backend().await;
    let table = fresh_table();
    sqlx::query(&format!(
        "CREATE TABLE {table} (name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci PRIMARY KEY, \
         owner VARCHAR(255), acquisition_id VARCHAR(64), token BIGINT, \
         locked_at DATETIME(6), lock_until DATETIME(6))"
    ))
    .execute(b.pool())
    .await
    .unwrap();
    let err = MysqlBackend::connect(&with_query(&base_url(), &format!("table={table}")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("byte-exactly"), "{msg}");
    assert!(msg.contains("VARBINARY"), "{msg}");
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn create_table_false_and_missing_table() {
    let err = MysqlBackend::connect(&with_query(
        &base_url(),
        &format!("table={}&create_table=false", fresh_table()),
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.to_string().contains("migrations/mysql"), "{err}");
}

#[tokio::test]
async fn from_pool_uses_the_applications_pool() {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&base_url())
        .await
        .unwrap();
    let table = fresh_table();
    let opts = SqlOptions {
        table: table.clone(),
        ..SqlOptions::default()
    };
    let b = MysqlBackend::from_pool(pool.clone(), opts).await.unwrap();
    let locker = Locker::new(b);
    let g = locker
        .try_lock("from-pool", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.token().get(), 1);
    g.release().await.unwrap();
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn times_are_utc_whatever_the_session_time_zone() {
    // sqlx sets time_zone='+00:00'; a pool that sets another zone must not
    // shift leases (the adapter only uses UTC_TIMESTAMP).
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET time_zone = '+09:00'")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&base_url())
        .await
        .unwrap();
    let table = fresh_table();
    let b = MysqlBackend::from_pool(
        pool.clone(),
        SqlOptions {
            table: table.clone(),
            ..SqlOptions::default()
        },
    )
    .await
    .unwrap();
    let l = b.try_acquire(&spec("tz", 2)).await.unwrap().unwrap();
    let info = b.inspect(&l.name).await.unwrap().unwrap();
    let now = std::time::SystemTime::now();
    let skew = match info.locked_at.unwrap().duration_since(now) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(skew < Duration::from_secs(60), "locked_at is {skew:?} off");
    assert!(b.try_acquire(&spec("tz", 2)).await.unwrap().is_none());
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .unwrap();
}

/// Timeouts beyond 1h, in the URL or in `SqlOptions` given to `from_pool`,
/// are a clear InvalidConfig naming the option and the maximum, never a
/// panic; 1h itself works.
#[tokio::test]
async fn huge_timeouts_are_invalid_config_never_a_panic() {
    let table = fresh_table();
    let url = with_query(&base_url(), &format!("table={table}"));
    let mut bad = Vec::new();
    for opt in ["connect_timeout", "statement_timeout"] {
        for v in ["18446744073709551615s", "100000000000s", "61min"] {
            let what = format!("{opt}={v}");
            let u = with_query(&url, &what);
            let r = no_panic(async move {
                acquire_extend_release(&MysqlBackend::connect(&u).await?, Duration::from_secs(5))
                    .await
            })
            .await;
            bad.extend(huge_timeout_verdict(&what, opt, r));
        }
    }
    type Set = fn(&mut SqlOptions);
    let sets: [(&str, Set); 2] = [
        ("connect_timeout", |o| o.connect_timeout = Duration::MAX),
        ("statement_timeout", |o| o.statement_timeout = Duration::MAX),
    ];
    for (opt, set) in sets {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&base_url())
            .await
            .unwrap();
        let mut opts = SqlOptions {
            table: table.clone(),
            ..SqlOptions::default()
        };
        set(&mut opts);
        let r = no_panic(async move {
            acquire_extend_release(
                &MysqlBackend::from_pool(pool, opts).await?,
                Duration::from_secs(5),
            )
            .await
        })
        .await;
        bad.extend(huge_timeout_verdict(
            &format!("{opt} = Duration::MAX in from_pool"),
            opt,
            r,
        ));
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    let u = with_query(&url, "connect_timeout=1h&statement_timeout=1h");
    let b = no_panic(async move { MysqlBackend::connect(&u).await })
        .await
        .unwrap()
        .unwrap();
    let b = no_panic(async move {
        acquire_extend_release(&b, Duration::from_secs(5)).await?;
        Ok::<_, Error>(b)
    })
    .await
    .unwrap()
    .unwrap();
    drop_table(&b, &table).await;
}
