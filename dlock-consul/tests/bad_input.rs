//! Bad input and unreachable agents: clear errors, fast, never a panic.
//! Uses `DLOCK_TEST_CONSUL_URL` (fails when unset).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{consul_url, url_with};
use dlock_consul::ConsulBackend;
use dlock_core::{Error, LockBackend, LockName, LockSpec};
use dlock_testkit::bad_input::{acquire_extend_release, huge_timeout_verdict, no_panic};
use std::time::{Duration, Instant};

fn spec(name: &str, at_most: Duration) -> LockSpec {
    LockSpec::new(LockName::new(name).unwrap(), "bad-input", at_most).unwrap()
}

#[tokio::test]
async fn closed_port_fails_fast_with_a_connect_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let t0 = Instant::now();
    let e = ConsulBackend::connect(&format!("consul://127.0.0.1:{port}/x?token=SECRET-T"))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let msg = e.to_string();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("reach"),
        "{msg}"
    );
    assert!(!msg.contains("SECRET-T"), "{msg}");
}

/// An agent that accepts connections but never answers: the request
/// deadline ends the wait.
#[tokio::test]
async fn silent_agent_hits_the_request_deadline() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            socks.push(s);
        }
    });
    let t0 = Instant::now();
    let e = ConsulBackend::connect(&format!(
        "consul://127.0.0.1:{port}/x?request_timeout=700ms&connect_timeout=500ms"
    ))
    .await
    .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Connect { .. }) && msg.contains("no answer"),
        "{msg}"
    );
    hold.abort();
}

#[tokio::test]
async fn unknown_datacenter_is_named() {
    let base = common::env("DLOCK_TEST_CONSUL_URL");
    let e = ConsulBackend::connect(&url_with(&base, "x", "dc=no-such-dc"))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(msg.contains("no-such-dc") && msg.contains("dc="), "{msg}");
}

#[tokio::test]
async fn malformed_urls_are_invalid_config() {
    for url in [
        "consul://",
        "consul://h:99999/x",
        "consul://h/x?nope=1",
        "consul://h/a//b",
        "consul+http://h/x",
    ] {
        let e = ConsulBackend::connect(url).await.unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{url}: {e:?}");
    }
}

/// Consul accepts session TTLs of 10 s to 24 h: anything else, or a lease
/// that is not whole seconds, is Unsupported and never rounded.
#[tokio::test]
async fn leases_consul_cannot_honour_are_unsupported() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    for (d, needle) in [
        (Duration::from_secs(9), "shortest"),
        (Duration::from_millis(500), "shortest"),
        (Duration::from_millis(10_500), "multiple"),
        (Duration::from_secs(86_401), "longest"),
    ] {
        let e = b.try_acquire(&spec("lease", d)).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{d:?}: {e:?}");
        assert!(e.to_string().contains(needle), "{d:?}: {e}");
    }
    // Extensions are checked the same way, and change nothing.
    let lease = b
        .try_acquire(&spec("lease", Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let e = b.extend(&lease, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    // The longest and the shortest lease both work.
    b.release(&lease).await.unwrap();
    let long = b
        .try_acquire(&spec("lease", Duration::from_secs(86_400)))
        .await
        .unwrap()
        .unwrap();
    b.release(&long).await.unwrap();
}

/// A lease whose handle is not one this backend issued is an error, not a panic.
#[tokio::test]
async fn foreign_lease_handles_are_rejected() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let mut lease = b
        .try_acquire(&spec("handle", Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let real = lease.clone();
    for h in ["", "no-separators", "s;notanumber;id", ";1;id"] {
        lease.handle = h.to_string();
        let e = b.release(&lease).await.unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{h:?}: {e:?}");
        let e = b.extend(&lease, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{h:?}: {e:?}");
    }
    // The real lease is untouched.
    assert!(b.inspect(&real.name).await.unwrap().is_some());
    b.release(&real).await.unwrap();
}

/// Extreme durations from direct backend calls never panic.
#[tokio::test]
async fn extreme_durations_do_not_panic() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let name = LockName::new("extreme").unwrap();
    // Free: returns at once, even with an endless wait.
    tokio::time::timeout(
        Duration::from_secs(5),
        b.wait_for_release(&name, Duration::MAX),
    )
    .await
    .expect("a free lock's wait returns at once")
    .unwrap();
    let mut lease = b
        .try_acquire(&spec("extreme", Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    // Held: an endless wait just waits.
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        b.wait_for_release(&name, Duration::MAX),
    )
    .await;
    assert!(r.is_err(), "returned although held: {r:?}");
    // A lease claiming an absurd at_least is released without overflow
    // (the rest is capped at the longest TTL).
    lease.at_least = Duration::MAX;
    b.release(&lease).await.unwrap();
    assert!(
        b.inspect(&name).await.unwrap().is_some(),
        "kept by at_least"
    );
    assert!(b.force_release(&name).await.unwrap());
}

/// An acquire cancelled at any point (here: by a short timeout) never leaves
/// the lock taken by a session nobody knows about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquires_leave_nothing_behind() {
    let (url, _) = consul_url();
    let b = ConsulBackend::connect(&url).await.unwrap();
    let s = spec("cancelled", Duration::from_secs(60));
    // Each cut is a fraction (0 to 1.2) of how long acquires take right
    // now, so most land inside one however fast the agent answers (fixed
    // cuts stopped cancelling once acquires got faster). `typical` follows
    // the completed acquires: one after a cancel makes its session inline
    // and is slower than one that finds a ready session.
    let mut typical = Duration::ZERO;
    for _ in 0..5 {
        let t0 = Instant::now();
        let lease = b.try_acquire(&s).await.unwrap().unwrap();
        typical = typical.max(t0.elapsed());
        b.release(&lease).await.unwrap();
    }
    let mut cancelled = 0;
    for i in 0..60u32 {
        let cut = typical * (i % 20) / 16;
        let t0 = Instant::now();
        match tokio::time::timeout(cut, b.try_acquire(&s)).await {
            Err(_) => cancelled += 1,
            Ok(r) => {
                typical = (typical + t0.elapsed()) / 2;
                if let Some(lease) = r.unwrap() {
                    b.release(&lease).await.unwrap();
                }
            }
        }
    }
    assert!(
        cancelled > 10,
        "only {cancelled} of 60 acquires were cancelled"
    );
    let t0 = Instant::now();
    loop {
        if let Some(lease) = b.try_acquire(&s).await.unwrap() {
            b.release(&lease).await.unwrap();
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "a cancelled acquire left the lock taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects with `config` and runs acquire, extend and release.
async fn connect_and_use(config: dlock_consul::ConsulConfig) -> dlock_core::Result<()> {
    let b = ConsulBackend::with_config(config).await?;
    acquire_extend_release(&b, Duration::from_secs(10)).await
}

/// Timeouts beyond 1h, in the URL or set in code, are a clear InvalidConfig
/// naming the option and the maximum, never a panic; 1h itself works.
#[tokio::test]
async fn huge_timeouts_are_invalid_config_never_a_panic() {
    let (url, _) = consul_url();
    let mut bad = Vec::new();
    for opt in ["connect_timeout", "request_timeout"] {
        for v in ["18446744073709551615s", "100000000000s", "61min"] {
            let what = format!("{opt}={v}");
            let u = url_with(&url, "", &what);
            let r = no_panic(async move {
                connect_and_use(dlock_consul::ConsulConfig::from_url(&u)?).await
            })
            .await;
            bad.extend(huge_timeout_verdict(&what, opt, r));
        }
    }
    type Set = fn(&mut dlock_consul::ConsulConfig);
    let sets: [(&str, Set); 2] = [
        ("connect_timeout", |c| c.connect_timeout = Duration::MAX),
        ("request_timeout", |c| c.request_timeout = Duration::MAX),
    ];
    for (opt, set) in sets {
        let mut c = dlock_consul::ConsulConfig::from_url(&url).unwrap();
        set(&mut c);
        let r = no_panic(connect_and_use(c)).await;
        bad.extend(huge_timeout_verdict(
            &format!("{opt} = Duration::MAX in code"),
            opt,
            r,
        ));
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    let u = url_with(&url, "", "connect_timeout=1h&request_timeout=1h");
    no_panic(async move { connect_and_use(dlock_consul::ConsulConfig::from_url(&u)?).await })
        .await
        .unwrap()
        .unwrap();
}
