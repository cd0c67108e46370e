//! Turning client errors into dlock errors that say what, where and what to do.

use dlock_core::Error;
use zookeeper_client as zk;

pub(crate) const KIND: &str = "zookeeper";

/// An error from one request on `path`: the client's error is the source,
/// the message says where and what it means.
pub(crate) fn op_error(op: &'static str, path: &str, e: zk::Error) -> Error {
    let hint = match &e {
        zk::Error::NoAuth => {
            return Error::denied(
                KIND,
                op,
                format!(
                    "at {path}: the node's ACL does not grant this identity; check the \
                     user:password (digest auth) in the URL, or use a root path this identity created"
                ),
                Some(Box::new(e)),
            )
        }
        zk::Error::ConnectionLoss | zk::Error::Timeout => {
            "; the connection to ZooKeeper broke, the client reconnects within the session"
        }
        zk::Error::SessionExpired | zk::Error::ClientClosed => {
            "; the ZooKeeper session ended, every lock held on it is lost and the next call opens a new session"
        }
        _ => "",
    };
    Error::Backend {
        backend: KIND,
        operation: op,
        message: format!("at {path}{hint}"),
        source: Some(Box::new(e)),
    }
}

/// True when the request may still have been applied (so a created node may exist).
pub(crate) fn outcome_unknown(e: &zk::Error) -> bool {
    !matches!(
        e,
        zk::Error::NoNode
            | zk::Error::NoAuth
            | zk::Error::NodeExists
            | zk::Error::BadVersion
            | zk::Error::NotEmpty
            | zk::Error::InvalidAcl
            | zk::Error::BadArguments(_)
            | zk::Error::NoChildrenForEphemerals
            | zk::Error::SessionExpired
            | zk::Error::ClientClosed
    )
}

/// True when the request failed because the connection to the member
/// broke (or went silent): the session survives that, and the client
/// reconnects within it, so the request may be asked again once it has.
pub(crate) fn connection_broke(e: &zk::Error) -> bool {
    matches!(e, zk::Error::ConnectionLoss | zk::Error::Custom(_))
}

/// The first error of a multi request, unwrapped, with the index of the failed operation.
pub(crate) fn multi_error(e: zk::MultiWriteError) -> (Option<usize>, zk::Error) {
    match e {
        zk::MultiWriteError::RequestFailed { source } => (None, source),
        zk::MultiWriteError::OperationFailed { index, source } => (Some(index), source),
    }
}
