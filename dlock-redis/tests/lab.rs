//! The fault lab on Redis: the clients, each in a network namespace of its
//! own (scripts/netlab.sh; needs root), reach one server (append-only file
//! on) over a bridge; the server is killed and restarted, stopped, clients
//! cut from it, their connections stalled, delayed and dropped, and they
//! are stopped. A second trial runs the server under libfaketime and steps
//! its clock: Redis times key expiry by its wall clock, the documented
//! limit it shares with the SQL servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    dlock_testkit::lab::Lab::new("redis")
        .cluster("redis")
        .clock_step()
        .client_url(|env, _client| {
            format!(
                "{}?prefix=dlock-lab",
                env.get("DLOCK_LAB_REDIS_URL").cloned().unwrap_or_default()
            )
        })
        .connect(|url: String| async move {
            Ok(Arc::new(dlock_redis::RedisBackend::connect(&url).await?)
                as Arc<dyn dlock_core::LockBackend>)
        })
        .run()
}
