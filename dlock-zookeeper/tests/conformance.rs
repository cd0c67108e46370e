//! The dlock conformance suite against a real ZooKeeper
//! (`DLOCK_TEST_ZOOKEEPER_URL`, e.g. `zk://127.0.0.1:22181`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

/// Puts the run's namespace into the root path and asks for a short session
/// (4 s), so the cases that wait for a dead holder's session to expire stay quick.
fn namespaced(url: &str, ns: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.trim_end_matches('/');
    let has_root = base
        .split_once("://")
        .map(|(_, rest)| rest.contains('/'))
        .unwrap_or(false);
    let root = if has_root {
        format!("{base}/{ns}")
    } else {
        format!("{base}/dlock_conformance/{ns}")
    };
    let mut q = String::from(query);
    if !q.contains("session_timeout=") {
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str("session_timeout=4s");
    }
    format!("{root}?{q}")
}

fn main() -> std::process::ExitCode {
    dlock_testkit::Suite::new("zookeeper")
        .url_from_env("DLOCK_TEST_ZOOKEEPER_URL")
        .namespace(namespaced)
        .connect(|url: String| async move {
            Ok(
                Arc::new(dlock_zookeeper::ZookeeperBackend::connect(&url).await?)
                    as Arc<dyn dlock_core::LockBackend>,
            )
        })
        .run()
}
