//! Tests that need an etcd of their own: authentication enabled, and a
//! three-member cluster with a member killed. Each starts PRIVATE etcd
//! processes on free loopback ports with temporary data directories (the
//! shared test server stays untouched). They fail, never skip, when the
//! `etcd` binary is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{Error, LockBackend, LockName, LockSpec};
use dlock_etcd::EtcdBackend;
use etcd_client::{Client, Permission};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    members: Vec<Option<Child>>,
    client_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut().flatten() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let initial: Vec<String> = (0..n)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", peer_ports[i]))
            .collect();
        let mut members = Vec::new();
        for i in 0..n {
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap();
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{}", client_ports[i]),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{}", client_ports[i]),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{}", peer_ports[i]),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{}", peer_ports[i]),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start the etcd binary ({e}): install etcd-server \
                         (scripts/install-deps.sh) so that `etcd` is on PATH"
                    )
                });
            members.push(Some(child));
        }
        let c = Cluster {
            members,
            client_ports,
            _dir: dir,
        };
        // Ready: every member answers a linearizable read.
        let t = Instant::now();
        for p in &c.client_ports {
            loop {
                let ok = async {
                    let mut cl = Client::connect([format!("127.0.0.1:{p}")], None)
                        .await
                        .ok()?;
                    tokio::time::timeout(Duration::from_secs(1), cl.get("ready", None))
                        .await
                        .ok()?
                        .ok()
                }
                .await
                .is_some();
                if ok {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "private etcd on port {p} not ready within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        c
    }

    fn endpoints(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut m) = self.members[i].take() {
            m.kill().unwrap();
            m.wait().unwrap();
        }
    }
}

fn spec(name: &str) -> LockSpec {
    LockSpec::new(LockName::new(name).unwrap(), "o", Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn credentials_are_checked_with_clear_errors() {
    let etcd = Cluster::start(1).await;
    let ep = etcd.endpoints();
    {
        let mut c = Client::connect([ep.as_str()], None).await.unwrap();
        c.user_add("root", "rootpw", None).await.unwrap();
        let _ = c.role_add("root").await;
        c.user_grant_role("root", "root").await.unwrap();
        c.user_add("app", "apppw", None).await.unwrap();
        c.role_add("app").await.unwrap();
        c.role_grant_permission("app", Permission::read_write("app/").with_prefix())
            .await
            .unwrap();
        c.user_grant_role("app", "app").await.unwrap();
        c.auth_enable().await.unwrap();
    }

    // Wrong password: a Connect error that says so, fast, without the password.
    let t = Instant::now();
    let e = EtcdBackend::connect(&format!("etcd://root:Wr0ngPass@{ep}/app"))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("authentication failed") && msg.contains("\"root\""),
        "{msg}"
    );
    assert!(!msg.contains("Wr0ngPass") && !format!("{e:?}").contains("Wr0ngPass"));
    eprintln!("wrong password: {msg}");

    // Unknown user: the same clear error.
    let e = EtcdBackend::connect(&format!("etcd://nobody:x@{ep}/app"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("authentication failed"), "{e}");

    // No credentials at all: says authentication is on and how to fix it.
    let e = EtcdBackend::connect(&format!("etcd://{ep}/app"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("user:password@"), "{e}");
    eprintln!("no credentials: {e}");

    // Right credentials: locks work.
    let b = EtcdBackend::connect(&format!("etcd://app:apppw@{ep}/app"))
        .await
        .unwrap();
    let l = b.try_acquire(&spec("x")).await.unwrap().unwrap();
    assert!(b.try_acquire(&spec("x")).await.unwrap().is_none());
    b.release(&l).await.unwrap();
    assert!(!format!("{b:?}").contains("apppw"));

    // A prefix the user may not use: a clear permission error naming it,
    // already at connect.
    let e = EtcdBackend::connect(&format!("etcd://app:apppw@{ep}/other"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("permission denied") && e.contains("\"other\"") && e.contains("etcdctl"),
        "{e}"
    );
    eprintln!("permission: {e}");
}

#[tokio::test]
async fn a_dead_member_does_not_fail_lock_operations() {
    let mut etcd = Cluster::start(3).await;
    let url = format!("etcd://{}/c?request_timeout=3s", etcd.endpoints());
    let b = EtcdBackend::connect(&url).await.unwrap();
    let held = b.try_acquire(&spec("held")).await.unwrap().unwrap();
    // The backend talks to the first endpoint; kill that member.
    etcd.kill(0);
    // Give the survivors time to elect a leader if member 0 led.
    let t = Instant::now();
    loop {
        match b.inspect(&held.name).await {
            Ok(_) => break,
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(15),
                "no answer from the surviving members: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // From now on every operation succeeds, through the surviving members.
    for i in 0..20 {
        let l = b
            .try_acquire(&spec(&format!("n{i}")))
            .await
            .unwrap_or_else(|e| panic!("acquire {i} with one member dead: {e}"))
            .unwrap();
        b.release(&l).await.unwrap();
    }
    let held = b.extend(&held, Duration::from_secs(5)).await.unwrap();
    assert!(b.try_acquire(&spec("held")).await.unwrap().is_none());
    b.release(&held).await.unwrap();
    // A fresh connection with the dead member listed first also works.
    let b2 = EtcdBackend::connect(&url).await.unwrap();
    let l = b2.try_acquire(&spec("held")).await.unwrap().unwrap();
    b2.release(&l).await.unwrap();
}
