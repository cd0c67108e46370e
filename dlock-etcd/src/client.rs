//! Connections: one etcd client per endpoint, deadlines on every request,
//! failover to the next endpoint when the one in use refuses connections or
//! stops answering.
//!
//! etcd-client's own balanced channel keeps routing requests to a dead
//! member and fails them, so with `host1,host2,host3` one member down would
//! fail a third of all lock operations. Here each endpoint has its own
//! client (created lazily, so an endpoint down at start-up does not block
//! connecting), and:
//! - a request whose connection could not be established moves on to the
//!   next endpoint within the same deadline;
//! - a request that got no answer within `request_timeout`, or that the
//!   member answered it cannot serve now (UNAVAILABLE: an election under
//!   way, the member cut off from the others), moves every later request
//!   to the next endpoint (a dead link refuses nothing: only silence
//!   tells), and is itself sent once more there, with a deadline of
//!   its own, when it is safe to send twice ([`Resend::Elsewhere`]: reads,
//!   lease grants and keep-alives, and the acquire transaction, which
//!   recognizes its own earlier grant). So such an operation answers within
//!   `request_timeout` + one round trip of a member that answers (at most
//!   twice `request_timeout`), and an operation that is not safe to repeat
//!   fails once, with an unknown outcome, and the next one goes elsewhere.

use crate::config::EtcdConfig;
use crate::errors::{self, Class};
use crate::KIND;
use dlock_core::{Error, Result};
use etcd_client::{Client, ConnectOptions, GetOptions};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

struct Slot {
    /// `http(s)://host:port`.
    url: String,
    /// Connected on first use; forgotten when the member stops answering,
    /// so that the next use connects afresh: a connection that was cut
    /// (a partition, a member killed behind a dead link) can stay stalled
    /// in TCP retransmission back-off for seconds after the network heals.
    client: Mutex<Option<Client>>,
}

impl Slot {
    fn connected(&self) -> Option<Client> {
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn keep(&self, c: &Client) {
        *self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c.clone());
    }

    fn forget(&self) {
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }
}

/// Shared state of an [`crate::EtcdBackend`]; background tasks (lease
/// revocation, loss watches) hold it too.
pub(crate) struct Inner {
    pub(crate) config: EtcdConfig,
    slots: Vec<Slot>,
    /// Contains the password: never logged (`ConnectOptions` derives Debug).
    opts: ConnectOptions,
    current: AtomicUsize,
    /// The shortest TTL the server grants unchanged, probed at connect.
    pub(crate) min_ttl: i64,
    /// Store revision at which a failed acquire saw each key held, so a
    /// waiter watches from exactly there (no missed delete, no extra read).
    pub(crate) seen: Mutex<HashMap<String, i64>>,
    requests: AtomicU64,
    /// Leases granted ahead of acquires.
    pub(crate) pool: dlock_core::ready_pool::ReadyPool<i64>,
}

/// A failed request: the dlock error, what kind of etcd trouble it was, and
/// whether etcd may have applied it all the same.
pub(crate) struct Failure {
    pub(crate) class: Class,
    /// False only when the request surely changed nothing at etcd: it was
    /// never sent, or etcd refused it outright. True when it may have been
    /// applied (no answer in time, a connection broken mid-call, an
    /// ambiguous server error): its outcome is unknown, and may stay so,
    /// since the request may still be on its way.
    pub(crate) maybe_applied: bool,
    pub(crate) err: Error,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        f.err
    }
}

/// Whether a request whose outcome is unknown (no answer in time) may be
/// sent again, to another endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Never: sending it twice could change the answer (a release, a
    /// force-release, moving a key to another lease).
    Never,
    /// Once, to the next endpoint: a second copy landing after the first
    /// changes nothing the answer relies on.
    Elsewhere,
}

/// The instant `after` from now; the far future when that cannot be
/// represented (a caller's `Duration::MAX` must never panic).
pub(crate) fn deadline_in(after: Duration) -> Instant {
    // About 30 years, like tokio's own "far future".
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// True when the request cannot have reached a server: the connection to
/// the endpoint could not be established (gRPC UNAVAILABLE from connecting).
/// Never an answer of etcd itself: "etcdserver: request timed out, possibly
/// due to connection lost" is UNAVAILABLE and says "connect", but comes
/// after the request was proposed, and may yet be applied.
fn unsent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message().to_ascii_lowercase();
            i32::from(s.code()) == errors::UNAVAILABLE
                && !m.starts_with("etcdserver:")
                && m.contains("connect")
        }
        _ => false,
    }
}

/// True when the member answered that it cannot serve the request now
/// (gRPC UNAVAILABLE: "leader changed", "no leader", "request timed out",
/// a connection whose HTTP/2 keep-alive went unanswered): another member
/// may. The request may have been applied all the same.
fn unavailable_here(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if i32::from(s.code()) == errors::UNAVAILABLE)
}

/// True when etcd-client's own per-request deadline ran out (tonic reports
/// it as a cancelled call): no answer, as with our own deadline.
fn no_answer(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            // 1: CANCELLED.
            i32::from(s.code()) == 1 && s.message().to_ascii_lowercase().contains("timeout expired")
        }
        _ => false,
    }
}

impl Inner {
    /// Builds the per-endpoint slots (no network yet).
    pub(crate) fn new(config: EtcdConfig, opts: ConnectOptions, first: usize) -> Self {
        let scheme = if config.tls { "https" } else { "http" };
        let slots = config
            .endpoints
            .iter()
            .map(|e| Slot {
                url: format!("{scheme}://{e}"),
                client: Mutex::new(None),
            })
            .collect();
        Inner {
            config,
            slots,
            opts,
            current: AtomicUsize::new(first),
            min_ttl: 1,
            seen: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            pool: Default::default(),
        }
    }

    async fn client_at(&self, i: usize) -> std::result::Result<Client, etcd_client::Error> {
        let slot = &self.slots[i];
        if let Some(c) = slot.connected() {
            return Ok(c);
        }
        // Two requests may connect at once; the later one's client stays.
        let c = Client::connect([slot.url.as_str()], Some(self.opts.clone())).await?;
        slot.keep(&c);
        Ok(c)
    }

    /// The client of the endpoint in use (connecting it if needed).
    pub(crate) async fn client(&self) -> Result<Client> {
        self.try_call("connect", |c| async move { Ok(c) })
            .await
            .map_err(Error::from)
    }

    pub(crate) fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn failure(&self, op: &'static str, e: etcd_client::Error) -> Failure {
        Failure {
            class: errors::classify(&e),
            maybe_applied: !unsent(&e) && !errors::refused(&e),
            err: errors::map(
                op,
                &self.config.target(),
                &self.config.prefix,
                self.config.user.as_deref(),
                e,
            ),
        }
    }

    /// One request with the `request_timeout` deadline, counted, errors
    /// mapped, never sent twice.
    pub(crate) async fn try_call<T, F, Fut>(
        &self,
        op: &'static str,
        f: F,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.try_call_within(op, self.config.request_timeout, Resend::Never, f)
            .await
    }

    /// Like [`Inner::try_call`], for a request safe to send twice: when the
    /// endpoint in use does not answer in time, it is sent once more to the
    /// next one ([`Resend::Elsewhere`]).
    pub(crate) async fn try_call_repeatable<T, F, Fut>(
        &self,
        op: &'static str,
        f: F,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.try_call_within(op, self.config.request_timeout, Resend::Elsewhere, f)
            .await
    }

    /// Like [`Inner::try_call_repeatable`], also saying whether the request
    /// was sent more than once (then an earlier copy may still apply after
    /// this answer).
    pub(crate) async fn try_call_repeatable_once<T, F, Fut>(
        &self,
        op: &'static str,
        f: F,
    ) -> (std::result::Result<T, Failure>, bool)
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let resent = std::sync::atomic::AtomicBool::new(false);
        let r = self
            .attempts(
                op,
                self.config.request_timeout,
                Resend::Elsewhere,
                &resent,
                f,
            )
            .await;
        (r, resent.load(Ordering::Relaxed))
    }

    /// Like [`Inner::try_call`] with an explicit deadline for each attempt.
    pub(crate) async fn try_call_within<T, F, Fut>(
        &self,
        op: &'static str,
        after: Duration,
        resend: Resend,
        f: F,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let resent = std::sync::atomic::AtomicBool::new(false);
        self.attempts(op, after, resend, &resent, f).await
    }

    /// [`Inner::try_call_within`], setting `sent_again` when the request
    /// went out a second time.
    async fn attempts<T, F, Fut>(
        &self,
        op: &'static str,
        after: Duration,
        resend: Resend,
        sent_again: &std::sync::atomic::AtomicBool,
        f: F,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut deadline = deadline_in(after);
        let n = self.slots.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        // The latest answer of a member that could not serve the request:
        // it was sent, so it may have been applied, and it says more than
        // a later silence or connect error elsewhere.
        let mut refused_here = None;
        let mut resent = false;
        for k in 0..n {
            let i = (start + k) % n;
            let attempt = async {
                let c = self.client_at(i).await?;
                f(c).await
            };
            let answer = match timeout_at(deadline, attempt).await {
                Ok(Err(e)) if no_answer(&e) => Err(()),
                r => r.map_err(|_| ()),
            };
            match answer {
                Ok(Ok(v)) => {
                    if k > 0 && self.current.swap(i, Ordering::Relaxed) != i {
                        tracing::info!(endpoint = %self.slots[i].url, "dlock-etcd: failed over");
                    }
                    return Ok(v);
                }
                Ok(Err(e)) if unsent(&e) => {
                    tracing::debug!(endpoint = %self.slots[i].url, error = %e, "dlock-etcd: endpoint unreachable");
                    // Its channel would go on failing until its own
                    // reconnect back-off ends: the next use connects anew.
                    self.slots[i].forget();
                    last = Some(e);
                }
                // A member in the middle of an election, or cut off from
                // the others: a safe request goes once to the next one.
                // Its connection answered: it is kept.
                Ok(Err(e))
                    if unavailable_here(&e) && resend == Resend::Elsewhere && !resent && n > 1 =>
                {
                    tracing::debug!(endpoint = %self.slots[i].url, error = %e, "dlock-etcd: member unavailable");
                    self.leave(i, after);
                    resent = true;
                    sent_again.store(true, Ordering::Relaxed);
                    last = None;
                    refused_here = Some(e);
                    deadline = deadline_in(after);
                }
                Ok(Err(e)) => {
                    if unavailable_here(&e) {
                        // Not sent again, but later requests move on.
                        self.leave(i, after);
                    }
                    return Err(self.failure(op, e));
                }
                Err(_) => {
                    self.slots[i].forget();
                    self.leave(i, after);
                    if resend == Resend::Elsewhere && !resent && n > 1 {
                        resent = true;
                        sent_again.store(true, Ordering::Relaxed);
                        last = None;
                        deadline = deadline_in(after);
                        continue;
                    }
                    break;
                }
            }
        }
        Err(match (refused_here, last) {
            (Some(e), _) => self.failure(op, e),
            (None, Some(e)) if Instant::now() < deadline => self.failure(op, e),
            // The deadline passed with a request out (or still connecting):
            // it may have reached etcd.
            _ => Failure {
                class: Class::Other,
                maybe_applied: true,
                err: Error::Backend {
                    backend: KIND,
                    operation: op,
                    message: format!(
                        "no answer from {} within {after:?}: is the cluster up, reachable \
                         and does it have a leader?",
                        self.config.target()
                    ),
                    source: None,
                },
            },
        })
    }

    /// Endpoint `i` did not answer within `after`, or answered that it
    /// cannot serve: later requests start at the next one (once, however
    /// many requests saw it at once). A silent one's connection is dropped
    /// too ([`Slot::forget`], by the caller).
    fn leave(&self, i: usize, after: Duration) {
        let next = (i + 1) % self.slots.len();
        if next != i
            && self
                .current
                .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(endpoint = %self.slots[i].url, next = %self.slots[next].url,
                "dlock-etcd: no answer or no service within {after:?}; moving to the next endpoint");
        }
    }

    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.try_call(op, f).await.map_err(Error::from)
    }

    /// [`Inner::try_call_repeatable`], the error mapped.
    pub(crate) async fn call_repeatable<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.try_call_repeatable(op, f).await.map_err(Error::from)
    }

    /// Revokes a lease in the background (cleanup only: a lease nobody keeps
    /// alive expires by itself, with every key on it).
    pub(crate) fn spawn_revoke(self: &Arc<Self>, lease_id: i64) {
        let me = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // Revoking twice is harmless: the second finds no lease.
                let r = me
                    .try_call_repeatable("revoke lease", |mut c| async move {
                        c.lease_revoke(lease_id).await
                    })
                    .await;
                match r {
                    Ok(_) => {}
                    Err(f) if f.class == Class::LeaseNotFound => {}
                    Err(f) => tracing::debug!(error = %f.err, lease_id,
                        "dlock-etcd: background lease revoke failed; the lease expires by itself"),
                }
            });
        }
    }

    pub(crate) fn remember_seen(&self, key: &str, revision: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= 4096 {
            seen.clear();
        }
        let e = seen.entry(key.to_string()).or_insert(revision);
        *e = (*e).max(revision);
    }

    pub(crate) fn take_seen(&self, key: &str) -> Option<i64> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }
}

/// Connects: reads TLS files, finds a reachable endpoint (fast failure on
/// refused connections), authenticates, and probes the minimum lease TTL.
pub(crate) async fn connect(config: EtcdConfig) -> Result<Inner> {
    let target = config.target();
    if config.endpoints.is_empty() {
        return Err(Error::InvalidConfig(
            "the etcd configuration names no endpoint".into(),
        ));
    }
    let opts = connect_options(&config)?;
    let first = probe_tcp(&config).await?;
    let after = config.connect_timeout;
    let mut inner = Inner::new(config, opts, first);
    // One grant of TTL 1 tells the server's minimum TTL (etcd silently
    // raises shorter ones) and proves the cluster answers; a count-only read
    // under the prefix proves the credentials may read there (etcd lets
    // anyone grant leases, even with authentication on).
    let probe_key = format!("{}/", inner.config.prefix);
    let probe = inner
        .try_call_within("connect", after, Resend::Elsewhere, |mut c| {
            let probe_key = probe_key.clone();
            async move {
                let g = c.lease_grant(1, None).await?;
                let _ = c.lease_revoke(g.id()).await;
                c.get(probe_key, Some(GetOptions::new().with_count_only()))
                    .await?;
                Ok(g.ttl())
            }
        })
        .await;
    let ttl = match probe {
        Ok(ttl) => ttl,
        Err(f) => {
            return Err(match f.err {
                Error::Backend {
                    message, source, ..
                } => Error::connect(KIND, &target, message, source),
                e => e,
            })
        }
    };
    inner.min_ttl = ttl.max(1);
    Ok(inner)
}

/// Index of the first endpoint that accepts a TCP connection; fails fast
/// (connection refused, unknown host) when none does.
async fn probe_tcp(config: &EtcdConfig) -> Result<usize> {
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
    if let Some(i) = results.iter().position(|r| r.is_ok()) {
        return Ok(i);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, msg: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn only_a_failed_connect_counts_as_unsent() {
        use tonic::Code::{Unavailable, Unknown};
        assert!(unsent(&status(Unavailable, "tcp connect error")));
        assert!(unsent(&status(
            Unavailable,
            "error trying to connect: refused"
        )));
        // etcd's own answers came after the request reached it, whatever
        // words they use: the request may have been applied.
        assert!(!unsent(&status(
            Unavailable,
            "etcdserver: request timed out, possibly due to connection lost"
        )));
        assert!(!unsent(&status(Unavailable, "etcdserver: leader changed")));
        assert!(!unsent(&status(Unknown, "connect")));
        assert!(unavailable_here(&status(
            Unavailable,
            "etcdserver: leader changed"
        )));
    }
}
