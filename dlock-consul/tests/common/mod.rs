//! Helpers shared by the adapter tests: the URLs from the environment
//! (a missing variable FAILS the test, it never skips) and raw HTTP access
//! to Consul for checking what the backend stored.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock_consul::ConsulConfig;
use std::time::Duration;

/// The value of `var`, or a panic saying what to set.
pub fn env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{var} is not set: run scripts/test.sh, or `scripts/coordinators.sh start consul consul-acl` \
             and `. .run/env`, or export {var}=<url>"
        ),
    }
}

/// A fresh random prefix segment for one test.
pub fn fresh_ns() -> String {
    dlock_testkit::namespace_id()
}

/// `base` with `/<path>` appended to its path and `extra` query pairs added.
pub fn url_with(base: &str, path: &str, extra: &str) -> String {
    let (b, q) = match base.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (base, None),
    };
    let mut out = format!("{}/{path}", b.trim_end_matches('/'));
    let mut qs: Vec<&str> = Vec::new();
    if let Some(q) = q {
        qs.push(q);
    }
    if !extra.is_empty() {
        qs.push(extra);
    }
    if !qs.is_empty() {
        out.push('?');
        out.push_str(&qs.join("&"));
    }
    out
}

/// The test Consul's URL with a fresh prefix `dlock-test/<ns>`.
pub fn consul_url() -> (String, String) {
    let ns = fresh_ns();
    (
        url_with(
            &env("DLOCK_TEST_CONSUL_URL"),
            &format!("dlock-test/{ns}"),
            "",
        ),
        ns,
    )
}

/// Raw access to the KV store, outside dlock.
pub struct Raw {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Raw {
    pub fn new(url: &str, token: Option<&str>) -> Self {
        let c = ConsulConfig::from_url(url).unwrap();
        Raw {
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: c.base_url(),
            token: token.map(str::to_owned),
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(m, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.header("X-Consul-Token", t),
            None => r,
        }
    }

    /// `GET /v1/kv/<key>?consistent` → the entry's JSON, or None.
    pub async fn get(&self, key: &str) -> Option<serde_json::Value> {
        let r = self
            .req(
                reqwest::Method::GET,
                &format!("/v1/kv/{}?consistent", esc(key)),
            )
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return None;
        }
        assert!(r.status().is_success(), "GET {key}: {}", r.status());
        let mut v: Vec<serde_json::Value> = r.json().await.unwrap();
        v.pop()
    }

    /// The keys under `prefix/`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let r = self
            .req(
                reqwest::Method::GET,
                &format!("/v1/kv/{}/?keys&consistent", esc(prefix)),
            )
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return Vec::new();
        }
        r.json().await.unwrap()
    }

    /// Deletes a key by hand.
    pub async fn delete(&self, key: &str) {
        let r = self
            .req(reqwest::Method::DELETE, &format!("/v1/kv/{}", esc(key)))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "DELETE {key}: {}", r.status());
    }

    /// PUT with a JSON body to an API path; returns the JSON answer.
    pub async fn put_json(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self
            .req(reqwest::Method::PUT, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Session info, or None when the session is gone.
    pub async fn session(&self, id: &str) -> Option<serde_json::Value> {
        let r = self
            .req(reqwest::Method::GET, &format!("/v1/session/info/{id}"))
            .send()
            .await
            .unwrap();
        let v: Option<Vec<serde_json::Value>> = r.json().await.unwrap();
        v.and_then(|mut v| v.pop())
    }
}

fn esc(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}

/// The decoded JSON value of a KV entry.
pub fn value_json(entry: &serde_json::Value) -> serde_json::Value {
    use base64::Engine as _;
    let b64 = entry["Value"].as_str().expect("a value");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
