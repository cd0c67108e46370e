//! Turning redis-rs errors into dlock's, with what to do about them.

use crate::KIND;
use dlock_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::future::Future;
use std::time::Duration;

/// Runs `fut` with `deadline`: every call this adapter makes has one.
pub(crate) async fn within<T>(
    operation: &'static str,
    deadline: Duration,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> dlock_core::Result<T> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(from_redis(operation, e, deadline)),
        Err(_) => Err(Error::Timeout {
            operation,
            after: deadline,
        }),
    }
}

/// A redis-rs error of a request made during `operation`.
pub(crate) fn from_redis(operation: &'static str, e: RedisError, deadline: Duration) -> Error {
    if let Some(message) = refusal(&e) {
        return Error::denied(KIND, operation, message, Some(Box::new(e)));
    }
    if e.is_timeout() {
        return Error::Timeout {
            operation,
            after: deadline,
        };
    }
    let message = match e.kind() {
        ErrorKind::Server(ServerErrorKind::ReadOnly) => {
            "the server is a read-only replica: point the URL at the primary"
        }
        ErrorKind::Server(ServerErrorKind::BusyLoading) => {
            "the server is loading its data set after a restart; try again shortly"
        }
        _ => "",
    };
    Error::Backend {
        backend: KIND,
        operation,
        message: message.into(),
        source: Some(Box::new(e)),
    }
}

/// An error setting up the connection to `target`.
pub(crate) fn connect_error(target: &str, e: RedisError, deadline: Duration) -> Error {
    if let Some(message) = refusal(&e) {
        return Error::denied(KIND, "connect", message, Some(Box::new(e)));
    }
    let message = if e.is_timeout() {
        format!("no answer within {deadline:?}; is the server running and reachable?")
    } else if e.is_io_error() {
        "check that the server runs and listens on this address (and TLS matches: rediss:// for TLS)"
            .to_string()
    } else {
        String::new()
    };
    Error::connect(KIND, target, message, Some(Box::new(e)))
}

/// What to fix when the server refused the login or a permission.
fn refusal(e: &RedisError) -> Option<&'static str> {
    let code = e.code().unwrap_or_default();
    if e.kind() == ErrorKind::AuthenticationFailed || matches!(code, "WRONGPASS" | "NOAUTH") {
        return Some(
            "the server refused the login: check the URL's user:password@ (or \
             ConnectOptions::user/password) against the server's ACL or requirepass",
        );
    }
    if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || code == "NOPERM" {
        return Some(
            "the ACL user lacks a permission dlock needs: grant it the keys <prefix>:*, \
             the channel <prefix>:released and the commands EVALSHA, EVAL, SCRIPT, HGET, \
             HMGET, HSET, TIME, SCAN, PUBLISH, SUBSCRIBE, PING and INFO (or +@all)",
        );
    }
    None
}
