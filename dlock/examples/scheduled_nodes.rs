//! Three simulated nodes fire the same scheduled job every 3 seconds; the
//! lock makes each firing run on exactly one of them.
//!
//! ```sh
//! cargo run --example scheduled_nodes                # SQLite file in a temp dir
//! DLOCK_URL=postgres://... cargo run --features postgres --example scheduled_nodes
//! ```
//!
//! Each node has its own connection and owner name. Their "cron" fires a few
//! hundred milliseconds apart (schedule drift), so `lock_at_least_for` keeps
//! the lock taken after the short job ends: the late nodes skip instead of
//! running the job a second time. Ends by itself after 8 firings (~25 s).

use dlock::{LockOptions, Locker};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PERIOD_SECS: u64 = 3;
const FIRINGS: u64 = 8;

#[derive(Debug, Clone)]
enum Outcome {
    Ran { token: u64 },
    Skipped,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::var("DLOCK_URL") {
        Ok(u) => u,
        Err(_) => {
            let dir = std::env::temp_dir().join(format!("dlock-example-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            format!("sqlite://{}", dir.join("locks.db").display())
        }
    };
    println!("coordinator: {}", url.split('?').next().unwrap_or(&url));

    let log: Arc<Mutex<BTreeMap<u64, Vec<(String, Outcome)>>>> = Arc::default();
    let now = unix_secs();
    let first = (now / PERIOD_SECS + 1) * PERIOD_SECS;
    let mut nodes = Vec::new();
    for (i, node) in ["node-a", "node-b", "node-c"].into_iter().enumerate() {
        // Each node is its own "process": its own connection and owner name.
        let locker = dlock::connect(&url).await?.with_owner(node)?;
        let log = log.clone();
        // Simulated clock drift: node i's schedule fires i*150 ms late.
        let drift = Duration::from_millis(150 * i as u64);
        nodes.push(tokio::spawn(run_node(locker, node, first, drift, log)));
    }
    for n in nodes {
        n.await??;
    }

    println!("\nsummary:");
    let log = log.lock().map_err(|_| "log poisoned")?;
    let mut ok = true;
    for (firing, outcomes) in log.iter() {
        let ran: Vec<_> = outcomes
            .iter()
            .filter_map(|(n, o)| match o {
                Outcome::Ran { token } => Some(format!("{n} (token {token})")),
                Outcome::Skipped => None,
            })
            .collect();
        let verdict = if ran.len() == 1 { "exactly one node" } else { "WRONG" };
        ok &= ran.len() == 1;
        println!("  firing {firing}: ran on {} — {verdict}", ran.join(", "));
    }
    if !ok || log.len() as u64 != FIRINGS {
        return Err("some firing did not run on exactly one node".into());
    }
    println!("every firing ran on exactly one node");
    Ok(())
}

async fn run_node(
    locker: Locker,
    node: &'static str,
    first: u64,
    drift: Duration,
    log: Arc<Mutex<BTreeMap<u64, Vec<(String, Outcome)>>>>,
) -> Result<(), dlock::Error> {
    for firing in 1..=FIRINGS {
        let at = UNIX_EPOCH + Duration::from_secs(first + (firing - 1) * PERIOD_SECS) + drift;
        if let Ok(wait) = at.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        // lock at most 30 s (if this node dies mid-job), at least 2 s (absorbs drift).
        let opts = LockOptions::new(Duration::from_secs(30)).at_least(Duration::from_secs(2));
        let outcome = locker
            .run_exclusive("daily-report", opts, |ctx| async move {
                println!("[firing {firing}] {node} runs the job with fencing token {}", ctx.token);
                tokio::time::sleep(Duration::from_millis(300)).await; // the "work"
                ctx.token
            })
            .await?;
        let outcome = match outcome {
            Some(token) => Outcome::Ran { token: token.0 },
            None => {
                println!("[firing {firing}] {node} skipped: another node has it");
                Outcome::Skipped
            }
        };
        if let Ok(mut l) = log.lock() {
            l.entry(firing).or_default().push((node.to_string(), outcome));
        }
    }
    Ok(())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
