//! Sessions made ahead of acquires (session_pool.rs): an acquire soon
//! after a release reuses the released session, its validity counted from
//! that session's last proof; one session never carries two locks; a
//! session too old to use is destroyed. Uses `DLOCK_TEST_CONSUL_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{consul_url, Raw};
use dlock_consul::ConsulBackend;
use dlock_core::{local_valid_until, BootInstant, Lease, LockBackend, LockName, LockSpec};
use std::time::Duration;

fn spec(name: &str, owner: &str) -> LockSpec {
    LockSpec::new(LockName::new(name).unwrap(), owner, Duration::from_secs(10)).unwrap()
}

fn session_of(lease: &Lease) -> String {
    lease.handle.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn an_acquire_after_a_release_reuses_its_session_and_counts_validity_from_its_proof() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let raw = Raw::new(&url, None);
    let s = spec("x", "owner-a");
    let first = b.try_acquire(&s).await.unwrap().unwrap();
    b.release(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = BootInstant::now();
    let again = b.try_acquire(&s).await.unwrap().unwrap();
    assert_eq!(
        session_of(&again),
        session_of(&first),
        "the released session was not reused"
    );
    let full = local_valid_until(sent, s.at_most);
    assert!(
        again.valid_until + Duration::from_millis(450) <= full,
        "validity counted from the acquire ({:?} short of a full lease), not from the \
         session's creation 500 ms earlier",
        full.saturating_duration_since(again.valid_until)
    );
    assert!(again.token > first.token);
    b.release(&again).await.unwrap();
    // Older than a tenth of its TTL (at most 1 s): destroyed, not used.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sent = BootInstant::now();
    let fresh = b.try_acquire(&s).await.unwrap().unwrap();
    assert_ne!(session_of(&fresh), session_of(&again));
    let full = local_valid_until(sent, s.at_most);
    assert!(
        fresh.valid_until + Duration::from_millis(100) >= full,
        "a stale session was used: {:?} of validity lost",
        full.saturating_duration_since(fresh.valid_until)
    );
    let mut gone = false;
    for _ in 0..50 {
        if raw.session(&session_of(&again)).await.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the stale session was left alive");
    b.release(&fresh).await.unwrap();
}

#[tokio::test]
async fn a_session_back_from_a_held_lock_carries_one_lock_only() {
    let (url, _) = consul_url();
    let a = ConsulBackend::connect(&url).await.unwrap();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let held = a.try_acquire(&spec("y", "owner-a")).await.unwrap().unwrap();
    for _ in 0..3 {
        assert!(b
            .try_acquire(&spec("y", "owner-b"))
            .await
            .unwrap()
            .is_none());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let one = b.try_acquire(&spec("z", "owner-b")).await.unwrap().unwrap();
    let two = b.try_acquire(&spec("w", "owner-b")).await.unwrap().unwrap();
    assert_ne!(
        session_of(&one),
        session_of(&two),
        "two locks on one session"
    );
    assert_ne!(session_of(&one), session_of(&held));
    for l in [&one, &two] {
        b.release(l).await.unwrap();
    }
    a.release(&held).await.unwrap();
}
