//! The conformance suite against the in-process store. Each case gets a
//! store of its own (a fresh name); the suite's child processes cannot
//! share an in-process store, so the cases that need them are ignored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_memory::MemoryBackend;
use std::sync::Arc;

/// A store that never answers, for `unreachable_coordinator_is_err_fast`.
const DOWN: &str = "memory://down";

fn main() -> std::process::ExitCode {
    MemoryBackend::shared("down").set_available(false);
    dlock_testkit::Suite::new("memory")
        .url("memory://")
        .namespace(|_url: &str, ns: &str| format!("memory://{ns}"))
        .unreachable_url(DOWN)
        .break_coordinator(|url: String| async move {
            MemoryBackend::connect(&url)
                .map_err(|e| format!("{e:#}"))?
                .set_available(false);
            Ok(())
        })
        .connect(|url: String| async move {
            Ok(Arc::new(MemoryBackend::connect(&url)?) as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
