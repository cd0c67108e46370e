//! The scheduler against a real SQLite file (and PostgreSQL with the
//! `postgres` feature): several schedulers = several simulated nodes sharing
//! one coordinator; every firing must run on exactly one node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock::schedule::{Job, JobEvent, JobOutcome, Schedule, Scheduler};
use dlock::Locker;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("locks.db").display())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// What the job itself recorded: (firing instant, node, token).
type Runs = Arc<Mutex<Vec<(String, String, u64)>>>;

async fn node(url: &str, owner: &str) -> Locker {
    dlock::connect(url)
        .await
        .unwrap()
        .with_owner(owner)
        .unwrap()
}

async fn collect(mut rx: broadcast::Receiver<JobEvent>, out: Arc<Mutex<Vec<JobEvent>>>) {
    while let Ok(ev) = rx.recv().await {
        out.lock().unwrap().push(ev);
    }
}

/// Three nodes, a cron schedule with seconds firing every 3 s, a short job,
/// `at_least` absorbing the drift: each firing runs on exactly one node and
/// the other two skip it.
async fn three_nodes_each_firing_once(url: &str) {
    let name = unique("sched-report");
    let runs: Runs = Arc::default();
    let events: Arc<Mutex<Vec<JobEvent>>> = Arc::default();
    let mut handles = Vec::new();
    let mut collectors = Vec::new();
    for owner in ["node-a", "node-b", "node-c"] {
        let runs = runs.clone();
        let job = Job::new(
            name.clone(),
            Schedule::cron("*/3 * * * * *").unwrap(),
            move |ctx| {
                let runs = runs.clone();
                async move {
                    runs.lock().unwrap().push((
                        ctx.scheduled_at.to_rfc3339(),
                        ctx.owner.clone(),
                        ctx.token.get(),
                    ));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        )
        .lock_for(Duration::from_secs(20))
        .at_least(Duration::from_millis(1500));
        let scheduler = Scheduler::new(node(url, owner).await).job(job);
        collectors.push(tokio::spawn(collect(scheduler.subscribe(), events.clone())));
        handles.push(scheduler.start());
    }
    // Room for at least 3 firings. at_least (1.5 s) covers up to 1.5 s of
    // timer lag between nodes and leaves 1.5 s before the next firing.
    tokio::time::sleep(Duration::from_millis(9500)).await;
    for h in handles {
        h.shutdown().await;
    }
    for c in collectors {
        c.await.unwrap();
    }

    let events = events.lock().unwrap().clone();
    let mut by_firing: BTreeMap<String, Vec<JobEvent>> = BTreeMap::new();
    for ev in events {
        by_firing
            .entry(ev.scheduled_at.to_rfc3339())
            .or_default()
            .push(ev);
    }
    assert!(
        by_firing.len() >= 3,
        "expected at least 3 firings in 9.5 s, got {by_firing:#?}"
    );
    let mut tokens = Vec::new();
    for (firing, evs) in &by_firing {
        let ran: Vec<_> = evs.iter().filter(|e| e.outcome.token().is_some()).collect();
        assert_eq!(ran.len(), 1, "firing {firing} ran on {ran:#?}");
        assert!(
            matches!(ran[0].outcome, JobOutcome::Ran { .. }),
            "{:?}",
            ran[0]
        );
        let skipped = evs
            .iter()
            .filter(|e| e.outcome == JobOutcome::Skipped)
            .count();
        // A firing at the very end may have been cut by the shutdown on some
        // nodes; every complete firing was seen by all three.
        if evs.len() == 3 {
            assert_eq!(skipped, 2, "firing {firing}: {evs:#?}");
        }
        tokens.push(ran[0].outcome.token().unwrap());
    }
    // Tokens grow from firing to firing.
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    // What the jobs recorded agrees: one (firing, node, token) per firing.
    let runs = runs.lock().unwrap().clone();
    let mut firings: Vec<_> = runs.iter().map(|r| r.0.clone()).collect();
    firings.dedup();
    assert_eq!(firings.len(), runs.len(), "a firing ran twice: {runs:#?}");
    assert_eq!(runs.len(), by_firing.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_three_nodes_each_firing_once() {
    let dir = tempfile::tempdir().unwrap();
    three_nodes_each_firing_once(&sqlite_url(&dir)).await;
}

#[cfg(feature = "postgres")]
fn postgres_url() -> String {
    std::env::var("DLOCK_TEST_POSTGRES_URL").expect(
        "set DLOCK_TEST_POSTGRES_URL=postgres://user:pass@127.0.0.1:PORT/db \
         (scripts/coordinators.sh writes it to .run/env) to test against PostgreSQL",
    )
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_nodes_each_firing_once() {
    three_nodes_each_firing_once(&postgres_url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_long_job_kept_alive() {
    long_job_kept_alive(&postgres_url()).await;
}

/// A job running 2.5x longer than its lease keeps the lock (keep-alive); the
/// other node skips the firings that come while it runs.
async fn long_job_kept_alive(url: &str) {
    let name = unique("sched-long");
    let events: Arc<Mutex<Vec<JobEvent>>> = Arc::default();
    let mut handles = Vec::new();
    let mut collectors = Vec::new();
    for owner in ["node-a", "node-b"] {
        let job = Job::new(
            name.clone(),
            Schedule::every(Duration::from_secs(1)).unwrap(),
            |ctx| async move {
                // Run only the first firing for long; later ones are quick.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(4000)) => Ok(()),
                    reason = ctx.lost.wait() => Err(reason),
                }
            },
        )
        .lock_for(Duration::from_millis(1600));
        let scheduler = Scheduler::new(node(url, owner).await).job(job);
        collectors.push(tokio::spawn(collect(scheduler.subscribe(), events.clone())));
        handles.push(scheduler.start());
    }
    tokio::time::sleep(Duration::from_millis(5600)).await;
    for h in handles {
        h.shutdown().await;
    }
    for c in collectors {
        c.await.unwrap();
    }
    let events = events.lock().unwrap().clone();
    let ran: Vec<_> = events
        .iter()
        .filter(|e| e.outcome.token().is_some())
        .collect();
    assert!(!ran.is_empty(), "{events:#?}");
    for e in &ran {
        assert!(
            matches!(e.outcome, JobOutcome::Ran { took, .. } if took >= Duration::from_millis(3900)),
            "a long run did not complete under its kept-alive lease: {e:#?}"
        );
    }
    // While one long run holds the lock, the other firings are skipped.
    assert!(
        events.iter().any(|e| e.outcome == JobOutcome::Skipped),
        "{events:#?}"
    );
    // Never two runs at once: the runs' firings are at least 4 s apart.
    let mut starts: Vec<_> = ran.iter().map(|e| e.scheduled_at).collect();
    starts.sort();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= chrono_secs(4), "{starts:?}");
    }
}

fn chrono_secs(s: i64) -> dlock::schedule::chrono::TimeDelta {
    dlock::schedule::chrono::TimeDelta::seconds(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_long_job_kept_alive() {
    let dir = tempfile::tempdir().unwrap();
    long_job_kept_alive(&sqlite_url(&dir)).await;
}

/// Graceful shutdown waits for the running job, then releases its lock.
#[tokio::test]
async fn graceful_shutdown_waits_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let name = unique("sched-shutdown");
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let finished = Arc::new(Mutex::new(false));
    let f2 = finished.clone();
    let job = Job::new(
        name.clone(),
        Schedule::every(Duration::from_millis(200)).unwrap(),
        move |ctx| {
            let started_tx = started_tx.clone();
            let finished = f2.clone();
            async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                // A job that notices shutdown but finishes its unit of work.
                ctx.shutdown.wait().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                *finished.lock().unwrap() = true;
            }
        },
    )
    .lock_for(Duration::from_secs(30));
    let locker = node(&url, "node-a").await;
    let scheduler = Scheduler::new(locker.clone()).job(job);
    let mut rx = scheduler.subscribe();
    let handle = scheduler.start();
    tokio::time::timeout(Duration::from_secs(10), started_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(locker.inspect(&name).await.unwrap().is_some());
    handle.shutdown().await;
    assert!(
        *finished.lock().unwrap(),
        "shutdown did not wait for the job"
    );
    assert!(
        locker.inspect(&name).await.unwrap().is_none(),
        "lock still held after shutdown"
    );
    let ev = rx.recv().await.unwrap();
    assert!(matches!(ev.outcome, JobOutcome::Ran { .. }), "{ev:?}");
}

/// A shutdown with a grace period stops a job that does not finish, and
/// releases its lock.
#[tokio::test]
async fn shutdown_within_grace_cancels_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let name = unique("sched-grace");
    let job = Job::new(
        name.clone(),
        Schedule::every(Duration::from_millis(200)).unwrap(),
        |_ctx| futures_pending(),
    )
    .lock_for(Duration::from_secs(30));
    let locker = node(&url, "node-a").await;
    let scheduler = Scheduler::new(locker.clone()).job(job);
    let mut rx = scheduler.subscribe();
    let handle = scheduler.start();
    // Wait until the job holds its lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while locker.inspect(&name).await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let graceful = handle.shutdown_within(Duration::from_millis(300)).await;
    assert!(!graceful);
    assert!(locker.inspect(&name).await.unwrap().is_none());
    let ev = rx.recv().await.unwrap();
    assert!(matches!(ev.outcome, JobOutcome::Cancelled { .. }), "{ev:?}");
}

async fn futures_pending() {
    std::future::pending::<()>().await
}

/// A lease taken away under a running job (operator force-release) is
/// reported as Lost; with cancel_on_lost the job is stopped at once.
#[tokio::test]
async fn lost_lease_is_reported_and_can_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let name = unique("sched-lost");
    let job = Job::new(
        name.clone(),
        Schedule::every(Duration::from_millis(500)).unwrap(),
        |_ctx| futures_pending(),
    )
    .lock_for(Duration::from_millis(600))
    .cancel_on_lost(true);
    let locker = node(&url, "node-a").await;
    let scheduler = Scheduler::new(locker.clone()).job(job);
    let mut rx = scheduler.subscribe();
    let handle = scheduler.start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while locker.inspect(&name).await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(locker.force_release(&name).await.unwrap());
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the lost job was not stopped")
        .unwrap();
    assert!(matches!(ev.outcome, JobOutcome::Lost { .. }), "{ev:?}");
    handle.shutdown_within(Duration::from_millis(100)).await;
}

/// Errors and panics in a job are reported as Failed; the schedule goes on.
#[tokio::test]
async fn failures_and_panics_are_reported_and_the_schedule_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let name = unique("sched-fail");
    let n = Arc::new(Mutex::new(0u32));
    let job = Job::new(
        name.clone(),
        Schedule::every(Duration::from_millis(300)).unwrap(),
        move |_ctx| {
            let n = n.clone();
            async move {
                let k = {
                    let mut g = n.lock().unwrap();
                    *g += 1;
                    *g
                };
                match k {
                    1 => Err("disk full".to_string()),
                    2 => panic!("job bug"),
                    _ => Ok(k),
                }
            }
        },
    );
    let scheduler = Scheduler::new(node(&url, "node-a").await).job(job);
    let mut rx = scheduler.subscribe();
    let handle = scheduler.start();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        outcomes.push(ev.outcome);
    }
    handle.shutdown().await;
    assert!(
        matches!(&outcomes[0], JobOutcome::Failed { error, .. } if error == "disk full"),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], JobOutcome::Failed { error, .. } if error.contains("job bug")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[2], JobOutcome::Ran { .. }),
        "{outcomes:?}"
    );
}

/// A coordinator error is a LockError event, not a silent skip.
#[tokio::test]
async fn lock_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    // An owner the backend rejects makes every acquisition fail.
    let job = Job::new(
        "x".repeat(300),
        Schedule::every(Duration::from_millis(200)).unwrap(),
        |_ctx| async {},
    );
    let scheduler = Scheduler::new(node(&url, "node-a").await).job(job);
    let mut rx = scheduler.subscribe();
    let handle = scheduler.start();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    handle.shutdown().await;
    assert!(
        matches!(&ev.outcome, JobOutcome::LockError { error } if error.contains("invalid lock name")),
        "{ev:?}"
    );
}
