//! Operator calls: who holds a lock, and freeing it by force.

use crate::acquire::{read_queue, QueueState};
use crate::error::{multi_error, op_error, KIND};
use crate::nodes::{
    blocked_for_ms, contenders, name_of_segment, Contender, LockPaths, Marker, NodeData,
};
use crate::session::Session;
use dlock_core::{Error, FencingToken, LockInfo, LockName, Result};
use futures::{stream, StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zookeeper_client as zk;

fn system_time(ms: i64) -> Option<SystemTime> {
    u64::try_from(ms)
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

async fn timed<T>(
    s: &Session,
    op: &'static str,
    f: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(s.request_timeout, f)
        .await
        .map_err(|_| Error::Timeout {
            operation: op,
            after: s.request_timeout,
        })
}

/// The server's clock now: the mtime of a write to the lock directory's own
/// data (which only records the lock name, rewritten unchanged).
async fn server_now_ms(
    s: &Session,
    client: &zk::Client,
    paths: &LockPaths,
    name: &LockName,
) -> Result<Option<i64>> {
    let data = NodeData {
        name: name.as_str().to_string(),
        ..NodeData::default()
    }
    .encode();
    let set = client.set_data(&paths.dir, &data, None);
    match timed(s, "read the server clock", set).await? {
        Ok(stat) => Ok(Some(stat.mtime)),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(op_error("read the server clock", &paths.dir, e)),
    }
}

/// Who holds a lock, judged from one read of its queue.
enum Holder<'q> {
    Free,
    /// A released holder whose at_least marker is still in force.
    Released(&'q Marker, &'q zk::Stat),
    /// The first node in line; its data is read next.
    First(Contender),
}

/// Whether judging `q` needs the server's clock: a marker with time left.
fn needs_clock(q: &QueueState) -> bool {
    q.children.is_some() && q.marker.as_ref().is_some_and(|(m, _)| m.remaining_ms > 0)
}

/// The decision `inspect` and `list` share. `now` is a server timestamp
/// taken after `q` was read (`None`: no marker is in force).
fn holder(q: &QueueState, now: Option<i64>) -> Holder<'_> {
    let Some(children) = &q.children else {
        return Holder::Free;
    };
    if let (Some((m, stat)), Some(now)) = (&q.marker, now) {
        if blocked_for_ms(m, stat.mtime, now).is_some() {
            return Holder::Released(m, stat);
        }
    }
    match contenders(children).into_iter().next() {
        Some(first) => Holder::First(first),
        None => Holder::Free,
    }
}

/// The released holder a marker in force keeps the lock for.
fn released_info(name: &LockName, m: &Marker, stat: &zk::Stat) -> LockInfo {
    LockInfo {
        name: name.clone(),
        owner: m.owner.clone(),
        id: Some(m.id.clone()),
        token: FencingToken(m.token),
        locked_at: None,
        lock_until: m.until_ms(stat.mtime).and_then(system_time),
    }
}

/// Reads the first node in line; `None` when it went meanwhile.
async fn first_info(
    s: &Session,
    client: &zk::Client,
    paths: &LockPaths,
    name: &LockName,
    first: Contender,
) -> Result<Option<LockInfo>> {
    let path = paths.child(&first.name);
    match timed(s, "inspect", client.get_data(&path)).await? {
        Ok((data, stat)) => Ok(Some(LockInfo {
            name: name.clone(),
            owner: NodeData::decode(&data).owner,
            id: Some(first.id),
            token: FencingToken(u64::try_from(stat.czxid).unwrap_or(0)),
            locked_at: system_time(stat.mtime),
            lock_until: None,
        })),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(op_error("inspect", &path, e)),
    }
}

pub(crate) async fn inspect(session: Arc<Session>, name: &LockName) -> Result<Option<LockInfo>> {
    let paths = LockPaths::new(&session.cfg.root, name);
    let client = session.client()?;
    for _ in 0..3 {
        let q = timed(&session, "inspect", read_queue(&client, &paths)?).await??;
        let now = match needs_clock(&q) {
            true => server_now_ms(&session, &client, &paths, name).await?,
            false => None,
        };
        match holder(&q, now) {
            Holder::Free => return Ok(None),
            Holder::Released(m, stat) => return Ok(Some(released_info(name, m, stat))),
            Holder::First(first) => {
                if let Some(info) = first_info(&session, &client, &paths, name, first).await? {
                    return Ok(Some(info));
                }
            }
        }
    }
    Err(Error::backend_msg(
        KIND,
        "inspect",
        format!("the queue of {} changed too fast to read", paths.dir),
    ))
}

/// How many lock directories `list` reads at once (requests are pipelined).
const LIST_IN_FLIGHT: usize = 64;

/// Every held lock under the root: the children of the root, each queue read
/// (pipelined), at most one server-clock write if a marker has time left,
/// then the first node of each held queue. The whole within `request_timeout`.
pub(crate) async fn list(session: Arc<Session>) -> Result<Vec<LockInfo>> {
    let client = session.client()?;
    let s = &session;
    let c = &client;
    let all = async move {
        let root = &s.cfg.root;
        let segments = match c.list_children(root).await {
            Ok(v) => v,
            Err(zk::Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(op_error("list", root, e)),
        };
        let queues: Vec<(LockPaths, QueueState)> = stream::iter(segments)
            .map(|seg| async move {
                let paths = LockPaths::of_segment(root, &seg);
                let q = read_queue(c, &paths)?.await?;
                Ok::<_, Error>((paths, q))
            })
            .buffered(LIST_IN_FLIGHT)
            .try_collect()
            .await?;
        let name_of = |paths: &LockPaths| {
            let seg = paths.dir.rsplit('/').next().unwrap_or_default();
            name_of_segment(seg).ok_or_else(|| {
                Error::backend_msg(
                    KIND,
                    "list",
                    format!("{} is not the directory of an encoded lock name", paths.dir),
                )
            })
        };
        // One server timestamp, taken after every queue was read (a session's
        // requests run in order), judges every marker.
        let mut now = None;
        for (paths, _) in queues.iter().filter(|(_, q)| needs_clock(q)) {
            let Ok(name) = name_of(paths) else { continue };
            now = server_now_ms(s, c, paths, &name).await?;
            if now.is_some() {
                break;
            }
        }
        stream::iter(queues)
            .map(|(paths, q)| async move {
                let held = holder(&q, now);
                if let Holder::Free = held {
                    return Ok(None);
                }
                // Only a held directory must carry a lock name.
                let name = name_of(&paths)?;
                match held {
                    Holder::Free => Ok(None),
                    Holder::Released(m, stat) => Ok(Some(released_info(&name, m, stat))),
                    Holder::First(first) => match first_info(s, c, &paths, &name, first).await? {
                        Some(info) => Ok(Some(info)),
                        // The holder went between the reads: ask again.
                        None => inspect(s.clone(), &name).await,
                    },
                }
            })
            .buffered(LIST_IN_FLIGHT)
            .try_filter_map(|i| async move { Ok(i) })
            .try_collect()
            .await
    };
    timed(&session, "list", all).await?
}

/// Deletes the first node in line and clears the at_least marker, in one multi.
pub(crate) async fn force_release(session: Arc<Session>, name: &LockName) -> Result<bool> {
    let paths = LockPaths::new(&session.cfg.root, name);
    let client = session.client()?;
    for _ in 0..5 {
        let q = timed(&session, "force release", read_queue(&client, &paths)?).await??;
        let Some(children) = q.children else {
            return Ok(false);
        };
        let first = contenders(&children).into_iter().next();
        let marker = q.marker.filter(|(m, _)| m.remaining_ms > 0);
        if first.is_none() && marker.is_none() {
            return Ok(false);
        }
        let mut w = client.new_multi_writer();
        if marker.is_some() {
            w.add_set_data(&paths.hold, &Marker::default().encode(), None)
                .map_err(|e| op_error("force release", &paths.hold, e))?;
        }
        if let Some(f) = &first {
            let p = paths.child(&f.name);
            w.add_delete(&p, None)
                .map_err(|e| op_error("force release", &p, e))?;
        }
        let r = timed(&session, "force release", w.commit()).await?;
        match r.map_err(multi_error) {
            Ok(results) => {
                if first.is_some() {
                    return Ok(true);
                }
                // Only a marker: it counted as a holder if it was still in force.
                let now = results.iter().find_map(|r| match r {
                    zk::MultiWriteResult::SetData { stat } => Some(stat.mtime),
                    _ => None,
                });
                let active = match (&marker, now) {
                    (Some((m, stat)), Some(now)) => blocked_for_ms(m, stat.mtime, now).is_some(),
                    _ => false,
                };
                return Ok(active);
            }
            Err((_, zk::Error::NoNode)) => continue,
            Err((_, e)) => return Err(op_error("force release", &paths.dir, e)),
        }
    }
    Err(Error::backend_msg(
        KIND,
        "force release",
        format!("the queue of {} changed too fast to free it", paths.dir),
    ))
}
