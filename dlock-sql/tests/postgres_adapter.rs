//! PostgreSQL adapter tests against a real server: URL options, bad input,
//! schema problems, exact names, waking waiters. Reads DLOCK_TEST_POSTGRES_URL
//! and FAILS (never skips) when it is unset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock_core::{Error, LockBackend, LockName, LockSpec, Locker};
use dlock_sql::{PostgresBackend, SqlOptions};
use dlock_testkit::bad_input::{
    acquire_extend_release, huge_timeout_verdict, no_panic, report_defect,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn base_url() -> String {
    std::env::var("DLOCK_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "set DLOCK_TEST_POSTGRES_URL=postgres://user:password@127.0.0.1:PORT/db \
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

async fn backend() -> (PostgresBackend, String) {
    let table = fresh_table();
    let b = PostgresBackend::connect(&with_query(&base_url(), &format!("table={table}")))
        .await
        .unwrap();
    (b, table)
}

async fn drop_table(b: &PostgresBackend, table: &str) {
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
    assert!(b.try_acquire(&spec("job", 30)).await.unwrap().is_none());
    let info = b.inspect(&l1.name).await.unwrap().unwrap();
    assert_eq!(info.token, l1.token);
    assert_eq!(info.owner, "tester");
    assert_eq!(info.id.as_deref(), Some(l1.id.as_str()));
    let (at, until) = (info.locked_at.unwrap(), info.lock_until.unwrap());
    let len = until.duration_since(at).unwrap();
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
    assert!(l2.token > l1.token);
    assert!(b.force_release(&l2.name).await.unwrap());
    assert!(!b.force_release(&l2.name).await.unwrap());
    let l3 = b.try_acquire(&spec("job", 30)).await.unwrap().unwrap();
    assert!(l3.token > l2.token);
    drop_table(&b, &table).await;
}

/// A try_acquire that finds the lock held changes nothing, not even a row
/// lock: the row's xmax stays what the grant left, so PostgreSQL assigned
/// the busy statement no transaction id and waited for no WAL flush. The
/// answer every node but one gets when a job fires (and every losing waiter
/// under contention) costs a round trip, not a durable commit. Expiry is
/// still taken over: the same statement grants an expired lock.
#[tokio::test]
async fn a_busy_acquire_neither_writes_nor_locks_the_row() {
    let (b, table) = backend().await;
    let held = b.try_acquire(&spec("busy", 30)).await.unwrap().unwrap();
    let xmax = |name: &'static str| {
        let q = format!("SELECT xmax::text FROM {table} WHERE name = '{name}'");
        let pool = b.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(&q)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let granted = xmax("busy").await;
    for _ in 0..3 {
        assert!(b.try_acquire(&spec("busy", 30)).await.unwrap().is_none());
    }
    assert_eq!(
        xmax("busy").await,
        granted,
        "a busy acquire locked (or wrote) the lock's row"
    );
    b.release(&held).await.unwrap();
    // An expired lease is taken over, with the next token.
    let short = b.try_acquire(&spec("short", 30)).await.unwrap().unwrap();
    sqlx::query(&format!(
        "UPDATE {table} SET lock_until = clock_timestamp() WHERE name = 'short'"
    ))
    .execute(b.pool())
    .await
    .unwrap();
    let next = b
        .try_acquire(&spec("short", 30))
        .await
        .unwrap()
        .expect("an expired lock was not taken over");
    assert_eq!(next.token.0, short.token.0 + 1);
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn odd_names_are_stored_and_matched_exactly() {
    let (b, table) = backend().await;
    let long = "x".repeat(255);
    let names = [
        "it's \"quoted\"",
        "100%_done",
        "a;b; DROP TABLE x; --",
        "back\\slash\\",
        "ünïcødé 锁 🔒",
        "Email",
        "email",
        "email ",
        " email",
        "%",
        "_",
        long.as_str(),
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
        assert_eq!(info.name.as_str(), *n);
        assert_eq!(info.id.as_deref(), Some(l.id.as_str()), "{n:?}");
        assert!(
            b.try_acquire(&spec(n, 30)).await.unwrap().is_none(),
            "{n:?}"
        );
    }
    let stored: Vec<String> =
        sqlx::query_scalar(&format!("SELECT name FROM {table} ORDER BY name"))
            .fetch_all(b.pool())
            .await
            .unwrap();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(stored, want, "names stored byte for byte");
    assert!(b
        .inspect(&LockName::new("EMAIL").unwrap())
        .await
        .unwrap()
        .is_none());
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_fast() {
    let mut url = url::Url::parse(&base_url()).unwrap();
    url.set_password(Some("definitely-wrong")).unwrap();
    let started = Instant::now();
    let err = PostgresBackend::connect(&with_query(url.as_str(), "connect_timeout=5s"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6));
    let full = format!("{err:#}");
    // Denied, not Connect: retrying with the same password cannot help.
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
    // The server's own words, once, after dlock's.
    assert_eq!(
        full.matches("password authentication failed").count(),
        1,
        "{full}"
    );
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
    let opts = dlock_core::ConnectOptions::new().password(password.clone());
    let b = PostgresBackend::connect_with(&url, &opts).await.unwrap();
    let l = b.try_acquire(&spec("job", 30)).await.unwrap().unwrap();
    b.release(&l).await.unwrap();

    // The OS roots can be chosen (this connection has no TLS; the store is
    // still read, so an unreadable one would fail here).
    let system = opts.clone().tls_roots(dlock_core::TlsRoots::System);
    PostgresBackend::connect_with(&url, &system).await.unwrap();
    let e = PostgresBackend::connect(&with_query(full.as_str(), "tls_roots=os"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("tls_roots must be webpki"), "{e}");
    let e = PostgresBackend::connect(&with_query(full.as_str(), "tls_roots=ca_file_only"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");

    // Options override the URL: a wrong one fails as Denied.
    let wrong = dlock_core::ConnectOptions::new().password("definitely-wrong");
    let e = PostgresBackend::connect_with(full.as_str(), &wrong)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    // A token means nothing to PostgreSQL: refused, never ignored.
    let token = dlock_core::ConnectOptions::new().token("t");
    let e = PostgresBackend::connect_with(full.as_str(), &token)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ConnectOptions::token"), "{e}");
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn missing_table_privilege_is_denied_not_transient() {
    let (b, table) = backend().await;
    // The owner gives up its own rights on the table: what a role without
    // GRANTs on the lock table meets.
    sqlx::query(&format!("REVOKE ALL ON {table} FROM CURRENT_USER"))
        .execute(b.pool())
        .await
        .unwrap();
    let err = b.try_acquire(&spec("job", 30)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Denied {
                operation: "acquire",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:#}");
    assert!(err.to_string().contains("GRANT"), "{err}");
    assert!(format!("{err:#}").contains("permission denied"), "{err:#}");
    assert_eq!(report_defect(&err), None);
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn unreachable_host_fails_within_connect_timeout() {
    // Nothing listens on port 1 of loopback: refused at once.
    let started = Instant::now();
    let err = PostgresBackend::connect("postgres://u:secret@127.0.0.1:1/db?connect_timeout=2s")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.is_transient(), "{err:#}");
    assert_eq!(report_defect(&err), None);
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");

    // A listener that never answers: the connect timeout must fire.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = PostgresBackend::connect(&format!(
        "postgres://u:secret@127.0.0.1:{port}/db?connect_timeout=1s"
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
        ("postgres://u@h/db?table=a-b", "table name"),
        ("postgres://u@h/db?table=a.b.c", "table name"),
        ("postgres://u@h/db?pool_size=0", "pool_size"),
        (
            "postgres://u@h/db?frobnicate=1",
            "unknown postgres URL option",
        ),
        ("postgres://u@h/db?connect_timeout=soon", "connect_timeout"),
        ("postgres://u@h/db?sslmode=sometimes", "ssl"),
        ("http://u@h/db", "scheme"),
    ] {
        let err = PostgresBackend::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{url}: {err}");
        assert!(err.to_string().contains(want), "{url}: {err}");
    }
}

#[tokio::test]
async fn user_and_password_as_query_options_and_postgresql_scheme() {
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
        &bare.as_str().replacen("postgres://", "postgresql://", 1),
        &format!("user={user}&password={pass}&table={table}&sslmode=disable&pool_size=2"),
    );
    let b = dlock_sql::connect(&u).await.unwrap();
    assert_eq!(b.kind(), "postgres");
    assert!(b.try_acquire(&spec("x", 5)).await.unwrap().is_some());
    let pg = PostgresBackend::connect(&u).await.unwrap();
    assert_eq!(pg.options().pool_size, 2);
    drop_table(&pg, &table).await;
}

#[tokio::test]
async fn debug_output_has_no_secrets() {
    let (b, table) = backend().await;
    let dbg = format!("{b:?}");
    let pass = url::Url::parse(&base_url())
        .unwrap()
        .password()
        .unwrap()
        .to_string();
    assert!(dbg.contains("PostgresBackend"));
    assert!(!dbg.contains(&format!(":{pass}@")), "{dbg}");
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn schema_qualified_table_and_create_table_false() {
    let (b, _) = backend().await;
    let schema = format!("s_{}", &dlock_core::new_acquisition_id()[..10]);
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(b.pool())
        .await
        .unwrap();
    let q = with_query(&base_url(), &format!("table={schema}.locks"));
    let s = PostgresBackend::connect(&q).await.unwrap();
    assert!(s.try_acquire(&spec("n", 5)).await.unwrap().is_some());
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.locks"))
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);

    let err = PostgresBackend::connect(&with_query(
        &base_url(),
        &format!("table={schema}.missing&create_table=false"),
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.to_string().contains("migrations/postgres"), "{err}");

    let err = PostgresBackend::connect(&with_query(&base_url(), "table=no_such_schema_x.locks"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schema"), "{err}");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(b.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn old_schema_table_names_the_missing_column() {
    let (b, _) = backend().await;
    let table = fresh_table();
    // What an older dlock (or ShedLock) table looks like: no acquisition id, no token.
    sqlx::query(&format!(
        "CREATE TABLE {table} (name TEXT PRIMARY KEY, owner TEXT, locked_at TIMESTAMPTZ, lock_until TIMESTAMPTZ)"
    ))
    .execute(b.pool())
    .await
    .unwrap();
    let err = PostgresBackend::connect(&with_query(&base_url(), &format!("table={table}")))
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
async fn from_pool_uses_the_applications_pool() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&base_url())
        .await
        .unwrap();
    let table = fresh_table();
    let opts = SqlOptions {
        table: table.clone(),
        ..SqlOptions::default()
    };
    let b = PostgresBackend::from_pool(pool.clone(), opts)
        .await
        .unwrap();
    let locker = Locker::new(b);
    let g = locker
        .try_lock("from-pool", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(g.token().get() >= 1);
    g.release().await.unwrap();
    let bad = SqlOptions {
        table: "x; drop".into(),
        ..SqlOptions::default()
    };
    assert!(PostgresBackend::from_pool(pool.clone(), bad).await.is_err());
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn release_wakes_a_waiter_through_notify() {
    let (b, table) = backend().await;
    let b = Arc::new(b);
    let locker = Locker::from_arc(b.clone());
    let g = locker
        .try_lock("wake", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let l2 = locker.clone();
    let waiter = tokio::spawn(async move {
        let g = l2
            .acquire("wake")
            .lock_for(Duration::from_secs(30))
            .wait(Duration::from_secs(20))
            .lock()
            .await
            .unwrap()
            .unwrap();
        let t = Instant::now();
        g.release().await.unwrap();
        t
    });
    // Let the waiter reach its wait (a sleep here only shapes the scenario;
    // the assertion below does not depend on it).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let released = Instant::now();
    g.release().await.unwrap();
    let got = waiter.await.unwrap();
    let lag = got.duration_since(released);
    // The fallback poll is ~1 s; a notification wakes the waiter at once.
    assert!(
        lag < Duration::from_millis(300),
        "waiter woke after {lag:?}"
    );
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn waiter_wakes_at_expiry_by_the_database_clock() {
    let (b, table) = backend().await;
    let b = Arc::new(b);
    let holder = b.try_acquire(&spec("expire", 1)).await.unwrap().unwrap();
    let locker = Locker::from_arc(b.clone());
    let g = locker
        .acquire("expire")
        .lock_for(Duration::from_secs(30))
        .wait(Duration::from_secs(10))
        .lock()
        .await
        .unwrap()
        .unwrap();
    let waited = holder.acquired_at.elapsed();
    assert!(g.token() > holder.token);
    assert!(waited >= Duration::from_millis(990), "{waited:?}");
    assert!(waited < Duration::from_millis(1400), "{waited:?}");
    g.release().await.unwrap();
    drop_table(&b, &table).await;
}

#[tokio::test]
async fn transaction_pooling_mode_works_and_polls() {
    // The mode for PgBouncer-style transaction pooling: every statement in
    // its own transaction, unnamed; no LISTEN. (Verified through a real
    // PgBouncer 1.18 with pool_mode=transaction: the whole conformance suite
    // passes with `?transaction_pooling=true`.)
    let table = fresh_table();
    let url = with_query(
        &base_url(),
        &format!("table={table}&transaction_pooling=true"),
    );
    let b = Arc::new(PostgresBackend::connect(&url).await.unwrap());
    let caps = b.capabilities();
    assert!(!caps.release_notifies_waiters);
    assert!(caps.poll_interval <= Duration::from_millis(100));
    let l = b.try_acquire(&spec("tp", 30)).await.unwrap().unwrap();
    assert!(b.try_acquire(&spec("tp", 30)).await.unwrap().is_none());
    let l = b.extend(&l, Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        b.inspect(&l.name).await.unwrap().unwrap().id.as_deref(),
        Some(l.id.as_str())
    );
    let locker = Locker::from_arc(b.clone());
    let waiter = {
        let locker = locker.clone();
        tokio::spawn(async move {
            locker
                .acquire("tp")
                .lock_for(Duration::from_secs(5))
                .wait(Duration::from_secs(20))
                .lock()
                .await
                .unwrap()
                .unwrap()
        })
    };
    b.release(&l).await.unwrap();
    let g = waiter.await.unwrap();
    assert!(g.token() > l.token);
    g.release().await.unwrap();
    assert!(b.force_release(&l.name).await.is_ok());

    let err = PostgresBackend::connect(&with_query(&base_url(), "transaction_pooling=maybe"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("transaction_pooling"), "{err}");
    drop_table(&b, &table).await;
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
                acquire_extend_release(&PostgresBackend::connect(&u).await?, Duration::from_secs(5))
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
        let pool = sqlx::postgres::PgPoolOptions::new()
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
                &PostgresBackend::from_pool(pool, opts).await?,
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
    let b = no_panic(async move { PostgresBackend::connect(&u).await })
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
