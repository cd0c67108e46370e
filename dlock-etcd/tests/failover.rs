//! Failover when the endpoint in use stops answering (a dead link refuses
//! nothing: only silence tells), against the shared etcd
//! (`DLOCK_TEST_ETCD_URL`; these tests fail, never skip, when it is unset).
//!
//! The backend is given two endpoints: first a [`Proxy`] to the shared etcd,
//! then the shared etcd itself. Stalling the proxy makes the first member
//! "stop answering" while the second still does: requests sent through it
//! reach etcd and apply, their answers never come back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{LockBackend, LockName, LockSpec};
use dlock_etcd::EtcdBackend;
use dlock_testkit::Proxy;
use std::time::Duration;

fn base_url() -> String {
    std::env::var("DLOCK_TEST_ETCD_URL").expect(
        "DLOCK_TEST_ETCD_URL is not set: run scripts/test.sh or `. .run/env` after \
         scripts/coordinators.sh start etcd",
    )
}

fn spec(name: &str, owner: &str) -> LockSpec {
    LockSpec::new(LockName::new(name).unwrap(), owner, Duration::from_secs(5)).unwrap()
}

/// The proxy (stalled by the test), a backend whose endpoints are the proxy
/// then etcd directly (warmed up on the proxy), and a second backend
/// straight to etcd (the judge).
async fn two_endpoints() -> (Proxy, EtcdBackend, EtcdBackend) {
    two_endpoints_within("1s").await
}

/// [`two_endpoints`] with `request_timeout` set to `timeout`.
async fn two_endpoints_within(timeout: &str) -> (Proxy, EtcdBackend, EtcdBackend) {
    let base = base_url();
    let direct = base
        .trim_start_matches("etcd://")
        .trim_end_matches('/')
        .to_string();
    let ns = format!("failover{}", dlock_testkit::namespace_id());
    let proxy = Proxy::start(direct.clone()).await.unwrap();
    let url = format!(
        "etcd://{},{direct}/{ns}?request_timeout={timeout}",
        proxy.addr()
    );
    let a = EtcdBackend::connect(&url).await.unwrap();
    let judge = EtcdBackend::connect(&format!("{base}/{ns}")).await.unwrap();
    // Warm: the first endpoint is the one in use.
    let l = a
        .try_acquire(&spec("warm", "owner-a"))
        .await
        .unwrap()
        .unwrap();
    a.release(&l).await.unwrap();
    assert!(
        proxy.requests() > 0,
        "the backend did not start on the proxy"
    );
    // Let the release's background lease revoke go out: a test counting
    // requests from here must see only its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (proxy, a, judge)
}

#[tokio::test]
async fn an_endpoint_that_stops_answering_is_left_for_the_next() {
    let (proxy, a, judge) = two_endpoints().await;
    proxy.stall();
    // Every operation succeeds: the first one that meets the silence is
    // sent again to the next endpoint, and later ones start there.
    for i in 0..10 {
        let name = format!("n{i}");
        let l = a
            .try_acquire(&spec(&name, "owner-a"))
            .await
            .unwrap_or_else(|e| panic!("acquire {i} with the first endpoint silent: {e:#}"))
            .unwrap_or_else(|| panic!("acquire {i}: the free lock {name:?} was reported held"));
        let seen = judge.inspect(&l.name).await.unwrap().unwrap();
        assert_eq!(seen.owner, "owner-a");
        let l = a
            .extend(&l, l.at_most)
            .await
            .unwrap_or_else(|e| panic!("extend {i} with the first endpoint silent: {e:#}"));
        a.inspect(&l.name)
            .await
            .unwrap_or_else(|e| panic!("inspect {i} with the first endpoint silent: {e:#}"));
        a.release(&l)
            .await
            .unwrap_or_else(|e| panic!("release {i} with the first endpoint silent: {e:#}"));
        assert!(judge.inspect(&l.name).await.unwrap().is_none());
    }
    // Nothing was sent to the silent endpoint after the first silence.
    let sent = proxy.requests();
    let l = a
        .try_acquire(&spec("after", "owner-a"))
        .await
        .unwrap()
        .unwrap();
    a.release(&l).await.unwrap();
    assert_eq!(
        proxy.requests(),
        sent,
        "requests still go to the endpoint that stopped answering"
    );
}

#[tokio::test]
async fn an_acquire_sent_again_elsewhere_recognizes_its_own_grant() {
    let (proxy, a, judge) = two_endpoints().await;
    // The transaction (request 1, on the lease the warm-up released)
    // applies at etcd, its answer is held: the acquire is sent again to the
    // second endpoint, and finds its own key there.
    proxy.stall_after_requests(1);
    let l = a
        .try_acquire(&spec("x", "owner-a"))
        .await
        .unwrap_or_else(|e| panic!("acquire whose first answer was lost: {e:#}"))
        .unwrap_or_else(|| {
            panic!("the acquire's own earlier grant was reported as the lock held by someone else")
        });
    assert!(proxy.is_stalled(), "the stall never started");
    let seen = judge.inspect(&l.name).await.unwrap().unwrap();
    assert_eq!(seen.owner, "owner-a");
    assert_eq!(
        seen.token, l.token,
        "the token is not the key's create revision"
    );
    // It is a real, working hold: others are refused, release frees it.
    assert!(judge
        .try_acquire(&spec("x", "owner-b"))
        .await
        .unwrap()
        .is_none());
    // A keep-alive first: the lease is freshly proven at release, so only
    // the acquire having been sent twice keeps it from being reused.
    let l = a.extend(&l, l.at_most).await.unwrap();
    a.release(&l).await.unwrap();
    let b = judge
        .try_acquire(&spec("x", "owner-b"))
        .await
        .unwrap()
        .expect("released lock still held");
    assert!(b.token > l.token);
    judge.release(&b).await.unwrap();
    // The stalled first copy may still put the key back on that lease, so
    // the release revoked it instead of keeping it for the next acquire.
    let id = i64::from_str_radix(l.handle.split('/').next().unwrap(), 16).unwrap();
    let mut c = judge.client().await.unwrap();
    let mut ttl = 0;
    for _ in 0..50 {
        ttl = c.lease_time_to_live(id, None).await.unwrap().ttl();
        if ttl < 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ttl, -1,
        "the lease of an acquire sent twice outlived its release"
    );
}

#[tokio::test]
async fn a_held_answer_to_an_acquire_sent_twice_never_returns_its_lease_for_reuse() {
    // A short deadline: the lease the warm-up released is still fresh
    // enough to reuse when the second copy's answer comes.
    let (proxy, a, judge) = two_endpoints_within("300ms").await;
    let spec10 = |name: &str, owner: &str| {
        LockSpec::new(LockName::new(name).unwrap(), owner, Duration::from_secs(10)).unwrap()
    };
    let held = judge
        .try_acquire(&spec10("x", "owner-b"))
        .await
        .unwrap()
        .unwrap();
    let l = a
        .try_acquire(&spec10("warm10", "owner-a"))
        .await
        .unwrap()
        .unwrap();
    a.release(&l).await.unwrap();
    // The transaction on that released lease reaches etcd and is answered
    // "held", but the answer is held back: it is sent again elsewhere and
    // answered "held" there. The first copy could still be on its way, so
    // the lease must not come back into the pool.
    proxy.stall_after_requests(1);
    assert!(a
        .try_acquire(&spec10("x", "owner-a"))
        .await
        .unwrap()
        .is_none());
    assert!(proxy.is_stalled(), "the stall never started");
    let n = a.requests_sent();
    let y = a
        .try_acquire(&spec10("y", "owner-a"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        a.requests_sent() - n >= 2,
        "the next acquire reused the lease of an acquire sent twice (one txn, no grant)"
    );
    a.release(&y).await.unwrap();
    judge.release(&held).await.unwrap();
}
