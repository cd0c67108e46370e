//! The Redis server killed and restarted while a lock is held, through
//! `$DLOCK_TEST_COORDINATORS` (the test script runs this binary alone,
//! after everything else): with an append-only file nothing is forgotten;
//! without one, what the docs warn of happens, and this test pins it down
//! so the warning stays true.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{Error, LockBackend, LockName, LockSpec};
use dlock_redis::RedisBackend;
use dlock_testkit::coordinators::{coordinators, env_var as env};
use std::time::{Duration, Instant};

/// The cases restart shared servers: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn url(var: &str, extra: &str) -> String {
    format!(
        "{}?prefix=dlock-faults/{}{extra}",
        env(var),
        dlock_testkit::namespace_id()
    )
}

/// Retries `f` until it succeeds (the server is back), for up to 30 s.
async fn until_ok<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = dlock_core::Result<T>>,
{
    let t0 = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: still failing after 30 s: {e:#}"),
        }
    }
}

fn spec(owner: &str, lease: Duration) -> LockSpec {
    LockSpec::new(LockName::new("restarted").unwrap(), owner, lease).unwrap()
}

#[tokio::test]
async fn a_killed_server_with_an_append_only_file_forgets_no_lock_and_no_token() {
    let _one = SERIAL.lock().await;
    let u = url("DLOCK_TEST_REDIS_URL", "");
    let a = RedisBackend::connect(&u).await.unwrap();
    let b = RedisBackend::connect(&u).await.unwrap();
    let lease = Duration::from_secs(30);
    let first = a.try_acquire(&spec("a", lease)).await.unwrap().unwrap();
    coordinators(&["restart", "--hard", "redis"]).await;
    // The same connections come back (redis-rs reconnects), and the lock
    // is still a's: b cannot take it, a can extend and release it.
    let b_spec = spec("b", lease);
    let taken = until_ok("b's acquire after the restart", || b.try_acquire(&b_spec)).await;
    assert!(
        taken.is_none(),
        "b took a lock a still holds: the restart forgot it"
    );
    let extended = until_ok("a's extend", || a.extend(&first, lease)).await;
    a.release(&extended).await.unwrap();
    // The release (one write and a PUBLISH) survives a replay of the AOF too.
    coordinators(&["restart", "--hard", "redis"]).await;
    let next = until_ok("b's acquire after the second restart", || {
        b.try_acquire(&b_spec)
    })
    .await
    .expect("the release was lost in the restart: the lock came back");
    assert!(
        next.token > first.token,
        "token {} after {}",
        next.token,
        first.token
    );
    b.release(&next).await.unwrap();
}

#[tokio::test]
async fn a_restarted_server_without_persistence_forgets_locks_and_tokens_as_documented() {
    let _one = SERIAL.lock().await;
    let u = url("DLOCK_TEST_REDIS_VOLATILE_URL", "&require_aof=false");
    let a = RedisBackend::connect(&u).await.unwrap();
    let b = RedisBackend::connect(&u).await.unwrap();
    let lease = Duration::from_secs(30);
    // A few acquisitions, so the counter is past 1.
    for _ in 0..3 {
        let l = a.try_acquire(&spec("a", lease)).await.unwrap().unwrap();
        a.release(&l).await.unwrap();
    }
    let held = a.try_acquire(&spec("a", lease)).await.unwrap().unwrap();
    assert_eq!(held.token.get(), 4);
    coordinators(&["restart", "redis-volatile"]).await;
    // a's lease is still valid by its own clock, yet the server forgot it:
    // b gets the lock, with a token that repeats an earlier one. This is
    // why dlock refuses such a server unless require_aof=false.
    let b_spec = spec("b", lease);
    let stolen = until_ok("b's acquire after the restart", || b.try_acquire(&b_spec))
        .await
        .expect("the restarted server still had the lock");
    assert!(
        held.is_valid_now(),
        "a's lease ran out during the restart; the test proves nothing"
    );
    assert_eq!(stolen.token.get(), 1, "tokens start again from 1");
    // a's connection broke in the restart: its first request may say so.
    let e = loop {
        match a.extend(&held, lease).await {
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            other => break other.unwrap_err(),
        }
    };
    assert!(matches!(e, Error::LockLost { .. }), "{e:#}");
    b.release(&stolen).await.unwrap();
}
