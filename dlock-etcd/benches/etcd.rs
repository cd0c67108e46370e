//! acquire + release on etcd next to a raw put on the same client and
//! etcd's own Lock RPC, in one run against `DLOCK_TEST_ETCD_URL`:
//!
//! `cargo bench -p dlock-etcd --all-features --bench etcd`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{LockBackend, LockName, LockSpec, Locker};
use dlock_etcd::EtcdBackend;
use dlock_testkit::bench::{sample, table};
use etcd_client::LockOptions;
use std::time::Duration;

const WARMUP: usize = 200;
const N: usize = 2000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let base = std::env::var("DLOCK_TEST_ETCD_URL").expect(
        "DLOCK_TEST_ETCD_URL is not set: `. .run/env` after scripts/coordinators.sh start etcd",
    );
    let ns = format!("bench_{:x}", std::process::id());
    let b = EtcdBackend::connect(&format!("{base}/{ns}")).await.unwrap();
    let client = b.client().await.unwrap();
    let spec = LockSpec::new(
        LockName::new("bench").unwrap(),
        "bench",
        Duration::from_secs(10),
    )
    .unwrap();

    // Baseline: one durable write on the same client.
    let c = client.clone();
    let key = format!("{ns}/raw");
    let put = sample("raw put (baseline)", WARMUP, N, |i| {
        let (mut c, key) = (c.clone(), key.clone());
        async move {
            c.put(key, i.to_string(), None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
    .unwrap();

    // dlock: try_acquire + release through the backend.
    let before = b.requests_sent();
    let acq_rel = sample("dlock acquire + release", WARMUP, N, |_| {
        let (b, spec) = (&b, &spec);
        async move {
            let l = b
                .try_acquire(spec)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("held")?;
            b.release(&l).await.map_err(|e| e.to_string())
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_cycle = (b.requests_sent() - before) as f64 / (WARMUP + N) as f64;
    // Round trips of each step, counted with the background revoke settled.
    let (mut acq, mut rel) = (0, 0);
    for _ in 0..100 {
        let r0 = b.requests_sent();
        let l = b.try_acquire(&spec).await.unwrap().unwrap();
        let r1 = b.requests_sent();
        b.release(&l).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        acq += r1 - r0;
        rel += b.requests_sent() - r1;
    }

    // dlock through the Locker (adds the guard's loss watch).
    let locker = Locker::from_arc(std::sync::Arc::new(
        EtcdBackend::connect(&format!("{base}/{ns}")).await.unwrap(),
    ) as std::sync::Arc<dyn LockBackend>)
    .with_owner("bench")
    .unwrap();
    let guard_row = sample("dlock Locker try_lock + release", WARMUP, N, |_| {
        let l = locker.clone();
        async move {
            let g = l
                .acquire("bench-guard")
                .lock_for(Duration::from_secs(10))
                .keep_alive(false)
                .try_lock()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("held")?;
            g.release().await.map_err(|e| e.to_string())
        }
    })
    .await
    .unwrap();

    // etcd's own Lock RPC with one session lease reused (how etcd's
    // concurrency package uses it) ...
    let mut c = client.clone();
    let session = c.lease_grant(60, None).await.unwrap().id();
    let lock_name = format!("{ns}/etcdlock");
    let etcd_lock = sample("etcd Lock + Unlock RPC (session lease)", WARMUP, N, |_| {
        let (mut c, name) = (client.clone(), lock_name.clone());
        async move {
            let r = c
                .lock(name, Some(LockOptions::new().with_lease(session)))
                .await
                .map_err(|e| e.to_string())?;
            c.unlock(r.key().to_vec())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
    .unwrap();
    // ... and with a lease per acquisition, like dlock (grant, lock, unlock, revoke).
    let etcd_lock_lease = sample(
        "etcd LeaseGrant + Lock + Unlock + LeaseRevoke",
        WARMUP,
        N,
        |_| {
            let (mut c, name) = (client.clone(), lock_name.clone());
            async move {
                let id = c
                    .lease_grant(10, None)
                    .await
                    .map_err(|e| e.to_string())?
                    .id();
                let r = c
                    .lock(name, Some(LockOptions::new().with_lease(id)))
                    .await
                    .map_err(|e| e.to_string())?;
                c.unlock(r.key().to_vec())
                    .await
                    .map_err(|e| e.to_string())?;
                c.lease_revoke(id)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
    .unwrap();
    let _ = c.lease_revoke(session).await;
    let _ = c.delete(key.as_str(), None).await;
    compare(&base, &ns, &put).await;

    let mut rows = vec![put];
    rows.push(acq_rel);
    rows.push(guard_row);
    rows.push(etcd_lock);
    rows.push(etcd_lock_lease);
    println!(
        "{}",
        table(
            &format!("etcd at {base}: acquire + release, {N} iterations after {WARMUP} warm-up"),
            &rows
        )
    );
    println!(
        "requests per acquire: {:.2} (one Txn on the lease the last release left; a LeaseGrant \
         too when none is fresh); requests per release: {:.2} (the guarded Txn; its lease \
         waits for the next acquire instead of being revoked); requests per cycle during the \
         timed run: {per_cycle:.2}",
        acq as f64 / 100.0,
        rel as f64 / 100.0,
    );
}

/// The rows of `scripts/bench.sh`'s table.
async fn compare(base: &str, ns: &str, floor: &dlock_testkit::bench::Samples) {
    let url = format!("{base}/{ns}");
    dlock_testkit::bench::compare("etcd", "etcd-client put", floor, || {
        EtcdBackend::connect(&url)
    })
    .await
    .unwrap();
}
