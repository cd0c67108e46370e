//! The conformance suite against SQLite: one database file per run, shared by
//! its cases and child processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "common/drop_table.rs"]
mod drop_table;

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    let dir = std::env::var("DLOCK_TEST_SQLITE_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_TARGET_TMPDIR"), "/dlock-sqlite").to_string());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {dir}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    dlock_testkit::Suite::new("sqlite")
        .url(format!("sqlite://{dir}/"))
        // A file and a table per run: runs (and nextest's one-process-per-case) never meet.
        .namespace(|url: &str, ns: &str| format!("{url}{ns}.db?table=dlock_{ns}"))
        .unreachable_url(format!("sqlite://{dir}/no-such-directory/x.db"))
        .break_coordinator(drop_table::drop_table)
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_sql::SqliteBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
