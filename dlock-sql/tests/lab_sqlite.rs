//! The fault lab on sqlite: the clients, each in a network namespace of its
//! own (scripts/netlab.sh; needs root), share one database file; only they
//! can be faulted (stopped past their lease).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    dlock_testkit::lab::Lab::new("sqlite")
        .cluster("sqlite")
        .client_url(|env, _client| env.get("DLOCK_LAB_SQLITE_URL").cloned().unwrap_or_default())
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_sql::SqliteBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
