//! acquire+release latency on Consul next to one raw KV put, in one run.
//!
//! `DLOCK_TEST_CONSUL_URL=consul://127.0.0.1:8500 cargo bench -p dlock-consul --all-features --bench consul`
//! (optional: `DLOCK_BENCH_N=2000`, `DLOCK_BENCH_WARMUP=200`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock_consul::{ConsulBackend, ConsulConfig};
use dlock_core::{LockBackend, LockName, LockSpec, Locker};
use dlock_testkit::bench::{sample, table};
use std::time::Duration;

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(base) = std::env::var("DLOCK_TEST_CONSUL_URL") else {
        eprintln!("DLOCK_TEST_CONSUL_URL is not set: source .run/env (scripts/coordinators.sh start) or export it");
        std::process::exit(1);
    };
    let n = env_usize("DLOCK_BENCH_N", 2000);
    let warmup = env_usize("DLOCK_BENCH_WARMUP", 200);
    let ns = dlock_testkit::namespace_id();
    let url = match base.split_once('?') {
        Some((b, q)) => format!("{}/bench/{ns}?{q}", b.trim_end_matches('/')),
        None => format!("{}/bench/{ns}", base.trim_end_matches('/')),
    };
    let config = ConsulConfig::from_url(&url).expect("URL");
    let backend = std::sync::Arc::new(ConsulBackend::connect(&url).await.expect("connect"));

    // Baseline: one raw KV put through a kept-alive HTTP connection, as any
    // Consul client would send it (same token and datacenter).
    let token = url::Url::parse(&url).ok().and_then(|u| {
        u.query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut put_url = format!("{}/v1/kv/{}/raw-put", config.base_url(), config.prefix);
    if let Some(dc) = &config.datacenter {
        put_url.push_str(&format!("?dc={dc}"));
    }
    let raw = sample("raw KV put (baseline)", warmup, n, |i| {
        let mut req = client.put(&put_url).body(format!("v{i}"));
        if let Some(t) = &token {
            req = req.header("X-Consul-Token", t);
        }
        async move {
            let r = req.send().await.map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("HTTP {}", r.status()));
            }
            Ok(())
        }
    })
    .await
    .expect("raw put");

    let lease = Duration::from_secs(30);
    let name = LockName::new("bench/lock").unwrap();
    let spec = LockSpec::new(name, "bench", lease).unwrap();
    let b = backend.clone();
    let pair = sample("try_acquire + release", warmup, n, |_| {
        let b = b.clone();
        let spec = spec.clone();
        async move {
            let lease = b
                .try_acquire(&spec)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("held")?;
            b.release(&lease).await.map_err(|e| e.to_string())
        }
    })
    .await
    .expect("acquire+release");

    // The two halves on their own: n locks taken on distinct names, then
    // released in the same order.
    let held = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let (b, h) = (backend.clone(), held.clone());
    let acquire = sample("try_acquire alone", 0, n, |i| {
        let (b, h) = (b.clone(), h.clone());
        async move {
            let spec = LockSpec::new(
                LockName::new(format!("bench/each/{i}")).unwrap(),
                "bench",
                lease,
            )
            .unwrap();
            let l = b
                .try_acquire(&spec)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("held")?;
            h.lock().unwrap().push_back(l);
            Ok(())
        }
    })
    .await
    .expect("acquire alone");
    let (b, h) = (backend.clone(), held.clone());
    let release = sample("release alone", 0, n, |_| {
        let (b, h) = (b.clone(), h.clone());
        async move {
            let l = h.lock().unwrap().pop_front().ok_or("no lease left")?;
            b.release(&l).await.map_err(|e| e.to_string())
        }
    })
    .await
    .expect("release alone");

    let locker = Locker::from_arc(backend.clone())
        .with_owner("bench")
        .unwrap();
    let guard_pair = sample("Locker::try_lock + guard.release", warmup, n, |_| {
        let l = &locker;
        async move {
            let g = l
                .try_lock("bench/guard", lease)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("held")?;
            g.release().await.map_err(|e| e.to_string())
        }
    })
    .await
    .expect("guard");

    println!(
        "{}",
        table(
            &format!(
                "Consul ({}), {n} iterations after {warmup} warm-up",
                config.target()
            ),
            &[raw.clone(), pair, acquire, release, guard_pair]
        )
    );
    dlock_testkit::bench::compare("consul", "reqwest KV PUT", &raw, || {
        ConsulBackend::connect(&url)
    })
    .await
    .unwrap();
}
