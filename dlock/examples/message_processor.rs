//! A message processor loop: three nodes share one queue whose messages must
//! be handled one at a time and in order. The node holding the
//! `orders-consumer` lock drains a batch, then lets go so another can take over.
//!
//! ```sh
//! cargo run --example message_processor              # SQLite file in a temp dir
//! DLOCK_URL=etcd://127.0.0.1:2379 cargo run --features etcd --example message_processor
//! ```
//!
//! Each write carries the fencing token of the lease it was made under, and
//! the store rejects a token older than the newest it has seen: a consumer
//! that stalled past its lease cannot write after its successor has.

use dlock::{FencingToken, Locker};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MESSAGES: u32 = 24;
const BATCH: usize = 5;

/// The downstream store, fenced by token.
#[derive(Default)]
struct Store {
    newest_token: u64,
    applied: Vec<(u32, &'static str, u64)>,
}

impl Store {
    fn apply(&mut self, msg: u32, node: &'static str, token: FencingToken) -> Result<(), String> {
        if token.get() < self.newest_token {
            return Err(format!(
                "rejected message {msg} from {node}: token {token} is older than {}",
                self.newest_token
            ));
        }
        self.newest_token = token.get();
        self.applied.push((msg, node, token.get()));
        Ok(())
    }
}

type Queue = Arc<Mutex<VecDeque<u32>>>;

async fn consume(
    node: &'static str,
    locker: Locker,
    queue: Queue,
    store: Arc<Mutex<Store>>,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    // 2 s, or the shortest lease this coordinator honours (Consul: 10 s).
    let lease = locker
        .backend()
        .capabilities()
        .test_lease(Duration::from_secs(2));
    let mut handled = 0;
    loop {
        if queue.lock().map_err(|_| "queue poisoned")?.is_empty() {
            return Ok(handled);
        }
        // Wait a little for the current consumer to let go.
        let Some(guard) = locker
            .acquire("orders-consumer")
            .lock_for(lease)
            .wait(Duration::from_millis(500))
            .lock()
            .await?
        else {
            continue;
        };
        let token = guard.token();
        let mut batch = Vec::new();
        for _ in 0..BATCH {
            // Never act on a lease that can no longer be proven valid.
            if !guard.is_held() {
                break;
            }
            let Some(msg) = queue.lock().map_err(|_| "queue poisoned")?.pop_front() else {
                break;
            };
            tokio::time::sleep(Duration::from_millis(30)).await; // the work
            store
                .lock()
                .map_err(|_| "store poisoned")?
                .apply(msg, node, token)?;
            batch.push(msg);
            handled += 1;
        }
        if !batch.is_empty() {
            println!("{node} (token {token}) processed {batch:?}");
        }
        guard.release().await?;
        // Other duties; another node may take the next batch.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (url, scratch) = coordinator_url()?;
    let queue: Queue = Arc::new(Mutex::new((1..=MESSAGES).collect()));
    let store: Arc<Mutex<Store>> = Arc::default();
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let locker = dlock::connect(&url).await?.with_owner(node)?;
        nodes.push(tokio::spawn(consume(
            node,
            locker,
            queue.clone(),
            store.clone(),
        )));
    }
    let mut per_node = BTreeMap::new();
    for (i, n) in nodes.into_iter().enumerate() {
        per_node.insert(["node-a", "node-b", "node-c"][i], n.await??);
    }
    let store = store.lock().map_err(|_| "store poisoned")?;
    let order: Vec<u32> = store.applied.iter().map(|a| a.0).collect();
    println!("messages per node: {per_node:?}");
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    if order != (1..=MESSAGES).collect::<Vec<_>>() {
        return Err(format!("messages not processed exactly once in order: {order:?}").into());
    }
    println!("all {MESSAGES} messages processed exactly once, in order, one consumer at a time");
    Ok(())
}

/// `DLOCK_URL`, or a SQLite file in a fresh temporary directory (returned
/// too, to remove at the end).
fn coordinator_url() -> std::io::Result<(String, Option<std::path::PathBuf>)> {
    if let Ok(url) = std::env::var("DLOCK_URL") {
        return Ok((url, None));
    }
    let dir = std::env::temp_dir().join(format!("dlock-messages-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok((
        format!("sqlite://{}", dir.join("locks.db").display()),
        Some(dir),
    ))
}
