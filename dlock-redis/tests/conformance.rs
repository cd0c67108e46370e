//! The dlock conformance suite against a real Redis server
//! (`DLOCK_TEST_REDIS_URL`, e.g. `redis://dlock:dlock@127.0.0.1:26379/0`).
//! Each run uses a fresh key prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

/// Adds `prefix=<ns>` to the URL's query.
fn with_namespace(url: &str, ns: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}prefix=dlock-test/{ns}")
}

fn main() -> std::process::ExitCode {
    dlock_testkit::Suite::new("redis")
        .url_from_env("DLOCK_TEST_REDIS_URL")
        .namespace(with_namespace)
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_redis::RedisBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
