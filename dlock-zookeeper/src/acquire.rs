//! Taking a lock: one create of an ephemeral sequential node, pipelined with
//! one multi-read of the queue and the at_least marker (one round trip).

use crate::error::{connection_broke, op_error, outcome_unknown, KIND};
use crate::nodes::{blocked_for_ms, contenders, LockPaths, Marker, NodeData};
use crate::session::{Session, Ticket};
use dlock_core::BootInstant;
use dlock_core::{new_acquisition_id, Error, FencingToken, Lease, LockSpec, Result};
use std::sync::Arc;
use std::time::Duration;
use zookeeper_client as zk;

/// What the queue and the marker say about one contender node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Lowest node and no at_least marker in force: the lock is ours.
    Won,
    /// A lower node exists.
    Behind,
    /// Lowest, but a released lease's at_least keeps the lock taken this
    /// many more milliseconds (by the server's clock).
    Blocked(u64),
    /// Our node is not in the queue any more.
    Gone,
}

/// The queue (children of the lock directory) and the marker, read together.
pub(crate) struct QueueState {
    /// `None` when the lock directory does not exist.
    pub children: Option<Vec<String>>,
    /// The marker and its node's mtime, when the marker node exists.
    pub marker: Option<(Marker, zk::Stat)>,
}

impl QueueState {
    /// Judges contender `seq`, given `now_ms`, a server timestamp taken by a
    /// write of ours at or after the moment the queue was read from.
    pub fn verdict(&self, seq: i64, now_ms: i64) -> Verdict {
        let Some(children) = &self.children else {
            return Verdict::Gone;
        };
        let queue = contenders(children);
        if !queue.iter().any(|c| c.seq == seq) {
            return Verdict::Gone;
        }
        if queue.first().map(|c| c.seq) != Some(seq) {
            return Verdict::Behind;
        }
        if let Some((m, stat)) = &self.marker {
            if let Some(ms) = blocked_for_ms(m, stat.mtime, now_ms) {
                return Verdict::Blocked(ms);
            }
        }
        Verdict::Won
    }
}

/// Sends the multi-read of queue + marker now; the future only collects the answer.
pub(crate) fn read_queue<'a>(
    client: &'a zk::Client,
    paths: &LockPaths,
) -> Result<impl std::future::Future<Output = Result<QueueState>> + Send + 'a> {
    let mut r = client.new_multi_reader();
    r.add_get_children(&paths.dir)
        .map_err(|e| op_error("read lock queue", &paths.dir, e))?;
    r.add_get_data(&paths.hold)
        .map_err(|e| op_error("read lock queue", &paths.hold, e))?;
    let fut = r.commit();
    let dir = paths.dir.clone();
    Ok(async move {
        let results = fut
            .await
            .map_err(|e| op_error("read lock queue", &dir, e))?;
        let mut state = QueueState {
            children: None,
            marker: None,
        };
        for (i, r) in results.into_iter().enumerate() {
            match r {
                zk::MultiReadResult::Children { children } if i == 0 => {
                    state.children = Some(children)
                }
                zk::MultiReadResult::Data { data, stat } if i == 1 => {
                    state.marker = Some((Marker::decode(&data), stat))
                }
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => {}
                zk::MultiReadResult::Error { err } => {
                    return Err(op_error("read lock queue", &dir, err));
                }
                _ => {}
            }
        }
        Ok(state)
    })
}

pub(crate) fn handle(session: &Session, path: &str) -> String {
    format!("{:x}:{path}", session.id)
}

pub(crate) fn parse_handle(lease: &Lease) -> Option<(i64, &str)> {
    let (sid, path) = lease.handle.split_once(':')?;
    let sid = u64::from_str_radix(sid, 16).ok()? as i64;
    path.starts_with('/').then_some((sid, path))
}

fn token_of(czxid: i64) -> Result<FencingToken> {
    u64::try_from(czxid).map(FencingToken).map_err(|_| {
        Error::backend_msg(
            KIND,
            "acquire",
            format!("negative czxid {czxid} from the server"),
        )
    })
}

pub(crate) fn node_data(spec: &LockSpec, id: &str) -> Vec<u8> {
    NodeData {
        owner: spec.owner.clone(),
        id: id.to_string(),
        at_most_ms: u64::try_from(spec.at_most.as_millis()).unwrap_or(u64::MAX),
        at_least_ms: u64::try_from(spec.at_least.as_millis()).unwrap_or(u64::MAX),
        name: spec.name.as_str().to_string(),
    }
    .encode()
}

/// Builds the lease and registers it (at_most timer included).
#[allow(clippy::too_many_arguments)]
fn grant(
    session: &Arc<Session>,
    spec: &LockSpec,
    path: &str,
    id: &str,
    czxid: i64,
    version: i32,
    sent: BootInstant,
    recv: BootInstant,
) -> Result<Lease> {
    let token = token_of(czxid)?;
    let lease = Lease::granted(spec, id.to_string(), token, sent, handle(session, path));
    session.register(path, id, token.0, version, recv, lease.valid_until);
    Ok(lease)
}

/// The node at `path` won the lock: grant the lease and, when it has a
/// `lock_at_least_for`, record that in the marker at once, so the lock
/// stays taken until then by the ensemble's clock however this holder ends
/// — even if it exits without releasing and its session (with the node)
/// goes away long before `at_least`. This costs a second round trip, only
/// for leases with an `at_least`: which node wins is known only after the
/// queue read, and only the winner may write the marker.
#[allow(clippy::too_many_arguments)]
async fn won(
    session: &Arc<Session>,
    client: &zk::Client,
    paths: &LockPaths,
    spec: &LockSpec,
    path: &str,
    id: &str,
    czxid: i64,
    version: i32,
    sent: BootInstant,
    recv: BootInstant,
) -> Result<Option<Lease>> {
    let lease = grant(session, spec, path, id, czxid, version, sent, recv)?;
    if spec.at_least.is_zero() {
        return Ok(Some(lease));
    }
    let marker = Marker {
        owner: spec.owner.clone(),
        id: id.to_string(),
        token: lease.token.0,
        // Counted from the marker's mtime, a server timestamp taken after
        // the grant: the hold can only come out longer, never shorter.
        // Plus one for the server's millisecond timestamps.
        remaining_ms: u64::try_from(spec.at_least.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1),
    }
    .encode();
    let written = timed(
        session,
        "acquire (at_least marker)",
        client.set_data(&paths.hold, &marker, None),
    )
    .await;
    match written {
        Ok(Ok(_)) => Ok(Some(lease)),
        Ok(Err(e)) => {
            give_up(session, path).await;
            Err(op_error("acquire (at_least marker)", &paths.hold, e))
        }
        Err(e) => {
            give_up(session, path).await;
            Err(e)
        }
    }
}

/// The lock was won but its at_least could not be recorded: hand it back
/// (a marker that was written after all only keeps the lock taken for
/// `at_least`, which errs on the safe side).
async fn give_up(session: &Arc<Session>, path: &str) {
    session.forget(path, None);
    session.delete_or_orphan(path).await;
}

async fn timed<T>(
    session: &Session,
    what: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(session.request_timeout, fut)
        .await
        .map_err(|_| Error::Timeout {
            operation: what,
            after: session.request_timeout,
        })
}

/// A fresh attempt: create our node and read the queue in one round trip.
pub(crate) async fn fresh(session: &Arc<Session>, spec: &LockSpec) -> Result<Option<Lease>> {
    let paths = LockPaths::new(&session.cfg.root, &spec.name);
    let client = session.client()?;
    let id = new_acquisition_id();
    let data = node_data(spec, &id);
    let prefix = paths.node_prefix(&id);
    let opts = zk::CreateMode::EphemeralSequential.with_acls(session.acls());
    // Until settled, a node of ours may exist whose fate we do not know.
    let pending = session.pending_create(&paths.dir, &id);
    // A broken connection (its member died, was cut off or paused) costs
    // the session nothing: wait for the client to reconnect, remove the
    // node the lost create may have made, and ask again — twice at most,
    // and not after `retry_by`.
    let retry_by = BootInstant::now() + session.request_timeout * 2;
    let (mut missing_dir, mut broken) = (0, 0);
    loop {
        let sent = BootInstant::now();
        // Both requests leave now, in this order; the server answers in order.
        let create = client.create(&prefix, &data, &opts);
        let read = read_queue(&client, &paths)?;
        let (created, queue) =
            timed(session, "acquire", futures::future::join(create, read)).await?;
        let (stat, seq) = match created {
            Ok(ok) => ok,
            Err(zk::Error::NoNode) if missing_dir < 2 => {
                missing_dir += 1;
                session.ensure_dir(&client, &paths, &spec.name).await?;
                continue;
            }
            Err(e)
                if connection_broke(&e)
                    && broken < 2
                    && session.reconnected(retry_by).await
                    && session.delete_nodes_of_id(&paths.dir, &id).await =>
            {
                broken += 1;
                continue;
            }
            Err(e) => {
                if !outcome_unknown(&e) {
                    pending.settle();
                }
                return Err(op_error("acquire", &paths.dir, e));
            }
        };
        let recv = BootInstant::now();
        // A create is a write: the leader ordered it, so it proves the session.
        session.proved(sent);
        let path = format!("{prefix}{seq}");
        let verdict = match queue {
            // Our own create stamped stat.ctime: a server timestamp no older
            // than the moment the queue was read.
            Ok(q) => Ok(q.verdict(seq.into_i64(), stat.ctime)),
            Err(e) => Err(e),
        };
        let r = match verdict {
            Ok(Verdict::Won) => {
                won(
                    session,
                    &client,
                    &paths,
                    spec,
                    &path,
                    &id,
                    stat.czxid,
                    stat.version,
                    sent,
                    recv,
                )
                .await
            }
            Ok(Verdict::Behind | Verdict::Blocked(_) | Verdict::Gone) => {
                session.delete_or_orphan(&path).await;
                Ok(None)
            }
            Err(e) => {
                session.delete_or_orphan(&path).await;
                Err(e)
            }
        };
        pending.settle();
        return r;
    }
}

/// Claims a parked waiting ticket: stamp it with our data (a write, which
/// also yields a fresh server timestamp) and read the queue, in one round trip.
pub(crate) async fn claim(
    session: &Arc<Session>,
    spec: &LockSpec,
    mut ticket: Ticket,
) -> Result<Option<Lease>> {
    let paths = LockPaths::new(&session.cfg.root, &spec.name);
    let dir = paths.dir.clone();
    let client = session.client()?;
    let data = node_data(spec, &ticket.id);
    // The ticket is out of the pool: until settled, it must not be forgotten.
    let pending = session.pending_node(&ticket.path);
    let sent = BootInstant::now();
    let set = client.set_data(&ticket.path, &data, Some(ticket.version));
    let read = read_queue(&client, &paths)?;
    let (set, queue) = timed(session, "acquire", futures::future::join(set, read)).await?;
    let stat = match set {
        Ok(stat) => stat,
        // The ticket is gone (its session ended, or an operator removed it):
        // start over with a fresh node.
        Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {
            pending.settle();
            return fresh(session, spec).await;
        }
        // The connection broke (the session lives on): once the client is
        // back, give the ticket up (its version is unknown now) and start
        // over with a fresh node, which retries the same way.
        Err(e)
            if connection_broke(&e)
                && session
                    .reconnected(BootInstant::now() + session.request_timeout)
                    .await =>
        {
            session.delete_or_orphan(&ticket.path).await;
            pending.settle();
            return fresh(session, spec).await;
        }
        Err(e) => return Err(op_error("acquire", &ticket.path, e)),
    };
    let recv = BootInstant::now();
    // A set_data is a write: the leader ordered it (the queue read beside it
    // proves nothing).
    session.proved(sent);
    ticket.version = stat.version;
    let queue = queue?;
    let r = match queue.verdict(ticket.seq, stat.mtime) {
        Verdict::Won => {
            won(
                session,
                &client,
                &paths,
                spec,
                &ticket.path,
                &ticket.id,
                stat.czxid,
                stat.version,
                sent,
                recv,
            )
            .await
        }
        Verdict::Behind => {
            ticket.blocked_until = None;
            session.park(&dir, ticket);
            Ok(None)
        }
        Verdict::Blocked(ms) => {
            ticket.blocked_until = Some(recv + Duration::from_millis(ms.saturating_add(1)));
            session.park(&dir, ticket);
            Ok(None)
        }
        Verdict::Gone => {
            pending.settle();
            return fresh(session, spec).await;
        }
    };
    pending.settle();
    r
}
