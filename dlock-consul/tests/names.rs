//! Names with `/`, `?`, `#`, `%` and unicode: each is its own lock, stored
//! under exactly one encoded key, with the name kept verbatim in the value.
//! Uses `DLOCK_TEST_CONSUL_URL` (fails when unset).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{consul_url, value_json, Raw};
use dlock_consul::ConsulBackend;
use dlock_core::{LockBackend, LockName, LockSpec};
use std::collections::HashSet;
use std::time::Duration;

const NAMES: &[&str] = &[
    "a/b", "a%2Fb", "a%252Fb", "a?b", "a#b", "%", "%%", "/", "//", "a/", "/a", ".", "..", "../x",
    "ü", "u\u{308}", "锁/🔒", "?#%&=+ ", "a b", "a+b",
];

#[tokio::test]
async fn odd_names_are_distinct_locks_under_exact_keys() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let raw = Raw::new(&url, None);
    let prefix = b.config().prefix.clone();
    let mut leases = Vec::new();
    for n in NAMES {
        let spec =
            LockSpec::new(LockName::new(*n).unwrap(), "names", Duration::from_secs(30)).unwrap();
        let lease = b
            .try_acquire(&spec)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{n:?} collided with an earlier name"));
        // Held, and only by itself.
        assert!(b.try_acquire(&spec).await.unwrap().is_none(), "{n:?}");
        leases.push(lease);
    }
    // One key per name, exactly where key_for says, holding the name verbatim.
    let keys = raw.keys(&prefix).await;
    assert_eq!(keys.len(), NAMES.len(), "{keys:?}");
    let mut seen = HashSet::new();
    for (n, lease) in NAMES.iter().zip(&leases) {
        let key = b.key_for(&lease.name);
        assert!(key.starts_with(&format!("{prefix}/")), "{key}");
        assert!(!key[prefix.len() + 1..].contains('/'), "{n:?} -> {key}");
        assert!(keys.contains(&key), "{n:?}: {key} not in {keys:?}");
        assert!(seen.insert(key.clone()));
        let entry = raw.get(&key).await.unwrap();
        let v = value_json(&entry);
        assert_eq!(v["name"], *n, "{key}");
        assert_eq!(v["owner"], "names");
        assert_eq!(v["id"], lease.id.as_str());
        assert_eq!(entry["ModifyIndex"].as_u64(), Some(lease.token.0), "{n:?}");
        let info = b.inspect(&lease.name).await.unwrap().unwrap();
        assert_eq!(info.name.as_str(), *n);
        assert_eq!(info.token, lease.token);
    }
    for lease in &leases {
        b.release(lease).await.unwrap();
    }
    // Behavior = delete: nothing is left behind once released.
    assert!(raw.keys(&prefix).await.is_empty());
}
