//! Turning etcd-client errors into dlock errors that say what to do.

use crate::KIND;
use dlock_core::Error;

/// What kind of trouble an etcd error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Wrong user name or password.
    BadCredentials,
    /// Authentication is enabled on the server but the URL names no user.
    AuthRequired,
    /// The user lacks permission on the key prefix.
    PermissionDenied,
    /// The lease named in the request does not exist (expired or revoked).
    LeaseNotFound,
    /// Anything else.
    Other,
}

pub(crate) fn classify(e: &etcd_client::Error) -> Class {
    let msg = match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        etcd_client::Error::LeaseKeepAliveError(m) => m.clone(),
        _ => return Class::Other,
    };
    let msg = msg.to_ascii_lowercase();
    if msg.contains("authentication failed") || msg.contains("invalid user id or password") {
        Class::BadCredentials
    } else if msg.contains("user name is empty") {
        Class::AuthRequired
    } else if msg.contains("permission denied") {
        Class::PermissionDenied
    } else if msg.contains("lease not found") {
        Class::LeaseNotFound
    } else {
        Class::Other
    }
}

/// True when etcd (or the client, before sending) refused the request
/// outright, so it changed nothing: a malformed or unauthorized request, a
/// missing lease, a compacted revision, a rate limit. Timeouts, cancellations,
/// broken connections, and `Unavailable`/`Unknown`/`Internal`/`Aborted`
/// statuses (etcd's "request timed out" and "leader changed" among them) are
/// not: such a request may have been applied.
pub(crate) fn refused(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use grpc_code::*;
    match e {
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => true,
        E::GRpcStatus(s) => matches!(
            i32::from(s.code()),
            INVALID_ARGUMENT
                | NOT_FOUND
                | ALREADY_EXISTS
                | PERMISSION_DENIED
                | RESOURCE_EXHAUSTED
                | FAILED_PRECONDITION
                | OUT_OF_RANGE
                | UNIMPLEMENTED
                | UNAUTHENTICATED
        ),
        _ => false,
    }
}

/// gRPC status codes (numbers fixed by the gRPC spec).
mod grpc_code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// A short description of the failure: the gRPC message and code, then the
/// chain of underlying causes (TLS alerts, connection errors), deduplicated.
fn describe(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(s) = e else {
        return e.to_string();
    };
    let mut parts: Vec<String> = Vec::new();
    if !s.message().is_empty() {
        parts.push(s.message().to_string());
    }
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    let mut out = format!("{} ({:?})", parts.join(": "), s.code());
    let lower = out.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        out.push_str(
            "; check the TLS options: ca_file (the CA that signed the server), cert_file + \
             key_file (a client certificate the server trusts), tls_domain (a name in the \
             server's certificate)",
        );
    }
    out
}

/// Maps an error of a request made during `operation` on the cluster `target`.
pub(crate) fn map(
    operation: &'static str,
    target: &str,
    prefix: &str,
    user: Option<&str>,
    e: etcd_client::Error,
) -> Error {
    let what = describe(&e);
    match classify(&e) {
        Class::BadCredentials => Error::connect(
            KIND,
            target,
            format!(
                "authentication failed for user {:?}: {what}; check the user name and password in the URL",
                user.unwrap_or_default()
            ),
            Some(Box::new(e)),
        ),
        Class::AuthRequired => Error::connect(
            KIND,
            target,
            format!(
                "the server has authentication enabled ({what}): put user:password@ in the URL"
            ),
            Some(Box::new(e)),
        ),
        Class::PermissionDenied => Error::Backend {
            backend: KIND,
            operation,
            message: format!(
                "permission denied for user {:?} on key prefix {prefix:?}: grant a role readwrite \
                 access, e.g. `etcdctl role grant-permission ROLE readwrite --prefix {prefix}/`",
                user.unwrap_or_default()
            ),
            source: Some(Box::new(e)),
        },
        Class::LeaseNotFound | Class::Other => Error::Backend {
            backend: KIND,
            operation,
            message: format!("request to {target} failed: {what}"),
            source: Some(Box::new(e)),
        },
    }
}
