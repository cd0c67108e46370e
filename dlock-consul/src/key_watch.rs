//! The watches on lock keys that a backend's guards share, so that holding
//! many locks costs a bounded number of HTTP connections.
//!
//! A blocking query holds one HTTP/1.1 connection to the agent for as long
//! as it waits, and an agent resets connections from one address beyond
//! its `http_max_conns_per_client` (200 by default). A blocking query per
//! guard therefore cut a process holding a few hundred locks off from its
//! agent, its acquires and releases included. So:
//! - keys watched by several subscribers share one watch;
//! - the first [`SINGLE_WATCHES`] keys get a blocking query each on their
//!   key: Consul answers it only when that key changes;
//! - keys beyond those share one blocking query on the whole prefix, which
//!   Consul answers on any change under it with every entry there, so its
//!   rounds are paced to at most one per [`OVERFLOW_ROUND`];
//! - a watch ends with its last subscriber, and its queries wait at most
//!   [`WATCH_BLOCK`] (what an abandoned query costs the agent).
//!
//! A watch reports what it read, never a network error: errors are retried
//! with a backoff, and a guard's own expiry covers an agent that stays away.

use crate::api::KvEntry;
use crate::http::Http;
use crate::KIND;
use dlock_core::backoff::Backoff;
use dlock_core::jittered;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Keys of one backend watched by a blocking query each.
pub(crate) const SINGLE_WATCHES: usize = 64;
/// The least time between two rounds of the shared prefix watch that found
/// a change: each costs the agent a listing of the whole prefix.
const OVERFLOW_ROUND: Duration = Duration::from_secs(1);
/// Longest blocking query of a watch. A watch dropped mid-query (its guard
/// released) closes the connection, but the agent (1.8 at least) keeps it
/// until the query's wait ends, counted against the client's connections;
/// a short wait bounds those leftovers to about this long after each
/// release. Idle, a watch then costs one request per this long.
const WATCH_BLOCK: Duration = Duration::from_secs(10);
/// A blocking query that comes back sooner than this without a change is
/// followed by a short pause, so a misbehaving agent never causes a tight loop.
pub(crate) const MIN_ROUND: Duration = Duration::from_millis(50);

/// What a watch last read of its key: `None` before its first read, then
/// the entry (`None` inside: the key does not exist).
type LastRead = Option<Option<KvEntry>>;

/// The watches of one backend. Cheap to clone.
#[derive(Clone)]
pub(crate) struct KeyWatches {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    /// Every lock key starts with it (ends with `/`).
    prefix: String,
    state: Mutex<State>,
    /// Wakes the prefix watch when its set of keys shrank.
    overflow_changed: Notify,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Watched>,
    /// How many of `keys` have a blocking query of their own.
    singles: usize,
    /// Whether the prefix watch runs.
    overflow_running: bool,
}

struct Watched {
    tx: Arc<watch::Sender<LastRead>>,
    single: bool,
}

/// One subscriber's view of a key; dropping it ends the watch when it was
/// the last.
pub(crate) struct Subscription {
    /// `None` only inside `drop`, which lets it go under the mutex.
    rx: Option<watch::Receiver<LastRead>>,
    key: String,
    inner: Arc<Inner>,
}

impl KeyWatches {
    pub(crate) fn new(http: Http, prefix: String) -> Self {
        KeyWatches {
            inner: Arc::new(Inner {
                http,
                prefix,
                state: Mutex::new(State::default()),
                overflow_changed: Notify::new(),
            }),
        }
    }

    /// Starts watching `key` (or joins its watch). Needs a tokio runtime;
    /// without one the subscription never reports (the guard's expiry
    /// still ends it).
    pub(crate) fn subscribe(&self, key: String) -> Subscription {
        let inner = &self.inner;
        let mut st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rx = match st.keys.get(&key) {
            Some(w) => w.tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                let tx = Arc::new(tx);
                let runtime = tokio::runtime::Handle::try_current();
                let single = runtime.is_ok() && st.singles < SINGLE_WATCHES;
                if let Ok(rt) = &runtime {
                    if single {
                        st.singles += 1;
                        rt.spawn(watch_one(inner.http.clone(), key.clone(), tx.clone()));
                    } else if !st.overflow_running {
                        st.overflow_running = true;
                        rt.spawn(watch_overflow(inner.clone()));
                    }
                }
                st.keys.insert(key.clone(), Watched { tx, single });
                rx
            }
        };
        // The first `next` answers what the watch already read, if it did.
        rx.mark_changed();
        Subscription {
            rx: Some(rx),
            key,
            inner: inner.clone(),
        }
    }
}

impl Subscription {
    /// The key's entry as the watch reads it next (`None`: the key does
    /// not exist): at once what was read last, if this is the first call
    /// and the watch has read, then each change. Never completes while the
    /// agent cannot be reached.
    pub(crate) async fn next(&mut self) -> Option<KvEntry> {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            if rx.changed().await.is_err() {
                // The watch ended without us (cannot happen while we are
                // subscribed); nothing more will come.
                std::future::pending::<()>().await;
            }
            if let Some(entry) = rx.borrow_and_update().clone() {
                return entry;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Our receiver goes under the mutex, and subscribing happens under
        // it too: of two subscriptions dropped at once, the second sees
        // none left and ends the watch.
        drop(self.rx.take());
        let Some(w) = st.keys.get(&self.key) else {
            return;
        };
        if w.tx.receiver_count() > 0 {
            return;
        }
        let single = w.single;
        st.keys.remove(&self.key);
        if single {
            // Its query ends when this receiver is dropped (tx.closed()).
            st.singles -= 1;
        } else if !st.keys.values().any(|w| !w.single) {
            // The last overflow key: the prefix query in flight serves
            // nobody now. (Any other leaving key just stops being served.)
            self.inner.overflow_changed.notify_one();
        }
    }
}

/// Stores `read` for the subscribers when it differs from the last read.
fn publish(tx: &watch::Sender<LastRead>, read: Option<KvEntry>) {
    tx.send_if_modified(|last| {
        if last.as_ref() == Some(&read) {
            false
        } else {
            *last = Some(read);
            true
        }
    });
}

/// Whether `new_index` is a change after `index`, and the index to block
/// on next (Consul's rule: start over when the index went backwards).
pub(crate) fn next_index(index: u64, new_index: u64) -> (bool, u64) {
    let changed = new_index != index;
    (changed, if new_index < index { 0 } else { new_index })
}

/// The blocking query of one key, until its subscribers are gone.
async fn watch_one(http: Http, key: String, tx: Arc<watch::Sender<LastRead>>) {
    let mut index = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let started = Instant::now();
        let block = (index > 0).then_some((index, WATCH_BLOCK));
        let read = tokio::select! {
            r = http.get_key("watch lock key", &key, false, block) => r,
            _ = tx.closed() => return,
        };
        let pause = match read {
            Ok((entry, new_index)) => {
                backoff.reset();
                publish(&tx, entry);
                let (changed, next) = next_index(index, new_index);
                index = next;
                ((!changed || index == 0) && started.elapsed() < MIN_ROUND)
                    .then(|| jittered(MIN_ROUND * 2))
            }
            Err(e) => {
                tracing::debug!(backend = KIND, key = %key, error = %e, "dlock: key watch failed; retrying");
                index = 0;
                Some(backoff.next_delay())
            }
        };
        if let Some(p) = pause {
            tokio::select! {
                _ = tokio::time::sleep(p) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// Whether the prefix watch still serves a key; marks it stopped when not,
/// under the lock a new overflow subscriber takes to decide whether to
/// start one, so no key is ever left unserved.
fn overflow_left(inner: &Inner) -> bool {
    let mut st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
    let any = st.keys.values().any(|w| !w.single);
    if !any {
        st.overflow_running = false;
    }
    any
}

/// The keys the prefix watch serves now.
fn overflow_keys(inner: &Inner) -> Vec<(String, Arc<watch::Sender<LastRead>>)> {
    let st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
    st.keys
        .iter()
        .filter(|(_, w)| !w.single)
        .map(|(k, w)| (k.clone(), w.tx.clone()))
        .collect()
}

/// Marks the prefix watch stopped if its task ends without saying so
/// itself (a runtime shutting down drops it mid-await), so that the next
/// overflow subscriber starts a new one.
struct OverflowTask {
    inner: Arc<Inner>,
    stopped: bool,
}

impl Drop for OverflowTask {
    fn drop(&mut self) {
        if !self.stopped {
            let mut st = self
                .inner
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            st.overflow_running = false;
        }
    }
}

/// The blocking query on the whole prefix, for the keys beyond
/// [`SINGLE_WATCHES`], until none is left.
async fn watch_overflow(inner: Arc<Inner>) {
    let mut task = OverflowTask {
        inner: inner.clone(),
        stopped: false,
    };
    let mut index = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        if !overflow_left(&inner) {
            task.stopped = true;
            return;
        }
        let started = Instant::now();
        let block = (index > 0).then_some((index, WATCH_BLOCK));
        let read = tokio::select! {
            r = inner.http.get_prefix("watch lock keys", &inner.prefix, false, block) => r,
            // A key left: look again whether any is left.
            _ = inner.overflow_changed.notified() => continue,
        };
        let pause = match read {
            Ok((entries, new_index)) => {
                backoff.reset();
                let mut by_key: HashMap<String, KvEntry> =
                    entries.into_iter().map(|e| (e.key.clone(), e)).collect();
                // The keys as they are now, not as before the query: one
                // that came (and was lost) meanwhile hears of it at once.
                // A read older than its acquire cannot report a false
                // loss: the loss watch confirms with a consistent read.
                for (key, tx) in &overflow_keys(&inner) {
                    publish(tx, by_key.remove(key));
                }
                let (changed, next) = next_index(index, new_index);
                index = next;
                if changed && index != 0 {
                    Some(OVERFLOW_ROUND.saturating_sub(started.elapsed()))
                } else {
                    (started.elapsed() < MIN_ROUND).then(|| jittered(MIN_ROUND * 2))
                }
            }
            Err(e) => {
                tracing::debug!(backend = KIND, error = %e, "dlock: lock key prefix watch failed; retrying");
                index = 0;
                Some(backoff.next_delay())
            }
        };
        if let Some(p) = pause.filter(|p| !p.is_zero()) {
            tokio::time::sleep(p).await;
        }
    }
}
