//! The lock table of one in-process store, and the registry of named stores.
//!
//! One mutex guards the table: every operation is one atomic step under it,
//! as one statement is on a SQL coordinator. The clock is `BootInstant`,
//! read under the lock, so no two operations see time run backwards.

use dlock_core::{BootInstant, FencingToken, LockInfo, LockName};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;
use tokio::sync::Notify;

/// One lock's row. It outlives its holders so that tokens keep growing.
#[derive(Debug)]
pub(crate) struct Row {
    /// Owner of the latest acquisition.
    pub owner: String,
    /// Acquisition id of the latest acquisition; `None` once released
    /// (the row may stay taken until `at_least` ends, but by nobody's lease).
    pub id: Option<String>,
    /// Token of the latest acquisition.
    pub token: FencingToken,
    /// When it was taken, by the store's clock.
    pub locked_at: BootInstant,
    /// When it is free again, by the store's clock.
    pub until: BootInstant,
}

impl Row {
    /// Whether the row still holds the lock at `now`.
    pub fn taken(&self, now: BootInstant) -> bool {
        self.until > now
    }

    /// Whether `id`'s lease is the valid holder at `now`.
    pub fn held_by(&self, id: &str, now: BootInstant) -> bool {
        self.taken(now) && self.id.as_deref() == Some(id)
    }

    /// What `inspect` reports, with wall-clock times derived from the
    /// store's clock at `now`.
    pub fn info(&self, name: &LockName, now: BootInstant) -> LockInfo {
        let wall_now = SystemTime::now();
        let wall = |at: BootInstant| {
            let ahead = at.saturating_duration_since(now);
            let behind = now.saturating_duration_since(at);
            wall_now
                .checked_add(ahead)
                .and_then(|t| t.checked_sub(behind))
        };
        LockInfo {
            name: name.clone(),
            owner: self.owner.clone(),
            id: self.id.clone(),
            token: self.token,
            locked_at: wall(self.locked_at),
            lock_until: wall(self.until),
        }
    }
}

/// One store: the lock table, who waits on it, and whether it answers.
#[derive(Debug, Default)]
pub(crate) struct Store {
    rows: Mutex<HashMap<LockName, Row>>,
    /// Woken whenever a lock is released or force-released.
    pub released: Notify,
    /// Set by `set_available(false)`.
    unavailable: AtomicBool,
}

impl Store {
    /// The table, locked. A poisoned mutex (a panic while it was held)
    /// leaves a consistent table: every change is one assignment.
    pub fn rows(&self) -> MutexGuard<'_, HashMap<LockName, Row>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every call on this store fail (`false`) or answer (`true`).
    pub fn set_available(&self, available: bool) {
        self.unavailable.store(!available, Ordering::SeqCst);
    }

    /// Whether the store answers calls.
    pub fn is_available(&self) -> bool {
        !self.unavailable.load(Ordering::SeqCst)
    }
}

/// The named stores of this process. They live as long as the process, so
/// a name's tokens keep growing however often backends connect to it.
fn registry() -> &'static Mutex<HashMap<String, Arc<Store>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<Store>>>> = OnceLock::new();
    STORES.get_or_init(Mutex::default)
}

/// The store called `name`, created on first use.
pub(crate) fn named(name: &str) -> Arc<Store> {
    let mut stores = registry().lock().unwrap_or_else(|p| p.into_inner());
    stores.entry(name.to_string()).or_default().clone()
}
