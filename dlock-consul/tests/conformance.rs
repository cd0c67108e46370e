//! The dlock conformance suite against a real Consul agent
//! (`DLOCK_TEST_CONSUL_URL`, e.g. `consul://127.0.0.1:8500`). Each run uses a
//! fresh key prefix. Leases are 10 s on Consul (its minimum session TTL), so
//! this suite takes minutes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

/// Appends `/<ns>` to the URL's path, before any `?query`.
fn with_namespace(url: &str, ns: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = format!("{}/{ns}", base.trim_end_matches('/'));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn main() -> std::process::ExitCode {
    dlock_testkit::Suite::new("consul")
        .url_from_env("DLOCK_TEST_CONSUL_URL")
        .namespace(with_namespace)
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_consul::ConsulBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
