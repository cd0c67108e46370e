//! A migration once per cluster: every node starts at the same time and
//! wants the schema up to date before serving. One migrates; the others wait
//! for the lock, then find the schema current and go on.
//!
//! ```sh
//! cargo run --example migration                      # SQLite file in a temp dir
//! DLOCK_URL=zk://127.0.0.1:2181 cargo run --features zookeeper --example migration
//! ```
//!
//! Waiting (not skipping) is the point here: no node may serve before the
//! schema is migrated. The schema version lives in a file standing in for
//! the database's own version table; the migrating node records its
//! fencing token with each step.

use dlock::Locker;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIGRATIONS: &[&str] = &[
    "create table orders",
    "add column orders.currency",
    "create index orders_by_customer",
];

fn schema_version(path: &Path) -> std::io::Result<usize> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

async fn start_node(
    node: &'static str,
    locker: Locker,
    schema: PathBuf,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    // Lease 30 s, kept alive while migrating; wait up to 60 s for another
    // node's migration.
    let guard = locker
        .acquire("schema-migration")
        .lock_for(Duration::from_secs(30))
        .wait(Duration::from_secs(60))
        .lock()
        .await?
        .ok_or("another node migrated for over a minute; giving up")?;
    let from = schema_version(&schema)?;
    let migrated = from < MIGRATIONS.len();
    if migrated {
        println!(
            "{node}: schema at version {from}, migrating (token {})",
            guard.token()
        );
        for (i, step) in MIGRATIONS.iter().enumerate().skip(from) {
            if !guard.is_held() {
                return Err("lost the migration lock; stopping".into());
            }
            tokio::time::sleep(Duration::from_millis(400)).await; // run the DDL
            let line = format!("{} {step} (token {})\n", i + 1, guard.token());
            let mut text = std::fs::read_to_string(&schema).unwrap_or_default();
            text.push_str(&line);
            std::fs::write(&schema, text)?;
            println!("{node}:   applied {}: {step}", i + 1);
        }
    } else {
        println!("{node}: schema already at version {from}, nothing to do");
    }
    guard.release().await?;
    println!("{node}: serving");
    Ok(migrated)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let scratch = std::env::temp_dir().join(format!("dlock-migration-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let schema = scratch.join("schema_version.txt");
    let url = std::env::var("DLOCK_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", scratch.join("locks.db").display()));

    let mut nodes = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let locker = dlock::connect(&url).await?.with_owner(node)?;
        nodes.push(tokio::spawn(start_node(node, locker, schema.clone())));
    }
    let mut migrators = 0;
    for n in nodes {
        migrators += usize::from(n.await??);
    }
    let version = schema_version(&schema)?;
    let _ = std::fs::remove_dir_all(&scratch);
    if migrators != 1 || version != MIGRATIONS.len() {
        return Err(format!("{migrators} nodes migrated, schema at {version}").into());
    }
    println!("schema at version {version}, migrated by exactly one node");
    Ok(())
}
