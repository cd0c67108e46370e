//! [`MemoryBackend`]: the lock contract on an in-process [`Store`].

use crate::store::{self, Row, Store};
use crate::KIND;
use dlock_core::url_options::redact_url;
use dlock_core::{
    async_trait, new_acquisition_id, BootInstant, Capabilities, Error, FencingToken, Lease,
    LockBackend, LockInfo, LockName, LockSpec, Result,
};
use std::sync::Arc;
use std::time::Duration;

/// An in-process lock store as a dlock backend. Clones share the store.
///
/// ```
/// # async fn f() -> dlock_core::Result<()> {
/// use dlock_memory::MemoryBackend;
/// let node_a = dlock_core::Locker::new(MemoryBackend::connect("memory://jobs")?).with_owner("a")?;
/// let node_b = dlock_core::Locker::new(MemoryBackend::connect("memory://jobs")?).with_owner("b")?;
/// let held = node_a.try_lock("report", std::time::Duration::from_secs(60)).await?;
/// assert!(held.is_some());
/// assert!(node_b.try_lock("report", std::time::Duration::from_secs(60)).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    store: Arc<Store>,
    /// The store's name; `None` for a private store.
    name: Option<String>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("store", &self.name.as_deref().unwrap_or("(private)"))
            .field("available", &self.store.is_available())
            .finish()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A backend on a private store of its own (and of its clones).
    pub fn new() -> Self {
        MemoryBackend {
            store: Arc::default(),
            name: None,
        }
    }

    /// A backend on the store called `name`, shared by every backend of
    /// this process that names it. Named stores live as long as the
    /// process, so a lock's fencing tokens keep growing across reconnects.
    pub fn shared(name: &str) -> Self {
        MemoryBackend {
            store: store::named(name),
            name: Some(name.to_string()),
        }
    }

    /// `memory://NAME` connects to the shared store `NAME`; `memory://`
    /// makes a private store. The URL takes no options. Connecting to a
    /// store made unavailable is [`Error::Connect`].
    pub fn connect(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::InvalidConfig(format!("memory URL {shown:?}: {e}")))?;
        if parsed.scheme() != "memory" {
            return Err(Error::InvalidConfig(format!(
                "{shown:?} is not a memory:// URL"
            )));
        }
        if let Some((key, _)) = parsed.query_pairs().next() {
            return Err(Error::InvalidConfig(format!(
                "memory URL {shown:?}: unknown option {key:?}; memory:// takes no options"
            )));
        }
        if !matches!(parsed.path(), "" | "/")
            || !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.port().is_some()
        {
            return Err(Error::InvalidConfig(format!(
                "memory URL {shown:?}: write memory://NAME (a store name only) or memory:// (a private store)"
            )));
        }
        let backend = match parsed.host_str() {
            None | Some("") => Self::new(),
            Some(name) => Self::shared(name),
        };
        if !backend.store.is_available() {
            return Err(Error::connect(
                KIND,
                url,
                "the store was made unavailable with MemoryBackend::set_available(false)",
                None,
            ));
        }
        Ok(backend)
    }

    /// Makes the store answer every call with an error (`false`), as a
    /// coordinator that went away would, or answer again (`true`). It
    /// applies to every backend on this store. Locks keep their state.
    pub fn set_available(&self, available: bool) {
        self.store.set_available(available);
    }

    /// The store's name; `None` for a private store.
    pub fn store_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn answering(&self, op: &'static str) -> Result<()> {
        if self.store.is_available() {
            return Ok(());
        }
        Err(Error::backend_msg(
            KIND,
            op,
            format!(
                "the in-memory store {} is unavailable: MemoryBackend::set_available(false) was called",
                self.name.as_deref().unwrap_or("(private)")
            ),
        ))
    }
}

/// The error for a lease that is no longer the valid holder.
fn lost(name: &LockName) -> Error {
    Error::lost(
        name,
        "the lease expired, was released or was taken over by another owner",
    )
}

#[async_trait]
impl LockBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::new();
        // One clock, read under the table's lock: exact, bar scheduling.
        c.lease_granularity = Duration::from_nanos(1);
        c.expiry_slack = Duration::from_millis(20);
        c.at_least_slack = Duration::from_millis(20);
        c.release_notifies_waiters = true;
        // The store lives and dies with this process.
        c.at_least_survives_exit = false;
        c.shared_across_processes = false;
        c.networked = false;
        c.server_clock = false;
        c.poll_interval = Duration::from_millis(50);
        c.list = true;
        c
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.capabilities().check_spec(KIND, spec)?;
        self.answering("acquire")?;
        let id = new_acquisition_id();
        let sent = BootInstant::now();
        let mut rows = self.store.rows();
        let now = BootInstant::now();
        let until = now.saturating_add(spec.at_most);
        let token = match rows.get(&spec.name) {
            Some(row) if row.taken(now) => return Ok(None),
            // The row outlives its holders, so the token keeps growing.
            Some(row) => FencingToken(row.token.0.saturating_add(1)),
            None => FencingToken(1),
        };
        rows.insert(
            spec.name.clone(),
            Row {
                owner: spec.owner.clone(),
                id: Some(id.clone()),
                token,
                locked_at: now,
                until,
            },
        );
        Ok(Some(Lease::granted(spec, id, token, sent, String::new())))
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.capabilities()
            .check_lease(KIND, "extension", lock_for)?;
        self.answering("extend")?;
        let sent = BootInstant::now();
        let mut rows = self.store.rows();
        let now = BootInstant::now();
        match rows.get_mut(&lease.name) {
            Some(row) if row.held_by(&lease.id, now) => {
                row.until = now.saturating_add(lock_for);
                Ok(lease.extended(lock_for, sent))
            }
            _ => Err(lost(&lease.name)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.answering("release")?;
        let mut rows = self.store.rows();
        let now = BootInstant::now();
        match rows.get_mut(&lease.name) {
            Some(row) if row.held_by(&lease.id, now) => {
                // Taken until `at_least` after the acquisition, by nobody's lease.
                row.until = row.locked_at.saturating_add(lease.at_least).max(now);
                row.id = None;
                drop(rows);
                self.store.released.notify_waiters();
                Ok(())
            }
            _ => Err(lost(&lease.name)),
        }
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        self.answering("inspect")?;
        let rows = self.store.rows();
        let now = BootInstant::now();
        Ok(rows
            .get(name)
            .filter(|row| row.taken(now))
            .map(|row| row.info(name, now)))
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        self.answering("list")?;
        let rows = self.store.rows();
        let now = BootInstant::now();
        Ok(rows
            .iter()
            .filter(|(_, row)| row.taken(now))
            .map(|(name, row)| row.info(name, now))
            .collect())
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.answering("force release")?;
        let mut rows = self.store.rows();
        let now = BootInstant::now();
        match rows.get_mut(name) {
            Some(row) if row.taken(now) => {
                row.until = now;
                row.id = None;
                drop(rows);
                self.store.released.notify_waiters();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        self.answering("wait")?;
        // Registered before the table is read, so a release in between
        // still wakes this waiter.
        let released = self.store.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let free_in = {
            let rows = self.store.rows();
            let now = BootInstant::now();
            match rows.get(name) {
                Some(row) if row.taken(now) => row.until.saturating_duration_since(now),
                _ => return Ok(()),
            }
        };
        let _ = tokio::time::timeout(free_in.min(max_wait), released).await;
        Ok(())
    }
}
