//! The Consul calls dlock makes: sessions, `/v1/txn`, KV reads (plain,
//! consistent, blocking), and their JSON shapes.

use crate::http::{Http, Reply};
use crate::KIND;
use dlock_core::{Error, Result};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A KV entry as Consul returns it (from `/v1/kv` or a txn result).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvEntry {
    /// The full key.
    #[serde(default)]
    pub key: String,
    /// Base64 value; `null` in txn write results.
    #[serde(default)]
    pub value: Option<String>,
    /// The session holding the key, if any.
    #[serde(default)]
    pub session: Option<String>,
    /// Raft index of the last write to the key.
    pub modify_index: u64,
}

impl KvEntry {
    /// The holding session, when there is one.
    pub fn holder(&self) -> Option<&str> {
        self.session.as_deref().filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResult {
    #[serde(rename = "KV", default)]
    kv: Option<KvEntry>,
}

/// One error of a failed transaction.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnError {
    /// Which operation failed.
    pub op_index: usize,
    /// Consul's description.
    pub what: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResponse {
    #[serde(default)]
    results: Option<Vec<TxnResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

/// What a transaction did.
#[derive(Debug)]
pub(crate) enum TxnOutcome {
    /// Committed; the KV entries the operations returned, in order.
    Committed(Vec<KvEntry>),
    /// Rolled back (HTTP 409) for these reasons; nothing changed.
    RolledBack(Vec<TxnError>),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionCreate<'a> {
    name: &'a str,
    #[serde(rename = "TTL")]
    ttl: String,
    /// Zero: a released or expired lock is free at once.
    lock_delay: &'static str,
    /// `delete`: when the session ends, the keys it holds are deleted.
    behavior: &'static str,
    /// Empty: the session is timed by its TTL alone, never invalidated early
    /// by the agent's `serfHealth` check (a holder could not see that).
    checks: [&'static str; 0],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionId {
    #[serde(rename = "ID")]
    id: String,
}

/// A session not yet handed out with a lease. Dropping it (an error path, or
/// the caller's future cancelled mid-acquire) destroys it in the background,
/// which also deletes the lock key if the session got to hold it.
pub(crate) struct PendingSession {
    http: Http,
    id: Option<String>,
}

impl PendingSession {
    /// The session id.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// Hands the session out: it is no longer destroyed on drop.
    pub fn keep(mut self) -> String {
        self.id.take().unwrap_or_default()
    }
}

impl Drop for PendingSession {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.http.destroy_session_later(id);
        }
    }
}

/// A Consul duration string for `d`, in whole milliseconds rounded up.
pub(crate) fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_nanos().div_ceil(1_000_000))
    }
}

/// Builds one `KV` operation of a `/v1/txn` body.
pub(crate) fn kv_op(
    verb: &str,
    key: &str,
    session: Option<&str>,
    value_b64: Option<&str>,
) -> serde_json::Value {
    let mut kv = serde_json::Map::new();
    kv.insert("Verb".into(), verb.into());
    kv.insert("Key".into(), key.into());
    if let Some(s) = session {
        kv.insert("Session".into(), s.into());
    }
    if let Some(v) = value_b64 {
        kv.insert("Value".into(), v.into());
    }
    serde_json::json!({ "KV": kv })
}

impl Http {
    /// `PUT /v1/session/create`: a session with `ttl`, lock-delay 0,
    /// behaviour `delete` and no health checks. Returns its id.
    pub async fn create_session(&self, name: &str, ttl: Duration) -> Result<String> {
        const OP: &str = "create session";
        let body = SessionCreate {
            name,
            ttl: go_duration(ttl),
            lock_delay: "0s",
            behavior: "delete",
            checks: [],
        };
        let body = serde_json::to_vec(&body).map_err(|e| Error::backend(KIND, OP, e))?;
        let reply = self
            .send(
                OP,
                Method::PUT,
                "/v1/session/create",
                &[],
                Some(body),
                Duration::ZERO,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.status_error(OP, &reply));
        }
        let id: SessionId = parse(OP, &reply)?;
        Ok(id.id)
    }

    /// `PUT /v1/session/renew/<id>`: restarts the session's TTL. `Ok(false)`
    /// when the session no longer exists.
    pub async fn renew_session(&self, id: &str) -> Result<bool> {
        const OP: &str = "renew session";
        let path = format!("/v1/session/renew/{}", Self::escape_segment(id));
        let reply = self
            .send(OP, Method::PUT, &path, &[], None, Duration::ZERO)
            .await?;
        match reply.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(OP, &reply)),
        }
    }

    /// `PUT /v1/session/destroy/<id>`: ends the session (deleting any key it
    /// still holds). Succeeds for a session that is already gone.
    pub async fn destroy_session(&self, id: &str) -> Result<()> {
        const OP: &str = "destroy session";
        let path = format!("/v1/session/destroy/{}", Self::escape_segment(id));
        let reply = self
            .send(OP, Method::PUT, &path, &[], None, Duration::ZERO)
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(OP, &reply))
        }
    }

    /// Destroys `id` in the background (best effort, with the request
    /// deadline); the session's TTL ends it anyway.
    pub fn destroy_session_later(&self, id: String) {
        let http = self.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = http.destroy_session(&id).await {
                    tracing::debug!(backend = KIND, error = %e, "dlock: destroying a spent Consul session failed; its TTL ends it");
                }
            });
        }
    }

    /// Like [`Http::create_session`], wrapped so that the session is
    /// destroyed if it is dropped before [`PendingSession::keep`]: a failed
    /// or cancelled acquire leaves nothing behind.
    pub async fn create_pending_session(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<PendingSession> {
        let id = self.create_session(name, ttl).await?;
        Ok(self.pending(id))
    }

    /// `id` (a session made earlier, holding no key) as a pending session.
    pub fn pending(&self, id: String) -> PendingSession {
        PendingSession {
            http: self.clone(),
            id: Some(id),
        }
    }

    /// `PUT /v1/txn`: runs `ops` atomically.
    pub async fn txn(&self, op: &'static str, ops: &[serde_json::Value]) -> Result<TxnOutcome> {
        let body = serde_json::to_vec(ops).map_err(|e| Error::backend(KIND, op, e))?;
        let reply = self
            .send(op, Method::PUT, "/v1/txn", &[], Some(body), Duration::ZERO)
            .await?;
        match reply.status {
            s if s.is_success() => {
                let r: TxnResponse = parse(op, &reply)?;
                Ok(TxnOutcome::Committed(
                    r.results
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|r| r.kv)
                        .collect(),
                ))
            }
            StatusCode::CONFLICT => {
                let r: TxnResponse = parse(op, &reply)?;
                let errors = r.errors.unwrap_or_default();
                if let Some(denied) = errors.iter().find(|e| e.what.contains("Permission denied")) {
                    return Err(Error::denied(
                        KIND,
                        op,
                        self.acl_message(&denied.what),
                        None,
                    ));
                }
                Ok(TxnOutcome::RolledBack(errors))
            }
            _ => Err(self.status_error(op, &reply)),
        }
    }

    /// `GET /v1/kv/<key>`: the entry, or `None` when the key does not exist,
    /// with the `X-Consul-Index` to block on next. `consistent` asks the
    /// leader to confirm its leadership first; `block` waits for a change
    /// after the given index for up to the given time.
    pub async fn get_key(
        &self,
        op: &'static str,
        key: &str,
        consistent: bool,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<KvEntry>, u64)> {
        let (mut entries, index) = self.read_kv(op, key, false, consistent, block).await?;
        Ok((entries.pop(), index))
    }

    /// `GET /v1/kv/<prefix>?recurse`: every entry under `prefix` (which
    /// ends in `/`), at any depth, with the `X-Consul-Index` to block on
    /// next; `consistent` and `block` as for [`Http::get_key`].
    pub async fn get_prefix(
        &self,
        op: &'static str,
        prefix: &str,
        consistent: bool,
        block: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64)> {
        self.read_kv(op, prefix, true, consistent, block).await
    }

    /// The KV read behind [`Http::get_key`] and [`Http::get_prefix`]; a
    /// missing key (HTTP 404) is no entries.
    async fn read_kv(
        &self,
        op: &'static str,
        key: &str,
        recurse: bool,
        consistent: bool,
        block: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64)> {
        let path = Self::kv_path(key);
        let mut query: Vec<(&str, &str)> = Vec::new();
        if recurse {
            query.push(("recurse", ""));
        }
        if consistent {
            query.push(("consistent", ""));
        }
        let (index_s, wait_s);
        let mut extra = Duration::ZERO;
        if let Some((index, wait)) = block {
            index_s = index.to_string();
            wait_s = go_duration(wait);
            query.push(("index", &index_s));
            query.push(("wait", &wait_s));
            // Consul adds up to wait/16 of jitter to a blocking query.
            extra = wait.saturating_add(wait / 16);
        }
        let reply = self
            .send(op, Method::GET, &path, &query, None, extra)
            .await?;
        let index = reply.index.unwrap_or(0);
        match reply.status {
            StatusCode::NOT_FOUND => Ok((Vec::new(), index)),
            s if s.is_success() => Ok((parse(op, &reply)?, index)),
            _ => Err(self.status_error(op, &reply)),
        }
    }

    /// `GET /v1/status/leader`: the leader's address (empty when none).
    pub async fn leader(&self) -> Result<String> {
        const OP: &str = "read leader";
        let reply = self
            .send(
                OP,
                Method::GET,
                "/v1/status/leader",
                &[],
                None,
                Duration::ZERO,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.status_error(OP, &reply));
        }
        parse(OP, &reply)
    }

    fn escape_segment(s: &str) -> String {
        const SEGMENT: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'-');
        percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
    }
}

fn parse<T: serde::de::DeserializeOwned>(op: &'static str, reply: &Reply) -> Result<T> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        Error::backend_msg(
            KIND,
            op,
            format!("unexpected answer from Consul ({e}): {}", reply.text()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(10_500)), "10500ms");
        assert_eq!(go_duration(Duration::from_nanos(10_000_000_001)), "10001ms");
    }
}
