//! A singleton worker with a hot standby: two worker processes campaign in
//! the `singleton-worker` election; the leader works, the other waits. The
//! example kills the leader with SIGKILL (no resignation, no goodbye); the
//! standby is elected once the dead leader's 2 s lease has run out, in a
//! greater epoch. (On a coordinator with a longer shortest lease, such as
//! Consul's 10 s, the lease and the takeover are that much longer.)
//!
//! ```sh
//! cargo run --example singleton_worker               # SQLite file in a temp dir
//! DLOCK_URL=postgres://... cargo run --features postgres --example singleton_worker
//! ```
//!
//! The same binary is the supervisor (no arguments) and a worker
//! (`singleton_worker worker NAME`).

use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A worker process: campaign to lead, then work until leadership is lost.
async fn worker(name: String, url: String) -> Result<(), BoxError> {
    let locker = dlock::connect(&url).await?.with_owner(name.clone())?;
    // The leader's lease, kept alive every third of it while it leads.
    let election = locker
        .election("singleton-worker")?
        .lease(lease_for(&locker));
    // Safety net for the example: a worker never outlives its supervisor by long.
    let give_up = Instant::now() + Duration::from_secs(40) + lease_for(&locker) * 4;
    while Instant::now() < give_up {
        println!("{name}: standing by");
        let Ok(leading) = tokio::time::timeout(Duration::from_secs(20), election.campaign()).await
        else {
            continue;
        };
        let leading = leading?;
        println!("ACTIVE {name} {}", leading.epoch());
        let lost = leading.lost();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {
                    println!("{name}: working (epoch {})", leading.epoch());
                }
                reason = lost.wait() => {
                    println!("{name}: no longer leading ({reason}); stopping work");
                    break;
                }
            }
        }
    }
    Ok(())
}

/// 2 s, or the shortest lease the coordinator honours.
fn lease_for(locker: &dlock::Locker) -> Duration {
    locker
        .backend()
        .capabilities()
        .test_lease(Duration::from_secs(2))
}

fn spawn_worker(
    name: &str,
    url: &str,
    tx: mpsc::UnboundedSender<String>,
) -> Result<Child, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", name])
        .env("DLOCK_URL", url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(child)
}

/// Prints worker lines until one says `ACTIVE`; returns (name, epoch).
async fn until_active(
    rx: &mut mpsc::UnboundedReceiver<String>,
    within: Duration,
) -> Result<(String, u64), BoxError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| "no worker became active in time")?
            .ok_or("workers gone")?;
        if let Some(rest) = line.strip_prefix("ACTIVE ") {
            let (name, token) = rest.split_once(' ').ok_or("bad ACTIVE line")?;
            println!("{name}: became the active worker (epoch {token})");
            return Ok((name.to_string(), token.parse()?));
        }
        println!("{line}");
    }
}

/// Prints worker lines for `d`.
async fn echo_for(rx: &mut mpsc::UnboundedReceiver<String>, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        println!("{line}");
    }
}

async fn supervise() -> Result<(), BoxError> {
    let scratch = std::env::temp_dir().join(format!("dlock-singleton-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let url = std::env::var("DLOCK_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", scratch.join("locks.db").display()));
    let caps = dlock::connect(&url).await?.backend().capabilities();
    let lease = caps.test_lease(Duration::from_secs(2));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut a = spawn_worker("worker-a", &url, tx.clone())?;
    let mut b = spawn_worker("worker-b", &url, tx)?;

    let (active, first_token) = until_active(&mut rx, Duration::from_secs(30)).await?;
    echo_for(&mut rx, Duration::from_millis(1200)).await;
    let (victim, survivor) = if active == "worker-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.kill().await?; // SIGKILL: no release
    let killed = Instant::now();
    println!(
        "supervisor: killed {active} with SIGKILL; its lease runs out within {}",
        humantime_secs(lease)
    );

    let takeover = lease * 3 + caps.expiry_slack + Duration::from_secs(10);
    let (next, next_token) = until_active(&mut rx, takeover).await?;
    println!(
        "supervisor: {next} took over {:.1} s after the kill, epoch {first_token} -> {next_token}",
        killed.elapsed().as_secs_f64()
    );
    echo_for(&mut rx, Duration::from_millis(700)).await;
    survivor.kill().await?;
    let _ = std::fs::remove_dir_all(&scratch);
    if next == active || next_token <= first_token {
        return Err("the standby did not take over in a greater epoch".into());
    }
    println!("the standby took over after its holder died");
    Ok(())
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => {
            let name = args.get(2).cloned().unwrap_or_else(|| "worker".into());
            let url = std::env::var("DLOCK_URL").map_err(|_| "worker needs DLOCK_URL")?;
            worker(name, url).await
        }
        _ => supervise().await,
    }
}
