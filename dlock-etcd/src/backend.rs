//! [`EtcdBackend`]: acquire, extend, release, inspect and force-release on etcd v3.

use crate::config::EtcdConfig;
use crate::errors::{self, Class};
use crate::handle::{ttl_secs, Handle};
use crate::{waiting, KIND};
use dlock_core::{
    async_trait, local_valid_until, new_acquisition_id, Capabilities, Error, FencingToken, Lease,
    LockBackend, LockInfo, LockName, LockSpec, Result,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, PutOptions,
    Txn, TxnOp, TxnResponse,
};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// etcd's own upper bound on a lease TTL (`MaxLeaseTTL`, about 285 years).
const MAX_TTL_SECS: u64 = 9_000_000_000;

/// Locks in etcd v3: one lease per acquisition (timed by the etcd leader)
/// and one transaction "key absent → put key with the lease". The fencing
/// token is the key's create revision; waiters watch the key.
///
/// Keys are `<prefix>/<LockName::path_segment>`; nothing outside the
/// prefix is read or written. See the crate docs for the URL format.
pub struct EtcdBackend {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("config", &self.inner.config)
            .field("min_ttl_secs", &self.inner.min_ttl)
            .finish()
    }
}

/// Shared state; background tasks (lease revocation, loss watches) hold it.
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) config: EtcdConfig,
    /// The shortest TTL the server grants unchanged, probed at connect.
    pub(crate) min_ttl: i64,
    caps: Capabilities,
    /// Store revision at which a failed acquire saw each key held, so a
    /// waiter watches from exactly there (no missed delete, no extra read).
    pub(crate) seen: Mutex<HashMap<String, i64>>,
    requests: AtomicU64,
}

/// A failed request: the dlock error, plus what kind of etcd trouble it was.
pub(crate) struct Failure {
    pub(crate) class: Class,
    pub(crate) err: Error,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        f.err
    }
}

impl Inner {
    /// One request with the request deadline, counted, errors mapped.
    pub(crate) async fn try_call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> std::result::Result<T, Failure> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let after = self.config.request_timeout;
        match tokio::time::timeout(after, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure {
                class: errors::classify(&e),
                err: errors::map(
                    op,
                    &self.config.target(),
                    &self.config.prefix,
                    self.config.user.as_deref(),
                    e,
                ),
            }),
            Err(_) => Err(Failure {
                class: Class::Other,
                err: Error::Backend {
                    backend: KIND,
                    operation: op,
                    message: format!(
                        "no answer from {} within {after:?} (request_timeout): is the cluster \
                         up, reachable and does it have a leader?",
                        self.config.target()
                    ),
                    source: None,
                },
            }),
        }
    }

    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        self.try_call(op, fut).await.map_err(Error::from)
    }

    /// Revokes a lease in the background (cleanup only: a lease nobody keeps
    /// alive expires by itself, with every key on it).
    pub(crate) fn spawn_revoke(self: &Arc<Self>, lease_id: i64) {
        let me = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut lc = me.client.lease_client();
                match me.try_call("revoke lease", lc.revoke(lease_id)).await {
                    Ok(_) => {}
                    Err(f) if f.class == Class::LeaseNotFound => {}
                    Err(f) => tracing::debug!(error = %f.err, lease_id,
                        "dlock-etcd: background lease revoke failed; the lease expires by itself"),
                }
            });
        }
    }

    /// Grants a lease of exactly `ttl` seconds, or explains why not.
    async fn grant(self: &Arc<Self>, op: &'static str, ttl: i64) -> Result<i64> {
        let mut lc = self.client.lease_client();
        let resp = self.call(op, lc.grant(ttl, None)).await?;
        if resp.ttl() != ttl {
            self.spawn_revoke(resp.id());
            return Err(Error::unsupported(
                KIND,
                format!(
                    "etcd granted a {}s lease when {ttl}s was asked (its minimum TTL is tied to the \
                     election timeout); use a lease of at least {}s",
                    resp.ttl(),
                    resp.ttl().max(self.min_ttl)
                ),
            ));
        }
        Ok(resp.id())
    }

    pub(crate) fn key(&self, name: &LockName) -> String {
        self.config.key(&name.path_segment())
    }

    pub(crate) fn remember_seen(&self, key: &str, revision: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= 4096 {
            seen.clear();
        }
        let e = seen.entry(key.to_string()).or_insert(revision);
        *e = (*e).max(revision);
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
        let config = EtcdConfig::parse(url)?;
        Self::with_config(config).await
    }

    /// Connects with an already parsed configuration.
    pub async fn with_config(config: EtcdConfig) -> Result<Self> {
        let target = config.target();
        probe_tcp(&config).await?;
        let opts = connect_options(&config)?;
        let scheme = if config.tls { "https" } else { "http" };
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let connect_timeout = config.connect_timeout;
        let user = config.user.clone();
        let client =
            match tokio::time::timeout(connect_timeout, Client::connect(&endpoints, Some(opts)))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(match errors::classify(&e) {
                        Class::Other | Class::LeaseNotFound => {
                            Error::connect(KIND, &target, format!("{e}"), Some(Box::new(e)))
                        }
                        _ => errors::map("connect", &target, &config.prefix, user.as_deref(), e),
                    })
                }
                Err(_) => return Err(no_answer(&target, connect_timeout)),
            };
        // One grant of TTL 1 tells the server's minimum TTL (etcd silently
        // raises shorter ones) and proves the cluster answers.
        let mut lc = client.lease_client();
        let probe = match tokio::time::timeout(connect_timeout, lc.grant(1, None)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(match errors::classify(&e) {
                    Class::Other | Class::LeaseNotFound => Error::connect(
                        KIND,
                        &target,
                        format!("the cluster refused a lease grant: {e}"),
                        Some(Box::new(e)),
                    ),
                    _ => errors::map("connect", &target, &config.prefix, user.as_deref(), e),
                })
            }
            Err(_) => return Err(no_answer(&target, connect_timeout)),
        };
        let min_ttl = probe.ttl().max(1);
        let _ = tokio::time::timeout(connect_timeout, lc.revoke(probe.id())).await;

        let mut caps = Capabilities::new();
        caps.min_lease = secs(min_ttl);
        caps.max_lease = Some(Duration::from_secs(MAX_TTL_SECS));
        caps.lease_granularity = Duration::from_secs(1);
        // The leader checks for expired leases every 500 ms and then needs a
        // raft round; an at_least hold is rounded up to whole seconds and to
        // the minimum TTL.
        caps.expiry_slack = Duration::from_millis(1500);
        caps.release_notifies_waiters = true;
        caps.at_least_survives_exit = true;
        caps.networked = true;
        caps.poll_interval = Duration::from_secs(1);
        tracing::debug!(target = %target, min_ttl, "dlock-etcd connected");
        Ok(EtcdBackend {
            inner: Arc::new(Inner {
                client,
                config,
                min_ttl,
                caps,
                seen: Mutex::new(HashMap::new()),
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// The underlying etcd client (shares the connection).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// How many etcd requests this backend has sent so far (including
    /// background lease revocations and watch creations), for diagnostics
    /// and benchmarks.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The etcd key that holds lock `name`.
    pub fn key_of(&self, name: &LockName) -> String {
        self.inner.key(name)
    }
}

fn no_answer(target: &str, after: Duration) -> Error {
    Error::connect(
        KIND,
        target,
        format!(
            "no answer within {after:?} (connect_timeout): is etcd running there, and does the \
             cluster have a leader?"
        ),
        None,
    )
}

/// Fails fast (connection refused, unknown host) before the gRPC client,
/// which would keep retrying until the deadline, is built.
async fn probe_tcp(config: &EtcdConfig) -> Result<()> {
    let attempts = config.endpoints.iter().map(|ep| async move {
        match tokio::time::timeout(config.connect_timeout, tokio::net::TcpStream::connect(ep)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{ep}: {e}")),
            Err(_) => Err(format!(
                "{ep}: no TCP answer within {:?}",
                config.connect_timeout
            )),
        }
    });
    let results = futures::future::join_all(attempts).await;
    if results.iter().any(|r| r.is_ok()) {
        return Ok(());
    }
    let why: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    Err(Error::connect(
        KIND,
        config.target(),
        format!(
            "no endpoint reachable ({}); check host, port and that etcd is running",
            why.join("; ")
        ),
        None,
    ))
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_timeout(config.request_timeout)
        // Pings only while a stream (watch, keep-alive) is open: etcd's
        // server enforces a 5 s minimum and drops idle pingers.
        .with_keep_alive(Duration::from_secs(10), config.request_timeout)
        .with_keep_alive_while_idle(false);
    if let (Some(u), Some(p)) = (&config.user, config.password()) {
        opts = opts
            .with_user(u.clone(), p.to_string())
            .with_auto_token_refresh(true);
    }
    if config.tls {
        opts = opts.with_tls(crate::tls::options(config)?);
    }
    Ok(opts)
}

#[async_trait]
impl LockBackend for EtcdBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.caps.clone()
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        let inner = &self.inner;
        inner.caps.check_spec(KIND, spec)?;
        let ttl = ttl_secs("lock_at_most_for", spec.at_most)?;
        let key = inner.key(&spec.name);
        let id = new_acquisition_id();
        let sent = Instant::now();
        let lease_id = inner.grant("acquire (lease grant)", ttl).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                encode_value(&id, &spec.owner),
                Some(PutOptions::new().with_lease(lease_id)),
            )])
            .or_else([TxnOp::get(
                key.as_str(),
                Some(GetOptions::new().with_keys_only()),
            )]);
        let mut kv = inner.client.kv_client();
        let resp = match inner.call("acquire", kv.txn(txn)).await {
            Ok(r) => r,
            Err(e) => {
                // If the transaction did apply, revoking frees the lock at once.
                inner.spawn_revoke(lease_id);
                return Err(e);
            }
        };
        let answered = Instant::now();
        let rev = header_revision(&resp)?;
        if !resp.succeeded() {
            inner.spawn_revoke(lease_id);
            inner.remember_seen(&key, rev);
            return Ok(None);
        }
        let handle = Handle {
            lease_id,
            acquired_by: answered - sent,
        };
        Ok(Some(Lease {
            name: spec.name.clone(),
            owner: spec.owner.clone(),
            id,
            token: token_of(rev)?,
            acquired_at: sent,
            valid_until: local_valid_until(sent, spec.at_most),
            at_most: spec.at_most,
            at_least: spec.at_least,
            handle: handle.encode(),
        }))
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        let inner = &self.inner;
        inner.caps.check_lease(KIND, "extension", lock_for)?;
        let ttl = ttl_secs("extension", lock_for)?;
        let h = Handle::of(lease)?;
        let key = inner.key(&lease.name);
        let sent = Instant::now();
        let mut new = lease.clone();
        if lock_for == lease.at_most {
            // Same length: a keep-alive resets the lease to its TTL. First a
            // read proves the key is still this acquisition's (create
            // revision, value, lease), so neither a stale or forged lease nor
            // a force-released key is kept alive.
            let mut kv = inner.client.kv_client();
            let got = inner
                .call("extend (check)", kv.get(key.as_str(), None))
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
            let mut lc = inner.client.lease_client();
            match inner
                .try_call("extend (keep-alive)", lc.keep_alive(h.lease_id))
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
            let mut kv = inner.client.kv_client();
            let resp = match inner.call("extend", kv.txn(txn)).await {
                Ok(r) => r,
                Err(e) => {
                    inner.spawn_revoke(fresh);
                    return Err(e);
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
        new.valid_until = local_valid_until(sent, lock_for);
        new.at_most = lock_for;
        Ok(new)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let inner = &self.inner;
        let h = Handle::of(lease)?;
        let key = inner.key(&lease.name);
        let now = Instant::now();
        let hold_until = h.taken_by(lease) + lease.at_least;
        let lost = || {
            Error::lost(
                &lease.name,
                "the lease had already expired or been taken over at release",
            )
        };
        let mut kv = inner.client.kv_client();
        if hold_until <= now {
            let txn = Txn::new()
                .when(ours(&key, lease, h.lease_id)?)
                .and_then([TxnOp::delete(key.as_str(), None)]);
            let resp = inner.call("release", kv.txn(txn)).await?;
            if !resp.succeeded() {
                return Err(lost());
            }
            inner.spawn_revoke(h.lease_id);
            return Ok(());
        }
        // lock_at_least_for still running: the key must outlive this process
        // until hold_until, timed by etcd.
        let need = hold_until - now;
        let need_secs = i64::try_from(need.as_nanos().div_ceil(1_000_000_000)).unwrap_or(i64::MAX);
        let ttl = need_secs.max(inner.min_ttl);
        // The current lease ends after `valid_until` by etcd's clock. If that
        // covers the hold and ends no later than a fresh lease would, keep it.
        if lease.valid_until >= hold_until && lease.valid_until <= now + secs(ttl) {
            let txn = Txn::new().when(ours(&key, lease, h.lease_id)?);
            let resp = inner.call("release", kv.txn(txn)).await?;
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
        let resp = match inner.call("release", kv.txn(txn)).await {
            Ok(r) => r,
            Err(e) => {
                inner.spawn_revoke(fresh);
                return Err(e);
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
        let mut kv = inner.client.kv_client();
        let resp = inner.call("inspect", kv.get(inner.key(name), None)).await?;
        Ok(resp.kvs().first().map(|kv| info(name, kv)).transpose()?)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let inner = &self.inner;
        let mut kv = inner.client.kv_client();
        let resp = inner
            .call(
                "force release",
                kv.delete(inner.key(name), Some(DeleteOptions::new().with_prev_key())),
            )
            .await?;
        let Some(prev) = resp.prev_kvs().first() else {
            return Ok(false);
        };
        // Revoke the holder's lease too, so its keep-alive fails at once.
        if prev.lease() != 0 {
            let mut lc = inner.client.lease_client();
            match inner
                .try_call("force release (revoke)", lc.revoke(prev.lease()))
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
}
