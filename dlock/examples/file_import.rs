//! File import: three workers watch one inbox; each file is imported by
//! exactly one of them. The lock is per file (`import:<file name>`), so the
//! workers import different files in parallel.
//!
//! ```sh
//! cargo run --example file_import                    # SQLite file in a temp dir
//! DLOCK_URL=consul://127.0.0.1:8500 cargo run --features consul --example file_import
//! ```
//!
//! The lock makes the check-then-act safe: under it, a worker checks the
//! file is still in the inbox, imports it and moves it to `done/`. A worker
//! that gets the lock later finds the file gone and does nothing.

use dlock::Locker;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FILES: usize = 9;

struct Worker {
    name: &'static str,
    locker: Locker,
    done_dir: PathBuf,
    imported: Arc<Mutex<Vec<(String, &'static str)>>>,
}

impl Worker {
    /// `Ok(Some(Some(rows)))`: imported here; `Ok(Some(None))`: another
    /// worker had already imported it; `Ok(None)`: another worker holds it now.
    #[dlock::try_lock(name = format!("import:{}", file_name(path)), lock_for = "1m",
                      locker = self.locker)]
    async fn import(&self, path: &Path) -> std::io::Result<Option<usize>> {
        // Checked under the lock: still there?
        let Ok(text) = tokio::fs::read_to_string(path).await else {
            return Ok(None);
        };
        let rows = text.lines().skip(1).count(); // "insert" them
        tokio::time::sleep(Duration::from_millis(150)).await;
        tokio::fs::rename(path, self.done_dir.join(file_name(path))).await?;
        let token = dlock::current_lock().map(|l| l.token.get()).unwrap_or(0);
        println!(
            "{} imported {} ({rows} rows, token {token})",
            self.name,
            file_name(path)
        );
        if let Ok(mut v) = self.imported.lock() {
            v.push((file_name(path), self.name));
        }
        Ok(Some(rows))
    }

    async fn run(self, inbox: PathBuf) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        loop {
            let mut files = Vec::new();
            let mut entries = tokio::fs::read_dir(&inbox).await?;
            while let Some(e) = entries.next_entry().await? {
                if e.file_type().await?.is_file() {
                    files.push(e.path());
                }
            }
            if files.is_empty() {
                return Ok(());
            }
            files.sort();
            for f in files {
                match self.import(&f).await? {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        eprintln!("{}: importing {} failed: {e}", self.name, f.display())
                    }
                    None => {} // another worker is on it
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let scratch = std::env::temp_dir().join(format!("dlock-import-{}", std::process::id()));
    let inbox = scratch.join("inbox");
    let done = scratch.join("done");
    std::fs::create_dir_all(&inbox)?;
    std::fs::create_dir_all(&done)?;
    for i in 1..=FILES {
        let rows: String = (0..i).map(|r| format!("{r},item-{r}\n")).collect();
        std::fs::write(
            inbox.join(format!("orders-{i:02}.csv")),
            format!("id,item\n{rows}"),
        )?;
    }
    let url = std::env::var("DLOCK_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", scratch.join("locks.db").display()));

    let imported = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for name in ["worker-1", "worker-2", "worker-3"] {
        let w = Worker {
            name,
            locker: dlock::connect(&url).await?.with_owner(name)?,
            done_dir: done.clone(),
            imported: imported.clone(),
        };
        workers.push(tokio::spawn(w.run(inbox.clone())));
    }
    for w in workers {
        w.await??;
    }
    let mut imported = imported.lock().map_err(|_| "poisoned")?.clone();
    imported.sort();
    let _ = std::fs::remove_dir_all(&scratch);
    let names: Vec<_> = imported.iter().map(|(f, _)| f.clone()).collect();
    let mut unique = names.clone();
    unique.dedup();
    if names.len() != FILES || unique.len() != FILES {
        return Err(format!("expected each of {FILES} files imported once: {imported:?}").into());
    }
    println!("all {FILES} files imported exactly once");
    Ok(())
}
