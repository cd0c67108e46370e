//! The fault lab on postgres: the clients, each in a network namespace of its
//! own (scripts/netlab.sh; needs root), reach one server over a bridge; the
//! server is killed and stopped, clients cut from it, their connections
//! stalled, delayed and dropped, and they are stopped. A second trial runs
//! the server under libfaketime and steps its clock (the documented limit).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    dlock_testkit::lab::Lab::new("postgres")
        .cluster("postgres")
        .clock_step()
        .client_url(|env, _client| {
            format!(
                "{}?table=dlock_lab",
                env.get("DLOCK_LAB_POSTGRES_URL")
                    .cloned()
                    .unwrap_or_default()
            )
        })
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_sql::PostgresBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
