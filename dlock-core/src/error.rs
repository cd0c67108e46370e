//! The one error type every backend and the locker return.

use std::time::Duration;

/// A boxed error from a client library, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout dlock.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, one variant per thing a caller handles differently.
///
/// "The lock is held by someone else" is *not* an error: `try_lock` answers
/// `Ok(None)` for it.
///
/// # Printing
///
/// `{}` prints dlock's own account: what failed, where, and what to do.
/// The client library's error (the server's words) is the
/// [`source`](std::error::Error::source), never copied into that text, so an
/// error reporter that walks the chain prints each part once. `{:#}` prints
/// the whole chain on one line, as `anyhow` does: `postgres acquire failed:
/// error returned from database: …`. Log with `{:#}`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The lock name is empty, too long or otherwise not accepted.
    InvalidName {
        /// The offending name (shortened to 64 bytes for display).
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A configuration value or URL is malformed or inconsistent.
    InvalidConfig(String),
    /// The request is well formed but this backend cannot honour it
    /// (for example a lease shorter than the backend's minimum).
    Unsupported {
        /// Backend kind, e.g. `"etcd"`.
        backend: &'static str,
        /// What cannot be honoured and what to do instead.
        reason: String,
    },
    /// The coordinator could not be reached, or the connection could not be
    /// set up (network, TLS, no leader, server not ready).
    Connect {
        /// Backend kind.
        backend: &'static str,
        /// Where we tried to connect (never contains secrets).
        target: String,
        /// What went wrong and, where known, what to do (empty when the
        /// source says it all).
        message: String,
        /// The client library's error.
        source: Option<BoxError>,
    },
    /// The coordinator refused the credentials, or this identity lacks a
    /// permission the operation needs (a wrong password, a missing token, an
    /// ACL or GRANT that does not cover the lock). A retry cannot fix it.
    Denied {
        /// Backend kind.
        backend: &'static str,
        /// The operation refused, e.g. `"connect"` or `"acquire"`.
        operation: &'static str,
        /// What was refused and what to grant or fix (never a secret).
        message: String,
        /// The client library's error.
        source: Option<BoxError>,
    },
    /// The coordinator answered with an error, or the connection broke mid-call.
    Backend {
        /// Backend kind.
        backend: &'static str,
        /// The operation, e.g. `"acquire"`.
        operation: &'static str,
        /// What went wrong, beyond what the source says (may be empty).
        message: String,
        /// The client library's error.
        source: Option<BoxError>,
    },
    /// The lease is no longer valid (or can no longer be proven valid): it
    /// expired, was released, was taken over by another owner, or a request
    /// about it had an unknown outcome. The call changed nothing at the
    /// coordinator that could hand the lock to anyone before the lease's own
    /// expiry; a request with an unknown outcome may have applied, and the
    /// coordinator's expiry cleans it up.
    LockLost {
        /// The lock name.
        name: crate::LockName,
        /// Why the lease is known (or presumed) gone.
        reason: String,
    },
    /// A call to the coordinator did not complete within its deadline.
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
}

/// Writes `": {message}"` when there is a message.
fn detail(f: &mut std::fmt::Formatter<'_>, message: &str) -> std::fmt::Result {
    if message.is_empty() {
        Ok(())
    } else {
        write!(f, ": {message}")
    }
}

/// dlock's own account of an error, without its source chain.
struct OwnAccount<'a>(&'a Error);

impl std::fmt::Display for OwnAccount<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Error::InvalidName { name, reason } => {
                write!(f, "invalid lock name {name:?}: {reason}")?
            }
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}")?,
            Error::Unsupported { backend, reason } => {
                write!(f, "unsupported by the {backend} backend: {reason}")?
            }
            Error::Connect {
                backend,
                target,
                message,
                ..
            } => {
                write!(f, "connect to {backend} at {target} failed")?;
                detail(f, message)?
            }
            Error::Denied {
                backend,
                operation,
                message,
                ..
            } => {
                write!(f, "{backend} denied {operation}")?;
                detail(f, message)?
            }
            Error::Backend {
                backend,
                operation,
                message,
                ..
            } => {
                write!(f, "{backend} {operation} failed")?;
                detail(f, message)?
            }
            Error::LockLost { name, reason } => {
                write!(f, "lock {:?} lost: {reason}", name.as_str())?
            }
            Error::Timeout { operation, after } => {
                write!(f, "{operation} timed out after {after:?}")?
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let own = OwnAccount(self).to_string();
        f.write_str(&own)?;
        if f.alternate() {
            write_chain(f, &own, std::error::Error::source(self))?;
        }
        Ok(())
    }
}

/// Appends `": {cause}"` for each cause in the chain, skipping a cause
/// whose text an earlier part already printed (client libraries often
/// repeat their inner error in their own message).
fn write_chain(
    f: &mut std::fmt::Formatter<'_>,
    head: &str,
    mut cause: Option<&(dyn std::error::Error + 'static)>,
) -> std::fmt::Result {
    let mut printed = vec![head.to_string()];
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !printed.iter().any(|p| p.contains(&text)) {
            write!(f, ": {text}")?;
            printed.push(text);
        }
        cause = c.source();
    }
    Ok(())
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. }
            | Error::Denied { source, .. }
            | Error::Backend { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

impl Error {
    /// Builds an [`Error::Backend`] from a client library error, which
    /// becomes the source (its text is not copied into the message).
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            backend,
            operation,
            message: String::new(),
            source: Some(Box::new(err)),
        }
    }

    /// Builds an [`Error::Backend`] from a message only.
    pub fn backend_msg(
        backend: &'static str,
        operation: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Error::Backend {
            backend,
            operation,
            message: message.into(),
            source: None,
        }
    }

    /// Builds an [`Error::Connect`]. `message` says what dlock knows beyond
    /// the source (a hint, what to check); it must not repeat the source.
    pub fn connect(
        backend: &'static str,
        target: impl Into<String>,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Error::Connect {
            backend,
            target: target.into(),
            message: message.into(),
            source,
        }
    }

    /// Builds an [`Error::Denied`]. `message` says what was refused and what
    /// to grant or fix; it must not repeat the source, nor any secret.
    pub fn denied(
        backend: &'static str,
        operation: &'static str,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Error::Denied {
            backend,
            operation,
            message: message.into(),
            source,
        }
    }

    /// Builds an [`Error::Unsupported`].
    pub fn unsupported(backend: &'static str, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            backend,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::LockLost`].
    pub fn lost(name: &crate::LockName, reason: impl Into<String>) -> Self {
        Error::LockLost {
            name: name.clone(),
            reason: reason.into(),
        }
    }

    /// True for [`Error::LockLost`].
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    /// True when the same call may succeed if retried later: the coordinator
    /// was unreachable, broke the connection, failed the call or did not
    /// answer in time. False for what only a change can fix: a bad name or
    /// configuration, a refused credential or permission
    /// ([`Error::Denied`]), a request the backend cannot honour — and for
    /// [`Error::LockLost`], where the lease is gone and retrying the same
    /// call cannot bring it back (take the lock again instead).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Backend { .. } | Error::Timeout { .. }
        )
    }
}

/// Runs `fut` with a deadline, mapping expiry to [`Error::Timeout`].
///
/// Every network call in dlock goes through this (or a client-level timeout).
///
/// A deadline whose timer fires much later than it was due is evidence
/// that this process did not run (it was stopped, suspended or starved),
/// not that the coordinator is slow: the answer may already be waiting in
/// the socket. Then the request gets one short grace period to deliver it
/// before the timeout is reported, so "the clock moved while we were
/// stopped" is not reported as a coordinator failure. (Safety does not
/// rest on this: a guard's validity is timed separately, and an answer that
/// arrives after its deadline does not revive it.)
pub async fn with_deadline<T>(
    operation: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    /// A timer this late means the process was not running.
    const PAUSE_EVIDENCE: Duration = Duration::from_millis(500);
    /// How long a request may still answer after a pause.
    const PAUSE_GRACE: Duration = Duration::from_secs(1);
    let mut fut = std::pin::pin!(fut);
    let mut budget = after;
    let mut graced = false;
    loop {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(budget, fut.as_mut()).await {
            Ok(r) => return r,
            Err(_) => {
                let late = started.elapsed().saturating_sub(budget);
                if graced || late < PAUSE_EVIDENCE {
                    return Err(Error::Timeout { operation, after });
                }
                graced = true;
                budget = PAUSE_GRACE;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client error with an inner cause whose text it repeats, as sqlx's
    /// and tonic's errors do.
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error communicating with server: {}", self.0)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn refused() -> Outer {
        Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    }

    /// Every variant that carries a client error.
    fn with_sources() -> Vec<Error> {
        vec![
            Error::backend("postgres", "acquire", refused()),
            Error::connect(
                "etcd",
                "127.0.0.1:1/x",
                "is etcd running?",
                Some(Box::new(refused())),
            ),
            Error::denied(
                "consul",
                "connect",
                "check token=",
                Some(Box::new(refused())),
            ),
        ]
    }

    #[test]
    fn display_never_repeats_the_source() {
        for e in with_sources() {
            let short = e.to_string();
            let source = std::error::Error::source(&e).map(|s| s.to_string());
            let source = source.as_deref().unwrap_or_default();
            assert!(!source.is_empty());
            assert!(!short.contains(source), "{short:?} repeats {source:?}");
            assert!(!short.contains("connection refused"), "{short}");
        }
    }

    #[test]
    fn alternate_display_prints_each_part_of_the_chain_once() {
        for e in with_sources() {
            let full = format!("{e:#}");
            assert!(full.starts_with(&e.to_string()), "{full}");
            assert_eq!(
                full.matches("error communicating with server").count(),
                1,
                "{full}"
            );
            assert_eq!(full.matches("connection refused").count(), 1, "{full}");
        }
        let e = Error::backend("postgres", "acquire", refused());
        assert_eq!(
            format!("{e:#}"),
            "postgres acquire failed: error communicating with server: connection refused"
        );
        let e = Error::connect("etcd", "h:1/x", "is etcd running?", None);
        assert_eq!(
            format!("{e:#}"),
            "connect to etcd at h:1/x failed: is etcd running?"
        );
    }

    #[test]
    fn only_what_a_retry_can_fix_is_transient() {
        let name = crate::LockName::new("n").unwrap_or_else(|e| unreachable!("{e}"));
        let transient = [
            Error::connect("etcd", "h", "", None),
            Error::backend_msg("postgres", "acquire", "connection reset"),
            Error::Timeout {
                operation: "acquire",
                after: Duration::from_secs(1),
            },
        ];
        let permanent = [
            Error::denied("mysql", "connect", "wrong password", None),
            Error::denied("etcd", "acquire", "no permission on the prefix", None),
            Error::InvalidConfig("x".into()),
            Error::unsupported("etcd", "lease below 1s"),
            Error::lost(&name, "expired"),
            Error::InvalidName {
                name: String::new(),
                reason: "empty".into(),
            },
        ];
        for e in transient {
            assert!(e.is_transient(), "{e}");
        }
        for e in permanent {
            assert!(!e.is_transient(), "{e}");
        }
    }
}
