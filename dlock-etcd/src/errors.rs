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
        // A transport failure's text may say "Permission denied" (EACCES
        // from a sandbox): only etcd's own statuses are refusals.
        etcd_client::Error::GRpcStatus(s) if i32::from(s.code()) == grpc_code::UNAVAILABLE => {
            return Class::Other
        }
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
/// gRPC UNAVAILABLE.
pub(crate) const UNAVAILABLE: i32 = grpc_code::UNAVAILABLE;

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
    pub const UNAVAILABLE: i32 = 14;
}

/// What to check when the failure looks like a TLS problem: the gRPC
/// status or any of its causes (TLS alerts, handshake errors) says so.
fn tls_hint(e: &etcd_client::Error) -> Option<&'static str> {
    let mut texts = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        texts.push(c.to_string());
        cause = c.source();
    }
    let lower = texts.join(" ").to_ascii_lowercase();
    (lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake"))
        .then_some(
            "check the TLS options: ca_file (the CA that signed the server), cert_file + key_file \
         (a client certificate the server trusts), tls_domain (a name in the server's certificate)",
        )
}

/// The source of a mapped error: etcd's error, printed as its gRPC message
/// and code. (tonic's own `Display` adds the request metadata, which is
/// noise in a log line.) Its causes (transport, TLS) follow in the chain.
#[derive(Debug)]
pub(crate) struct EtcdError(etcd_client::Error);

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) if s.message().is_empty() => {
                write!(f, "etcd answered {:?}", s.code())
            }
            etcd_client::Error::GRpcStatus(s) => write!(f, "{} ({:?})", s.message(), s.code()),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
            other => std::error::Error::source(other),
        }
    }
}

/// Maps an error of a request made during `operation` on the cluster
/// `target`. The etcd error is the source; the message says what to do.
pub(crate) fn map(
    operation: &'static str,
    target: &str,
    prefix: &str,
    user: Option<&str>,
    e: etcd_client::Error,
) -> Error {
    let user = user.unwrap_or_default();
    let class = classify(&e);
    let hint = tls_hint(&e);
    let e = EtcdError(e);
    match class {
        Class::BadCredentials => Error::denied(
            KIND,
            operation,
            format!(
                "authentication failed for user {user:?} at {target}: check the user name and \
                 password in the URL"
            ),
            Some(Box::new(e)),
        ),
        Class::AuthRequired => Error::denied(
            KIND,
            operation,
            format!(
                "the server at {target} has authentication enabled: put user:password@ in the URL"
            ),
            Some(Box::new(e)),
        ),
        Class::PermissionDenied => Error::denied(
            KIND,
            operation,
            format!(
                "permission denied for user {user:?} on key prefix {prefix:?}: grant a role readwrite \
                 access, e.g. `etcdctl role grant-permission ROLE readwrite --prefix {prefix}/`"
            ),
            Some(Box::new(e)),
        ),
        Class::LeaseNotFound | Class::Other => Error::Backend {
            backend: KIND,
            operation,
            message: match hint {
                Some(hint) => format!("request to {target} failed; {hint}"),
                None => format!("request to {target} failed"),
            },
            source: Some(Box::new(e)),
        },
    }
}
