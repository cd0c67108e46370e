//! `rediss://` against a private TLS-only redis-server this test starts
//! (free loopback port, temporary directory, certificates made here): the
//! CA file is trusted, the built-in roots alone are not, and a plain
//! `redis://` client on a TLS port fails within its deadline instead of
//! hanging. Fails, never skips, when `redis-server` is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{Error, LockBackend, LockName, LockSpec};
use dlock_redis::RedisBackend;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for localhost / 127.0.0.1.
fn write_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "dlock redis test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "server");
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

impl Server {
    /// A redis-server serving TLS only, with the AOF on and a password.
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        write_pki(dir.path());
        let port = free_port();
        let d = dir.path().display().to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &format!("{d}/server.pem")])
            .args(["--tls-key-file", &format!("{d}/server.key")])
            .args(["--tls-ca-cert-file", &format!("{d}/ca.pem")])
            .args(["--tls-auth-clients", "no"])
            .args(["--appendonly", "yes", "--dir", &d])
            .args(["--requirepass", "tls-test"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        let server = Server { child, port, dir };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not listen within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

fn spec(name: &str) -> LockSpec {
    LockSpec::new(
        LockName::new(name).unwrap(),
        "tls-test",
        Duration::from_secs(10),
    )
    .unwrap()
}

#[tokio::test]
async fn rediss_with_the_ca_file_takes_extends_waits_for_and_releases_locks() {
    let s = Server::start().await;
    let url = format!(
        "rediss://:tls-test@localhost:{}/0?ca_file={}",
        s.port,
        s.ca()
    );
    let a = RedisBackend::connect(&url).await.unwrap();
    let b = RedisBackend::connect(&url).await.unwrap();
    let lease = a.try_acquire(&spec("over-tls")).await.unwrap().unwrap();
    assert!(b.try_acquire(&spec("over-tls")).await.unwrap().is_none());
    let lease = a.extend(&lease, Duration::from_secs(10)).await.unwrap();
    // The release notice comes over the TLS pub/sub connection.
    let name = LockName::new("over-tls").unwrap();
    let waiter = tokio::spawn(async move {
        b.wait_for_release(&name, Duration::from_secs(9))
            .await
            .unwrap();
        Instant::now()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released = Instant::now();
    a.release(&lease).await.unwrap();
    let woke = waiter.await.unwrap();
    assert!(woke >= released && woke - released < Duration::from_secs(5));
}

#[tokio::test]
async fn rediss_without_the_ca_file_refuses_the_unknown_issuer() {
    let s = Server::start().await;
    let url = format!("rediss://:tls-test@localhost:{}/0", s.port);
    let e = RedisBackend::connect(&url).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:#}");
    let shown = format!("{e:#}").to_lowercase();
    assert!(
        shown.contains("certificate") || shown.contains("issuer"),
        "{shown}"
    );
}

#[tokio::test]
async fn plain_redis_on_a_tls_port_fails_within_its_deadline() {
    let s = Server::start().await;
    let t0 = Instant::now();
    let url = format!(
        "redis://:tls-test@127.0.0.1:{}/0?connect_timeout=1s&request_timeout=1s",
        s.port
    );
    let e = RedisBackend::connect(&url).await.unwrap_err();
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
