//! A thin client for the parts of Consul's HTTP API dlock uses: every request
//! carries the ACL token as a header (never in the URL), the datacenter, and
//! a deadline; non-2xx answers become errors that say what to do.

use crate::config::ConsulConfig;
use crate::KIND;
use dlock_core::backoff::Backoff;
use dlock_core::{Error, Result, TlsRoots};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use std::time::Duration;

/// Everything but unreserved characters and `/` is escaped in a key path,
/// so `%`, `?`, `#` and non-ASCII bytes of a key reach Consul unchanged.
const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// An HTTP answer: status, `X-Consul-Index` and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub index: Option<u64>,
    pub body: Vec<u8>,
}

/// What an agent answers (HTTP 500) when it could not hand a request to any
/// server, or the servers have no leader: the request was applied nowhere,
/// so it may be sent again. A server member killed or cut off makes the
/// agent answer so at once, until it has moved to another server.
const NOT_APPLIED: &[&str] = &[
    "No cluster leader",
    "failed to get conn",
    "lead thread didn't get connection",
];

/// What an agent answers (HTTP 500) when its connection to a server broke
/// during the call (a server killed, or back from a partition): the
/// request may or may not have been applied.
const CUT_OFF: &[&str] = &["rpc error making call: EOF", "stream closed"];

/// Whether a request may be sent twice whatever the first did: reads, and
/// session calls (a spare session holds nothing and its TTL ends it; renew
/// and destroy are idempotent). Never a KV write or a transaction.
fn repeatable(method: &Method, path: &str) -> bool {
    *method == Method::GET || path.starts_with("/v1/session/")
}

impl Reply {
    /// Whether this is an agent's 500 answer naming one of `causes`.
    fn agent_failed_with(&self, causes: &[&str]) -> bool {
        self.status == StatusCode::INTERNAL_SERVER_ERROR && {
            let text = String::from_utf8_lossy(&self.body);
            causes.iter().any(|m| text.contains(m))
        }
    }

    /// The body as text, shortened for messages.
    pub fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let s = s.trim();
        if s.len() > 300 {
            let mut cut = 300;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}...", &s[..cut])
        } else {
            s.to_string()
        }
    }
}

/// The HTTP side of the backend. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    target: String,
    dc: Option<String>,
    prefix: String,
    has_token: bool,
    pub request_timeout: Duration,
}

impl Http {
    pub fn new(config: &ConsulConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(token) = config.token() {
            let mut v = HeaderValue::from_str(token).map_err(|_| {
                Error::InvalidConfig("the Consul ACL token cannot be sent as an HTTP header".into())
            })?;
            // Keeps it out of reqwest's and hyper's Debug output.
            v.set_sensitive(true);
            headers.insert("X-Consul-Token", v);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            // No client-wide total timeout: every request gets its deadline
            // from `dlock_core::with_deadline` in `request` (see there).
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // Honour the URL's host:port exactly; an HTTP(S)_PROXY variable
            // meant for other traffic must not reroute lock requests.
            .no_proxy()
            .user_agent(concat!("dlock-consul/", env!("CARGO_PKG_VERSION")))
            // One root policy on every dlock backend (TlsRoots).
            .tls_built_in_webpki_certs(config.tls_roots == TlsRoots::Webpki)
            .tls_built_in_native_certs(config.tls_roots == TlsRoots::System);
        config.tls_roots.check_ca_file(config.ca_file.is_some())?;
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::InvalidConfig(format!(
                    "cannot read the CA file {} given as ca_file=: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::InvalidConfig(format!(
                    "the CA file {} holds no usable PEM certificate: {e}",
                    path.display()
                ))
            })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| {
            Error::InvalidConfig(format!("cannot build the HTTP client: {}", chain(&e)))
        })?;
        Ok(Http {
            client,
            base: config.base_url(),
            target: config.target(),
            dc: config.datacenter.clone(),
            prefix: config.prefix.clone(),
            has_token: config.has_token(),
            request_timeout: config.request_timeout,
        })
    }

    /// `/v1/kv/<key>` with the key escaped for a URL path.
    pub fn kv_path(key: &str) -> String {
        format!("/v1/kv/{}", utf8_percent_encode(key, KEY_PATH))
    }

    /// Sends one request, and again while the agent answers that it was
    /// applied nowhere ([`NOT_APPLIED`]) or, for a [`repeatable`] request,
    /// that its server connection broke mid-call ([`CUT_OFF`]), with a
    /// growing pause: a server lost behind the agent costs a client that
    /// wait, not an error. All attempts together take `request_timeout`
    /// (+ `extra_time`, which lengthens the deadline of blocking queries);
    /// a repeat gets only what is left. `path` is already escaped; `query`
    /// pairs are escaped here; `dc` is added when configured.
    pub async fn send(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        extra_time: Duration,
    ) -> Result<Reply> {
        let give_up = tokio::time::Instant::now() + self.request_timeout;
        let mut pauses = Backoff::new(Duration::from_millis(25), Duration::from_millis(500));
        loop {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let deadline = left.saturating_add(extra_time);
            let reply = self
                .send_once(op, method.clone(), path, query, body.clone(), deadline)
                .await?;
            let again = reply.agent_failed_with(NOT_APPLIED)
                || (repeatable(&method, path) && reply.agent_failed_with(CUT_OFF));
            let pause = pauses.next_delay();
            // A repeat needs time for an answer: a tenth of the deadline.
            let room = pause + self.request_timeout / 10;
            if !again || tokio::time::Instant::now() + room >= give_up {
                return Ok(reply);
            }
            tracing::debug!(backend = KIND, op, answer = %reply.text(), "dlock: the Consul agent reached no server; sending again");
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt of [`Http::send`], within `deadline`.
    async fn send_once(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        deadline: Duration,
    ) -> Result<Reply> {
        let mut url = format!("{}{}", self.base, path);
        let q = {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                if v.is_empty() {
                    // Flag parameters such as `consistent`.
                    ser.append_key_only(k);
                } else {
                    ser.append_pair(k, v);
                }
            }
            if let Some(dc) = &self.dc {
                ser.append_pair("dc", dc);
            }
            ser.finish()
        };
        if !q.is_empty() {
            url.push('?');
            url.push_str(&q);
        }
        let mut req = self.client.request(method, &url);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let fail = |e: reqwest::Error| self.transport_error(op, deadline, e);
        // The deadline covers sending and reading the whole answer. It is
        // dlock's own rather than reqwest's: reqwest checks its timer before
        // looking at the answer, so a process resumed after a stop longer
        // than the deadline would report a timeout for an answer already
        // received; `with_deadline` lets such an answer through.
        let (status, index, body) = dlock_core::with_deadline(op, deadline, async {
            let resp = req.send().await.map_err(fail)?;
            let status = resp.status();
            let index = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = resp.bytes().await.map_err(fail)?.to_vec();
            Ok((status, index, body))
        })
        .await?;
        Ok(Reply {
            status,
            index,
            body,
        })
    }

    fn transport_error(&self, op: &'static str, deadline: Duration, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout {
                operation: op,
                after: deadline,
            };
        }
        let what = if e.is_connect() {
            "cannot reach the Consul agent"
        } else {
            "the request to the Consul agent failed"
        };
        Error::Backend {
            backend: KIND,
            operation: op,
            message: format!("{what} at {}: {}", self.target, chain(&e.without_url())),
            source: None,
        }
    }

    /// An error for an unexpected HTTP status, with advice for the common ones.
    /// A 403 (the ACL token is unknown or lacks a permission) is
    /// [`Error::Denied`]: retrying cannot fix it.
    pub fn status_error(&self, op: &'static str, reply: &Reply) -> Error {
        if reply.status == StatusCode::FORBIDDEN {
            return Error::denied(KIND, op, self.status_message(reply), None);
        }
        Error::backend_msg(KIND, op, self.status_message(reply))
    }

    /// The text of [`Http::status_error`].
    pub fn status_message(&self, reply: &Reply) -> String {
        let text = reply.text();
        match reply.status {
            StatusCode::FORBIDDEN => self.acl_message(&text),
            s if text.contains("No path to datacenter") => format!(
                "HTTP {s}: the agent at {} does not know datacenter {:?}; fix dc= in the URL",
                self.target,
                self.dc.as_deref().unwrap_or("")
            ),
            s => format!("HTTP {s} from the Consul agent at {}: {text}", self.target),
        }
    }

    /// Advice for an ACL refusal ("ACL not found" / "Permission denied").
    pub fn acl_message(&self, text: &str) -> String {
        let who = if self.has_token {
            "the ACL token given in the URL"
        } else {
            "the anonymous token (no token= in the URL)"
        };
        if text.contains("ACL not found") {
            format!(
                "Consul's ACL system at {} does not know {who} (\"ACL not found\"): \
                 pass a valid token with ?token=... or ?token_file=...",
                self.target
            )
        } else {
            format!(
                "Consul's ACL system at {} denied {who} ({text:?}): it needs \
                 key_prefix \"{}/\" {{ policy = \"write\" }} and \
                 session_prefix \"\" {{ policy = \"write\" }}",
                self.target, self.prefix
            )
        }
    }
}

/// `e` and its sources, joined by ": ".
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            index: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_answers_that_change_nothing_twice_are_sent_again() {
        let no_server = reply(
            500,
            "rpc error making call: rpc error getting client: failed to get conn: dial tcp: connect: connection refused",
        );
        assert!(no_server.agent_failed_with(NOT_APPLIED));
        assert!(reply(500, "No cluster leader").agent_failed_with(NOT_APPLIED));
        let cut = reply(500, "rpc error making call: rpc error making call: EOF");
        assert!(!cut.agent_failed_with(NOT_APPLIED));
        assert!(cut.agent_failed_with(CUT_OFF));
        // A cut-off answer is sent again only for reads and session calls.
        assert!(repeatable(&Method::GET, "/v1/kv/a"));
        assert!(repeatable(&Method::PUT, "/v1/session/create"));
        assert!(!repeatable(&Method::PUT, "/v1/txn"));
        assert!(!repeatable(&Method::PUT, "/v1/kv/a"));
        // Other failures, and the same words with another status, are answers.
        assert!(!reply(500, "Permission denied").agent_failed_with(NOT_APPLIED));
        assert!(!reply(403, "No cluster leader").agent_failed_with(NOT_APPLIED));
    }

    #[test]
    fn key_paths_escape_everything_odd() {
        assert_eq!(Http::kv_path("p/a%2Fb"), "/v1/kv/p/a%252Fb");
        assert_eq!(Http::kv_path("p/x?y#z"), "/v1/kv/p/x%3Fy%23z");
        assert_eq!(Http::kv_path("p/ü"), "/v1/kv/p/%C3%BC");
    }
}
