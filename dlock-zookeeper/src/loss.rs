//! The loss signal a guard watches: session end (or no proof of life), the
//! lease's own expiry, and a watch on the lease's node (force release).

use crate::session::Session;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use zookeeper_client as zk;

async fn first_reason(mut rx: watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(r) = rx.borrow_and_update().clone() {
            return r;
        }
        if rx.changed().await.is_err() {
            // Sender gone without a reason: the lease was released normally.
            return futures::future::pending().await;
        }
    }
}

/// `reason`, unless the deletion is the lease's own release (or the lease
/// is already gone for a reason its own or the session's signal reports).
async fn unless_released(weak: &Weak<Session>, path: &str, id: &str, reason: String) -> String {
    match weak.upgrade() {
        Some(s) if s.deletion_is_loss(path, id) => reason,
        _ => futures::future::pending().await,
    }
}

/// How long after the grant the node watch is armed: short holds never pay
/// for a watch and its removal, and a force release in the meantime is seen
/// when it is armed (the node is already gone then).
const ARM_AFTER: Duration = Duration::from_millis(100);

/// Completes when the node is deleted or replaced; re-arms after data changes.
async fn node_gone(weak: Weak<Session>, path: String, id: String, czxid: u64) -> String {
    let mut backoff = Duration::from_millis(50);
    tokio::time::sleep(ARM_AFTER).await;
    loop {
        let Some(s) = weak.upgrade() else {
            return futures::future::pending().await;
        };
        let Ok(client) = s.client() else {
            return futures::future::pending().await;
        };
        let t = s.request_timeout;
        drop(s);
        let r = tokio::time::timeout(t, client.check_and_watch_stat(&path)).await;
        drop(client);
        match r {
            Ok(Ok((None, _))) => {
                let why = format!(
                    "the lock node {path} is gone: an operator force-released it or the session ended"
                );
                return unless_released(&weak, &path, &id, why).await;
            }
            Ok(Ok((Some(stat), w))) => {
                if u64::try_from(stat.czxid).ok() != Some(czxid) {
                    let why = format!("the lock node {path} was replaced by another");
                    return unless_released(&weak, &path, &id, why).await;
                }
                backoff = Duration::from_millis(50);
                let ev = w.changed().await;
                match ev.event_type {
                    zk::EventType::NodeDeleted => {
                        let why = format!(
                            "the lock node {path} was deleted by someone else (force_release?)"
                        );
                        return unless_released(&weak, &path, &id, why).await;
                    }
                    // Terminal session states are reported by the session signal.
                    zk::EventType::Session => return futures::future::pending().await,
                    _ => continue,
                }
            }
            Ok(Err(zk::Error::SessionExpired | zk::Error::ClientClosed)) => {
                return futures::future::pending().await
            }
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The loss future for the lease on `path` (acquisition `id`, token `czxid`).
pub(crate) fn signal(
    session: &Arc<Session>,
    path: &str,
    id: &str,
    czxid: u64,
) -> BoxFuture<'static, String> {
    let dead = session.dead_signal();
    let Some(own) = session.lease_signal(path, id) else {
        return futures::future::ready(
            "the lease is no longer registered: it expired or was released".to_string(),
        )
        .boxed();
    };
    let weak = Arc::downgrade(session);
    let path = path.to_string();
    let id = id.to_string();
    async move {
        tokio::select! {
            biased;
            r = first_reason(own) => r,
            r = first_reason(dead) => r,
            r = node_gone(weak, path, id, czxid) => r,
        }
    }
    .boxed()
}
