//! The metrics (through the `metrics` facade) and tracing spans dlock emits,
//! checked with a real recorder and subscriber against a real SQLite file.
//!
//! One test in this binary: it installs the process-wide recorder and subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dlock::schedule::{Job, Schedule, Scheduler};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Records the name of every span created.
#[derive(Clone, Default)]
struct SpanNames(Arc<Mutex<BTreeSet<String>>>);

impl<S: tracing::Subscriber> Layer<S> for SpanNames {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        self.0
            .lock()
            .unwrap()
            .insert(attrs.metadata().name().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_spans_fire() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let spans = SpanNames::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    let a = dlock::connect(&url).await.unwrap().with_owner("a").unwrap();
    let b = dlock::connect(&url).await.unwrap().with_owner("b").unwrap();

    // acquired + wait, kept alive (extend), released (hold).
    let g = a
        .try_lock("obs", Duration::from_millis(900))
        .await
        .unwrap()
        .unwrap();
    // skipped.
    assert!(b
        .try_lock("obs", Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
    tokio::time::sleep(Duration::from_millis(700)).await; // >= one keep-alive (every 300 ms)
    g.release().await.unwrap();

    // lost + extend failure: the lease is freed under a guard, whose next
    // keep-alive is refused.
    let g = a
        .try_lock("obs-lost", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert!(a.force_release("obs-lost").await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), g.lost().wait())
        .await
        .unwrap();
    drop(g);

    // A scheduled job: dlock.job span, job metrics.
    let scheduler = Scheduler::new(a.clone()).job(Job::new(
        "obs-job",
        Schedule::every(Duration::from_millis(200)).unwrap(),
        |_ctx| async {},
    ));
    let mut rx = scheduler.subscribe();
    let handle = scheduler.start();
    rx.recv().await.unwrap();
    handle.shutdown().await;

    let snapshot = snapshotter.snapshot().into_vec();
    let mut seen = BTreeSet::new();
    for (key, _unit, _desc, value) in &snapshot {
        let k = key.key();
        let labels: Vec<String> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let nonzero = match value {
            DebugValue::Counter(n) => *n > 0,
            DebugValue::Histogram(v) => !v.is_empty(),
            DebugValue::Gauge(_) => true,
        };
        if nonzero {
            seen.insert(k.name().to_string());
        }
        if k.name().starts_with("dlock_") && !k.name().starts_with("dlock_job") {
            assert!(
                labels.contains(&"backend=sqlite".to_string()),
                "{} {labels:?}",
                k.name()
            );
        }
    }
    for m in [
        "dlock_acquired_total",
        "dlock_skipped_total",
        "dlock_wait_seconds",
        "dlock_hold_seconds",
        "dlock_lost_total",
        "dlock_extend_failures_total",
        // the dropped lost guard's id-matched release is refused
        "dlock_release_errors_total",
        "dlock_job_runs_total",
        "dlock_job_duration_seconds",
    ] {
        assert!(seen.contains(m), "metric {m} not recorded; seen: {seen:?}");
    }
    let spans = spans.0.lock().unwrap().clone();
    for s in [
        "dlock.acquire",
        "dlock.extend",
        "dlock.release",
        "dlock.job",
    ] {
        assert!(spans.contains(s), "span {s} not created; seen: {spans:?}");
    }
}
