//! Operator calls: who holds a lock, and freeing it by force.

use crate::acquire::read_queue;
use crate::error::{multi_error, op_error, KIND};
use crate::nodes::{blocked_for_ms, contenders, LockPaths, Marker, NodeData};
use crate::session::Session;
use dlock_core::{Error, FencingToken, LockInfo, LockName, Result};
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

pub(crate) async fn inspect(session: Arc<Session>, name: &LockName) -> Result<Option<LockInfo>> {
    let paths = LockPaths::new(&session.cfg.root, name);
    let client = session.client()?;
    for _ in 0..3 {
        let q = timed(&session, "inspect", read_queue(&client, &paths)?).await??;
        let Some(children) = q.children else {
            return Ok(None);
        };
        if let Some((m, stat)) = &q.marker {
            if m.remaining_ms > 0 {
                if let Some(now) = server_now_ms(&session, &client, &paths, name).await? {
                    if blocked_for_ms(m, stat.mtime, now).is_some() {
                        return Ok(Some(LockInfo {
                            name: name.clone(),
                            owner: m.owner.clone(),
                            id: Some(m.id.clone()),
                            token: FencingToken(m.token),
                            locked_at: None,
                            lock_until: m.until_ms(stat.mtime).and_then(system_time),
                        }));
                    }
                }
            }
        }
        let Some(first) = contenders(&children).into_iter().next() else {
            return Ok(None);
        };
        let path = paths.child(&first.name);
        match timed(&session, "inspect", client.get_data(&path)).await? {
            Ok((data, stat)) => {
                let d = NodeData::decode(&data);
                return Ok(Some(LockInfo {
                    name: name.clone(),
                    owner: d.owner,
                    id: Some(first.id),
                    token: FencingToken(u64::try_from(stat.czxid).unwrap_or(0)),
                    locked_at: system_time(stat.mtime),
                    lock_until: None,
                }));
            }
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(op_error("inspect", &path, e)),
        }
    }
    Err(Error::backend_msg(
        KIND,
        "inspect",
        format!("the queue of {} changed too fast to read", paths.dir),
    ))
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
