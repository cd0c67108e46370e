//! acquire+release latency on Redis next to one raw `SET` through the same
//! client library (redis-rs, one multiplexed connection), in one run; then
//! the contended and scale rows `scripts/bench.sh` tabulates.
//!
//! `DLOCK_TEST_REDIS_URL=redis://dlock:dlock@127.0.0.1:26379/0 cargo bench -p dlock-redis --bench redis`
//! (sizes: see `dlock_testkit::bench::Settings`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use dlock_core::{LockBackend, LockName, LockSpec};
use dlock_redis::RedisBackend;
use dlock_testkit::bench::{sample, table, Settings};
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(base) = std::env::var("DLOCK_TEST_REDIS_URL") else {
        eprintln!("DLOCK_TEST_REDIS_URL is not set: source .run/env (scripts/coordinators.sh start) or export it");
        std::process::exit(1);
    };
    let s = Settings::from_env();
    let (n, warmup) = (s.iters, s.warmup);
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}prefix=bench/{}", dlock_testkit::namespace_id());
    let backend = std::sync::Arc::new(RedisBackend::connect(&url).await.expect("connect"));

    // The floor: one raw durable write (SET; the server appends it to its
    // AOF like the acquire script's writes) through one multiplexed
    // connection, as any redis-rs user sends it.
    let client = redis::Client::open(base.split('?').next().unwrap()).expect("client");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let raw = sample("raw SET (floor)", warmup, n, |i| {
        let mut c = conn.clone();
        async move {
            redis::cmd("SET")
                .arg("bench:raw-set")
                .arg(i)
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
    .expect("raw set");

    let spec = LockSpec::new(
        LockName::new("bench/lock").unwrap(),
        "bench",
        Duration::from_secs(30),
    )
    .unwrap();
    let b = backend.clone();
    let pair = sample("try_acquire + release", warmup, n, |_| {
        let (b, spec) = (b.clone(), spec.clone());
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
    let held = backend.try_acquire(&spec).await.unwrap().unwrap();
    let busy = sample("try_acquire, held by another", warmup, n, |_| {
        let (b, spec) = (b.clone(), spec.clone());
        async move {
            match b.try_acquire(&spec).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("taken while held".to_string()),
            }
        }
    })
    .await
    .expect("busy");
    backend.release(&held).await.unwrap();

    println!(
        "{}",
        table(
            &format!(
                "Redis ({}), {n} iterations after {warmup} warm-up",
                backend.config().target()
            ),
            &[raw.clone(), pair, busy]
        )
    );
    dlock_testkit::bench::compare("redis", "redis-rs SET", &raw, || {
        RedisBackend::connect(&url)
    })
    .await
    .unwrap();
}
