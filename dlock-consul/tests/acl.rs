//! ACLs: a Consul agent with `default_policy = "deny"`
//! (`DLOCK_TEST_CONSUL_ACL_URL`, management token in
//! `DLOCK_TEST_CONSUL_ACL_TOKEN`). Denied tokens are clear errors that never
//! repeat the token; a good token works and never shows up in `Debug`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{env, fresh_ns, url_with, Raw};
use dlock_consul::ConsulBackend;
use dlock_core::{Error, LockBackend, LockName, LockSpec};
use std::time::{Duration, Instant};

fn acl_url(extra: &str) -> String {
    url_with(
        &env("DLOCK_TEST_CONSUL_ACL_URL"),
        &format!("dlock-test/{}", fresh_ns()),
        extra,
    )
}

fn spec(name: &str) -> LockSpec {
    LockSpec::new(
        LockName::new(name).unwrap(),
        "acl-test",
        Duration::from_secs(10),
    )
    .unwrap()
}

#[tokio::test]
async fn bogus_token_is_a_clear_connect_error() {
    let bogus = "00000000-dead-beef-0000-000000000000";
    let t0 = Instant::now();
    let e = ConsulBackend::connect(&acl_url(&format!("token={bogus}")))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e:#}");
    assert!(
        msg.contains("ACL not found") && msg.contains("token="),
        "{msg}"
    );
    assert!(
        !msg.contains(bogus) && !format!("{e:?}").contains(bogus),
        "token echoed: {msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn missing_token_is_a_clear_connect_error() {
    let e = ConsulBackend::connect(&acl_url("")).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e:#}");
    assert!(
        msg.contains("denied") && msg.contains("anonymous") && msg.contains("key_prefix"),
        "{msg}"
    );
}

#[tokio::test]
async fn management_token_works_and_stays_hidden() {
    let token = env("DLOCK_TEST_CONSUL_ACL_TOKEN");
    let b = ConsulBackend::connect(&acl_url(&format!("token={token}")))
        .await
        .unwrap();
    assert!(!format!("{b:?}").contains(&token), "Debug shows the token");
    assert!(!format!("{:?}", b.config()).contains(&token));
    let lease = b
        .try_acquire(&spec("acl/ok"))
        .await
        .unwrap()
        .expect("free lock");
    assert!(!format!("{lease:?}").contains(&token));
    let info = b.inspect(&lease.name).await.unwrap().expect("held");
    assert_eq!(info.token, lease.token);
    assert!(b.try_acquire(&spec("acl/ok")).await.unwrap().is_none());
    b.release(&lease).await.unwrap();
}

#[tokio::test]
async fn the_token_can_stay_out_of_the_url() {
    let token = env("DLOCK_TEST_CONSUL_ACL_TOKEN");
    let opts = dlock_core::ConnectOptions::new().token(token.clone());
    let b = ConsulBackend::connect_with(&acl_url(""), &opts)
        .await
        .unwrap();
    assert!(!format!("{b:?}").contains(&token), "Debug shows the token");
    let lease = b.try_acquire(&spec("acl/kept-out")).await.unwrap().unwrap();
    b.release(&lease).await.unwrap();
    // A password means nothing to Consul: refused, never ignored.
    let e = ConsulBackend::connect_with(&acl_url(""), &opts.clone().password("x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ConnectOptions::password"), "{e}");
}

/// A token that may read keys and write sessions but not write keys: connect
/// works, acquire is a clear `Err` (never `Ok(None)`), naming the rule it lacks.
#[tokio::test]
async fn token_without_key_write_gets_a_clear_error_on_acquire() {
    let master = env("DLOCK_TEST_CONSUL_ACL_TOKEN");
    let raw = Raw::new(&env("DLOCK_TEST_CONSUL_ACL_URL"), Some(&master));
    let ns = fresh_ns();
    let policy = raw
        .put_json(
            "/v1/acl/policy",
            serde_json::json!({
                "Name": format!("dlock-readonly-{ns}"),
                "Rules": "key_prefix \"\" { policy = \"read\" }\nsession_prefix \"\" { policy = \"write\" }",
            }),
        )
        .await;
    let tok = raw
        .put_json(
            "/v1/acl/token",
            serde_json::json!({ "Policies": [{ "ID": policy["ID"] }] }),
        )
        .await;
    let secret = tok["SecretID"].as_str().unwrap().to_string();
    let b = ConsulBackend::connect(&acl_url(&format!("token={secret}")))
        .await
        .expect("read access is enough to connect");
    let e = b.try_acquire(&spec("acl/denied")).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Denied { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e:#}");
    assert!(
        msg.contains("denied") && msg.contains("key_prefix"),
        "{msg}"
    );
    assert!(!msg.contains(&secret), "token echoed: {msg}");

    // And one without session write fails at the session, just as clearly.
    let policy2 = raw
        .put_json(
            "/v1/acl/policy",
            serde_json::json!({
                "Name": format!("dlock-nosession-{ns}"),
                "Rules": "key_prefix \"\" { policy = \"write\" }",
            }),
        )
        .await;
    let tok2 = raw
        .put_json(
            "/v1/acl/token",
            serde_json::json!({ "Policies": [{ "ID": policy2["ID"] }] }),
        )
        .await;
    let secret2 = tok2["SecretID"].as_str().unwrap().to_string();
    let b = ConsulBackend::connect(&acl_url(&format!("token={secret2}")))
        .await
        .unwrap();
    let e = b.try_acquire(&spec("acl/denied")).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("create session") && msg.contains("session_prefix"),
        "{msg}"
    );
    assert!(!msg.contains(&secret2), "token echoed: {msg}");
}

#[tokio::test]
async fn token_file_is_read() {
    let token = env("DLOCK_TEST_CONSUL_ACL_TOKEN");
    let dir = std::env::temp_dir().join(format!("dlock-consul-{}", fresh_ns()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    let b = ConsulBackend::connect(&acl_url(&format!("token_file={}", path.display())))
        .await
        .unwrap();
    let lease = b
        .try_acquire(&spec("acl/file"))
        .await
        .unwrap()
        .expect("free");
    b.release(&lease).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
