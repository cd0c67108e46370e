//! One process holding more locks than its agent allows it connections.
//!
//! An agent accepts at most `http_max_conns_per_client` connections from
//! one address (1000 in the agents scripts/coordinators.sh starts, 200 by
//! default) and resets the rest. A guard's loss watch is a blocking query,
//! which holds a connection while it waits: one per guard cut a process
//! holding 1,100 locks off from its agent, acquires and releases included.
//! Every guard must still hear of its loss promptly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::consul_url;
use dlock_consul::ConsulBackend;
use dlock_core::{LockGuard, Locker};
use futures::{StreamExt, TryStreamExt};
use std::time::{Duration, Instant};

/// More than the 1000 connections the test agent allows one client.
const HELD: usize = 1_100;

async fn hold(locker: &Locker, n: usize) -> Vec<LockGuard> {
    futures::stream::iter(0..n)
        .map(|i| {
            let l = locker.clone();
            async move {
                l.acquire(format!("held-{i}"))
                    .lock_for(Duration::from_secs(120))
                    .keep_alive(false)
                    .try_lock()
                    .await
                    .map_err(|e| format!("hold held-{i}: {e:#}"))?
                    .ok_or_else(|| format!("held-{i} is already held"))
            }
        })
        // In order: guards[i] holds held-{i}.
        .buffered(32)
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_holding_more_locks_than_its_agent_allows_connections_keeps_working() {
    let (url, _) = consul_url();
    let locker = Locker::new(ConsulBackend::connect(&url).await.unwrap());
    let guards = hold(&locker, HELD).await;
    // Every guard's loss watch has started (they wait 500 ms) and settled.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The same process still takes and gives back other locks.
    for i in 0..20 {
        let g = locker
            .acquire(format!("other-{i}"))
            .lock_for(Duration::from_secs(10))
            .try_lock()
            .await
            .unwrap_or_else(|e| panic!("acquire {i} with {HELD} held: {e:#}"))
            .expect("a fresh name is free");
        g.release()
            .await
            .unwrap_or_else(|e| panic!("release {i} with {HELD} held: {e:#}"));
    }

    // A lock taken from under its holder is reported lost promptly, for
    // guards early and late in the fill alike; the others stay held.
    let admin = Locker::new(ConsulBackend::connect(&url).await.unwrap());
    let taken = [0, HELD / 2, HELD - 1];
    for &i in &taken {
        assert!(admin.force_release(format!("held-{i}")).await.unwrap());
    }
    for &i in &taken {
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), guards[i].lost())
            .await
            .unwrap_or_else(|_| panic!("held-{i}: force-released, not reported lost in 10 s"));
        assert!(!guards[i].is_held());
        eprintln!(
            "held-{i}: loss seen {:?} after the last force-release",
            t.elapsed()
        );
    }
    let still: Vec<usize> = (0..HELD)
        .filter(|i| !taken.contains(i) && !guards[*i].is_held())
        .collect();
    assert!(still.is_empty(), "reported lost but not taken: {still:?}");

    futures::stream::iter(guards.into_iter().enumerate())
        .filter(|(i, _)| std::future::ready(!taken.contains(i)))
        .map(|(i, g)| async move {
            g.release()
                .await
                .map_err(|e| format!("release held-{i}: {e:#}"))
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}
