//! [`EtcdBackend`]: acquire, extend, release, inspect, list and force-release on etcd v3.

use crate::client::{self, Failure, Inner};
use crate::config::EtcdConfig;
use crate::errors::Class;
use crate::handle::{ttl_secs, Handle};
use crate::{waiting, KIND};
use dlock_core::BootInstant;
use dlock_core::{
    async_trait, new_acquisition_id, Capabilities, ConnectOptions, Error, FencingToken, Lease,
    LockBackend, LockInfo, LockName, LockSpec, Result,
};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnResponse,
};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// etcd's own upper bound on a lease TTL (`MaxLeaseTTL`, about 285 years).
const MAX_TTL_SECS: u64 = 9_000_000_000;

/// Locks in etcd v3: one lease per acquisition (timed by the etcd leader)
/// and one transaction "key absent → put key with the lease". The fencing
/// token is the key's create revision; waiters watch the key.
///
/// Keys are `<prefix>/<LockName::path_segment>`; nothing outside the
/// prefix is read or written. See the crate docs for the URL format.
pub struct EtcdBackend {
    inner: Arc<Inner>,
    caps: Capabilities,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("config", &self.inner.config)
            .field("min_ttl_secs", &self.inner.min_ttl)
            .finish()
    }
}

impl Inner {
    async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse> {
        self.try_txn(op, txn).await.map_err(Error::from)
    }

    /// A transaction, failing with whether it may have been applied.
    async fn try_txn(
        &self,
        op: &'static str,
        txn: Txn,
    ) -> std::result::Result<TxnResponse, Failure> {
        self.try_call(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    pub(crate) fn key(&self, name: &LockName) -> String {
        self.config.key(&name.path_segment())
    }

    /// The lock whose key is `key` (inverse of [`Inner::key`]); `None` for a
    /// key one level deeper (a nested prefix's), an error for anything else.
    fn name_of(&self, key: &[u8]) -> Result<Option<LockName>> {
        let corrupt = || {
            let key = String::from_utf8_lossy(key);
            Error::backend_msg(
                KIND,
                "list",
                format!("the key {key:?} under the lock prefix is not a dlock lock key"),
            )
        };
        let seg = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(&self.config.key("")))
            .ok_or_else(corrupt)?;
        if seg.contains('/') {
            return Ok(None);
        }
        let name = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .ok()
            .and_then(|n| LockName::new(n).ok())
            // Only the canonical encoding is a key inspect(name) would read.
            .filter(|n| n.path_segment() == seg)
            .ok_or_else(corrupt)?;
        Ok(Some(name))
    }
}

/// The value stored under a lock key: `<acquisition id>:<owner>`.
fn encode_value(id: &str, owner: &str) -> String {
    format!("{id}:{owner}")
}

/// (owner, acquisition id) from a stored value.
fn decode_value(v: &[u8]) -> (String, Option<String>) {
    let s = String::from_utf8_lossy(v);
    match s.split_once(':') {
        Some((id, owner)) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (owner.to_string(), Some(id.to_string()))
        }
        _ => (s.into_owned(), None),
    }
}

fn header_revision(resp: &TxnResponse) -> Result<i64> {
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| Error::backend_msg(KIND, "acquire", "etcd answered without a header"))
}

fn token_of(rev: i64) -> Result<FencingToken> {
    u64::try_from(rev)
        .ok()
        .filter(|r| *r > 0)
        .map(FencingToken)
        .ok_or_else(|| Error::backend_msg(KIND, "acquire", format!("invalid revision {rev}")))
}

/// When an acquire transaction failed its compare because the key already
/// holds this very acquisition (id, owner, lease): an earlier copy of the
/// same request, unanswered, applied. Its create revision is the token.
fn own_grant(resp: &TxnResponse, id: &str, owner: &str, lease_id: i64) -> Option<i64> {
    if resp.succeeded() {
        return None;
    }
    let want = encode_value(id, owner);
    resp.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .filter(|kv| kv.value() == want.as_bytes() && kv.lease() == lease_id)
            .map(KeyValue::create_revision),
        _ => None,
    })
}

/// `e` with `what` added to its message.
fn unknown_outcome(e: Error, what: &str) -> Error {
    match e {
        Error::Backend {
            backend,
            operation,
            message,
            source,
        } => Error::Backend {
            backend,
            operation,
            message: format!("{message}; {what}"),
            source,
        },
        e => e,
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

/// Guards "this key is still the one this acquisition created (same create
/// revision, same acquisition id and owner), on the lease we know".
fn ours(key: &str, lease: &Lease, lease_id: i64) -> Result<Vec<Compare>> {
    Ok(vec![
        Compare::create_revision(key, CompareOp::Equal, revision_of(lease)?),
        Compare::value(key, CompareOp::Equal, encode_value(&lease.id, &lease.owner)),
        Compare::lease(key, CompareOp::Equal, lease_id),
    ])
}

fn revision_of(lease: &Lease) -> Result<i64> {
    i64::try_from(lease.token.get())
        .map_err(|_| Error::lost(&lease.name, "fencing token out of etcd's revision range"))
}

impl EtcdBackend {
    /// Connects to the cluster named by `url`, authenticates, and probes
    /// the shortest lease TTL the server grants unchanged.
    ///
    /// Fails within `connect_timeout` when no endpoint is reachable or the
    /// credentials are refused.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ConnectOptions::new()).await
    }

    /// Like [`EtcdBackend::connect`], with `options` taking precedence over
    /// the URL (a user and password kept out of it; the TLS roots).
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Self> {
        let mut config = EtcdConfig::parse(url)?;
        config.apply(options)?;
        Self::with_config(config).await
    }

    /// Connects with an already parsed configuration.
    pub async fn with_config(config: EtcdConfig) -> Result<Self> {
        config.check_timeouts()?;
        let inner = client::connect(config).await?;
        let mut caps = Capabilities::new();
        caps.min_lease = secs(inner.min_ttl);
        caps.max_lease = Some(Duration::from_secs(MAX_TTL_SECS));
        caps.lease_granularity = Duration::from_secs(1);
        // The leader looks for expired leases every 500 ms, then revokes
        // them through raft: an abandoned lock frees about 0.5 s after its
        // TTL (measured 0.49-0.52 s on 3.4).
        caps.expiry_slack = Duration::from_secs(1);
        // at_least after an early release is a fresh lease of whole seconds,
        // at least the minimum TTL, then the same ~0.5 s expiry delay.
        caps.at_least_slack = caps.min_lease.max(Duration::from_secs(1)) + Duration::from_secs(1);
        caps.release_notifies_waiters = true;
        caps.at_least_survives_exit = true;
        caps.networked = true;
        caps.poll_interval = Duration::from_secs(1);
        caps.server_clock = true;
        caps.list = true;
        tracing::debug!(target = %inner.config.target(), min_ttl = inner.min_ttl, "dlock-etcd connected");
        Ok(EtcdBackend {
            inner: Arc::new(inner),
            caps,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// An etcd client for the endpoint in use (shares its connection).
    pub async fn client(&self) -> Result<Client> {
        self.inner.client().await
    }

    /// How many etcd requests this backend has sent so far (including
    /// background lease revocations and watch creations), for diagnostics
    /// and benchmarks.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests_sent()
    }

    /// The etcd key that holds lock `name`.
    pub fn key_of(&self, name: &LockName) -> String {
        self.inner.key(name)
    }
}

#[async_trait]
impl LockBackend for EtcdBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        let inner = &self.inner;
        self.caps.check_spec(KIND, spec)?;
        let ttl = ttl_secs("lock_at_most_for", spec.at_most)?;
        let key = inner.key(&spec.name);
        let id = new_acquisition_id();
        let sent = BootInstant::now();
        // Usually granted ahead (lease_pool.rs): then this is one round trip.
        let ready = inner.lease_for_acquire(ttl).await?;
        let lease_id = ready.lease;
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                encode_value(&id, &spec.owner),
                Some(PutOptions::new().with_lease(lease_id)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        // Safe to send twice: should an unanswered first copy have applied,
        // the second finds the key holding this acquisition's id on this
        // lease, and that is the grant (`own_grant`), not "held".
        let (answer, sent_twice) = inner
            .try_call_repeatable_once("acquire", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        let resp = match answer {
            Ok(r) => r,
            Err(f) => {
                // If the transaction did apply, revoking frees the lock at once.
                inner.spawn_revoke(lease_id);
                return Err(f.err);
            }
        };
        let answered = BootInstant::now();
        let rev = match own_grant(&resp, &id, &spec.owner, lease_id) {
            Some(created) => created,
            None if !resp.succeeded() => {
                if sent_twice {
                    // The first copy may still put the key on this lease.
                    inner.spawn_revoke(lease_id);
                } else {
                    inner.give_back(ttl, ready);
                }
                inner.remember_seen(&key, header_revision(&resp)?);
                return Ok(None);
            }
            None => header_revision(&resp)?,
        };
        let handle = Handle {
            lease_id,
            acquired_by: answered.saturating_duration_since(sent),
            sent_twice,
        };
        let mut lease = Lease::granted(spec, id, token_of(rev)?, sent, handle.encode());
        // etcd's TTL has run since the lease was granted, which for a lease
        // granted ahead was before `sent`.
        lease.valid_until = lease.valid_until.min(ready.valid_until(spec.at_most));
        Ok(Some(lease))
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        let inner = &self.inner;
        self.caps.check_lease(KIND, "extension", lock_for)?;
        let ttl = ttl_secs("extension", lock_for)?;
        let h = Handle::of(lease)?;
        let key = inner.key(&lease.name);
        let sent = BootInstant::now();
        let mut new = lease.clone();
        if lock_for == lease.at_most {
            // Same length: a keep-alive resets the lease to its TTL. First a
            // read proves the key is still this acquisition's (create
            // revision, value, lease), so neither a stale or forged lease nor
            // a force-released key is kept alive.
            let got = inner
                .call_repeatable("extend (check)", |mut c| {
                    let key = key.clone();
                    async move { c.get(key, None).await }
                })
                .await?;
            let want = encode_value(&lease.id, &lease.owner);
            let rev = revision_of(lease)?;
            let still = got.kvs().first().is_some_and(|kv| {
                kv.create_revision() == rev
                    && kv.lease() == h.lease_id
                    && kv.value() == want.as_bytes()
            });
            if !still {
                return Err(Error::lost(
                    &lease.name,
                    "the lock key is gone or belongs to another acquisition",
                ));
            }
            let id = h.lease_id;
            // A keep-alive resets the TTL: sending it twice is harmless.
            match inner
                .try_call_repeatable("extend (keep-alive)", |mut c| async move {
                    c.lease_keep_alive(id).await
                })
                .await
            {
                Ok(_) => {}
                Err(f) if f.class == Class::LeaseNotFound => {
                    return Err(Error::lost(
                        &lease.name,
                        "the etcd lease expired or was revoked before it could be kept alive",
                    ))
                }
                Err(f) => return Err(f.err),
            }
        } else {
            // Another length: attach a fresh lease, guarded on the create revision.
            let fresh = inner.grant("extend (lease grant)", ttl).await?;
            let txn = Txn::new()
                .when(ours(&key, lease, h.lease_id)?)
                .and_then([TxnOp::put(
                    key.as_str(),
                    encode_value(&lease.id, &lease.owner),
                    Some(PutOptions::new().with_lease(fresh)),
                )]);
            let resp = match inner.try_txn("extend", txn).await {
                Ok(r) => r,
                Err(f) if f.maybe_applied => {
                    // The key may sit on `fresh` now or still on the old
                    // lease, and no later read can settle it (the request
                    // may still be on its way). Revoking `fresh` could delete
                    // the lock while this lease still counts as valid; keeping
                    // the old lease would trust a guess. Give the lock up:
                    // both leases expire by themselves at etcd.
                    return Err(Error::lost(
                        &lease.name,
                        format!(
                            "moving the lock to a lease of {lock_for:?} had an unknown outcome \
                             ({}); the lease was given up and expires at etcd by itself",
                            f.err
                        ),
                    ));
                }
                Err(f) => {
                    // Surely not applied: the key is still on the old lease.
                    inner.spawn_revoke(fresh);
                    return Err(f.err);
                }
            };
            if !resp.succeeded() {
                inner.spawn_revoke(fresh);
                return Err(Error::lost(
                    &lease.name,
                    "the lock key is gone or belongs to another acquisition",
                ));
            }
            inner.spawn_revoke(h.lease_id);
            new.handle = Handle {
                lease_id: fresh,
                ..h
            }
            .encode();
        }
        Ok(new.extended(lock_for, sent))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let inner = &self.inner;
        let h = Handle::of(lease)?;
        let key = inner.key(&lease.name);
        let now = BootInstant::now();
        let hold_until = h.taken_by(lease) + lease.at_least;
        let lost = || {
            Error::lost(
                &lease.name,
                "the lease had already expired or been taken over at release",
            )
        };
        if hold_until <= now {
            let txn = Txn::new()
                .when(ours(&key, lease, h.lease_id)?)
                .and_then([TxnOp::delete(key.as_str(), None)]);
            let resp = inner.txn("release", txn).await?;
            if !resp.succeeded() {
                return Err(lost());
            }
            if h.sent_twice {
                inner.spawn_revoke(h.lease_id);
            } else {
                // The key is gone from that lease, and no copy of the
                // acquire can put it back: the next acquire may use it.
                inner.recycle(lease, h.lease_id);
            }
            return Ok(());
        }
        // lock_at_least_for still running: the key must outlive this process
        // until hold_until, timed by etcd.
        let need = hold_until.saturating_duration_since(now);
        let need_secs = i64::try_from(need.as_nanos().div_ceil(1_000_000_000)).unwrap_or(i64::MAX);
        let ttl = need_secs.max(inner.min_ttl);
        // The current lease ends after `valid_until` by etcd's clock. If that
        // covers the hold and ends no later than a fresh lease would, keep it.
        if lease.valid_until >= hold_until && lease.valid_until <= now + secs(ttl) {
            let txn = Txn::new().when(ours(&key, lease, h.lease_id)?);
            let resp = inner.txn("release", txn).await?;
            return if resp.succeeded() {
                Ok(())
            } else {
                Err(lost())
            };
        }
        let fresh = inner.grant("release (lease grant)", ttl).await?;
        let txn = Txn::new()
            .when(ours(&key, lease, h.lease_id)?)
            .and_then([TxnOp::put(
                key.as_str(),
                encode_value(&lease.id, &lease.owner),
                Some(PutOptions::new().with_lease(fresh)),
            )]);
        let resp = match inner.try_txn("release", txn).await {
            Ok(r) => r,
            Err(f) if f.maybe_applied => {
                // The key may sit on `fresh` now (which ends no earlier than
                // hold_until) or still on the old lease: revoking `fresh`
                // could free the lock before lock_at_least_for is over. Leave
                // both leases to expire by themselves. (Should the move not
                // have applied and the old lease, shortened by an extend, end
                // before hold_until, the hold ends with it: only a later
                // answer could have said so.)
                return Err(unknown_outcome(
                    f.err,
                    "the release's outcome is unknown; the lock stays taken until its lease \
                     expires at etcd",
                ));
            }
            Err(f) => {
                inner.spawn_revoke(fresh);
                return Err(f.err);
            }
        };
        if !resp.succeeded() {
            inner.spawn_revoke(fresh);
            return Err(lost());
        }
        inner.spawn_revoke(h.lease_id);
        Ok(())
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let inner = &self.inner;
        let key = inner.key(name);
        let resp = inner
            .call_repeatable("inspect", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| info(name, kv)).transpose()?)
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let inner = &self.inner;
        // One linearizable range read over `<prefix>/` (end: `<prefix>0`).
        let from = inner.config.key("");
        let resp = inner
            .call_repeatable("list", |mut c| {
                let from = from.clone();
                async move { c.get(from, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            if let Some(name) = inner.name_of(kv.key())? {
                out.push(info(&name, kv)?);
            }
        }
        Ok(out)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let inner = &self.inner;
        let key = inner.key(name);
        let resp = inner
            .call("force release", |mut c| {
                let key = key.clone();
                async move {
                    c.delete(key, Some(DeleteOptions::new().with_prev_key()))
                        .await
                }
            })
            .await?;
        let Some(prev) = resp.prev_kvs().first() else {
            return Ok(false);
        };
        // Revoke the holder's lease too, so its keep-alive fails at once.
        if prev.lease() != 0 {
            let id = prev.lease();
            match inner
                .try_call_repeatable("force release (revoke)", |mut c| async move {
                    c.lease_revoke(id).await
                })
                .await
            {
                Ok(_) => {}
                Err(f) if f.class == Class::LeaseNotFound => {}
                Err(f) => return Err(f.err),
            }
        }
        Ok(true)
    }

    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        waiting::wait_for_release(&self.inner, name, max_wait).await
    }

    fn loss_signal(&self, lease: &Lease) -> Option<BoxFuture<'static, String>> {
        Some(waiting::loss_signal(self.inner.clone(), lease))
    }
}

fn info(name: &LockName, kv: &KeyValue) -> Result<LockInfo> {
    let (owner, id) = decode_value(kv.value());
    Ok(LockInfo {
        name: name.clone(),
        owner,
        id,
        token: token_of(kv.create_revision())?,
        locked_at: None,
        lock_until: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let id = "0123456789abcdef0123456789abcdef";
        let v = encode_value(id, "host:1:x");
        assert_eq!(
            decode_value(v.as_bytes()),
            ("host:1:x".to_string(), Some(id.to_string()))
        );
        assert_eq!(decode_value(b"foreign"), ("foreign".to_string(), None));
    }

    #[test]
    fn key_names_round_trip() {
        let config = EtcdConfig::parse("etcd://127.0.0.1/p/q").unwrap();
        let inner = Inner::new(config, etcd_client::ConnectOptions::new(), 0);
        for n in ["a", "a/b", "ünï %", ".x", "a.b", "%41", " "] {
            let name = LockName::new(n).unwrap();
            let got = inner.name_of(inner.key(&name).as_bytes()).unwrap();
            assert_eq!(got, Some(name));
        }
        assert_eq!(inner.name_of(b"p/q/sub/a").unwrap(), None);
        for bad in [
            &b"p/q/"[..],
            b"p/q/%41",
            b"p/q/%zz",
            b"p/q/%00",
            b"p/q/a b",
            b"p/q/\xff",
        ] {
            let e = inner.name_of(bad).unwrap_err();
            assert!(e.to_string().contains("not a dlock lock key"), "{e}");
        }
    }
}
