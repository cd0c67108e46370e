//! Fencing tokens (the key's raft ModifyIndex at acquire) only grow: across
//! releases, session expiry, deletion of the key by hand, force-release,
//! sessions moved by extend and by `lock_at_least_for`.
//! Uses `DLOCK_TEST_CONSUL_URL` (fails when unset). Takes about 40 s: a
//! 10 s session may live 20 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{consul_url, value_json, Raw};
use dlock_consul::ConsulBackend;
use dlock_core::{Lease, LockBackend, LockName, LockSpec, Locker};
use std::time::{Duration, Instant};

fn spec(name: &str, owner: &str, secs: u64) -> LockSpec {
    LockSpec::new(
        LockName::new(name).unwrap(),
        owner,
        Duration::from_secs(secs),
    )
    .unwrap()
}

async fn take(b: &ConsulBackend, s: &LockSpec) -> Lease {
    b.try_acquire(s)
        .await
        .unwrap()
        .expect("the lock should be free")
}

fn session_of(lease: &Lease) -> String {
    lease.handle.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn tokens_grow_across_release_expiry_deletion_and_force_release() {
    let (url, _) = consul_url();
    let (a, b) = (
        ConsulBackend::connect(&url).await.unwrap(),
        ConsulBackend::connect(&url).await.unwrap(),
    );
    let raw = Raw::new(&url, None);
    let s_a = spec("fence/x", "a", 10);
    let s_b = spec("fence/x", "b", 10);
    let key = a.key_for(&s_a.name);
    let mut tokens = Vec::new();

    // Release.
    let l = take(&a, &s_a).await;
    tokens.push(l.token.0);
    a.release(&l).await.unwrap();
    let l = take(&b, &s_b).await;
    tokens.push(l.token.0);
    b.release(&l).await.unwrap();

    // Session expiry: nobody renews, Consul deletes the key between 10 s and 20 s.
    let t0 = Instant::now();
    let stale = take(&a, &s_a).await;
    tokens.push(stale.token.0);
    let mut taken = None;
    while raw.get(&key).await.is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(35),
            "session never expired"
        );
        // The session may expire between the read above and this acquire:
        // then b gets the lock, which is fine once the TTL has passed.
        if let Some(l) = b.try_acquire(&s_b).await.unwrap() {
            taken = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_secs(10),
        "expired (or taken) before its TTL: {:?}",
        t0.elapsed()
    );
    assert!(raw.session(&session_of(&stale)).await.is_none());
    let l = match taken {
        Some(l) => l,
        None => take(&b, &s_b).await,
    };
    tokens.push(l.token.0);
    assert!(a
        .extend(&stale, Duration::from_secs(10))
        .await
        .unwrap_err()
        .is_lock_lost());
    assert!(a.release(&stale).await.unwrap_err().is_lock_lost());

    // Deletion of the key by hand while held: the holder's session still
    // lives, yet the key is no longer its own.
    raw.delete(&key).await;
    let l2 = take(&a, &s_a).await;
    tokens.push(l2.token.0);
    let e = b.extend(&l, Duration::from_secs(10)).await.unwrap_err();
    assert!(e.is_lock_lost(), "{e:?}");
    assert!(b.release(&l).await.unwrap_err().is_lock_lost());
    assert!(b.inspect(&s_b.name).await.unwrap().unwrap().id.as_deref() == Some(l2.id.as_str()));

    // Force release, then a key someone else wrote without a session.
    assert!(b.force_release(&s_b.name).await.unwrap());
    assert!(a
        .extend(&l2, Duration::from_secs(10))
        .await
        .unwrap_err()
        .is_lock_lost());
    raw.put_json(&format!("/v1/kv/{key}"), serde_json::json!("not dlock"))
        .await;
    let l3 = take(&b, &s_b).await;
    tokens.push(l3.token.0);
    b.release(&l3).await.unwrap();

    assert!(tokens.windows(2).all(|w| w[1] > w[0]), "{tokens:?}");
}

#[tokio::test]
async fn guard_reports_loss_when_its_key_is_deleted() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let raw = Raw::new(&url, None);
    let locker = Locker::new(b.clone()).with_owner("watched").unwrap();
    let g = locker
        .try_lock("fence/watched", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let key = b.key_for(&g.name());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(g.is_held());
    raw.delete(&key).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), g.lost().wait())
        .await
        .expect("lost() did not fire within 5 s of the key's deletion");
    assert!(reason.contains("deleted"), "{reason}");
    assert!(!g.is_held());
    assert!(g.release().await.unwrap_err().is_lock_lost());
}

#[tokio::test]
async fn extend_to_another_length_moves_the_key_and_keeps_the_token() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let raw = Raw::new(&url, None);
    let s = spec("fence/move", "mover", 10);
    let key = b.key_for(&s.name);
    let l = take(&b, &s).await;
    let same = b.extend(&l, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        session_of(&same),
        session_of(&l),
        "same length renews the session"
    );
    let moved = b.extend(&same, Duration::from_secs(20)).await.unwrap();
    assert_ne!(session_of(&moved), session_of(&l));
    assert_eq!(moved.token, l.token);
    assert_eq!(moved.at_most, Duration::from_secs(20));
    let entry = raw.get(&key).await.unwrap();
    assert_eq!(entry["Session"], session_of(&moved).as_str());
    assert_eq!(value_json(&entry)["token"].as_u64(), Some(l.token.0));
    let info = b.inspect(&s.name).await.unwrap().unwrap();
    assert_eq!(
        info.token, l.token,
        "inspect reports the acquisition's token"
    );
    let sess = raw.session(&session_of(&moved)).await.unwrap();
    assert_eq!(sess["TTL"], "20s");
    // The old lease is no longer the holder.
    assert!(b
        .extend(&l, Duration::from_secs(10))
        .await
        .unwrap_err()
        .is_lock_lost());
    b.release(&moved).await.unwrap();
    let next = take(&b, &s).await;
    assert!(next.token > l.token);
    b.release(&next).await.unwrap();
}

#[tokio::test]
async fn at_least_keeps_the_lock_then_frees_it_on_time() {
    let (url, _) = consul_url();
    let (a, b) = (
        ConsulBackend::connect(&url).await.unwrap(),
        ConsulBackend::connect(&url).await.unwrap(),
    );
    let raw = Raw::new(&url, None);
    let s = spec("fence/at-least", "a", 20)
        .with_at_least(Duration::from_secs(12))
        .unwrap();
    let t0 = Instant::now();
    let l = take(&a, &s).await;
    a.release(&l).await.unwrap();
    let entry = raw
        .get(&a.key_for(&s.name))
        .await
        .expect("kept by at_least");
    let sess = raw
        .session(entry["Session"].as_str().unwrap())
        .await
        .unwrap();
    let ttl_ms: f64 = sess["TTL"]
        .as_str()
        .unwrap()
        .trim_end_matches("ms")
        .parse()
        .unwrap();
    assert!((11_000.0..13_000.0).contains(&ttl_ms), "{sess}");
    assert_eq!(b.inspect(&s.name).await.unwrap().unwrap().token, l.token);
    let s_b = spec("fence/at-least", "b", 10);
    loop {
        if let Some(got) = b.try_acquire(&s_b).await.unwrap() {
            let took = t0.elapsed();
            assert!(took >= Duration::from_secs(12), "free after only {took:?}");
            assert!(
                took < Duration::from_secs(14),
                "held {took:?} although this process ran"
            );
            assert!(got.token > l.token);
            b.release(&got).await.unwrap();
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
