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
        Self::start_with(n, &[]).await
    }

    /// One member serving clients over TLS only (`extra` names the certificates).
    async fn start_tls(extra: &[&str]) -> Cluster {
        Self::spawn(1, "https", extra)
    }

    async fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let c = Self::spawn(n, "http", extra);
        c.wait_ready().await;
        c
    }

    fn spawn(n: usize, scheme: &str, extra: &[&str]) -> Cluster {
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
                    &format!("{scheme}://127.0.0.1:{}", client_ports[i]),
                    "--advertise-client-urls",
                    &format!("{scheme}://127.0.0.1:{}", client_ports[i]),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{}", peer_ports[i]),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{}", peer_ports[i]),
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args(extra)
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
        Cluster {
            members,
            client_ports,
            _dir: dir,
        }
    }

    /// Every (plain-HTTP) member answers a linearizable read.
    async fn wait_ready(&self) {
        let c = self;
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
    // Auth tokens expire after 1 s idle here (default 300 s), to check the
    // backend re-authenticates by itself.
    let etcd = Cluster::start_with(1, &["--auth-token-ttl", "1"]).await;
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
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e:#}");
    assert_eq!(dlock_testkit::bad_input::report_defect(&e), None);
    let msg = e.to_string();
    assert!(
        msg.contains("authentication failed") && msg.contains("\"root\""),
        "{msg}"
    );
    assert!(!format!("{e:#}").contains("Wr0ngPass") && !format!("{e:?}").contains("Wr0ngPass"));
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
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e:#}");
    assert!(e.to_string().contains("user:password@"), "{e}");
    eprintln!("no credentials: {e}");

    // The password kept out of the URL: ConnectOptions gives it.
    let opts = dlock_core::ConnectOptions::new()
        .user("app")
        .password("apppw");
    let b = EtcdBackend::connect_with(&format!("etcd://{ep}/app"), &opts)
        .await
        .unwrap();
    assert!(!format!("{b:?}").contains("apppw"));
    let l = b.try_acquire(&spec("kept-out")).await.unwrap().unwrap();
    b.release(&l).await.unwrap();
    let opts = dlock_core::ConnectOptions::new().password("Wr0ngPass");
    let e = EtcdBackend::connect_with(&format!("etcd://root:x@{ep}/app"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");

    // Right credentials: locks work.
    let b = EtcdBackend::connect(&format!("etcd://app:apppw@{ep}/app"))
        .await
        .unwrap();
    let l = b.try_acquire(&spec("x")).await.unwrap().unwrap();
    assert!(b.try_acquire(&spec("x")).await.unwrap().is_none());
    b.release(&l).await.unwrap();
    assert!(!format!("{b:?}").contains("apppw"));
    // After the token expired, operations still work (re-authentication).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let l = b.try_acquire(&spec("x")).await.unwrap().unwrap();
    b.release(&l).await.unwrap();

    // A prefix the user may not use: a clear permission error naming it,
    // already at connect.
    let e = EtcdBackend::connect(&format!("etcd://app:apppw@{ep}/other"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e:#}");
    assert_eq!(dlock_testkit::bad_input::report_defect(&e), None);
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

/// A CA and, signed by it, a server certificate (localhost, 127.0.0.1) and a
/// client certificate, written as PEM files into `dir`.
fn write_pki(dir: &std::path::Path, tag: &str) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("dlock test CA {tag}"));
    let ca = ca.self_signed(&ca_key).unwrap();
    let write = |name: &str, pem: String| std::fs::write(dir.join(name), pem).unwrap();
    write("ca.pem", ca.pem());
    for (who, sans) in [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
        ),
        ("client", vec![]),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, who);
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        write(&format!("{who}.pem"), cert.pem());
        write(&format!("{who}.key"), key.serialize_pem());
    }
}

#[tokio::test]
async fn mutual_tls_with_ca_and_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    write_pki(pki.path(), "a");
    let other = tempfile::tempdir().unwrap();
    write_pki(other.path(), "b");
    let f = |d: &tempfile::TempDir, n: &str| d.path().join(n).display().to_string();
    let etcd = Cluster::start_tls(&[
        "--cert-file",
        &f(&pki, "server.pem"),
        "--key-file",
        &f(&pki, "server.key"),
        "--trusted-ca-file",
        &f(&pki, "ca.pem"),
        "--client-cert-auth",
    ])
    .await;
    let ep = etcd.endpoints();
    let good = format!(
        "etcds://{ep}/tls?ca_file={}&cert_file={}&key_file={}",
        f(&pki, "ca.pem"),
        f(&pki, "client.pem"),
        f(&pki, "client.key")
    );
    // Ready (the server may still be starting): retry the real connect.
    let t = Instant::now();
    let b = loop {
        match EtcdBackend::connect(&good).await {
            Ok(b) => break b,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("waiting for TLS etcd: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("mutual TLS connect failed: {e}"),
        }
    };
    let l = b.try_acquire(&spec("x")).await.unwrap().unwrap();
    assert!(b.try_acquire(&spec("x")).await.unwrap().is_none());
    b.release(&l).await.unwrap();

    // The server name can be overridden (certificate names localhost).
    let b = EtcdBackend::connect(&format!("{good}&tls_domain=localhost"))
        .await
        .unwrap();
    assert!(b.try_acquire(&spec("y")).await.unwrap().is_some());

    // No client certificate: the server refuses, a Connect error, fast.
    let t = Instant::now();
    let e = EtcdBackend::connect(&format!(
        "etcds://{ep}/tls?ca_file={}&connect_timeout=3s",
        f(&pki, "ca.pem")
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    eprintln!("no client certificate: {e}");

    // A CA that did not sign the server: the client refuses, Connect error.
    let e = EtcdBackend::connect(&format!(
        "etcds://{ep}/tls?ca_file={}&cert_file={}&key_file={}&connect_timeout=3s",
        f(&other, "ca.pem"),
        f(&pki, "client.pem"),
        f(&pki, "client.key")
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    eprintln!("wrong CA: {e}");

    // Either root policy trusts the URL's CA on top of its own roots.
    for roots in ["webpki", "system", "ca_file_only"] {
        let b = EtcdBackend::connect(&format!("{good}&tls_roots={roots}"))
            .await
            .unwrap_or_else(|e| panic!("tls_roots={roots}: {e:#}"));
        assert!(b.try_acquire(&spec(roots)).await.unwrap().is_some());
    }
    // Without the CA, neither the built-in nor the OS roots trust a
    // private CA: the policy adds, it never trusts everything.
    let no_ca = format!(
        "etcds://{ep}/tls?cert_file={}&key_file={}&connect_timeout=3s",
        f(&pki, "client.pem"),
        f(&pki, "client.key")
    );
    for roots in [dlock_core::TlsRoots::Webpki, dlock_core::TlsRoots::System] {
        let opts = dlock_core::ConnectOptions::new().tls_roots(roots);
        let e = EtcdBackend::connect_with(&no_ca, &opts).await.unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{roots:?}: {e:?}");
    }
    let e = EtcdBackend::connect(&format!("{no_ca}&tls_roots=ca_file_only"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs ca_file"), "{e}");

    // Plain etcd:// to a TLS-only server: an error, not a hang.
    let t = Instant::now();
    let r = EtcdBackend::connect(&format!("etcd://{ep}/tls?connect_timeout=3s")).await;
    assert!(r.is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}
