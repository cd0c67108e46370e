//! For fault tests that stop, kill and restart the shared test servers
//! through `scripts/coordinators.sh` (its path in `DLOCK_TEST_COORDINATORS`,
//! written to `.run/env` with the servers' URLs).

use std::time::{Duration, Instant};

/// The value of the environment variable `var`. Panics, saying how to set
/// it, when it is unset or empty: a test that cannot reach its coordinator
/// fails, it never skips.
pub fn env_var(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{var} is not set: run scripts/test.sh, or `. .run/env` after scripts/coordinators.sh start"
        ),
    }
}

/// Runs `coordinators.sh ARGS...` (e.g. `["restart", "--hard", "etcd"]`)
/// and returns how long it took. Panics with the script's output when it
/// fails.
pub async fn coordinators(args: &[&str]) -> Duration {
    let script = env_var("DLOCK_TEST_COORDINATORS");
    let t0 = Instant::now();
    let out = tokio::process::Command::new(&script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}
