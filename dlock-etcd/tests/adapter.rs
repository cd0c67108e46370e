//! etcd-specific behaviour and bad input, against the shared etcd
//! (`DLOCK_TEST_ETCD_URL`; these tests fail, never skip, when it is unset).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{Error, LockBackend, LockName, LockSpec, Locker};
use dlock_etcd::EtcdBackend;
use dlock_testkit::bad_input::{acquire_extend_release, huge_timeout_verdict, no_panic};
use etcd_client::{Client, GetOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn base_url() -> String {
    std::env::var("DLOCK_TEST_ETCD_URL").expect(
        "DLOCK_TEST_ETCD_URL is not set: run scripts/test.sh or `. .run/env` after \
         scripts/coordinators.sh start etcd",
    )
}

/// The base URL with a fresh key prefix, and that prefix.
fn fresh_url() -> (String, String) {
    let ns = format!("adapter_t{:08x}", rand_u32());
    (format!("{}/{ns}", base_url()), ns)
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

async fn raw() -> Client {
    let hostport = base_url()
        .trim_start_matches("etcd://")
        .trim_end_matches('/')
        .to_string();
    Client::connect([hostport], None).await.unwrap()
}

fn spec(name: &str, secs: u64) -> LockSpec {
    LockSpec::new(
        LockName::new(name).unwrap(),
        "owner-a",
        Duration::from_secs(secs),
    )
    .unwrap()
}

#[tokio::test]
async fn min_lease_is_what_the_server_enforces() {
    let (url, _) = fresh_url();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let caps = b.capabilities();
    // The server's answer to a TTL-1 grant is its real minimum.
    let mut c = raw().await;
    let g = c.lease_grant(1, None).await.unwrap();
    c.lease_revoke(g.id()).await.unwrap();
    assert_eq!(caps.min_lease, Duration::from_secs(g.ttl().max(1) as u64));
    assert_eq!(caps.lease_granularity, Duration::from_secs(1));
    assert!(caps.release_notifies_waiters && caps.at_least_survives_exit && caps.networked);
    // Below the minimum, or not whole seconds: Unsupported, nothing taken.
    if caps.min_lease > Duration::from_secs(1) {
        let r = b.try_acquire(&spec("short", 1)).await;
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    }
    let odd = LockSpec::new(
        LockName::new("odd").unwrap(),
        "o",
        caps.min_lease + Duration::from_millis(500),
    )
    .unwrap();
    let r = b.try_acquire(&odd).await;
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    assert!(b.inspect(&odd.name).await.unwrap().is_none());
}

#[tokio::test]
async fn keys_stay_inside_the_prefix_and_names_never_collide() {
    let (url, ns) = fresh_url();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let mut c = raw().await;
    // Sentinels just outside the prefix must survive everything below.
    let outside = [
        ns.clone(),
        format!("{ns}x/a"),
        format!("{ns}0"),
        format!("x/{ns}/a"),
    ];
    for k in &outside {
        c.put(k.as_str(), "sentinel", None).await.unwrap();
    }
    let names = ["a", "a/b", "a%2Fb", "b", "..", "a/", "/a"];
    let mut leases = Vec::new();
    for n in names {
        let l = b
            .try_acquire(&spec(n, 10))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{n:?} interfered with another name"));
        leases.push(l);
    }
    let got = c
        .get(format!("{ns}/"), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut keys: Vec<String> = got
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    keys.sort();
    let mut want: Vec<String> = names
        .iter()
        .map(|n| format!("{ns}/{}", LockName::new(*n).unwrap().path_segment()))
        .collect();
    want.sort();
    assert_eq!(keys, want);
    // list() reads back exactly these names, not the sentinels around them.
    let mut listed: Vec<String> = b
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name.as_str().to_string())
        .collect();
    listed.sort();
    let mut want_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want_names.sort();
    assert_eq!(listed, want_names);
    for (n, l) in names.iter().zip(&leases) {
        assert_eq!(b.key_of(&l.name), format!("{ns}/{}", l.name.path_segment()));
        // The stored value names the acquisition and owner.
        let v = c.get(b.key_of(&l.name), None).await.unwrap();
        assert_eq!(
            v.kvs()[0].value_str().unwrap(),
            format!("{}:owner-a", l.id),
            "{n}"
        );
    }
    // Releasing / force-releasing "a" leaves "a/b" and "a%2Fb" alone.
    b.release(&leases[0]).await.unwrap();
    assert!(b.force_release(&LockName::new("b").unwrap()).await.unwrap());
    for n in ["a/b", "a%2Fb", "..", "a/", "/a"] {
        assert!(
            b.inspect(&LockName::new(n).unwrap())
                .await
                .unwrap()
                .is_some(),
            "{n} was freed by another name's release"
        );
    }
    for l in &leases[1..] {
        if l.name.as_str() != "b" {
            b.release(l).await.unwrap();
        }
    }
    for k in &outside {
        let v = c.get(k.as_str(), None).await.unwrap();
        assert_eq!(v.kvs().len(), 1, "{k} outside the prefix was touched");
        assert_eq!(v.kvs()[0].value(), b"sentinel");
        c.delete(k.as_str(), None).await.unwrap();
    }
}

#[tokio::test]
async fn extend_to_another_length_moves_the_key_to_a_fresh_lease() {
    let (url, _) = fresh_url();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let mut c = raw().await;
    let l = b.try_acquire(&spec("x", 2)).await.unwrap().unwrap();
    let key = b.key_of(&l.name);
    let before = c.get(key.as_str(), None).await.unwrap().kvs()[0].lease();
    // Same length: a keep-alive, same lease.
    let l2 = b.extend(&l, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        c.get(key.as_str(), None).await.unwrap().kvs()[0].lease(),
        before
    );
    // Another length: a new lease with that TTL, same token.
    let l3 = b.extend(&l2, Duration::from_secs(7)).await.unwrap();
    let kv = c.get(key.as_str(), None).await.unwrap().kvs()[0].clone();
    assert_ne!(kv.lease(), before);
    assert_eq!(kv.create_revision() as u64, l.token.get());
    let ttl = c.lease_time_to_live(kv.lease(), None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 7);
    assert!(l3.valid_until > l2.valid_until);
    // The superseded lease handle is stale now.
    let r = b.extend(&l2, Duration::from_secs(2)).await;
    assert!(r.as_ref().is_err_and(Error::is_lock_lost), "{r:?}");
    b.release(&l3).await.unwrap();
    assert!(b.inspect(&l.name).await.unwrap().is_none());
}

#[tokio::test]
async fn at_least_release_leaves_a_lease_timed_by_etcd() {
    let (url, _) = fresh_url();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let mut c = raw().await;
    let s = spec("x", 60).with_at_least(Duration::from_secs(5)).unwrap();
    let l = b.try_acquire(&s).await.unwrap().unwrap();
    b.release(&l).await.unwrap();
    // The key now sits on a fresh lease of ceil(remaining at_least) <= 5 s,
    // not on the 60 s one: the hold ends near acquired + at_least.
    let kv = c.get(b.key_of(&l.name), None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        kv.create_revision() as u64,
        l.token.get(),
        "same acquisition"
    );
    let ttl = c.lease_time_to_live(kv.lease(), None).await.unwrap();
    assert!(
        (1..=5).contains(&ttl.granted_ttl()),
        "granted {}",
        ttl.granted_ttl()
    );
    // Nobody else gets it meanwhile; the old lease handle is done.
    let other = LockSpec::new(l.name.clone(), "owner-b", Duration::from_secs(2)).unwrap();
    assert!(b.try_acquire(&other).await.unwrap().is_none());
    let r = b.release(&l).await;
    assert!(r.as_ref().is_err_and(Error::is_lock_lost), "{r:?}");
    assert!(b.force_release(&l.name).await.unwrap());
}

#[tokio::test]
async fn force_release_fires_lost_through_the_watch() {
    let (url, _) = fresh_url();
    let a = Locker::new(EtcdBackend::connect(&url).await.unwrap())
        .with_owner("a")
        .unwrap();
    let admin = EtcdBackend::connect(&url).await.unwrap();
    // A 60 s lease: only the key watch can tell the guard so soon.
    let g = a
        .try_lock("x", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // let the watch start
    assert!(admin
        .force_release(&LockName::new("x").unwrap())
        .await
        .unwrap());
    let t = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), g.lost().wait())
        .await
        .expect("lost() did not fire after force_release");
    assert!(reason.contains("deleted"), "{reason}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(!g.is_held());
    let r = g.release().await;
    assert!(r.as_ref().is_err_and(Error::is_lock_lost), "{r:?}");
}

#[tokio::test]
async fn waiter_wakes_on_expiry_without_polling() {
    let (url, _) = fresh_url();
    let holder = EtcdBackend::connect(&url).await.unwrap();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let l = holder.try_acquire(&spec("x", 2)).await.unwrap().unwrap();
    // A failed acquire records the revision; the wait then watches from it.
    assert!(b.try_acquire(&spec("x", 2)).await.unwrap().is_none());
    // (the failed attempt's unused lease is revoked in the background)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = b.requests_sent();
    b.wait_for_release(&l.name, Duration::from_secs(30))
        .await
        .unwrap();
    let waited = l.acquired_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "woke after {waited:?}"
    );
    // One watch creation, no polling reads.
    assert_eq!(b.requests_sent() - sent, 1);
    assert!(b.try_acquire(&spec("x", 2)).await.unwrap().is_some());
}

#[tokio::test]
async fn wait_is_bounded_by_max_wait() {
    let (url, _) = fresh_url();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let l = b.try_acquire(&spec("x", 30)).await.unwrap().unwrap();
    let t = Instant::now();
    b.wait_for_release(&l.name, Duration::from_millis(300))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    b.release(&l).await.unwrap();
}

/// An acquire soon after a release takes one round trip: it reuses the
/// released lease (lease_pool.rs). Its local validity counts from that
/// lease's last proof, not from the acquire: etcd's TTL ran since then.
#[tokio::test]
async fn an_acquire_after_a_release_takes_one_round_trip_and_counts_validity_from_the_grant() {
    let (url, _) = fresh_url();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let s = spec("x", 10);
    let n0 = b.requests_sent();
    let l = b.try_acquire(&s).await.unwrap().unwrap();
    assert_eq!(
        b.requests_sent() - n0,
        2,
        "first acquire: lease grant + txn"
    );
    b.release(&l).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n1 = b.requests_sent();
    let sent = dlock_core::BootInstant::now();
    let l = b.try_acquire(&s).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        b.requests_sent() - n1,
        1,
        "the released lease reused: one txn, nothing in the background"
    );
    // The lease is >= 500 ms old: the guard may not count those 500 ms again.
    let full = dlock_core::local_valid_until(sent, s.at_most);
    assert!(
        l.valid_until + Duration::from_millis(450) <= full,
        "validity counted from the acquire ({:?} short of a full lease), not from the \
         lease's grant 500 ms earlier",
        full.saturating_duration_since(l.valid_until)
    );
    // The released key is gone and a new acquisition holds the lock.
    let seen = b.inspect(&l.name).await.unwrap().unwrap();
    assert_eq!(seen.id.as_deref(), Some(l.id.as_str()));
    b.release(&l).await.unwrap();
    // A lease older than a tenth of its TTL (at most 1 s) is not used: the
    // acquire grants its own, with a full validity.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sent = dlock_core::BootInstant::now();
    let l = b.try_acquire(&s).await.unwrap().unwrap();
    let full = dlock_core::local_valid_until(sent, s.at_most);
    assert!(
        l.valid_until + Duration::from_millis(100) >= full,
        "a stale lease was used: {:?} of validity lost",
        full.saturating_duration_since(l.valid_until)
    );
    b.release(&l).await.unwrap();
}

/// A lease that came back from a "held" answer carries no key: the next
/// acquire of the freed lock may use it, and only one key ever sits on it.
#[tokio::test]
async fn a_lease_back_from_a_busy_acquire_carries_one_lock_only() {
    let (url, _) = fresh_url();
    let a = EtcdBackend::connect(&url).await.unwrap();
    let b = EtcdBackend::connect(&url).await.unwrap();
    let held = a.try_acquire(&spec("y", 10)).await.unwrap().unwrap();
    // b's tries, close together, find the lock held and hand their leases back.
    for _ in 0..3 {
        assert!(b.try_acquire(&spec("y", 10)).await.unwrap().is_none());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mine = b.try_acquire(&spec("z", 10)).await.unwrap().unwrap();
    let other = b.try_acquire(&spec("w", 10)).await.unwrap().unwrap();
    let lease_of = |l: &dlock_core::Lease| l.handle.split('/').next().unwrap().to_string();
    assert_ne!(
        lease_of(&mine),
        lease_of(&other),
        "two locks on one etcd lease"
    );
    assert_ne!(lease_of(&mine), lease_of(&held));
    for l in [&mine, &other] {
        b.release(l).await.unwrap();
    }
    a.release(&held).await.unwrap();
}

#[tokio::test]
async fn unreachable_endpoints_fail_fast() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = Instant::now();
    let e = EtcdBackend::connect(&format!("etcd://{closed}/p?connect_timeout=2s"))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&closed.to_string()) && msg.contains("refused"),
        "{msg}"
    );
    // A silent address (blackholed or unroutable) is bounded by connect_timeout.
    let t = Instant::now();
    let r = EtcdBackend::connect("etcd://10.255.255.1:2379/p?connect_timeout=1s").await;
    assert!(r.is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A listener that never speaks gRPC: the connect probe answers, the
    // lease grant times out, still an Err within connect_timeout.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = mute.local_addr().unwrap();
    let t = Instant::now();
    let r = EtcdBackend::connect(&format!("etcd://{addr}/p?connect_timeout=1s")).await;
    assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(mute);
}

#[tokio::test]
async fn one_dead_endpoint_among_live_ones_is_fine() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (url, ns) = fresh_url();
    let live = url
        .trim_start_matches("etcd://")
        .trim_end_matches(&format!("/{ns}"))
        .to_string();
    let b = EtcdBackend::connect(&format!("etcd://{live},{closed}/{ns}"))
        .await
        .unwrap();
    for i in 0..5 {
        let l = b
            .try_acquire(&spec(&format!("n{i}"), 5))
            .await
            .unwrap()
            .unwrap();
        b.release(&l).await.unwrap();
    }
}

#[tokio::test]
async fn bad_urls_are_invalid_config() {
    for url in [
        "etcd://",
        "etcd://127.0.0.1:99999/p",
        "etcd://127.0.0.1:2379/p?nope=1",
        "etcd://u@127.0.0.1:2379/p",
        "etcd://127.0.0.1:2379/p?ca_file=/x.pem",
        "etcds://127.0.0.1:2379/p?cert_file=/c.pem",
        "etcd://127.0.0.1:2379/p?request_timeout=fast",
        "zk://127.0.0.1:2379/p",
    ] {
        let r = EtcdBackend::connect(url).await;
        assert!(matches!(r, Err(Error::InvalidConfig(_))), "{url}: {r:?}");
    }
    // A missing CA file is named in the error.
    let r = EtcdBackend::connect("etcds://127.0.0.1:1/p?ca_file=/nonexistent/ca.pem").await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn debug_never_shows_the_password() {
    let c = dlock_etcd::EtcdConfig::parse("etcd://root:hunter2@127.0.0.1:1/p").unwrap();
    let d = format!("{c:?}");
    assert!(!d.contains("hunter2") && d.contains("root"), "{d}");
    let b = EtcdBackend::connect(&format!("{}/p", base_url()))
        .await
        .unwrap();
    assert!(!format!("{b:?}").contains("password: Some"));
}

#[tokio::test]
async fn tls_to_a_plain_server_is_a_clear_error() {
    // etcds:// against the plain-HTTP shared server: the handshake fails.
    let url = base_url().replacen("etcd://", "etcds://", 1);
    let t = Instant::now();
    let r = EtcdBackend::connect(&format!("{url}/p?connect_timeout=2s")).await;
    assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(4));
}

/// Connects and runs acquire, extend and release on the shared etcd.
async fn connect_and_use(url: String) -> dlock_core::Result<()> {
    let b = EtcdBackend::connect(&url).await?;
    acquire_extend_release(&b, Duration::from_secs(5)).await
}

#[tokio::test]
async fn huge_timeouts_are_invalid_config_never_a_panic() {
    let (url, _) = fresh_url();
    let mut bad = Vec::new();
    for opt in ["connect_timeout", "request_timeout"] {
        // A timeout beyond 1h is a typo, not a wish: rejected, naming the
        // option and the maximum, however far beyond (u64::MAX seconds
        // overflows every clock).
        for v in ["18446744073709551615s", "100000000000s", "61min"] {
            let what = format!("{opt}={v}");
            let r = no_panic(connect_and_use(format!("{url}?{what}"))).await;
            bad.extend(huge_timeout_verdict(&what, opt, r));
        }
    }
    // Set in code rather than in the URL: the same answer.
    type Set = fn(&mut dlock_etcd::EtcdConfig);
    let sets: [(&str, Set); 2] = [
        ("connect_timeout", |c| c.connect_timeout = Duration::MAX),
        ("request_timeout", |c| c.request_timeout = Duration::MAX),
    ];
    for (opt, set) in sets {
        let mut c = dlock_etcd::EtcdConfig::parse(&url).unwrap();
        set(&mut c);
        let r = no_panic(async move {
            let b = EtcdBackend::with_config(c).await?;
            let l = b
                .try_acquire(&spec("huge", 5))
                .await?
                .expect("lock is free");
            b.release(&l).await
        })
        .await;
        bad.extend(huge_timeout_verdict(
            &format!("{opt} = Duration::MAX in code"),
            opt,
            r,
        ));
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    // The maximum itself connects and works.
    let what = "connect_timeout=1h&request_timeout=1h";
    no_panic(connect_and_use(format!("{url}?{what}")))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[tokio::test]
async fn endless_waits_never_overflow_the_clock() {
    let (url, _) = fresh_url();
    let b = Arc::new(EtcdBackend::connect(&url).await.unwrap());
    let name = LockName::new("endless").unwrap();
    // Free: returns at once, whatever the wait.
    let (b2, n2) = (b.clone(), name.clone());
    let r = no_panic(async move {
        tokio::time::timeout(
            Duration::from_secs(5),
            b2.wait_for_release(&n2, Duration::MAX),
        )
        .await
    })
    .await
    .unwrap_or_else(|p| panic!("wait on a free lock: {p}"));
    r.expect("a free lock's wait returns at once").unwrap();
    // Held: an endless wait just waits.
    let l = b.try_acquire(&spec("endless", 10)).await.unwrap().unwrap();
    let (b2, n2) = (b.clone(), name.clone());
    let r = no_panic(async move {
        tokio::time::timeout(
            Duration::from_millis(500),
            b2.wait_for_release(&n2, Duration::MAX),
        )
        .await
    })
    .await
    .unwrap_or_else(|p| panic!("wait on a held lock: {p}"));
    assert!(r.is_err(), "returned although held: {r:?}");
    b.release(&l).await.unwrap();
}
