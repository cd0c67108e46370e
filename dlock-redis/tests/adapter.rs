//! What only the Redis adapter promises, against the real servers the
//! scripts start: `DLOCK_TEST_REDIS_URL` (append-only file on) and
//! `DLOCK_TEST_REDIS_VOLATILE_URL` (no persistence).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{Error, LockBackend, LockName, LockSpec};
use dlock_redis::RedisBackend;
use std::time::{Duration, Instant};

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run scripts/coordinators.sh start and source .run/env")
    })
}

/// The test server's URL with a fresh key prefix.
fn url(var: &str) -> String {
    format!(
        "{}?prefix=dlock-adapter/{}",
        env(var),
        dlock_testkit::namespace_id()
    )
}

fn spec(name: &str, lease: Duration) -> LockSpec {
    LockSpec::new(LockName::new(name).unwrap(), "adapter-test", lease).unwrap()
}

#[tokio::test]
async fn a_wrong_password_is_denied_and_says_what_to_check() {
    let good = env("DLOCK_TEST_REDIS_URL");
    let parsed = url::Url::parse(&good).unwrap();
    let mut bad = parsed.clone();
    bad.set_password(Some("not-the-password")).unwrap();
    let e = RedisBackend::connect(bad.as_str()).await.unwrap_err();
    assert!(matches!(e, Error::Denied { .. }), "{e:#}");
    let shown = format!("{e:#}");
    assert!(shown.contains("refused the login"), "{shown}");
    assert!(!shown.contains("not-the-password"), "{shown}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error_within_the_deadline() {
    // Nothing listens on port 1: refused at once.
    let t0 = Instant::now();
    let e = RedisBackend::connect("redis://127.0.0.1:1/0")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:#}");
    assert!(format!("{e:#}").contains("127.0.0.1:1"), "{e:#}");
    // An address that drops packets: only the deadline ends it.
    let e = RedisBackend::connect(
        "redis://192.0.2.1:6379/0?connect_timeout=300ms&request_timeout=300ms",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. } | Error::Timeout { .. }),
        "{e:#}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn a_server_without_an_append_only_file_is_refused_unless_the_url_accepts_it() {
    let volatile = url("DLOCK_TEST_REDIS_VOLATILE_URL");
    let e = RedisBackend::connect(&volatile).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:#}");
    let shown = format!("{e:#}");
    assert!(
        shown.contains("appendonly") && shown.contains("require_aof=false"),
        "{shown}"
    );
    let b = RedisBackend::connect(&format!("{volatile}&require_aof=false"))
        .await
        .unwrap();
    let lease = b
        .try_acquire(&spec("volatile", Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    b.release(&lease).await.unwrap();
    // The persistent server is accepted as it is.
    RedisBackend::connect(&url("DLOCK_TEST_REDIS_URL"))
        .await
        .unwrap();

    // A policy that may evict any key could drop a held lock: refused too.
    // (Here, on the volatile server, so no other test sees the setting.)
    let mut admin = raw_connection("DLOCK_TEST_REDIS_VOLATILE_URL").await;
    let set = |policy: &'static str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .clone()
    };
    set("allkeys-lru")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let refused = RedisBackend::connect(&format!("{volatile}&require_aof=false")).await;
    set("noeviction")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let e = refused.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:#}");
    assert!(
        format!("{e:#}").contains("maxmemory-policy allkeys-lru"),
        "{e:#}"
    );
}

/// A plain redis-rs connection to the server of `var`.
async fn raw_connection(var: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(env(var))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_release_within_at_least_tells_waiters_when_the_lock_frees() {
    let u = url("DLOCK_TEST_REDIS_URL");
    let holder = RedisBackend::connect(&u).await.unwrap();
    let waiter = RedisBackend::connect(&u).await.unwrap();
    let long = spec("held-at-least", Duration::from_secs(60))
        .with_at_least(Duration::from_secs(2))
        .unwrap();
    let lease = holder.try_acquire(&long).await.unwrap().unwrap();
    let t0 = Instant::now();
    let w = waiter.clone();
    let got = tokio::spawn(async move {
        let mine = spec("held-at-least", Duration::from_secs(10));
        loop {
            if let Some(l) = w.try_acquire(&mine).await.unwrap() {
                return (Instant::now(), l);
            }
            w.wait_for_release(&mine.name, Duration::from_secs(30))
                .await
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.release(&lease).await.unwrap();
    let (at, l) = got.await.unwrap();
    // Taken at the end of at_least (2 s), not when the waiter's first read
    // said the 60 s lease would end (30 s, its wait).
    let took = at - t0;
    assert!(
        took >= Duration::from_millis(1900),
        "taken after {took:?}, inside at_least"
    );
    assert!(took < Duration::from_secs(10), "taken only after {took:?}");
    assert!(l.token > lease.token);
}

#[tokio::test]
async fn keys_another_program_wrote_under_the_prefix_break_nothing() {
    let u = url("DLOCK_TEST_REDIS_URL");
    let b = RedisBackend::connect(&u).await.unwrap();
    let prefix = b.config().prefix.clone();
    let mut conn = raw_connection("DLOCK_TEST_REDIS_URL").await;
    // A string where a lock hash would be, and a hash in another layout.
    redis::cmd("SET")
        .arg(format!("{prefix}:lock:a-string"))
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("HSET")
        .arg(format!("{prefix}:lock:odd"))
        .arg("until")
        .arg("soon")
        .arg("id")
        .arg("")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let held = b
        .try_acquire(&spec("held", Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let listed = b.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["held"],
        "{listed:?}"
    );
    // The odd hash reads as free and can be taken; an empty id owns nothing.
    let odd = b
        .try_acquire(&spec("odd", Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let mut forged = odd.clone();
    forged.id = String::new();
    let e = b
        .extend(&forged, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::LockLost { .. }), "{e:#}");
    b.release(&odd).await.unwrap();
    b.release(&held).await.unwrap();
}

#[tokio::test]
async fn waiters_share_one_subscription_and_a_release_wakes_them() {
    let u = url("DLOCK_TEST_REDIS_URL");
    let holder = RedisBackend::connect(&u).await.unwrap();
    let waiter = RedisBackend::connect(&u).await.unwrap();
    let lease = holder
        .try_acquire(&spec("woken", Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    let name = LockName::new("woken").unwrap();
    let mut waits = Vec::new();
    for _ in 0..5 {
        let (w, n) = (waiter.clone(), name.clone());
        waits.push(tokio::spawn(async move {
            w.wait_for_release(&n, Duration::from_secs(30))
                .await
                .unwrap();
            Instant::now()
        }));
    }
    // One subscriber connection on the release channel, however many wait.
    let prefix = waiter.config().prefix.clone();
    let mut conn = raw_connection("DLOCK_TEST_REDIS_URL").await;
    let t0 = Instant::now();
    loop {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{prefix}:released"))
            .query_async::<Vec<redis::Value>>(&mut conn)
            .await
            .map(|v| redis::from_redis_value::<(String, i64)>(redis::Value::Array(v)).unwrap())
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            n == 0 && t0.elapsed() < Duration::from_secs(5),
            "{n} subscribers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Longer than any poll: a waiter that polled instead of listening
    // would return before the release.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let released = Instant::now();
    holder.release(&lease).await.unwrap();
    for w in waits {
        let woke = w.await.unwrap();
        assert!(
            woke >= released,
            "a waiter returned {:?} before the release",
            released - woke
        );
        // Far below the 30 s the waiters would otherwise sleep out.
        assert!(
            woke - released < Duration::from_secs(5),
            "woke {:?} after the release",
            woke - released
        );
    }
}
