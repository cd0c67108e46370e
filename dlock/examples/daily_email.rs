//! The daily e-mail job: `#[dlock::try_lock]` on the job, a cron schedule
//! to fire it, two nodes running the same code; each firing sends once.
//!
//! ```sh
//! cargo run --example daily_email                      # SQLite file in a temp dir
//! DLOCK_URL=postgres://... cargo run --features postgres --example daily_email
//! ```
//!
//! In production the schedule is `59 59 8 * * * in Europe/Berlin` (08:59:59
//! Berlin time, every day) and one node is one process:
//!
//! ```ignore
//! dlock::set_default_locker(dlock::connect(&url).await?);
//!
//! #[dlock::try_lock(name = "emailLock", lock_for = "10m", at_least = "30s")]
//! async fn send_daily_emails() -> Result<usize, MailError> { ... }
//! ```
//!
//! Here both nodes live in one process (so each needs its own locker:
//! `locker = self.locker`) and the schedule fires every 4 seconds
//! (`EMAIL_SCHEDULE` overrides it) for `EMAIL_FIRINGS` firings (default 3).

use dlock::schedule::Schedule;
use dlock::Locker;
use std::time::Duration;

/// What the mail relay may answer.
#[derive(Debug)]
struct MailError(String);

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mail relay: {}", self.0)
    }
}

struct Mailer {
    node: &'static str,
    locker: Locker,
}

impl Mailer {
    /// Runs on one node per firing. The return type becomes
    /// `dlock::Result<Option<Result<usize, MailError>>>`: `Ok(None)` means
    /// another node holds `emailLock` and is sending.
    #[dlock::try_lock(name = "emailLock", lock_for = "10m", at_least = "1s",
                      locker = self.locker)]
    async fn send_daily_emails(&self) -> Result<usize, MailError> {
        let token = dlock::current_lock().map(|l| l.token.get()).unwrap_or(0);
        println!(
            "  {} sends the daily e-mails (fencing token {token})",
            self.node
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // talk to the relay
        Ok(3)
    }
}

async fn node(mailer: Mailer, schedule: Schedule, firings: usize) -> dlock::Result<usize> {
    let mut sent = 0;
    for _ in 0..firings {
        let Some(at) = schedule.sleep_until_next().await else {
            break;
        };
        match mailer.send_daily_emails().await? {
            Some(Ok(n)) => {
                println!(
                    "[{}] {}: sent {n} e-mails",
                    at.format("%H:%M:%S"),
                    mailer.node
                );
                sent += n;
            }
            Some(Err(e)) => eprintln!("[{}] {}: {e}", at.format("%H:%M:%S"), mailer.node),
            None => println!(
                "[{}] {}: skipped, another node is sending",
                at.format("%H:%M:%S"),
                mailer.node
            ),
        }
    }
    Ok(sent)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, scratch) = coordinator_url()?;
    let schedule: Schedule = std::env::var("EMAIL_SCHEDULE")
        .unwrap_or_else(|_| "*/4 * * * * * in Europe/Berlin".into())
        .parse()?;
    let firings: usize = std::env::var("EMAIL_FIRINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!("schedule: {schedule}, {firings} firings, two nodes");

    let mut tasks = Vec::new();
    for name in ["node-a", "node-b"] {
        let locker = dlock::connect(&url).await?.with_owner(name)?;
        let mailer = Mailer { node: name, locker };
        tasks.push(tokio::spawn(node(mailer, schedule.clone(), firings)));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    println!("{total} e-mails sent in {firings} firings: each firing sent once");
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    if total != 3 * firings {
        return Err("a firing sent twice or not at all".into());
    }
    Ok(())
}

/// `DLOCK_URL`, or a SQLite file in a fresh temporary directory (returned
/// too, to remove at the end).
fn coordinator_url() -> std::io::Result<(String, Option<std::path::PathBuf>)> {
    if let Ok(url) = std::env::var("DLOCK_URL") {
        return Ok((url, None));
    }
    let dir = std::env::temp_dir().join(format!("dlock-daily-email-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok((
        format!("sqlite://{}", dir.join("locks.db").display()),
        Some(dir),
    ))
}
