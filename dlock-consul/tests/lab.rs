//! The fault lab on a 3-server Consul cluster, each server and each client
//! in a network namespace of its own (scripts/netlab.sh; needs root). c1
//! talks to m1's HTTP API only, c2 to m2's; c3 to a Consul client agent in
//! its own namespace, the deployment Consul documents (an agent per node),
//! which reaches every server. Leases are Consul's minimum, 10 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    dlock_testkit::lab::Lab::new("consul")
        .lease(Duration::from_secs(10))
        .client_url(|env, client| {
            let key = match client {
                "c1" => "DLOCK_LAB_CONSUL_URL_m1",
                "c2" => "DLOCK_LAB_CONSUL_URL_m2",
                _ => "DLOCK_LAB_CONSUL_URL_agent_c3",
            };
            format!("{}/lab", env.get(key).cloned().unwrap_or_default())
        })
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_consul::ConsulBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
