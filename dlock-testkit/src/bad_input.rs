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

/// What is wrong with how `e` reports itself, or `None`: dlock's own text
/// (`{}`) must not repeat any cause in its source chain — a reporter that
/// walks the chain would print it twice — and `{:#}` must print the own
/// text and then every cause.
pub fn report_defect(e: &Error) -> Option<String> {
    let own = e.to_string();
    let full = format!("{e:#}");
    if !full.starts_with(&own) {
        return Some(format!("{{:#}} {full:?} does not start with {{}} {own:?}"));
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && own.contains(&text) {
            return Some(format!(
                "the message {own:?} repeats its source {text:?}: a reporter prints it twice"
            ));
        }
        if !text.is_empty() && !full.contains(&text) {
            return Some(format!("{{:#}} {full:?} leaves out the cause {text:?}"));
        }
        cause = c.source();
    }
    None
}
