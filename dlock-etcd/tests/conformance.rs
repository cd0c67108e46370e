//! The dlock conformance suite against a real etcd (`DLOCK_TEST_ETCD_URL`);
//! each run's namespace becomes the key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
use std::sync::Arc;

fn main() -> std::process::ExitCode {
    dlock_testkit::Suite::new("etcd")
        .url_from_env("DLOCK_TEST_ETCD_URL")
        .namespace(|url: &str, ns: &str| format!("{url}/{ns}"))
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_etcd::EtcdBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
