//! Waiting without polling: Consul blocking queries on the lock key, for
//! waiters (`wait_for_release`), and a held guard's loss signal on the
//! watches its backend's guards share (key_watch.rs).

use crate::backend::ConsulBackend;
use crate::key_watch::{next_index, MIN_ROUND};
use crate::record::Holder;
use crate::KIND;
use dlock_core::backoff::Backoff;
use dlock_core::{jittered, Lease, LockName, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::time::{Duration, Instant};

/// Longest single blocking query of a waiter (Consul caps `wait` at 10
/// minutes).
const MAX_BLOCK: Duration = Duration::from_secs(300);
/// A guard's loss watch starts this long after the acquire: the key was
/// just taken, and short holds then need no watch at all.
const WATCH_DELAY: Duration = Duration::from_millis(500);

impl ConsulBackend {
    /// Returns once the key of `name` is free (absent or not held by a
    /// session) or after `max_wait`, woken by Consul rather than by polling.
    pub(crate) async fn wait_until_free(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        let key = self.key_for(name);
        // `None`: a wait too long to represent, i.e. without a deadline.
        let deadline = Instant::now().checked_add(max_wait);
        let mut index = 0u64;
        loop {
            let started = Instant::now();
            let left = deadline.map_or(MAX_BLOCK, |d| d.saturating_duration_since(started));
            if left.is_zero() {
                return Ok(());
            }
            // The first read is consistent; later ones block on the index.
            let block = (index > 0).then(|| (index, left.min(MAX_BLOCK)));
            let (entry, new_index) = self
                .http
                .get_key("wait for release", &key, index == 0, block)
                .await?;
            if entry.as_ref().and_then(|e| e.holder()).is_none() {
                return Ok(());
            }
            let (changed, next) = next_index(index, new_index);
            index = next;
            if (!changed || index == 0) && started.elapsed() < MIN_ROUND {
                let pause = jittered(MIN_ROUND * 2).min(left);
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// A future that completes, with the reason, once the key of `lease`
    /// is deleted, released or held by another acquisition. Network errors
    /// never complete it (the guard's own expiry covers an unreachable
    /// agent); a loss is confirmed by a consistent read before it is reported.
    pub(crate) fn watch_for_loss(&self, lease: &Lease) -> BoxFuture<'static, String> {
        let http = self.http.clone();
        let key = self.key_for(&lease.name);
        let id = lease.id.clone();
        let verdict = move |entry: Option<crate::api::KvEntry>| -> Option<String> {
            let Some(entry) = entry else {
                return Some(
                    "the lock key was deleted (session expired or destroyed, force-released, or deleted by hand)"
                        .into(),
                );
            };
            if entry.holder().is_none() {
                return Some("the lock key is no longer held by any Consul session".into());
            }
            match Holder::from_base64(entry.value.as_deref()) {
                Some(h) if h.id == id => None,
                _ => Some("the lock key is held by another acquisition".into()),
            }
        };
        let watches = self.watches.clone();
        async move {
            // A guard released within this never costs the agent a watch.
            tokio::time::sleep(WATCH_DELAY).await;
            let mut watch = watches.subscribe(key.clone());
            loop {
                if verdict(watch.next().await).is_none() {
                    continue;
                }
                // Confirm with a consistent read before reporting; an
                // error is asked again, never taken for a loss.
                let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
                loop {
                    match http.get_key("watch lease", &key, true, None).await {
                        Ok((entry, _)) => {
                            if let Some(reason) = verdict(entry) {
                                return reason;
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(backend = KIND, error = %e, "dlock: confirming a lease loss failed; retrying");
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                    }
                }
            }
        }
        .boxed()
    }
}
