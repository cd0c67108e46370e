//! Watches: waiters woken by the key's deletion, and a guard's loss signal.

use crate::client::{deadline_in, Inner};
use dlock_core::backoff::Backoff;
use dlock_core::{jittered, Error, Lease, LockName, Result};
use etcd_client::{EventType, GetOptions, WatchFilterType, WatchOptions, WatchStream};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout_at;

/// Opens a watch for deletions of `key` from revision `from`.
async fn watch_deletes(inner: &Inner, key: &str, from: i64) -> Result<WatchStream> {
    let opts = WatchOptions::new()
        .with_start_revision(from)
        .with_filters([WatchFilterType::NoPut]);
    inner
        .call_repeatable("watch", |mut c| {
            let (key, opts) = (key.to_string(), opts.clone());
            async move { c.watch(key, Some(opts)).await }
        })
        .await
}

/// Returns once `name`'s key is deleted (release, expiry, revocation) after
/// the revision at which it was last seen held, or after `max_wait`.
pub(crate) async fn wait_for_release(
    inner: &Arc<Inner>,
    name: &LockName,
    max_wait: Duration,
) -> Result<()> {
    let key = inner.key(name);
    let deadline = deadline_in(max_wait);
    let from = match inner.take_seen(&key) {
        Some(rev) => rev + 1,
        None => {
            let read = inner.call_repeatable("wait (read)", |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_keys_only())).await }
            });
            let Ok(resp) = timeout_at(deadline, read).await else {
                return Ok(());
            };
            let resp = resp?;
            if resp.kvs().is_empty() {
                return Ok(());
            }
            resp.header().map(|h| h.revision()).unwrap_or(0) + 1
        }
    };
    let Ok(stream) = timeout_at(deadline, watch_deletes(inner, &key, from)).await else {
        return Ok(());
    };
    let mut stream = stream?;
    loop {
        match timeout_at(deadline, stream.message()).await {
            Err(_) => return Ok(()),
            Ok(Ok(Some(resp))) => {
                // Canceled: e.g. the start revision was compacted; the caller
                // simply tries again.
                if resp.canceled()
                    || resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(());
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                // The stream broke: pause briefly, then let the next acquire
                // attempt report whether etcd is reachable.
                let pause = jittered(Duration::from_millis(200));
                tokio::time::sleep_until(deadline.min(deadline_in(pause))).await;
                return Ok(());
            }
        }
    }
}

/// Completes when the lease's key is deleted or replaced: lease expired or
/// revoked, key force-released. Reconnects across broken streams; never
/// completes because etcd is merely unreachable (the guard's own validity
/// clock covers that).
pub(crate) fn loss_signal(inner: Arc<Inner>, lease: &Lease) -> BoxFuture<'static, String> {
    let key = inner.key(&lease.name);
    let token = i64::try_from(lease.token.get()).unwrap_or(i64::MAX);
    async move {
        let mut from = token.saturating_add(1);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            if let Ok(mut stream) = watch_deletes(&inner, &key, from).await {
                backoff.reset();
                while let Ok(Some(resp)) = stream.message().await {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return "the lock key was deleted in etcd: its lease expired or was \
                                revoked, or the lock was force-released"
                            .to_string();
                    }
                    if resp.canceled() {
                        // History compacted past `from`: look at the key itself.
                        match check(&inner, &key, token).await {
                            Ok(Ok(rev)) => from = rev + 1,
                            Ok(Err(reason)) => return reason,
                            Err(_) => {}
                        }
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
    .boxed()
}

/// Reads the key: `Ok(Ok(revision))` while it is still this acquisition's,
/// `Ok(Err(reason))` when it is gone.
async fn check(
    inner: &Inner,
    key: &str,
    token: i64,
) -> std::result::Result<std::result::Result<i64, String>, Error> {
    let resp = inner
        .call_repeatable("loss check", |mut c| {
            let key = key.to_string();
            async move { c.get(key, Some(GetOptions::new().with_keys_only())).await }
        })
        .await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    match resp.kvs().first() {
        Some(kv) if kv.create_revision() == token => Ok(Ok(rev)),
        Some(_) => Ok(Err(
            "the lock key was deleted and taken by another acquisition".to_string(),
        )),
        None => Ok(Err(
            "the lock key is gone from etcd: its lease expired or was revoked".to_string(),
        )),
    }
}
