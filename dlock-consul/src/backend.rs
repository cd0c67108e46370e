//! [`ConsulBackend`]: acquire, extend, release, inspect, list and force-release on
//! Consul sessions and the KV store.

use crate::api::{kv_op, KvEntry, TxnError, TxnOutcome};
use crate::config::ConsulConfig;
use crate::http::Http;
use crate::key_watch::KeyWatches;
use crate::record::{Handle, Holder};
use crate::KIND;
use dlock_core::ready_pool::ReadyPool;
use dlock_core::{
    async_trait, new_acquisition_id, Capabilities, Error, FencingToken, Lease, LockBackend,
    LockInfo, LockName, LockSpec, Result,
};
use dlock_core::{BootInstant, ConnectOptions};
use futures::future::BoxFuture;
use std::time::Duration;

/// Shortest session TTL Consul accepts (its `session_ttl_min` default).
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// Longest session TTL Consul accepts.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Locks on Consul: one session per acquisition, one `/v1/txn` KV `lock` of
/// `<prefix>/<encoded name>`, blocking queries for waiters.
///
/// * **Acquire** (1 round trip): one transaction that locks the key with a
///   session holding no key, made earlier with `TTL = lock_at_most_for`,
///   `LockDelay = 0`, `Behavior = delete` and no health checks: the one a
///   release or a busy acquire left, or one made ahead (session_pool.rs);
///   when none is fresh, the acquire creates it first (2 round trips). The
///   transaction's result carries the key's `ModifyIndex`: the raft index
///   of this very write, which is the fencing token.
/// * **Extend** (1 round-trip time, 2 requests in parallel): renew the session
///   and read the key (consistent) to prove it is still held by it. A
///   different lease length moves the key to a new session in one transaction.
/// * **Release** (1 round trip): one transaction `check-session` + `delete`;
///   the session, now holding nothing, waits for the next acquire (or is
///   destroyed in the background when it cannot be reused). With time left of
///   `lock_at_least_for`, the key moves instead to a new session whose TTL
///   covers the rest and which nobody renews.
///
/// Cheap to clone; clones share the HTTP connection pool.
#[derive(Clone)]
pub struct ConsulBackend {
    pub(crate) config: std::sync::Arc<ConsulConfig>,
    pub(crate) http: Http,
    /// Sessions holding no key, made ahead of acquires (session_pool.rs).
    pub(crate) sessions: std::sync::Arc<ReadyPool<String>>,
    /// The guards' watches on their keys (key_watch.rs).
    pub(crate) watches: KeyWatches,
}

impl std::fmt::Debug for ConsulBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulBackend")
            .field("config", &self.config)
            .finish()
    }
}

impl ConsulBackend {
    /// Connects to the agent named by a `consul://` or `consul+https://` URL
    /// (see [`ConsulConfig`]) and checks that it has a leader and that the
    /// ACL token may read under the prefix.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ConnectOptions::new()).await
    }

    /// Like [`ConsulBackend::connect`], with `options` taking precedence
    /// over the URL (the ACL token kept out of it; the TLS roots).
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut config = ConsulConfig::from_url(url)?;
        config.apply(options)?;
        Self::with_config(config).await
    }

    /// Like [`ConsulBackend::connect`], from a parsed configuration.
    pub async fn with_config(config: ConsulConfig) -> Result<Self> {
        config.check_timeouts()?;
        let http = Http::new(&config)?;
        let target = config.target();
        let leader = http
            .leader()
            .await
            .map_err(|e| as_connect_error(&target, e))?;
        if leader.is_empty() {
            return Err(Error::connect(
                KIND,
                target,
                "the agent answers but its cluster has no leader: wait for the servers to \
                 elect one, or check that they can reach each other",
                None,
            ));
        }
        // One consistent read under the prefix: proves the datacenter exists,
        // a leader serves reads, and the ACL token is known and may read.
        let probe = format!("{}/", config.prefix);
        http.get_key("connect", &probe, true, None)
            .await
            .map_err(|e| as_connect_error(&target, e))?;
        tracing::debug!(backend = KIND, target = %target, leader = %leader, "connected");
        let watches = KeyWatches::new(http.clone(), probe);
        Ok(ConsulBackend {
            config: std::sync::Arc::new(config),
            http,
            sessions: Default::default(),
            watches,
        })
    }

    /// The configuration in force (the token stays hidden).
    pub fn config(&self) -> &ConsulConfig {
        &self.config
    }

    /// The KV key that holds lock `name`: `<prefix>/<name.path_segment()>`.
    pub fn key_for(&self, name: &LockName) -> String {
        format!("{}/{}", self.config.prefix, name.path_segment())
    }

    pub(crate) fn session_name(owner: &str) -> String {
        let mut s = format!("dlock {owner}");
        if s.len() > 128 {
            let mut cut = 128;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }

    /// Moves `key` from session `old` to a fresh session with `ttl`, writing
    /// `holder` as its value, in one transaction.
    async fn move_to_new_session(
        &self,
        op: &'static str,
        key: &str,
        old: &str,
        ttl: Duration,
        holder: &Holder,
    ) -> Result<Moved> {
        let value = holder.to_base64()?;
        let new = self
            .http
            .create_session(&Self::session_name(&holder.owner), ttl)
            .await?;
        let ops = [
            kv_op("check-session", key, Some(old), None),
            kv_op("unlock", key, Some(old), None),
            kv_op("lock", key, Some(&new), Some(&value)),
        ];
        match self.http.txn(op, &ops).await {
            Ok(TxnOutcome::Committed(_)) => {
                self.http.destroy_session_later(old.to_owned());
                Ok(Moved::To(new))
            }
            Ok(TxnOutcome::RolledBack(errors)) => {
                self.http.destroy_session_later(new);
                if errors.iter().any(|e| e.op_index == 0) {
                    Ok(Moved::NotOurs)
                } else {
                    Err(txn_refused(op, &errors))
                }
            }
            // `new` is left to its TTL: the key may sit on it.
            Err(e) => Ok(Moved::Unknown { error: e }),
        }
    }
}

/// What became of a move to a new session.
enum Moved {
    /// The key is held by this new session now.
    To(String),
    /// The old session no longer held the key; nothing changed.
    NotOurs,
    /// The transaction's answer was lost: the key is held by the old
    /// session or by the new one, and nobody knows which (both are left to
    /// their TTLs).
    Unknown { error: Error },
}

/// The lock whose key is `key` under `prefix`: the inverse of
/// [`ConsulBackend::key_for`]. `None` for a key outside `<prefix>/` or deeper
/// under it (a nested prefix's lock); an error for a key that no lock name
/// encodes to.
fn name_of_key(prefix: &str, key: &str) -> Option<Result<LockName>> {
    let segment = key.strip_prefix(prefix)?.strip_prefix('/')?;
    if segment.contains('/') {
        return None;
    }
    let name = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .and_then(|n| LockName::new(n).ok())
        .filter(|n| n.path_segment() == segment);
    Some(name.ok_or_else(|| {
        Error::backend_msg(
            KIND,
            "list",
            format!(
                "Consul key {key:?} is held by a session but encodes no lock name \
                 (not written by dlock): delete it or destroy its session"
            ),
        )
    }))
}

/// What `inspect` reports for lock `name` stored in `entry`: `None` when no
/// session holds the key.
fn lock_info(name: LockName, entry: &KvEntry) -> Option<LockInfo> {
    entry.holder()?;
    let holder = Holder::from_base64(entry.value.as_deref());
    Some(LockInfo {
        name,
        owner: holder
            .as_ref()
            .map(|h| h.owner.clone())
            .unwrap_or_else(|| "(value not written by dlock)".into()),
        id: holder.as_ref().map(|h| h.id.clone()),
        token: FencingToken(
            holder
                .as_ref()
                .and_then(|h| h.token)
                .unwrap_or(entry.modify_index),
        ),
        locked_at: None,
        lock_until: None,
    })
}

/// Turns an error met while connecting into [`Error::Connect`].
fn as_connect_error(target: &str, e: Error) -> Error {
    match e {
        Error::Backend {
            message, source, ..
        } => Error::connect(KIND, target, message, source),
        Error::Timeout { after, .. } => Error::connect(
            KIND,
            target,
            format!(
                "no answer within {after:?}: is the agent running and reachable there? \
                 (raise connect_timeout= / request_timeout= for a slow network)"
            ),
            None,
        ),
        other => other,
    }
}

fn txn_refused(op: &'static str, errors: &[TxnError]) -> Error {
    let what: Vec<&str> = errors.iter().map(|e| e.what.as_str()).collect();
    Error::backend_msg(
        KIND,
        op,
        format!("Consul rolled the transaction back: {}", what.join("; ")),
    )
}

const LOST_SESSION: &str =
    "its Consul session no longer exists: the TTL passed without a renewal, \
     or a release or force-release destroyed it";
const LOST_KEY: &str = "the lock key is gone or held by another session \
     (expired, force-released, deleted by hand, or taken over)";

#[async_trait]
impl LockBackend for ConsulBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::new();
        c.min_lease = MIN_TTL;
        c.max_lease = Some(MAX_TTL);
        c.lease_granularity = Duration::from_secs(1);
        // Consul invalidates a session between TTL and 2 x TTL after its last
        // renewal (servers arm their timers with twice the TTL), so an
        // abandoned lock may stay taken for up to another lease length.
        // See the crate docs on what this number covers.
        c.expiry_slack = crate::EXPIRY_SLACK;
        // at_least after release is a session of at least 10 s: if the
        // holder exits, Consul ends it within twice that.
        c.at_least_slack = crate::EXPIRY_SLACK;
        c.release_notifies_waiters = true;
        c.at_least_survives_exit = true;
        c.networked = true;
        c.poll_interval = Duration::from_secs(1);
        c.list = true;
        c
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.capabilities().check_spec(KIND, spec)?;
        const OP: &str = "acquire";
        let key = self.key_for(&spec.name);
        let id = new_acquisition_id();
        let value = Holder::new(&spec.name, &spec.owner, &id, None).to_base64()?;
        let sent = BootInstant::now();
        // Usually made ahead (session_pool.rs): then this is one round trip.
        // Until it is handed out with a lease, every way out of this function
        // (errors, cancellation) destroys the session.
        let (session, proven_at) = self.session_for_acquire(spec).await?;
        let outcome = self
            .http
            .txn(OP, &[kv_op("lock", &key, Some(session.id()), Some(&value))])
            .await?;
        let answered = BootInstant::now();
        match outcome {
            TxnOutcome::Committed(entries) => {
                let Some(token) = entries.first().map(|e| e.modify_index).filter(|i| *i > 0) else {
                    // Held but without a token: give it back at once.
                    return Err(Error::backend_msg(
                        KIND,
                        OP,
                        "Consul's lock transaction returned no ModifyIndex; the lock was given back",
                    ));
                };
                tracing::debug!(backend = KIND, lock = %spec.name, token, "acquired");
                let mut lease = Lease::granted(
                    spec,
                    id.clone(),
                    FencingToken(token),
                    sent,
                    Handle {
                        session: session.keep(),
                        rtt: answered.saturating_duration_since(sent),
                        id,
                    }
                    .encode(),
                );
                // The session's TTL has run since it was made (or renewed).
                lease.valid_until = lease
                    .valid_until
                    .min(dlock_core::local_valid_until(proven_at, spec.at_most));
                Ok(Some(lease))
            }
            TxnOutcome::RolledBack(errors) => {
                if errors.iter().any(|e| e.what.contains("already held")) {
                    // The lock went to another session: this one holds nothing.
                    self.give_back_session(spec.at_most, session, proven_at);
                    Ok(None)
                } else {
                    Err(txn_refused(OP, &errors))
                }
            }
        }
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.capabilities()
            .check_lease(KIND, "extension", lock_for)?;
        let handle = Handle::of(lease)?;
        let key = self.key_for(&lease.name);
        let sent = BootInstant::now();
        let mut new = lease.clone();
        if lock_for == lease.at_most {
            // Renewal restarts the session's own TTL, which is `lock_for`.
            let (renewed, read) = tokio::join!(
                self.http.renew_session(&handle.session),
                self.http.get_key("extend", &key, true, None)
            );
            if !renewed? {
                return Err(Error::lost(&lease.name, LOST_SESSION));
            }
            let (entry, _) = read?;
            if entry.as_ref().and_then(|e| e.holder()) != Some(handle.session.as_str()) {
                return Err(Error::lost(&lease.name, LOST_KEY));
            }
        } else {
            let holder = Holder::new(&lease.name, &lease.owner, &lease.id, Some(lease.token.0));
            match self
                .move_to_new_session("extend", &key, &handle.session, lock_for, &holder)
                .await?
            {
                Moved::To(session) => new.handle = Handle { session, ..handle }.encode(),
                Moved::NotOurs => return Err(Error::lost(&lease.name, LOST_KEY)),
                Moved::Unknown { error } => {
                    // The key may now sit in a session shorter than this
                    // lease's validity: never let the caller go on believing
                    // the old one. Give the lock up — but undo nothing: the
                    // key sits on one of the two sessions, and destroying
                    // it would free the lock before the guard has marked
                    // itself lost. Both sessions end by their own TTL.
                    return Err(Error::lost(
                        &lease.name,
                        format!(
                            "moving the lock to a session of {lock_for:?} failed with an unknown \
                             outcome ({error}); the lease was given up"
                        ),
                    ));
                }
            }
        }
        Ok(new.extended(lock_for, sent))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let handle = Handle::of(lease)?;
        let key = self.key_for(&lease.name);
        // The coordinator took the lock no later than acquired_at + rtt.
        // (A lease too long to represent counts as the longest TTL.)
        let hold_until = lease
            .acquired_at
            .checked_add(handle.rtt.saturating_add(lease.at_least));
        let remaining = match hold_until {
            _ if lease.at_least.is_zero() => Duration::ZERO,
            Some(t) => t.saturating_duration_since(BootInstant::now()),
            None => MAX_TTL,
        };
        if remaining.is_zero() {
            let ops = [
                kv_op("check-session", &key, Some(&handle.session), None),
                kv_op("delete", &key, None, None),
            ];
            let outcome = self.http.txn("release", &ops).await;
            if let Ok(TxnOutcome::Committed(_)) = outcome {
                // The key is gone and the session holds nothing: the next
                // acquire may use it.
                self.recycle_session(lease, handle.session);
                return Ok(());
            }
            // Whatever else the answer, ending the session frees the key if
            // it still holds it (Behavior = delete).
            self.http.destroy_session_later(handle.session);
            return match outcome? {
                TxnOutcome::Committed(_) => Ok(()),
                TxnOutcome::RolledBack(errors) if errors.iter().any(|e| e.op_index == 0) => {
                    Err(Error::lost(&lease.name, format!("at release, {LOST_KEY}")))
                }
                TxnOutcome::RolledBack(errors) => Err(txn_refused("release", &errors)),
            };
        }
        // lock_at_least_for still runs: hand the key to a session nobody
        // renews, whose TTL covers the rest. Consul keeps it at least that
        // long, by its own clock, even if this process exits now (and at
        // most 2 x max(10 s, rest), its minimum TTL being 10 s).
        let margin = remaining / 100 + Duration::from_millis(2);
        let ttl = remaining.saturating_add(margin).clamp(MIN_TTL, MAX_TTL);
        let holder = Holder::new(&lease.name, &lease.owner, &lease.id, Some(lease.token.0));
        let session = match self
            .move_to_new_session("release", &key, &handle.session, ttl, &holder)
            .await?
        {
            Moved::To(session) => session,
            Moved::NotOurs => {
                return Err(Error::lost(&lease.name, format!("at release, {LOST_KEY}")))
            }
            // Either session keeps the key at least until acquired +
            // at_least (the old one's TTL is at_most >= at_least), so leave
            // both to their TTLs.
            Moved::Unknown { error } => return Err(error),
        };
        // While this process runs, end that session right when at_least is
        // over, so the lock does not stay taken for the rest of the TTL.
        let free_at = hold_until.and_then(|t| t.checked_add(margin));
        let http = self.http.clone();
        if let (Ok(rt), Some(free_at)) = (tokio::runtime::Handle::try_current(), free_at) {
            rt.spawn(async move {
                dlock_core::clock::sleep_until(free_at).await;
                if let Err(e) = http.destroy_session(&session).await {
                    tracing::debug!(backend = KIND, error = %e, "dlock: ending an at_least session on time failed; its TTL ends it");
                }
            });
        }
        Ok(())
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let key = self.key_for(name);
        let (entry, _) = self.http.get_key("inspect", &key, true, None).await?;
        Ok(entry.and_then(|e| lock_info(name.clone(), &e)))
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let prefix = format!("{}/", self.config.prefix);
        let (entries, _) = self.http.get_prefix("list", &prefix, true, None).await?;
        let mut held = Vec::new();
        for e in entries.iter().filter(|e| e.holder().is_some()) {
            if let Some(name) = name_of_key(&self.config.prefix, &e.key) {
                held.extend(lock_info(name?, e));
            }
        }
        Ok(held)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        const OP: &str = "force release";
        let key = self.key_for(name);
        for _ in 0..5 {
            let (entry, _) = self.http.get_key(OP, &key, true, None).await?;
            let Some(session) = entry.as_ref().and_then(|e| e.holder()).map(str::to_owned) else {
                return Ok(false);
            };
            let ops = [
                kv_op("check-session", &key, Some(&session), None),
                kv_op("delete", &key, None, None),
            ];
            match self.http.txn(OP, &ops).await? {
                TxnOutcome::Committed(_) => {
                    // The holder's next renewal then fails at once.
                    self.http.destroy_session(&session).await?;
                    return Ok(true);
                }
                TxnOutcome::RolledBack(errors) if errors.iter().any(|e| e.op_index == 0) => {
                    continue
                }
                TxnOutcome::RolledBack(errors) => return Err(txn_refused(OP, &errors)),
            }
        }
        Err(Error::backend_msg(
            KIND,
            OP,
            format!(
                "lock {:?} changed hands five times while being force-released; try again",
                name.as_str()
            ),
        ))
    }

    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        self.wait_until_free(name, max_wait).await
    }

    fn loss_signal(&self, lease: &Lease) -> Option<BoxFuture<'static, String>> {
        self.config.watch_loss.then(|| self.watch_for_loss(lease))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_to_exactly_their_names() {
        for n in ["a/b", "a", "ünï %", ".x", "..", "a.b", "%2F", "?#&"] {
            let name = LockName::new(n).unwrap();
            let key = format!("p/q/{}", name.path_segment());
            assert_eq!(name_of_key("p/q", &key).unwrap().unwrap(), name);
        }
        // nested prefixes and foreign keys are not this backend's locks
        assert!(name_of_key("p/q", "p/q/ns/a").is_none());
        assert!(name_of_key("p/q", "p/qx").is_none());
        assert!(name_of_key("p/q", "other/a").is_none());
        // held keys that no name encodes to are errors, never panics
        for bad in [
            "p/q/", "p/q/a b", "p/q/%zz", "p/q/%ff", "p/q/%61", "p/q/.x", "p/q/%00",
        ] {
            let e = name_of_key("p/q", bad).unwrap().unwrap_err();
            assert!(e.to_string().contains("encodes no lock name"), "{bad}: {e}");
        }
    }
}
