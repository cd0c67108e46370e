//! [`ZookeeperBackend`]: the [`LockBackend`] on one ZooKeeper session at a time.

use crate::config::ZkConfig;
use crate::error::KIND;
use crate::session::{lock, Session};
use crate::{acquire, admin, loss, release, wait};
use dlock_core::{
    async_trait, Capabilities, Lease, LockBackend, LockInfo, LockName, LockSpec, Result,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Locks in ZooKeeper: ephemeral sequential nodes, fencing by `czxid`,
/// waiting by a watch on the predecessor only.
///
/// URL: `zk://[user:password@]host:port[,host:port...][/root]?session_timeout=10s`
/// (see [`ZkConfig`]). One backend keeps one session; when it expires, every
/// lease on it is reported lost and the next call opens a new session.
///
/// ```no_run
/// # async fn f() -> dlock_core::Result<()> {
/// let backend = dlock_zookeeper::ZookeeperBackend::connect("zk://127.0.0.1:2181/myapp").await?;
/// let locker = dlock_core::Locker::new(backend);
/// # Ok(()) }
/// ```
pub struct ZookeeperBackend {
    cfg: Arc<ZkConfig>,
    current: Mutex<Option<Arc<Session>>>,
    opening: tokio::sync::Mutex<()>,
    negotiated_ms: AtomicU64,
}

impl std::fmt::Debug for ZookeeperBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperBackend")
            .field("config", &self.cfg)
            .field("session", &self.session_id().map(|id| format!("{id:#x}")))
            .finish()
    }
}

impl ZookeeperBackend {
    /// Connects to the ensemble named by `url`, creating the root path when
    /// missing, and checks that the credentials may read it.
    ///
    /// Fails within `connect_timeout` when no server answers.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &dlock_core::ConnectOptions::new()).await
    }

    /// Like [`ZookeeperBackend::connect`], with `options` taking precedence
    /// over the URL (digest credentials kept out of it).
    pub async fn connect_with(url: &str, options: &dlock_core::ConnectOptions) -> Result<Self> {
        let mut cfg = ZkConfig::parse(url)?;
        cfg.apply(options)?;
        Self::with_config(cfg).await
    }

    /// Connects with an already parsed configuration.
    pub async fn with_config(cfg: ZkConfig) -> Result<Self> {
        cfg.check_timeouts()?;
        let cfg = Arc::new(cfg);
        let session = Session::open(cfg.clone()).await?;
        let b = ZookeeperBackend {
            negotiated_ms: AtomicU64::new(millis(session.timeout)),
            cfg,
            current: Mutex::new(Some(session)),
            opening: tokio::sync::Mutex::new(()),
        };
        Ok(b)
    }

    /// The configuration in force.
    pub fn config(&self) -> &ZkConfig {
        &self.cfg
    }

    /// The session timeout the server granted (it clamps the requested one).
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.negotiated_ms.load(Ordering::Relaxed))
    }

    /// The current session's id, if one is open.
    pub fn session_id(&self) -> Option<i64> {
        lock(&self.current).as_ref().map(|s| s.id)
    }

    /// The `zookeeper-client` handle of the current session, for work dlock
    /// does not wrap (and for benchmarks against raw requests). Nodes you
    /// create with it live and die with the same session as the locks.
    pub async fn client(&self) -> Result<zookeeper_client::Client> {
        self.session().await?.client()
    }

    fn current(&self) -> Option<Arc<Session>> {
        lock(&self.current).clone()
    }

    /// The live session, opening a new one when the last one ended.
    async fn session(&self) -> Result<Arc<Session>> {
        if let Some(s) = self.current().filter(|s| !s.is_dead()) {
            return Ok(s);
        }
        let _one = self.opening.lock().await;
        if let Some(s) = self.current().filter(|s| !s.is_dead()) {
            return Ok(s);
        }
        let s = Session::open(self.cfg.clone()).await?;
        self.negotiated_ms
            .store(millis(s.timeout), Ordering::Relaxed);
        *lock(&self.current) = Some(s.clone());
        Ok(s)
    }
}

impl Drop for ZookeeperBackend {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.current).take() {
            s.kill("the backend was dropped".into());
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl LockBackend for ZookeeperBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// - `min_lease` 100 ms, granularity 1 ms (ZooKeeper stamps milliseconds),
    ///   `max_lease` 100 years.
    /// - `expiry_slack` 1.5 × the negotiated session timeout: a holder that
    ///   dies frees its lock when the server expires its session, which is
    ///   the session timeout after it was last heard from, rounded up to the
    ///   server's tick.
    /// - Waiters are woken by a watch on their predecessor.
    /// - `at_least` survives the holder's exit after release: the marker is
    ///   written atomically with the node's deletion and timed by the leader.
    /// - `list`: the root's children, each judged like `inspect`.
    fn capabilities(&self) -> Capabilities {
        let t = self.session_timeout();
        let mut c = Capabilities::new();
        c.min_lease = Duration::from_millis(100);
        c.max_lease = Some(Duration::from_secs(100 * 365 * 86_400));
        c.lease_granularity = Duration::from_millis(1);
        c.expiry_slack = t + t / 2;
        // The at_least marker is compared with a server timestamp (ms).
        c.at_least_slack = Duration::from_millis(500);
        c.release_notifies_waiters = true;
        c.at_least_survives_exit = true;
        c.networked = true;
        c.poll_interval = Duration::from_millis(200);
        c.server_clock = true;
        c.list = true;
        c
    }

    async fn try_acquire(&self, spec: &LockSpec) -> Result<Option<Lease>> {
        self.capabilities().check_spec(KIND, spec)?;
        let dir = crate::nodes::LockPaths::new(&self.cfg.root, &spec.name).dir;
        let attempt = || async {
            let session = self.session().await?;
            let r = match session.take_ticket(&dir) {
                Some(ticket) => acquire::claim(&session, spec, ticket).await,
                None => acquire::fresh(&session, spec).await,
            };
            Ok::<_, dlock_core::Error>((session, r))
        };
        let (session, r) = attempt().await?;
        // A session that expired while nothing was held on it (this process
        // was stopped or starved past the session timeout while waiting)
        // costs an acquire nothing: the ensemble removed its nodes with it.
        // Ask again once, on a new session, rather than report "the clock
        // moved" as a coordinator failure.
        match &r {
            Err(e) if session_ended(&session, e) => {
                session.kill("the ZooKeeper session expired".into());
                attempt().await?.1
            }
            _ => r,
        }
    }

    async fn extend(&self, lease: &Lease, lock_for: Duration) -> Result<Lease> {
        self.capabilities()
            .check_lease(KIND, "extension", lock_for)?;
        release::extend(self.current(), lease, lock_for).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        release::release(self.current(), lease).await
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LockInfo>> {
        admin::inspect(self.session().await?, name).await
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        admin::list(self.session().await?).await
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        admin::force_release(self.session().await?, name).await
    }

    async fn wait_for_release(&self, name: &LockName, max_wait: Duration) -> Result<()> {
        wait::wait_for_release(self.session().await?, name, max_wait).await
    }

    fn loss_signal(&self, lease: &Lease) -> Option<BoxFuture<'static, String>> {
        let fallback = |why: String| Some(futures::future::ready(why).boxed());
        let Some((sid, path)) = acquire::parse_handle(lease) else {
            return fallback("unreadable lease handle".into());
        };
        match self.current() {
            Some(s) if s.id == sid => Some(loss::signal(&s, path, &lease.id, lease.token.0)),
            _ => fallback(format!(
                "the ZooKeeper session {sid:#x} that held the lock has ended"
            )),
        }
    }

    fn validity_bound(&self, lease: &Lease) -> Option<dlock_core::ValidityBound> {
        let past = lease.acquired_at;
        let ended = || -> Option<dlock_core::ValidityBound> { Some(Arc::new(move || past)) };
        let Some((sid, _)) = acquire::parse_handle(lease) else {
            return ended();
        };
        match self.current() {
            Some(s) if s.id == sid => Some(s.validity_bound()),
            _ => ended(),
        }
    }
}

/// Connects and returns the backend behind the trait object `dlock::connect` uses.
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    connect_with(url, &dlock_core::ConnectOptions::new()).await
}

/// Like [`connect`], with `options` taking precedence over the URL.
pub async fn connect_with(
    url: &str,
    options: &dlock_core::ConnectOptions,
) -> Result<Arc<dyn LockBackend>> {
    Ok(Arc::new(
        ZookeeperBackend::connect_with(url, options).await?,
    ))
}

/// Whether an acquire failed because its session had ended (expired or
/// closed at the server, or already abandoned by the monitor), rather than
/// for a reason a new session would meet too.
fn session_ended(session: &Session, e: &dlock_core::Error) -> bool {
    use std::error::Error as _;
    if session.is_dead() {
        return true;
    }
    if let Ok(client) = session.client() {
        if matches!(
            client.state(),
            zookeeper_client::SessionState::Expired | zookeeper_client::SessionState::Closed
        ) {
            return true;
        }
    }
    matches!(
        e.source()
            .and_then(|s| s.downcast_ref::<zookeeper_client::Error>()),
        Some(zookeeper_client::Error::SessionExpired | zookeeper_client::Error::ClientClosed)
    )
}
