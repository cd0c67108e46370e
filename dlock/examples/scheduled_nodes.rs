//! Three simulated nodes fire the same scheduled job every 3 seconds; the
//! lock makes each firing run on exactly one of them.
//!
//! ```sh
//! cargo run --example scheduled_nodes                # SQLite file in a temp dir
//! DLOCK_URL=postgres://... cargo run --features postgres --example scheduled_nodes
//! ```
//!
//! Each node has its own connection, owner name and [`Scheduler`]; all
//! compute the same firing instants from the schedule. Their timers fire a
//! little apart (schedule drift, clock skew between hosts); each firing has
//! its own lock, kept for a while after the short job ends, so a late node
//! skips instead of running the job a second time. Ends by itself after
//! `FIRINGS` firings (default 6, ~18 s).

use dlock::schedule::chrono::{DateTime, TimeDelta, Utc};
use dlock::schedule::{Job, JobEvent, JobOutcome, Schedule, Scheduler};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

const PERIOD: Duration = Duration::from_secs(3);
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Firing number (1, 2, ...) of `at`, counting from `first`.
fn firing_no(first: DateTime<Utc>, at: DateTime<Utc>) -> i64 {
    (at - first).num_milliseconds() / PERIOD.as_millis() as i64 + 1
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let firings: i64 = std::env::var("FIRINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let (url, scratch) = match std::env::var("DLOCK_URL") {
        Ok(u) => (u, None),
        Err(_) => {
            let dir = std::env::temp_dir().join(format!("dlock-example-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (
                format!("sqlite://{}", dir.join("locks.db").display()),
                Some(dir),
            )
        }
    };
    println!("coordinator: {}", url.split('?').next().unwrap_or(&url));

    let schedule = Schedule::every(PERIOD)?;
    // Each node is its own "process": its own connection and owner name.
    let mut lockers = Vec::new();
    for node in NODES {
        lockers.push(dlock::connect(&url).await?.with_owner(node)?);
    }
    // Count firings from one all three schedulers surely see: connecting
    // took a moment, and the schedule may fire right now.
    let first = schedule
        .next_after(Utc::now() + TimeDelta::milliseconds(500))
        .ok_or("schedule never fires")?;
    let (tx, mut rx) = mpsc::unbounded_channel::<JobEvent>();
    let mut handles = Vec::new();
    for locker in lockers {
        let job = Job::new("daily-report", schedule.clone(), move |ctx| async move {
            let n = firing_no(first, ctx.scheduled_at);
            if n >= 1 {
                println!(
                    "[firing {n}] {} runs the job with fencing token {}",
                    ctx.owner, ctx.token
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await; // the "work"
        })
        // Lock at most 30 s (if this node dies mid-job, kept alive while it runs).
        .lock_for(Duration::from_secs(30));
        let scheduler = Scheduler::new(locker).job(job);
        let mut events = scheduler.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        handles.push(scheduler.start());
    }
    drop(tx);

    // Collect every node's report of each firing.
    let mut log: BTreeMap<i64, Vec<JobEvent>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PERIOD * (firings as u32 + 3);
    while log.get(&firings).map_or(0, Vec::len) < NODES.len() {
        let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        let n = firing_no(first, ev.scheduled_at);
        if n < 1 || n > firings {
            continue;
        }
        match &ev.outcome {
            JobOutcome::Skipped => {
                println!("[firing {n}] {} skipped: another node has it", ev.owner)
            }
            JobOutcome::Ran { .. } => {}
            other => println!("[firing {n}] {}: {other:?}", ev.owner),
        }
        log.entry(n).or_default().push(ev);
    }
    // Graceful shutdown: no new firings, running jobs finish and release.
    for h in handles {
        h.shutdown().await;
    }

    println!("\nsummary:");
    let mut ok = log.len() as i64 == firings;
    for (firing, events) in &log {
        let ran: Vec<_> = events
            .iter()
            .filter_map(|e| match e.outcome {
                JobOutcome::Ran { token, .. } => Some(format!("{} (token {token})", e.owner)),
                _ => None,
            })
            .collect();
        let verdict = if ran.len() == 1 {
            "exactly one node"
        } else {
            "WRONG"
        };
        ok &= ran.len() == 1;
        println!("  firing {firing}: ran on {} — {verdict}", ran.join(", "));
    }
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    if !ok {
        return Err("some firing did not run on exactly one node".into());
    }
    println!("every firing ran on exactly one node");
    Ok(())
}
