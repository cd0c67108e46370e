//! Shared helpers for the adapter tests: the server URL (tests FAIL when it
//! is not configured), unique roots, and a loopback proxy that can drop or
//! refuse connections.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// `DLOCK_TEST_ZOOKEEPER_URL`, or a failure saying what to set.
pub fn base_url() -> String {
    match std::env::var("DLOCK_TEST_ZOOKEEPER_URL") {
        Ok(v) if !v.trim().is_empty() => v.trim_end_matches('/').to_string(),
        _ => panic!(
            "DLOCK_TEST_ZOOKEEPER_URL is not set: run scripts/test.sh, or start ZooKeeper \
             (scripts/coordinators.sh start zookeeper) and `source .run/env`"
        ),
    }
}

/// The `host:port` of the configured server.
pub fn upstream() -> String {
    let u = base_url();
    let rest = u.split_once("://").unwrap().1;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    hostport
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(hostport)
        .to_string()
}

/// A root path no other test run uses.
pub fn unique_root(tag: &str) -> String {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("/dlock_adapter_tests/{tag}_{:x}_{}", n, std::process::id())
}

/// `zk://[userinfo@]<hostport>/<root>?session_timeout=4s[&extra]`.
pub fn url_for(hostport: &str, userinfo: Option<&str>, root: &str, extra: &str) -> String {
    let ui = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let q = if extra.is_empty() {
        "session_timeout=4s".to_string()
    } else {
        format!("session_timeout=4s&{extra}")
    };
    format!("zk://{ui}{hostport}{root}?{q}")
}

/// The configured server with `root`, 4 s sessions.
pub fn url(root: &str) -> String {
    url_for(&upstream(), None, root, "")
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if f().await {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback TCP proxy in front of the server.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        Self::start_on("127.0.0.1:0".parse().unwrap(), upstream).await
    }

    /// A proxy on a given address (to bring a cut one back).
    pub async fn start_on(addr: SocketAddr, upstream: String) -> Proxy {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let c2 = conns.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                c2.lock().unwrap().push(h);
            }
        });
        Proxy {
            addr,
            conns,
            acceptor: Some(acceptor),
        }
    }

    /// Drops every open connection but keeps accepting new ones: a blip the
    /// client recovers from by reconnecting within its session.
    pub fn drop_connections(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Drops every connection and refuses new ones: the ensemble is gone.
    pub fn cut(&mut self) {
        if let Some(a) = self.acceptor.take() {
            a.abort();
        }
        self.drop_connections();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
