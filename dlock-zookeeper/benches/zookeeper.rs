//! Acquire + release latency on a real ZooKeeper, next to a raw create +
//! delete of an ephemeral node on the same session.
//!
//! `cargo bench -p dlock-zookeeper --all-features --bench zookeeper`
//! (reads `DLOCK_TEST_ZOOKEEPER_URL`; `DLOCK_BENCH_N` overrides the 2000 iterations).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock_core::{LockBackend, LockName, LockSpec, Locker};
use dlock_testkit::bench::{sample, table, Samples};
use std::sync::Arc;
use std::time::Duration;
use zookeeper_client as zk;

fn main() {
    let Ok(url) = std::env::var("DLOCK_TEST_ZOOKEEPER_URL") else {
        eprintln!("DLOCK_TEST_ZOOKEEPER_URL is not set: source .run/env (scripts/coordinators.sh starts ZooKeeper)");
        std::process::exit(1);
    };
    let n: usize = std::env::var("DLOCK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let root = format!(
            "{}/dlock_bench_{:08x}",
            url.trim_end_matches('/'),
            rand_u32()
        );
        let backend = Arc::new(
            dlock_zookeeper::ZookeeperBackend::connect(&root)
                .await
                .unwrap(),
        );
        let client = backend.client().await.unwrap();
        let raw_root = backend.config().root.clone();
        let warm = 200;

        let raw = sample(
            "raw create + delete (ephemeral node, same session)",
            warm,
            n,
            |i| {
                let client = client.clone();
                let path = format!("{raw_root}/raw-{i}");
                async move {
                    let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
                    client
                        .create(&path, b"", &opts)
                        .await
                        .map_err(|e| e.to_string())?;
                    client.delete(&path, None).await.map_err(|e| e.to_string())
                }
            },
        )
        .await
        .unwrap();

        let spec = LockSpec::new(
            LockName::new("bench-backend").unwrap(),
            "bench",
            Duration::from_secs(30),
        )
        .unwrap();
        let b2 = backend.clone();
        let trait_level = sample("backend try_acquire + release", warm, n, |_| {
            let b = b2.clone();
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
        .unwrap();

        let locker = Locker::from_arc(backend.clone() as Arc<dyn LockBackend>)
            .with_owner("bench")
            .unwrap();
        let guard_level = sample("Locker try_lock + release (guard)", warm, n, |_| {
            let l = locker.clone();
            async move {
                let g = l
                    .acquire("bench-locker")
                    .lock_for(Duration::from_secs(30))
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

        println!(
            "{}",
            table(
                &format!(
                    "dlock-zookeeper, {n} iterations after {warm} warm-up, one client on loopback"
                ),
                &[raw, trait_level, guard_level]
            )
        );

        // The floor of scripts/bench.sh's table: one setData on one node.
        let data_path = format!("{raw_root}/raw-data");
        let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        client.create(&data_path, b"", &opts).await.unwrap();
        let set_data = sample("raw setData", warm, n, |i| {
            let (client, path) = (client.clone(), data_path.clone());
            async move {
                client
                    .set_data(&path, i.to_string().as_bytes(), None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await
        .unwrap();
        client.delete(&data_path, None).await.unwrap();

        // Where an acquire's time goes, each step timed alone (the delete
        // or release after it untimed), next to the setData floor: the
        // sequential create by itself, the create with the queue read
        // pipelined behind it (what an acquire sends), and the acquire.
        let dir = format!("{raw_root}/raw-queue");
        client.create(&dir, b"", &opts).await.unwrap();
        let ephemeral = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let node_prefix = format!("{dir}/n-");
        let mut create_alone = Vec::with_capacity(n);
        let mut create_and_read = Vec::with_capacity(n);
        let mut acquire = Vec::with_capacity(n);
        for i in 0..warm + n {
            let t = std::time::Instant::now();
            let (_, seq) = client.create(&node_prefix, b"", &ephemeral).await.unwrap();
            let took = t.elapsed();
            client
                .delete(&format!("{dir}/n-{seq}"), None)
                .await
                .unwrap();
            let t = std::time::Instant::now();
            let create = client.create(&node_prefix, b"", &ephemeral);
            let mut r = client.new_multi_reader();
            r.add_get_children(&dir).unwrap();
            r.add_get_data(&data_path).unwrap();
            let (created, read) = futures::future::join(create, r.commit()).await;
            let piped = t.elapsed();
            read.unwrap();
            let (_, seq) = created.unwrap();
            client
                .delete(&format!("{dir}/n-{seq}"), None)
                .await
                .unwrap();
            let t = std::time::Instant::now();
            let lease = backend.try_acquire(&spec).await.unwrap().unwrap();
            let acquired = t.elapsed();
            backend.release(&lease).await.unwrap();
            if i >= warm {
                create_alone.push(took);
                create_and_read.push(piped);
                acquire.push(acquired);
            }
        }
        client.delete(&dir, None).await.unwrap();
        println!(
            "{}",
            table(
                "where a dlock-zookeeper acquire's time goes (each step alone, interleaved)",
                &[
                    set_data.clone(),
                    Samples::new("ephemeral sequential create", create_alone),
                    Samples::new(
                        "the same create + pipelined multi-read (children, marker)",
                        create_and_read
                    ),
                    Samples::new("backend try_acquire (release untimed)", acquire),
                ]
            )
        );
        dlock_testkit::bench::compare("zookeeper", "zookeeper-client setData", &set_data, || {
            dlock_zookeeper::ZookeeperBackend::connect(&root)
        })
        .await
        .unwrap();
    });
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id()
}
