//! Helpers for adapters' bad-input tests: a library panic becomes a test
//! failure with its message, and a verdict for timeouts a backend must refuse.

use dlock_core::{Error, LockBackend, LockName, LockSpec};
use std::time::Duration;

/// Runs `f` in a task of its own: a panic in the library comes back as
/// `Err(its message)` instead of crashing the test.
pub async fn no_panic<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(f).await.map_err(|e| {
        let msg = e.try_into_panic().map_or_else(
            |e| e.to_string(),
            |p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            },
        );
        format!("the library panicked: {msg}")
    })
}

/// What a huge timeout must give: `InvalidConfig` naming the option `opt`
/// and the 1 h maximum. `None` when it did; otherwise what went wrong,
/// prefixed with `what`.
pub fn huge_timeout_verdict(
    what: &str,
    opt: &str,
    r: Result<dlock_core::Result<()>, String>,
) -> Option<String> {
    match r {
        Ok(Err(Error::InvalidConfig(m))) if m.contains(opt) && m.contains("1h") => None,
        Ok(other) => Some(format!(
            "{what}: expected InvalidConfig naming {opt} and 1h, got {other:?}"
        )),
        Err(panic) => Some(format!("{what}: {panic}")),
    }
}

/// Takes the lock `huge` on `b` with a lease of `lease`, extends it by the
/// same length and releases it: the round a backend built from a bad-input
/// configuration must either refuse at construction or complete.
pub async fn acquire_extend_release(
    b: &dyn LockBackend,
    lease: Duration,
) -> dlock_core::Result<()> {
    let spec = LockSpec::new(LockName::new("huge")?, "owner-a", lease)?;
    let l = b.try_acquire(&spec).await?.ok_or_else(|| {
        Error::backend_msg(b.kind(), "acquire", "the fresh lock \"huge\" was not free")
    })?;
    let l = b.extend(&l, lease).await?;
    b.release(&l).await
}
