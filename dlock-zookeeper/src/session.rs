//! One ZooKeeper session and everything that lives and dies with it: the
//! leases taken on it, their `lock_at_most_for` timers, parked waiting
//! tickets, and nodes whose removal must be retried.
//!
//! Liveness: the leader expires a session that it has not been heard from
//! for its timeout `T`. A client cut off from the leader only learns this
//! when it reconnects, so a guard must not believe its lock longer than the
//! session can be *proven* alive. Only a request that went through the
//! leader is proof: writes (create, set_data, delete, multi) and `sync`. A
//! read (check_stat, list_children, a multi-read) is answered by whichever
//! server the client is connected to from its own copy — also by a follower
//! already cut off from the leader, which keeps serving until its own read
//! timeout (`syncLimit × tickTime`, which may be longer than `T`) while the
//! leader expires the session and lets another owner in. So reads never
//! count. Every successful leader-reaching request records the instant it
//! was sent (the leader heard from the follower after that instant, and the
//! follower from us); a heartbeat `sync` keeps that proof fresh while
//! leases are held. When the proof is older than `2/3 T` every lease of the
//! session is reported lost and the session is abandoned (its client
//! dropped, which closes it). The margin `T/3` covers a follower's delay in
//! passing session touches to the leader (at most half a tick, and a tick
//! is at most `T/2`). A reconnect within that window, to the same server or
//! another, keeps every lease.

use crate::config::ZkConfig;
use crate::error::{op_error, KIND};
use crate::nodes::{contenders, LockPaths, NodeData};
use dlock_core::BootInstant;
use dlock_core::{Error, LockName, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client as zk;

/// How long a parked waiting ticket may wait for its claim.
const PARK_GRACE: Duration = Duration::from_millis(750);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lease held on this session.
pub(crate) struct LeaseEntry {
    pub id: String,
    pub token: u64,
    /// Data version of the node, checked by extend.
    pub version: i32,
    /// Local instant the acquire answer arrived (at_least is measured from here).
    pub acquired_recv: BootInstant,
    /// Local validity end; the node is deleted when it passes.
    pub deadline: BootInstant,
    pub lost: watch::Sender<Option<String>>,
    /// A release was sent: the node's deletion is ours, not a loss.
    releasing: bool,
    timer: Option<JoinHandle<()>>,
}

impl Drop for LeaseEntry {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

/// A snapshot of a lease entry for one call.
#[derive(Clone, Debug)]
pub(crate) struct LeaseView {
    pub version: i32,
    pub acquired_recv: BootInstant,
    pub deadline: BootInstant,
    pub token: u64,
}

/// A waiting node kept in the queue between `wait_for_release` and the next
/// `try_acquire`, so a waiter keeps its place (FIFO).
#[derive(Clone, Debug)]
pub(crate) struct Ticket {
    pub path: String,
    pub id: String,
    pub seq: i64,
    pub version: i32,
    /// Lowest already, but an at_least marker holds the lock until then.
    pub blocked_until: Option<BootInstant>,
    gen: u64,
}

impl Ticket {
    pub(crate) fn new(path: String, id: String, seq: i64, stat: &zk::Stat) -> Self {
        Ticket {
            path,
            id,
            seq,
            version: stat.version,
            blocked_until: None,
            gen: 0,
        }
    }
}

/// A node whose removal failed or whose create had an unknown outcome.
#[derive(Clone, Debug)]
enum Orphan {
    Path(String),
    Prefix { dir: String, id: String },
}

/// A node whose fate is not settled yet. Dropped unsettled (an error, or
/// the caller's future was cancelled mid-request), it is queued for removal
/// by the heartbeat, so no stray node can ever block the queue.
pub(crate) struct Pending<'a> {
    session: &'a Session,
    orphan: Option<Orphan>,
}

impl Pending<'_> {
    /// The node became a lease, a parked ticket, or was removed.
    pub(crate) fn settle(mut self) {
        self.orphan = None;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(o) = self.orphan.take() {
            lock(&self.session.orphans).push(o);
        }
    }
}

pub(crate) struct Session {
    client: Mutex<Option<zk::Client>>,
    /// Session id, for lease handles.
    pub id: i64,
    /// Negotiated session timeout.
    pub timeout: Duration,
    pub request_timeout: Duration,
    pub cfg: Arc<ZkConfig>,
    dead: watch::Sender<Option<String>>,
    proven: Mutex<BootInstant>,
    leases: Mutex<HashMap<String, LeaseEntry>>,
    tickets: Mutex<HashMap<String, Vec<Ticket>>>,
    orphans: Mutex<Vec<Orphan>>,
    next_gen: Mutex<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

impl Session {
    /// Connects, checks the root and the credentials, starts the monitor.
    pub(crate) async fn open(cfg: Arc<ZkConfig>) -> Result<Arc<Session>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidConfig(
                "dlock-zookeeper must be used inside a tokio runtime".into(),
            ));
        }
        let mut connector = zk::Client::connector()
            .with_session_timeout(cfg.session_timeout)
            .with_fail_eagerly();
        if let Some(d) = cfg.digest() {
            connector = connector.with_auth("digest", d.as_bytes());
        }
        let hosts = cfg.connect_string();
        let started = BootInstant::now();
        let client =
            match tokio::time::timeout(cfg.connect_timeout, connector.connect(&hosts)).await {
                Err(_) => {
                    return Err(Error::connect(
                        KIND,
                        cfg.target(),
                        format!(
                        "no session established within connect_timeout={:?}: is ZooKeeper running \
                         and reachable at {hosts}?",
                        cfg.connect_timeout
                    ),
                        None,
                    ))
                }
                Ok(Err(e)) => {
                    let msg = match &e {
                        zk::Error::NoHosts => format!(
                        "no server at {hosts} accepted a connection: is ZooKeeper running there?"
                    ),
                        zk::Error::Timeout => format!(
                            "no session established within the session timeout: is ZooKeeper \
                             running and reachable at {hosts}?"
                        ),
                        zk::Error::AuthFailed => {
                            return Err(Error::denied(
                                KIND,
                                "connect",
                                format!(
                                    "{} rejected the credentials in the URL: check the \
                                     user:password (digest auth)",
                                    cfg.target()
                                ),
                                Some(Box::new(e)),
                            ))
                        }
                        _ => String::new(),
                    };
                    return Err(Error::connect(KIND, cfg.target(), msg, Some(Box::new(e))));
                }
                Ok(Ok(c)) => c,
            };
        let timeout = client.session_timeout();
        let request_timeout = cfg.request_timeout.unwrap_or(timeout);
        let (dead, _) = watch::channel(None);
        let session = Arc::new(Session {
            id: client.session_id().0,
            client: Mutex::new(Some(client.clone())),
            timeout,
            request_timeout,
            cfg: cfg.clone(),
            dead,
            proven: Mutex::new(started),
            leases: Mutex::default(),
            tickets: Mutex::default(),
            orphans: Mutex::default(),
            next_gen: Mutex::new(0),
            tasks: Mutex::default(),
        });
        let left = cfg.connect_timeout.saturating_sub(started.elapsed());
        let check = tokio::time::timeout(
            left.max(Duration::from_millis(100)),
            session.ensure_root(&client),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::connect(
                KIND,
                cfg.target(),
                format!(
                    "checking the root path {} did not finish within connect_timeout={:?}",
                    cfg.root, cfg.connect_timeout
                ),
                None,
            ))
        });
        if let Err(e) = check {
            session.kill("the connection failed its checks".into());
            return Err(e);
        }
        let weak = Arc::downgrade(&session);
        let monitor = tokio::spawn(monitor(weak.clone(), client.state_watcher()));
        let beat = tokio::spawn(heartbeat(weak));
        lock(&session.tasks).extend([monitor, beat]);
        tracing::debug!(session = format!("{:#x}", session.id), timeout = ?timeout, "zookeeper session open");
        Ok(session)
    }

    /// Creates the root path when missing and proves this identity may read it.
    async fn ensure_root(&self, client: &zk::Client) -> Result<()> {
        let root = &self.cfg.root;
        let fail = |what: &str, e: zk::Error| match e {
            zk::Error::NoAuth => Error::denied(
                KIND,
                "connect",
                match &self.cfg.user {
                    Some(u) => format!(
                        "may not {what} {root}: its ACL does not grant digest user {u:?} \
                         — the password in the URL is wrong, or another identity owns this root"
                    ),
                    None => format!(
                        "may not {what} {root}: its ACL requires credentials — put \
                         user:password in the URL (digest auth) or choose another root path"
                    ),
                },
                Some(Box::new(e)),
            ),
            e => Error::connect(
                KIND,
                self.cfg.target(),
                format!("cannot {what} {root}"),
                Some(Box::new(e)),
            ),
        };
        let exists = client
            .check_stat(root)
            .await
            .map_err(|e| fail("look up", e))?;
        if exists.is_none() {
            let opts = zk::CreateMode::Persistent.with_acls(self.acls());
            client
                .mkdir(root, &opts)
                .await
                .map_err(|e| fail("create", e))?;
        }
        client
            .list_children(root)
            .await
            .map_err(|e| fail("read", e))?;
        Ok(())
    }

    /// ACLs for the nodes dlock creates: creator-only with credentials, open without.
    pub(crate) fn acls(&self) -> zk::Acls<'static> {
        if self.cfg.digest().is_some() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    /// The client, unless the session was abandoned.
    pub(crate) fn client(&self) -> Result<zk::Client> {
        lock(&self.client).clone().ok_or_else(|| {
            Error::backend_msg(
                KIND,
                "session",
                format!(
                    "the ZooKeeper session {:#x} ended: {}",
                    self.id,
                    self.dead_reason().unwrap_or_default()
                ),
            )
        })
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.borrow().is_some()
    }

    pub(crate) fn dead_reason(&self) -> Option<String> {
        self.dead.borrow().clone()
    }

    pub(crate) fn dead_signal(&self) -> watch::Receiver<Option<String>> {
        self.dead.subscribe()
    }

    /// Records that a request sent at `sent` was answered *through the
    /// leader*: the leader heard from this session's server after `sent`.
    /// Call it only after a write or a `sync` succeeded, never after a read
    /// (a cut-off follower answers reads by itself; see the module docs).
    pub(crate) fn proved(&self, sent: BootInstant) {
        let mut p = lock(&self.proven);
        if sent > *p {
            *p = sent;
        }
    }

    fn proof_deadline(&self) -> BootInstant {
        *lock(&self.proven) + self.timeout * 2 / 3
    }

    /// The bound a guard on this session applies besides its own lease:
    /// the session can be proven alive only until [`Session::proof_deadline`]
    /// (the ensemble frees the lock when the session expires, usually long
    /// before `lock_at_most_for`). Read on every `is_held()`, so a process
    /// that was paused or starved past it answers false on resume, before
    /// any background task has run. A session that ended bounds nothing
    /// but the past.
    pub(crate) fn validity_bound(self: &Arc<Self>) -> dlock_core::ValidityBound {
        let weak = Arc::downgrade(self);
        let origin = *lock(&self.proven);
        Arc::new(move || match weak.upgrade() {
            Some(s) if !s.is_dead() => s.proof_deadline(),
            _ => origin,
        })
    }

    /// Ends the session: every lease on it is lost, its client is dropped
    /// (which closes it at the server, removing its nodes).
    pub(crate) fn kill(&self, reason: String) {
        let first = self.dead.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if !first {
            return;
        }
        let leases: Vec<LeaseEntry> = lock(&self.leases).drain().map(|(_, e)| e).collect();
        if !leases.is_empty() {
            tracing::warn!(session = format!("{:#x}", self.id), %reason, leases = leases.len(), "zookeeper session lost");
        }
        for e in leases {
            e.lost.send_replace(Some(reason.clone()));
        }
        lock(&self.tickets).clear();
        lock(&self.client).take();
    }

    fn has_leases(&self) -> bool {
        !lock(&self.leases).is_empty()
    }

    fn idle(&self) -> bool {
        lock(&self.leases).is_empty()
            && lock(&self.tickets).is_empty()
            && lock(&self.orphans).is_empty()
    }

    // ------------------------------------------------------------ leases

    /// Registers a lease on `path` and starts its at_most timer.
    pub(crate) fn register(
        self: &Arc<Self>,
        path: &str,
        id: &str,
        token: u64,
        version: i32,
        acquired_recv: BootInstant,
        deadline: BootInstant,
    ) {
        let (lost, _) = watch::channel(None);
        let entry = LeaseEntry {
            id: id.to_string(),
            token,
            version,
            acquired_recv,
            deadline,
            lost,
            releasing: false,
            timer: None,
        };
        // Insert first: the timer looks the entry up as soon as it runs.
        let mut leases = lock(&self.leases);
        leases.insert(path.to_string(), entry);
        let timer = tokio::spawn(at_most_timer(Arc::downgrade(self), path.to_string()));
        if let Some(e) = leases.get_mut(path) {
            e.timer = Some(timer);
        }
    }

    /// The entry on `path` if it belongs to acquisition `id`.
    pub(crate) fn lease(&self, path: &str, id: &str) -> Option<LeaseView> {
        lock(&self.leases)
            .get(path)
            .filter(|e| e.id == id)
            .map(|e| LeaseView {
                version: e.version,
                acquired_recv: e.acquired_recv,
                deadline: e.deadline,
                token: e.token,
            })
    }

    /// Subscribes to the lease's own loss reasons (expiry, refusal).
    pub(crate) fn lease_signal(
        &self,
        path: &str,
        id: &str,
    ) -> Option<watch::Receiver<Option<String>>> {
        lock(&self.leases)
            .get(path)
            .filter(|e| e.id == id)
            .map(|e| e.lost.subscribe())
    }

    /// Moves the local deadline after a successful extension. False when the
    /// lease was expired or dropped in the meantime.
    pub(crate) fn extend_to(&self, path: &str, id: &str, deadline: BootInstant) -> bool {
        let mut leases = lock(&self.leases);
        match leases.get_mut(path) {
            Some(e) if e.id == id && BootInstant::now() < e.deadline => {
                e.deadline = deadline;
                true
            }
            _ => false,
        }
    }

    /// Marks the lease as being released, before the release is sent.
    pub(crate) fn begin_release(&self, path: &str, id: &str) {
        if let Some(e) = lock(&self.leases).get_mut(path).filter(|e| e.id == id) {
            e.releasing = true;
        }
    }

    /// Whether a deletion of `path` means the lease was lost: false once
    /// its own release was sent, or once it is no longer registered (then
    /// its own signal, or the session's, has the reason).
    pub(crate) fn deletion_is_loss(&self, path: &str, id: &str) -> bool {
        lock(&self.leases)
            .get(path)
            .is_some_and(|e| e.id == id && !e.releasing)
    }

    /// Forgets a lease after its release (or after learning it is gone).
    pub(crate) fn forget(&self, path: &str, lost_reason: Option<&str>) {
        if let Some(e) = lock(&self.leases).remove(path) {
            if let Some(r) = lost_reason {
                e.lost.send_replace(Some(r.to_string()));
            }
        }
    }

    /// The lease passed its at_most without extension: forget it, report
    /// the loss, and delete its node so the lock frees.
    pub(crate) fn expire(self: &Arc<Self>, path: &str) {
        let entry = lock(&self.leases).remove(path);
        if let Some(e) = entry {
            let reason = format!(
                "lease expired: lock_at_most_for passed without a successful extension; \
                 dlock deleted the lock node (token {})",
                e.token
            );
            e.lost.send_replace(Some(reason));
            let me = self.clone();
            let path = path.to_string();
            tokio::spawn(async move { me.delete_or_orphan(&path).await });
        }
    }

    // ------------------------------------------------------------ tickets

    /// Parks a waiting ticket for the next `try_acquire` on `dir`.
    pub(crate) fn park(self: &Arc<Self>, dir: &str, mut ticket: Ticket) {
        if self.is_dead() {
            return;
        }
        let gen = {
            let mut g = lock(&self.next_gen);
            *g += 1;
            *g
        };
        ticket.gen = gen;
        let path = ticket.path.clone();
        lock(&self.tickets)
            .entry(dir.to_string())
            .or_default()
            .push(ticket);
        let weak = Arc::downgrade(self);
        let dir = dir.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(PARK_GRACE).await;
            let Some(s) = weak.upgrade() else { return };
            let removed = {
                let mut t = lock(&s.tickets);
                let mut removed = false;
                if let Some(v) = t.get_mut(&dir) {
                    let before = v.len();
                    v.retain(|x| !(x.path == path && x.gen == gen));
                    removed = v.len() != before;
                    if v.is_empty() {
                        t.remove(&dir);
                    }
                }
                removed
            };
            if removed {
                tracing::debug!(%path, "unclaimed waiting ticket removed");
                s.delete_or_orphan(&path).await;
            }
        });
    }

    /// Takes the parked ticket with the lowest sequence for `dir`.
    pub(crate) fn take_ticket(&self, dir: &str) -> Option<Ticket> {
        let mut t = lock(&self.tickets);
        let v = t.get_mut(dir)?;
        let pivot = v.first()?.seq;
        let i = v
            .iter()
            .enumerate()
            .min_by_key(|(_, x)| crate::nodes::seq_distance(pivot, x.seq))
            .map(|(i, _)| i)?;
        let ticket = v.swap_remove(i);
        if v.is_empty() {
            t.remove(dir);
        }
        Some(ticket)
    }

    // ------------------------------------------------------------ orphans

    /// Deletes `path`, or remembers to retry until it is gone.
    pub(crate) async fn delete_or_orphan(self: &Arc<Self>, path: &str) {
        let ok = match self.client() {
            Ok(c) => matches!(
                tokio::time::timeout(self.request_timeout, c.delete(path, None)).await,
                Ok(Ok(())) | Ok(Err(zk::Error::NoNode))
            ),
            Err(_) => true, // the session is gone, and its ephemeral nodes with it
        };
        if !ok {
            lock(&self.orphans).push(Orphan::Path(path.to_string()));
        }
    }

    /// Deletes every node acquisition `id` may have created under `dir`
    /// (a create whose answer was lost); true when none is left.
    pub(crate) async fn delete_nodes_of_id(&self, dir: &str, id: &str) -> bool {
        match self.client() {
            Ok(c) => delete_nodes_of(&c, self.request_timeout, dir, id).await,
            Err(_) => true, // the session is gone, and its ephemeral nodes with it
        }
    }

    /// After a request failed because the connection broke: waits, until
    /// `by`, for the client to reconnect within the same session (to this
    /// member or another). True once connected again; false when the
    /// session ended or `by` passed first.
    pub(crate) async fn reconnected(&self, by: BootInstant) -> bool {
        let Ok(client) = self.client() else {
            return false;
        };
        let mut states = client.state_watcher();
        let connected = async {
            loop {
                match states.peek_state() {
                    zk::SessionState::SyncConnected => return true,
                    zk::SessionState::Disconnected | zk::SessionState::ConnectedReadOnly => {}
                    _ => return false, // expired, closed, auth failed: terminal
                }
                states.changed().await;
            }
        };
        let left = by.saturating_duration_since(BootInstant::now());
        matches!(tokio::time::timeout(left, connected).await, Ok(true))
    }

    /// Guards a create of `n-<id>-` under `dir` until its node is settled.
    pub(crate) fn pending_create(&self, dir: &str, id: &str) -> Pending<'_> {
        Pending {
            session: self,
            orphan: Some(Orphan::Prefix {
                dir: dir.to_string(),
                id: id.to_string(),
            }),
        }
    }

    /// Guards an existing node (a taken-out ticket) until it is settled.
    pub(crate) fn pending_node(&self, path: &str) -> Pending<'_> {
        Pending {
            session: self,
            orphan: Some(Orphan::Path(path.to_string())),
        }
    }

    /// Retries pending removals. Requests of one session run in order, so a
    /// listing sent now sees any earlier create that is ever going to happen.
    async fn sweep_orphans(self: &Arc<Self>) {
        let pending: Vec<Orphan> = std::mem::take(&mut *lock(&self.orphans));
        if pending.is_empty() {
            return;
        }
        let Ok(client) = self.client() else { return };
        let t = self.request_timeout;
        let mut keep = Vec::new();
        for o in pending {
            let done = match &o {
                Orphan::Path(p) => matches!(
                    tokio::time::timeout(t, client.delete(p, None)).await,
                    Ok(Ok(())) | Ok(Err(zk::Error::NoNode))
                ),
                Orphan::Prefix { dir, id } => delete_nodes_of(&client, t, dir, id).await,
            };
            if !done {
                keep.push(o);
            }
        }
        lock(&self.orphans).extend(keep);
    }

    // ------------------------------------------------------------ layout

    /// Creates `<dir>` and `<dir>/hold` (and the root, if it vanished).
    pub(crate) async fn ensure_dir(
        &self,
        client: &zk::Client,
        paths: &LockPaths,
        name: &LockName,
    ) -> Result<()> {
        let opts = zk::CreateMode::Persistent.with_acls(self.acls());
        let data = NodeData {
            name: name.as_str().to_string(),
            ..NodeData::default()
        }
        .encode();
        for attempt in 0..2 {
            let dir = client.create(&paths.dir, &data, &opts);
            let hold = client.create(&paths.hold, b"", &opts);
            let (d, h) =
                tokio::time::timeout(self.request_timeout, futures::future::join(dir, hold))
                    .await
                    .map_err(|_| Error::Timeout {
                        operation: "create lock directory",
                        after: self.request_timeout,
                    })?;
            match (d, h) {
                (Ok(_) | Err(zk::Error::NodeExists), Ok(_) | Err(zk::Error::NodeExists)) => {
                    return Ok(())
                }
                (Err(zk::Error::NoNode), _) if attempt == 0 => {
                    // mkdir is several requests; one deadline covers them all.
                    tokio::time::timeout(self.request_timeout, client.mkdir(&self.cfg.root, &opts))
                        .await
                        .map_err(|_| Error::Timeout {
                            operation: "create root",
                            after: self.request_timeout,
                        })?
                        .map_err(|e| op_error("create root", &self.cfg.root, e))?;
                }
                (Err(e), _) => return Err(op_error("create lock directory", &paths.dir, e)),
                (_, Err(e)) => return Err(op_error("create marker node", &paths.hold, e)),
            }
        }
        Err(Error::backend_msg(
            KIND,
            "create lock directory",
            format!("{} keeps disappearing while dlock creates it", paths.dir),
        ))
    }
}

/// Deletes every contender node of acquisition `id` under `dir`, each
/// request bounded by `t`; true when none is left (or `dir` is gone).
async fn delete_nodes_of(client: &zk::Client, t: Duration, dir: &str, id: &str) -> bool {
    match tokio::time::timeout(t, client.list_children(dir)).await {
        Ok(Ok(children)) => {
            let mut all = true;
            for c in contenders(&children).into_iter().filter(|c| c.id == id) {
                let p = format!("{dir}/{}", c.name);
                let r = tokio::time::timeout(t, client.delete(&p, None)).await;
                all &= matches!(r, Ok(Ok(())) | Ok(Err(zk::Error::NoNode)));
            }
            all
        }
        Ok(Err(zk::Error::NoNode)) => true,
        _ => false,
    }
}

/// Watches the session state and the liveness proof; ends the session when
/// it expired, closed, or can no longer be proven alive while leases are held.
async fn monitor(weak: Weak<Session>, mut states: zk::StateWatcher) {
    loop {
        let (wake, watching, id, t) = {
            let Some(s) = weak.upgrade() else { return };
            if s.is_dead() {
                return;
            }
            let beat = (s.timeout / 6).max(Duration::from_millis(20));
            let watching = s.has_leases();
            let wake = if watching {
                s.proof_deadline().min(BootInstant::now() + beat)
            } else {
                BootInstant::now() + beat
            };
            (wake, watching, s.id, s.timeout)
        };
        tokio::select! {
            st = states.changed() => {
                let Some(s) = weak.upgrade() else { return };
                match st {
                    zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed => {
                        s.kill(format!("the ZooKeeper session {id:#x} ended ({st}); its lock nodes are gone"));
                        return;
                    }
                    zk::SessionState::Disconnected => {
                        tracing::info!(session = format!("{id:#x}"), "zookeeper connection lost; reconnecting within the session");
                    }
                    _ => {
                        tracing::info!(session = format!("{id:#x}"), state = %st, "zookeeper connection state");
                    }
                }
            }
            _ = dlock_core::clock::sleep_until(wake) => {
                if !watching { continue; }
                let Some(s) = weak.upgrade() else { return };
                if s.has_leases() && BootInstant::now() >= s.proof_deadline() {
                    s.kill(format!(
                        "cannot prove the ZooKeeper session {id:#x} alive: no request of it \
                         went through the leader for {:?} (2/3 of the {t:?} session timeout), so \
                         the leader may expire it and give the lock to another owner",
                        t * 2 / 3
                    ));
                    return;
                }
            }
        }
    }
}

/// A `sync` every `T/6` while anything is held, to keep the liveness proof
/// fresh; also retries pending node removals.
///
/// A sync, because a follower forwards it to the leader and answers only
/// once the leader's reply is back: a follower cut off from the leader
/// cannot complete it, so the proof goes stale and the guards turn false
/// before the leader can expire the session (a read here kept them "held"
/// for seconds after another owner had the lock; tests/ensemble.rs). A
/// multi with a check would prove the same but costs a transaction (a disk
/// write on a quorum) every beat. A sync needs no permission and no node:
/// a root removed by hand does not fail it.
async fn heartbeat(weak: Weak<Session>) {
    loop {
        let beat = match weak.upgrade() {
            Some(s) => (s.timeout / 6).max(Duration::from_millis(20)),
            None => return,
        };
        tokio::time::sleep(beat).await;
        let Some(s) = weak.upgrade() else { return };
        if s.is_dead() {
            return;
        }
        if s.idle() {
            continue;
        }
        if let Ok(client) = s.client() {
            let sent = BootInstant::now();
            if let Ok(Ok(())) = tokio::time::timeout(beat, client.sync(&s.cfg.root)).await {
                s.proved(sent);
            }
        }
        s.sweep_orphans().await;
    }
}

/// Deletes a lease's node when its local deadline passes without extension,
/// so a live holder past `lock_at_most_for` frees the lock.
async fn at_most_timer(weak: Weak<Session>, path: String) {
    loop {
        let deadline = {
            let Some(s) = weak.upgrade() else { return };
            let Some(d) = lock(&s.leases).get(&path).map(|e| e.deadline) else {
                return;
            };
            d
        };
        dlock_core::clock::sleep_until(deadline).await;
        let Some(s) = weak.upgrade() else { return };
        let due = match lock(&s.leases).get(&path) {
            None => return,
            Some(e) => BootInstant::now() >= e.deadline,
        };
        if due {
            s.expire(&path);
            return;
        }
    }
}
