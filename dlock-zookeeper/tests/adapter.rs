//! ZooKeeper-specific behaviour and bad input, against the real server
//! (`DLOCK_TEST_ZOOKEEPER_URL`; these tests fail when it is unset).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dlock_core::{Error, LockBackend, LockName, Locker};
use dlock_testkit::bad_input::{acquire_extend_release, huge_timeout_verdict, no_panic};
use dlock_zookeeper::{ZkConfig, ZookeeperBackend};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn backend(root: &str) -> Arc<ZookeeperBackend> {
    Arc::new(ZookeeperBackend::connect(&url(root)).await.unwrap())
}

fn locker(b: &Arc<ZookeeperBackend>, owner: &str) -> Locker {
    Locker::from_arc(b.clone() as Arc<dyn LockBackend>)
        .with_owner(owner)
        .unwrap()
}

#[tokio::test]
async fn closed_port_is_err_within_connect_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let u = format!("zk://127.0.0.1:{port}/x?connect_timeout=2s");
    let t0 = Instant::now();
    let e = ZookeeperBackend::connect(&u).await.unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t0.elapsed()
    );
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("running"),
        "{msg}"
    );
}

#[tokio::test]
async fn silent_server_is_err_within_connect_timeout() {
    // Accepts TCP connections and never answers the ZooKeeper handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let u = format!("zk://{addr}/x?connect_timeout=1500ms&session_timeout=30s");
    let t0 = Instant::now();
    let e = ZookeeperBackend::connect(&u).await.unwrap_err();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(e.to_string().contains("connect_timeout"), "{e}");
    hold.abort();
}

#[tokio::test]
async fn wrong_digest_password_is_a_clear_error() {
    let root = unique_root("auth");
    let host = upstream();
    let right = url_for(&host, Some("alice:right-pass"), &root, "");
    let b = Arc::new(ZookeeperBackend::connect(&right).await.unwrap());
    let l = locker(&b, "alice");
    let g = l
        .try_lock("guarded", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();

    // The root and every node dlock made carry a creator-only ACL.
    let client = b.client().await.unwrap();
    let dir = format!("{root}/guarded");
    for p in [root.as_str(), dir.as_str()] {
        let (acls, _) = client.get_acl(p).await.unwrap();
        assert!(
            acls.iter()
                .all(|a| a.scheme() == "digest" && a.id().starts_with("alice:")),
            "{p}: {acls:?}"
        );
    }

    let secret = "Wr0ng-S3cret";
    let wrong = url_for(&host, Some(&format!("alice:{secret}")), &root, "");
    let e = ZookeeperBackend::connect(&wrong).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e:#}");
    assert_eq!(dlock_testkit::bad_input::report_defect(&e), None);
    assert!(
        msg.contains("not authorized") && msg.contains("password"),
        "{msg}"
    );
    assert!(
        !msg.contains(secret),
        "the error echoes the password: {msg}"
    );
    assert!(!format!("{:?}", ZkConfig::parse(&wrong).unwrap()).contains(secret));

    let anon = url_for(&host, None, &root, "");
    let e = ZookeeperBackend::connect(&anon).await.unwrap_err();
    assert!(e.to_string().contains("requires credentials"), "{e}");
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");

    // The password kept out of the URL: ConnectOptions gives it.
    let bare = url_for(&host, None, &root, "");
    let opts = dlock_core::ConnectOptions::new()
        .user("alice")
        .password("right-pass");
    let b3 = ZookeeperBackend::connect_with(&bare, &opts).await.unwrap();
    assert!(locker(&Arc::new(b3), "alice-3")
        .try_lock("guarded", Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    let e = ZookeeperBackend::connect_with(&bare, &opts.clone().token("t"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ConnectOptions::token"), "{e}");

    // The right identity on a second connection sees the lock held.
    let b2 = Arc::new(ZookeeperBackend::connect(&right).await.unwrap());
    assert!(locker(&b2, "alice-2")
        .try_lock("guarded", Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    g.release().await.unwrap();
}

#[tokio::test]
async fn lock_nodes_are_ephemeral_and_the_token_is_their_czxid() {
    let root = unique_root("layout");
    let b = backend(&root).await;
    let l = locker(&b, "owner-a");
    let name = "a/../b/..";
    let g = l
        .try_lock(name, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let client = b.client().await.unwrap();

    let seg = LockName::new(name).unwrap().path_segment();
    let roots = client.list_children(&root).await.unwrap();
    assert_eq!(
        roots,
        std::slice::from_ref(&seg),
        "one directory per name, one segment"
    );
    let dir = format!("{root}/{seg}");
    let (data, _) = client.get_data(&dir).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["name"], name, "the directory records the name exactly");

    let mut kids = client.list_children(&dir).await.unwrap();
    kids.sort();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(kids[0], "hold");
    let node = &kids[1];
    assert!(node.starts_with(&format!("n-{}-", g.lease().id)), "{node}");
    let (data, stat) = client.get_data(&format!("{dir}/{node}")).await.unwrap();
    assert_eq!(stat.czxid as u64, g.token().0, "token = czxid");
    assert_eq!(
        stat.ephemeral_owner,
        client.session_id().0,
        "ephemeral, on our session"
    );
    let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["owner"], "owner-a");

    g.release().await.unwrap();
    let kids = client.list_children(&dir).await.unwrap();
    assert_eq!(kids, ["hold"], "release leaves only the marker node");
}

#[tokio::test]
async fn session_timeout_is_negotiated_and_declared() {
    let root = unique_root("timeout");
    let b = backend(&root).await;
    assert_eq!(b.session_timeout(), Duration::from_secs(4));
    let c = b.capabilities();
    assert_eq!(c.expiry_slack, Duration::from_secs(6));
    assert!(c.release_notifies_waiters && c.at_least_survives_exit && c.server_clock);
    // The server raises a short request to its minSessionTimeout (1 s on the
    // test server). (Far shorter requests are refused by the URL check: the
    // client could not even open the session in time on a loaded machine.)
    let short =
        ZookeeperBackend::connect(&url_for(&upstream(), None, &root, "session_timeout=500ms"))
            .await
            .unwrap();
    assert!(short.session_timeout() > Duration::from_millis(500));
    assert!(short.capabilities().expiry_slack >= short.session_timeout());
}

#[tokio::test]
async fn dlock_connect_picks_this_backend() {
    let root = unique_root("facade");
    for scheme in ["zk", "zookeeper"] {
        let u = format!("{scheme}://{}{root}?session_timeout=4s", upstream());
        let l = dlock::connect(&u).await.unwrap();
        assert_eq!(l.backend().kind(), "zookeeper");
        let g = l
            .try_lock("facade", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        g.release().await.unwrap();
    }
    let e = dlock::connect("zk://127.0.0.1:1,/x").await.unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
}

#[tokio::test]
async fn cancelled_acquire_leaves_no_node_behind() {
    let root = unique_root("cancel");
    let b = backend(&root).await;
    let l = locker(&b, "impatient");
    let name = "cancelled";
    // Prime the directory, so the create below is the only request in flight.
    l.try_lock(name, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    for _ in 0..20 {
        // Polled once: the create is on the wire, then the future is dropped.
        let _ =
            tokio::time::timeout(Duration::ZERO, l.try_lock(name, Duration::from_secs(30))).await;
    }
    let client = b.client().await.unwrap();
    let dir = format!("{root}/{name}");
    let right_after = client.list_children(&dir).await.unwrap();
    eprintln!(
        "right after the cancelled attempts: {} nodes",
        right_after.len()
    );
    let clean = eventually(Duration::from_secs(10), || {
        let client = client.clone();
        let dir = dir.clone();
        async move { client.list_children(&dir).await.unwrap() == ["hold"] }
    })
    .await;
    assert!(
        clean,
        "stray nodes: {:?}",
        client.list_children(&dir).await.unwrap()
    );
    let other = backend(&root).await;
    let g = locker(&other, "other")
        .try_lock(name, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(g.is_some(), "a cancelled acquire still blocks the lock");
}

#[tokio::test]
async fn cancelled_wait_leaves_no_ticket_behind() {
    let root = unique_root("cancelwait");
    let (a, w, c) = (
        backend(&root).await,
        backend(&root).await,
        backend(&root).await,
    );
    let g = locker(&a, "holder")
        .try_lock("q", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let waiter = locker(&w, "waiter");
    let r = tokio::time::timeout(
        Duration::from_millis(600),
        waiter
            .acquire("q")
            .lock_for(Duration::from_secs(30))
            .wait(Duration::from_secs(30))
            .lock(),
    )
    .await;
    assert!(
        r.is_err(),
        "the wait should still be running when cancelled"
    );
    g.release().await.unwrap();
    let got = eventually(Duration::from_secs(5), || {
        let l = locker(&c, "third");
        async move {
            match l.try_lock("q", Duration::from_secs(5)).await.unwrap() {
                Some(g) => {
                    g.release().await.unwrap();
                    true
                }
                None => false,
            }
        }
    })
    .await;
    assert!(got, "the cancelled waiter's ticket kept the lock taken");
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let root = unique_root("fifo");
    let (a, w1, w2) = (
        backend(&root).await,
        backend(&root).await,
        backend(&root).await,
    );
    let g = locker(&a, "holder")
        .try_lock("fifo", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let t0 = g.token();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let spawn_waiter = |b: Arc<ZookeeperBackend>, who: &'static str| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let g = locker(&b, who)
                .acquire("fifo")
                .lock_for(Duration::from_secs(30))
                .wait(Duration::from_secs(30))
                .lock()
                .await
                .unwrap()
                .unwrap();
            tx.send((who, g.token())).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            g.release().await.unwrap();
        })
    };
    let h1 = spawn_waiter(w1, "first");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h2 = spawn_waiter(w2, "second");
    tokio::time::sleep(Duration::from_millis(500)).await;
    g.release().await.unwrap();
    let (who1, t1) = rx.recv().await.unwrap();
    let (who2, t2) = rx.recv().await.unwrap();
    assert_eq!((who1, who2), ("first", "second"));
    assert!(t0 < t1 && t1 < t2, "{t0} {t1} {t2}");
    h1.await.unwrap();
    h2.await.unwrap();
}

#[tokio::test]
async fn force_release_fires_lost_on_the_holder() {
    let root = unique_root("force");
    let (a, op) = (backend(&root).await, backend(&root).await);
    let g = locker(&a, "holder")
        .acquire("forced")
        .lock_for(Duration::from_secs(60))
        .keep_alive(false)
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // let the guard arm its watch
    assert!(op
        .force_release(&LockName::new("forced").unwrap())
        .await
        .unwrap());
    let reason = tokio::time::timeout(Duration::from_secs(3), g.lost().wait())
        .await
        .expect("lost() did not fire after force_release");
    assert!(
        reason.contains("deleted") || reason.contains("gone"),
        "{reason}"
    );
    assert!(!g.is_held());
    assert!(g.release().await.unwrap_err().is_lock_lost());
}

#[tokio::test]
async fn at_least_marker_is_timed_by_the_server() {
    let root = unique_root("marker");
    let (a, b) = (backend(&root).await, backend(&root).await);
    let g = locker(&a, "early")
        .acquire("job")
        .lock_for(Duration::from_secs(10))
        .at_least(Duration::from_secs(2))
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    let t_acq = g.lease().acquired_at;
    g.release().await.unwrap();
    drop(a); // the holder's session closes: the marker alone keeps the lock
    let info = b
        .inspect(&LockName::new("job").unwrap())
        .await
        .unwrap()
        .expect("inspect during at_least says free");
    assert_eq!(info.owner, "early");
    assert!(info.lock_until.is_some());
    let lb = locker(&b, "late");
    assert!(lb
        .try_lock("job", Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    // lock() waits out the marker without polling the server in a loop.
    let g2 = lb
        .acquire("job")
        .lock_for(Duration::from_secs(5))
        .wait(Duration::from_secs(10))
        .lock()
        .await
        .unwrap()
        .expect("lock() gave up during at_least");
    let waited = t_acq.elapsed();
    assert!(
        waited >= Duration::from_millis(1950),
        "at_least ended after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "took {waited:?}");
    g2.release().await.unwrap();
}

#[tokio::test]
async fn list_matches_inspect_and_counts_at_least() {
    let root = unique_root("list");
    let (a, b) = (backend(&root).await, backend(&root).await);
    let la = locker(&a, "a");
    let held = la
        .try_lock("held/ü %", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let marked = la
        .acquire("marked")
        .lock_for(Duration::from_secs(10))
        .at_least(Duration::from_millis(1500))
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    marked.release().await.unwrap();
    let freed = la
        .try_lock("freed", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    freed.release().await.unwrap();
    // A node under the root that is no lock directory, and holds nothing.
    let client = b.client().await.unwrap();
    let opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    client
        .create(&format!("{root}/not%zz"), b"", &opts)
        .await
        .unwrap();

    let listed = locker(&b, "b").list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["held/ü %", "marked"]);
    for info in &listed {
        let inspected = b.inspect(&info.name).await.unwrap().unwrap();
        assert_eq!(info, &inspected);
    }
    assert!(listed[1].lock_until.is_some() && listed[1].locked_at.is_none());

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let listed = b.list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["held/ü %"], "the at_least marker ran out");

    // A held directory whose segment no name encodes to is a clear error.
    client
        .create(&format!("{root}/%zz"), b"", &opts)
        .await
        .unwrap();
    let eph =
        zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all());
    client
        .create(&format!("{root}/%zz/n-abc-0000000001"), b"", &eph)
        .await
        .unwrap();
    let e = b.list().await.unwrap_err();
    assert!(
        matches!(e, Error::Backend { .. }) && e.to_string().contains("%zz"),
        "{e}"
    );
    held.release().await.unwrap();
}

/// Connects with `cfg` and runs acquire, extend and release.
async fn connect_and_use(cfg: ZkConfig) -> dlock_core::Result<()> {
    let b = ZookeeperBackend::with_config(cfg).await?;
    acquire_extend_release(&b, Duration::from_secs(5)).await
}

#[tokio::test]
async fn huge_timeouts_are_invalid_config_never_a_panic() {
    let root = unique_root("huge");
    let host = upstream();
    let mut bad = Vec::new();
    for opt in ["connect_timeout", "request_timeout", "session_timeout"] {
        // Beyond 1h is a typo, not a wish: rejected, naming the option and
        // the maximum (u64::MAX seconds overflows every clock).
        for v in ["18446744073709551615s", "100000000000s", "61min"] {
            let what = format!("{opt}={v}");
            let u = format!("zk://{host}{root}?{what}");
            let r = no_panic(async move { connect_and_use(ZkConfig::parse(&u)?).await }).await;
            bad.extend(huge_timeout_verdict(&what, opt, r));
        }
    }
    // Set in code rather than in the URL: the same answer.
    type Set = fn(&mut ZkConfig);
    let sets: [(&str, Set); 3] = [
        ("connect_timeout", |c| c.connect_timeout = Duration::MAX),
        ("request_timeout", |c| {
            c.request_timeout = Some(Duration::MAX)
        }),
        ("session_timeout", |c| c.session_timeout = Duration::MAX),
    ];
    for (opt, set) in sets {
        let mut c = ZkConfig::parse(&url(&root)).unwrap();
        set(&mut c);
        let r = no_panic(connect_and_use(c)).await;
        bad.extend(huge_timeout_verdict(
            &format!("{opt} = Duration::MAX in code"),
            opt,
            r,
        ));
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    // The maximum connects and works (the server clamps the session timeout).
    let u = format!("zk://{host}{root}?connect_timeout=1h&request_timeout=1h&session_timeout=1h");
    no_panic(async move { connect_and_use(ZkConfig::parse(&u)?).await })
        .await
        .unwrap()
        .unwrap();
}
