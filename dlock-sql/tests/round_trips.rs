//! Round trips per operation on the SQL servers, counted by a proxy between
//! the adapter and the server (`dlock_testkit::Proxy::round_trips`): on a
//! warm pool the caller of an acquire waits for one round trip, and of a
//! release for one (the README's "one round trip per acquire"), and a connection idle for a while is still
//! pinged before use, so one the network dropped meanwhile is replaced, not
//! used. Reads DLOCK_TEST_POSTGRES_URL and DLOCK_TEST_MYSQL_URL and FAILS
//! (never skips) when either is unset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/drop_table.rs"]
mod drop_table;

use dlock_core::{LockBackend, LockName, LockSpec};
use dlock_sql::{MysqlBackend, PostgresBackend};
use dlock_testkit::Proxy;
use std::future::Future;
use std::time::Duration;

/// `$var`'s server behind a fresh proxy, and the URL (fresh table, one
/// pooled connection) that reaches it through the proxy.
async fn through_proxy(var: &str) -> (Proxy, String) {
    let base = std::env::var(var)
        .unwrap_or_else(|_| panic!("set {var} (scripts/coordinators.sh writes it to .run/env)"));
    let mut u = url::Url::parse(&base).unwrap();
    let upstream = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
    let proxy = Proxy::start(upstream).await.unwrap();
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(proxy.addr().port())).unwrap();
    let table = format!("dlock_rt_{}", &dlock_core::new_acquisition_id()[..12]);
    let sep = if u.query().is_some() { '&' } else { '?' };
    let url = format!("{u}{sep}table={table}&pool_size=1");
    (proxy, url)
}

fn spec(name: &str) -> LockSpec {
    LockSpec::new(
        LockName::new(name).unwrap(),
        "owner-a",
        Duration::from_secs(30),
    )
    .unwrap()
}

/// Round trips `op` began through `proxy` before it answered: the ones its
/// caller waited for. sqlx pings a connection as it goes back to the pool,
/// in a task of its own: the pause lets the last one finish first, and on
/// this single-threaded test runtime the one `op` leaves cannot start (nor
/// the proxy forward it) before the count is read.
async fn counted<T>(proxy: &Proxy, op: impl Future<Output = T>) -> (T, u64) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = proxy.round_trips();
    let out = op.await;
    (out, proxy.round_trips() - before)
}

async fn acquire_and_release_are_one_round_trip_each(proxy: &Proxy, b: &dyn LockBackend) {
    let s = spec("rt");
    // Warm: the pool's connection is open and the statements are prepared.
    for _ in 0..3 {
        let l = b.try_acquire(&s).await.unwrap().unwrap();
        b.release(&l).await.unwrap();
    }
    for round in 0..5 {
        let (l, acquire) = counted(proxy, b.try_acquire(&s)).await;
        let l = l.unwrap().unwrap();
        let (r, release) = counted(proxy, b.release(&l)).await;
        r.unwrap();
        assert_eq!(
            (acquire, release),
            (1, 1),
            "round {round}: round trips for (acquire, release) on a warm pool"
        );
    }
}

/// A connection idle past the ping window whose TCP connection was dropped
/// meanwhile is found dead by the ping and replaced: the acquire succeeds.
async fn an_idle_connection_dropped_meanwhile_is_replaced(proxy: &Proxy, b: &dyn LockBackend) {
    let s = spec("idle");
    let l = b.try_acquire(&s).await.unwrap().unwrap();
    b.release(&l).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.reset();
    let l = b
        .try_acquire(&s)
        .await
        .expect("an idle pooled connection dropped by the network was used, not replaced")
        .unwrap();
    b.release(&l).await.unwrap();
}

#[tokio::test]
async fn postgres_acquire_and_release_are_one_round_trip_each() {
    let (proxy, url) = through_proxy("DLOCK_TEST_POSTGRES_URL").await;
    let b = PostgresBackend::connect(&url).await.unwrap();
    acquire_and_release_are_one_round_trip_each(&proxy, &b).await;
    an_idle_connection_dropped_meanwhile_is_replaced(&proxy, &b).await;
    drop_table::drop_table(url).await.unwrap();
}

#[tokio::test]
async fn mysql_acquire_and_release_are_one_round_trip_each() {
    let (proxy, url) = through_proxy("DLOCK_TEST_MYSQL_URL").await;
    let b = MysqlBackend::connect(&url).await.unwrap();
    acquire_and_release_are_one_round_trip_each(&proxy, &b).await;
    an_idle_connection_dropped_meanwhile_is_replaced(&proxy, &b).await;
    drop_table::drop_table(url).await.unwrap();
}
