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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock name is empty, too long or otherwise not accepted.
    #[error("invalid lock name {name:?}: {reason}")]
    InvalidName {
        /// The offending name (shortened to 64 bytes for display).
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A configuration value or URL is malformed or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The request is well formed but this backend cannot honour it
    /// (for example a lease shorter than the backend's minimum).
    #[error("unsupported by the {backend} backend: {reason}")]
    Unsupported {
        /// Backend kind, e.g. `"etcd"`.
        backend: &'static str,
        /// What cannot be honoured and what to do instead.
        reason: String,
    },
    /// The coordinator could not be reached or refused the credentials.
    #[error("connect to {backend} at {target} failed: {message}")]
    Connect {
        /// Backend kind.
        backend: &'static str,
        /// Where we tried to connect (never contains secrets).
        target: String,
        /// What went wrong and, where known, what to do.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The coordinator answered with an error, or the connection broke mid-call.
    #[error("{backend} {operation} failed: {message}")]
    Backend {
        /// Backend kind.
        backend: &'static str,
        /// The operation, e.g. `"acquire"`.
        operation: &'static str,
        /// What went wrong.
        message: String,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The lease is no longer valid (or can no longer be proven valid): it
    /// expired, was released, was taken over by another owner, or a request
    /// about it had an unknown outcome. The call changed nothing at the
    /// coordinator that could hand the lock to anyone before the lease's own
    /// expiry; a request with an unknown outcome may have applied, and the
    /// coordinator's expiry cleans it up.
    #[error("lock {:?} lost: {reason}", name.as_str())]
    LockLost {
        /// The lock name.
        name: crate::LockName,
        /// Why the lease is known (or presumed) gone.
        reason: String,
    },
    /// A call to the coordinator did not complete within its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
}

impl Error {
    /// Builds an [`Error::Backend`] from a client library error.
    pub fn backend(
        backend: &'static str,
        operation: &'static str,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            backend,
            operation,
            message: err.to_string(),
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

    /// Builds an [`Error::Connect`].
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

    /// True when retrying later may help (connection trouble, timeouts).
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
