//! The fault lab on a 3-member ZooKeeper ensemble, each member and each
//! client in a network namespace of its own (scripts/netlab.sh; needs
//! root). c1 talks to m1 only, c2 to m2 only, c3 to all three members.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    dlock_testkit::lab::Lab::new("zookeeper")
        .request_timeout(Duration::from_secs(2))
        .client_url(|env, client| {
            let key = match client {
                "c1" => "DLOCK_LAB_ZOOKEEPER_URL_m1",
                "c2" => "DLOCK_LAB_ZOOKEEPER_URL_m2",
                _ => "DLOCK_LAB_ZOOKEEPER_URL",
            };
            format!(
                "{}/lab?session_timeout=4s&request_timeout=2s",
                env.get(key).cloned().unwrap_or_default()
            )
        })
        .connect(|url: String| async move {
            Ok(
                Arc::new(dlock_zookeeper::ZookeeperBackend::connect(&url).await?)
                    as Arc<dyn dlock_core::LockBackend>,
            )
        })
        .run()
}
