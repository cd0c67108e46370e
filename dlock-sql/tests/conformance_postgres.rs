//! The conformance suite against PostgreSQL: the server named by
//! DLOCK_TEST_POSTGRES_URL, a fresh table (`table=dlock_<ns>`) per run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "common/drop_table.rs"]
mod drop_table;

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    dlock_testkit::Suite::new("postgres")
        .url_from_env("DLOCK_TEST_POSTGRES_URL")
        .namespace(|url: &str, ns: &str| {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}table=dlock_{ns}")
        })
        .break_coordinator(drop_table::drop_table)
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_sql::PostgresBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
