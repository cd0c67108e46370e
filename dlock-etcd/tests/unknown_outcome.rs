//! Requests whose outcome is unknown, against the shared etcd
//! (`DLOCK_TEST_ETCD_URL`; these tests fail, never skip, when it is unset).
//!
//! Owner A talks to etcd through a [`Proxy`] that, at the chosen request,
//! keeps forwarding requests but holds every answer back: etcd applies the
//! request, A never hears of it and times out. Owner B talks to etcd
//! directly and polls for the lock. Whatever A was told, no instant may be
//! both inside A's hold (as A may go on believing it) and inside B's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{LockBackend, LockName, LockSpec, Locker};
use dlock_etcd::EtcdBackend;
use dlock_testkit::{check_history, Hold, Proxy};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn base_url() -> String {
    std::env::var("DLOCK_TEST_ETCD_URL").expect(
        "DLOCK_TEST_ETCD_URL is not set: run scripts/test.sh or `. .run/env` after \
         scripts/coordinators.sh start etcd",
    )
}

fn fresh_ns() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("unknown_t{:08x}", h.finish() as u32)
}

/// Every request of A times out after this long without an answer.
const REQUEST_TIMEOUT: &str = "1s";

/// Owner A through a fresh proxy (short request timeout), owner B direct.
async fn owners(ns: &str) -> (Proxy, EtcdBackend, EtcdBackend) {
    let base = base_url();
    let up = base
        .trim_start_matches("etcd://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(up).await.unwrap();
    let via = format!(
        "etcd://{}/{ns}?request_timeout={REQUEST_TIMEOUT}",
        proxy.addr()
    );
    let a = EtcdBackend::connect(&via).await.unwrap();
    let b = EtcdBackend::connect(&format!("{base}/{ns}")).await.unwrap();
    (proxy, a, b)
}

fn spec(name: &str, owner: &str, secs: u64) -> LockSpec {
    LockSpec::new(
        LockName::new(name).unwrap(),
        owner,
        Duration::from_secs(secs),
    )
    .unwrap()
}

/// B's first successful acquisition: the lease and the instant its answer
/// arrived (B surely held the lock then).
struct Taken {
    token: u64,
    answered: Instant,
    valid_for: Duration,
}

/// Polls `try_acquire` every 100 ms until it succeeds or `limit` passes.
fn poll_for_lock(
    b: EtcdBackend,
    spec: LockSpec,
    limit: Duration,
) -> tokio::task::JoinHandle<Option<Taken>> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            match b.try_acquire(&spec).await {
                Ok(Some(l)) => {
                    let answered = Instant::now();
                    let valid_for = l.remaining();
                    let _ = b.release(&l).await;
                    return Some(Taken {
                        token: l.token.get(),
                        answered,
                        valid_for,
                    });
                }
                Ok(None) => {}
                Err(e) => panic!("owner B's try_acquire failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    })
}

/// Both holds, checked by the suite's history checker: A's (token, start,
/// end) and B's, on one clock whose origin is A's start.
fn check(name: &str, a: (u64, Instant, Instant), b: &Taken) {
    let ns = |t: Instant| t.saturating_duration_since(a.1).as_nanos();
    let holds = [
        Hold {
            name: name.into(),
            token: a.0,
            start_ns: ns(a.1),
            end_ns: ns(a.2),
        },
        Hold {
            name: name.into(),
            token: b.token,
            start_ns: ns(b.answered),
            end_ns: ns(b.answered + b.valid_for),
        },
    ];
    if let Err(e) = check_history(&holds) {
        panic!(
            "{e}\n(owner B got the lock {:?} before owner A's hold ended)",
            a.2.saturating_duration_since(b.answered)
        );
    }
}

#[tokio::test]
async fn extend_to_another_length_with_an_unknown_outcome_never_frees_a_held_lock() {
    let ns = fresh_ns();
    let (proxy, a, b) = owners(&ns).await;
    let name = "x";
    let t_acq = Instant::now();
    let lease = a
        .try_acquire(&spec(name, "owner-a", 4))
        .await
        .unwrap()
        .unwrap();
    let b_took = poll_for_lock(b, spec(name, "owner-b", 4), Duration::from_secs(20));
    // The extend grants a fresh lease (request 1, answered) and moves the
    // key onto it (request 2: applied by etcd, answer held back).
    proxy.stall_after_requests(2);
    let r = a.extend(&lease, Duration::from_secs(6)).await;
    let t_ret = Instant::now();
    assert!(
        proxy.is_stalled() && proxy.requests() >= 2,
        "the extend did not send its transaction"
    );
    // How long A may go on counting on the lock after this answer.
    let a_end = match &r {
        Ok(_) => panic!("the extend answered Ok though its transaction's answer never came"),
        // Lost: A stops counting on the lock now.
        Err(e) if e.is_lock_lost() => t_ret,
        // Any other error leaves the lease as it was: A (and a guard built on
        // it) counts on it until its local validity ends.
        Err(_) => t_ret + lease.remaining(),
    };
    eprintln!(
        "extend answered after {:?}: {r:?}; A counts on the lock until +{:?}",
        t_ret - t_acq,
        a_end.saturating_duration_since(t_acq)
    );
    let taken = b_took
        .await
        .unwrap()
        .expect("owner B never got the lock, even after every lease of A expired");
    eprintln!(
        "owner B got the lock at +{:?}",
        taken.answered.saturating_duration_since(t_acq)
    );
    check(name, (lease.token.get(), t_acq, a_end), &taken);
}

#[tokio::test]
async fn release_with_an_unknown_outcome_keeps_lock_at_least_for() {
    let ns = fresh_ns();
    let (proxy, a, b) = owners(&ns).await;
    let name = "x";
    let at_least = Duration::from_secs(4);
    let t_acq = Instant::now();
    let lease = a
        .try_acquire(&spec(name, "owner-a", 6).with_at_least(at_least).unwrap())
        .await
        .unwrap()
        .unwrap();
    let b_took = poll_for_lock(b, spec(name, "owner-b", 4), Duration::from_secs(20));
    // With at_least still running the release moves the key to a fresh
    // lease ending at acquired + at_least: a grant (request 1, answered)
    // and a transaction (request 2: applied by etcd, answer held back).
    proxy.stall_after_requests(2);
    let r = a.release(&lease).await;
    let t_ret = Instant::now();
    assert!(
        proxy.is_stalled() && proxy.requests() >= 2,
        "the release did not send its transaction"
    );
    assert!(
        r.is_err(),
        "the release answered Ok though its transaction's answer never came"
    );
    eprintln!("release answered after {:?}: {r:?}", t_ret - t_acq);
    // Whatever the answer, lock_at_least_for holds the lock until
    // acquired + at_least (etcd took it after t_acq).
    let taken = b_took
        .await
        .unwrap()
        .expect("owner B never got the lock, even after every lease of A expired");
    eprintln!(
        "owner B got the lock at +{:?}",
        taken.answered.saturating_duration_since(t_acq)
    );
    check(name, (lease.token.get(), t_acq, t_acq + at_least), &taken);
}

#[tokio::test]
async fn guard_extend_with_an_unknown_outcome_never_leaves_two_holders() {
    let ns = fresh_ns();
    let (proxy, a, b) = owners(&ns).await;
    let a = Locker::new(a).with_owner("owner-a").unwrap();
    let name = "x";
    let before = proxy.requests();
    let g = a
        .acquire(name)
        .lock_for(Duration::from_secs(4))
        .keep_alive(false)
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    let g = Arc::new(g);
    // The guard opens its key watch (one request) after the grant and the
    // transaction; arm the stall only once that has gone out.
    let t = Instant::now();
    while proxy.requests() < before + 3 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the guard never opened its loss watch ({} requests)",
            proxy.requests() - before
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B polls; whenever it gets the lock, A's guard must not say held.
    let watched = g.clone();
    let bspec = spec(name, "owner-b", 4);
    let b_took = tokio::spawn(async move {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Some(l) = b.try_acquire(&bspec).await.unwrap() {
                let a_held = watched.is_held();
                let _ = b.release(&l).await;
                return Some((a_held, l.token));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    proxy.stall_after_requests(2);
    let r = g.extend(Duration::from_secs(6)).await;
    assert!(r.is_err(), "the extend answered Ok without an answer");
    eprintln!("guard extend: {r:?}; is_held() = {}", g.is_held());
    let (a_held, token) = b_took
        .await
        .unwrap()
        .expect("owner B never got the lock, even after every lease of A expired");
    assert!(token > g.token(), "token did not grow");
    assert!(
        !a_held,
        "owner B holds the lock (token {token}) while owner A's guard (token {}) says is_held()",
        g.token()
    );
    // Still stalled: the guard must not need the proxy to answer.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        Arc::try_unwrap(g).unwrap().release(),
    )
    .await
    .expect("release hung");
    assert!(r.is_err(), "release of a lock B took answered {r:?}");
    drop(proxy);
}

#[tokio::test]
async fn same_length_extend_with_an_unknown_outcome_is_safe() {
    // A keep-alive can only push the lease's end later than A counts on:
    // a plain error is fine here, and nobody else gets in before A's
    // validity ends.
    let ns = fresh_ns();
    let (proxy, a, b) = owners(&ns).await;
    let name = "x";
    let t_acq = Instant::now();
    let lease = a
        .try_acquire(&spec(name, "owner-a", 4))
        .await
        .unwrap()
        .unwrap();
    let b_took = poll_for_lock(b, spec(name, "owner-b", 4), Duration::from_secs(20));
    // Read (answered), keep-alive (answer held).
    proxy.stall_after_requests(2);
    let r = a.extend(&lease, Duration::from_secs(4)).await;
    let t_ret = Instant::now();
    let a_end = match &r {
        Ok(l) => t_ret + l.remaining(),
        Err(e) if e.is_lock_lost() => t_ret,
        Err(_) => t_ret + lease.remaining(),
    };
    assert!(r.is_err(), "answered Ok without an answer: {r:?}");
    let taken = b_took.await.unwrap().expect("owner B never got the lock");
    check(name, (lease.token.get(), t_acq, a_end), &taken);
}
