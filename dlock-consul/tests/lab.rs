//! The fault lab on a 3-server Consul cluster, each server and each client
//! in a network namespace of its own (scripts/netlab.sh; needs root). Each
//! client talks to one server's HTTP API (c1 to m1, c2 to m2, c3 to m3), as
//! a client talks to its local agent. Leases are Consul's minimum, 10 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    dlock_testkit::lab::Lab::new("consul")
        .lease(Duration::from_secs(10))
        .client_url(|env, client| {
            let member = client.replace('c', "m");
            format!(
                "{}/lab",
                env.get(&format!("DLOCK_LAB_CONSUL_URL_{member}"))
                    .cloned()
                    .unwrap_or_default()
            )
        })
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_consul::ConsulBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
