//! Extending and releasing a held lease.

use crate::acquire::parse_handle;
use crate::error::{connection_broke, multi_error, op_error};
use crate::nodes::{LockPaths, Marker};
use crate::session::{LeaseView, Session};
use dlock_core::BootInstant;
use dlock_core::{Error, Lease, Result};
use std::sync::Arc;
use std::time::Duration;
use zookeeper_client as zk;

/// The session and entry of `lease`, or why it is lost.
pub(crate) fn locate(
    current: Option<Arc<Session>>,
    lease: &Lease,
) -> Result<(Arc<Session>, String, LeaseView)> {
    let Some((sid, path)) = parse_handle(lease) else {
        return Err(Error::lost(
            &lease.name,
            "this lease was not granted by a ZooKeeper backend (unreadable handle)",
        ));
    };
    let session = match current {
        Some(s) if s.id == sid => s,
        _ => {
            return Err(Error::lost(
                &lease.name,
                format!("the ZooKeeper session {sid:#x} that held it has ended"),
            ))
        }
    };
    if let Some(reason) = session.dead_reason() {
        return Err(Error::lost(&lease.name, reason));
    }
    let Some(view) = session.lease(path, &lease.id) else {
        return Err(Error::lost(
            &lease.name,
            "no such lease on this connection: it expired, was released, or belongs to another acquisition",
        ));
    };
    let path = path.to_string();
    if BootInstant::now() >= view.deadline {
        session.expire(&path);
        return Err(Error::lost(
            &lease.name,
            "lock_at_most_for passed without a successful extension",
        ));
    }
    Ok((session, path, view))
}

fn timeout_err(op: &'static str, s: &Session) -> Error {
    Error::Timeout {
        operation: op,
        after: s.request_timeout,
    }
}

/// Proves the node still exists at the leader (a check inside a multi is a
/// linearized write-path request) and moves the local deadline.
pub(crate) async fn extend(
    current: Option<Arc<Session>>,
    lease: &Lease,
    lock_for: Duration,
) -> Result<Lease> {
    let (session, path, view) = locate(current, lease)?;
    let client = session.client()?;
    // Only a check, so asking again is harmless: once, when the connection
    // broke and the client is back within the session.
    let mut broken = false;
    loop {
        let sent = BootInstant::now();
        let mut w = client.new_multi_writer();
        w.add_check_version(&path, view.version)
            .map_err(|e| op_error("extend", &path, e))?;
        let r = tokio::time::timeout(session.request_timeout, w.commit())
            .await
            .map_err(|_| timeout_err("extend", &session))?;
        return match r.map_err(multi_error) {
            Ok(_) => {
                // A multi goes through the leader even when it only checks.
                session.proved(sent);
                let new = lease.extended(lock_for, sent);
                if !session.extend_to(&path, &lease.id, new.valid_until) {
                    return Err(Error::lost(
                        &lease.name,
                        "lock_at_most_for passed while the extension was in flight",
                    ));
                }
                Ok(new)
            }
            Err((_, zk::Error::NoNode | zk::Error::BadVersion)) => {
                let why =
                    "the lock node is gone: the session expired or an operator force-released it";
                session.forget(&path, Some(why));
                Err(Error::lost(&lease.name, why))
            }
            Err((_, e))
                if connection_broke(&e)
                    && !broken
                    && session
                        .reconnected(BootInstant::now() + session.request_timeout)
                        .await =>
            {
                broken = true;
                continue;
            }
            Err((_, e)) => Err(op_error("extend", &path, e)),
        };
    }
}

/// Milliseconds of `at_least` still to honour, measured conservatively from
/// the moment the acquire answer arrived (the server granted it earlier).
fn remaining_at_least(at_least: Duration, acquired_recv: BootInstant) -> Option<u64> {
    let left = at_least.checked_sub(acquired_recv.elapsed())?;
    if left.is_zero() {
        return None;
    }
    // Round up, plus one for the server's millisecond timestamps.
    let ms = left.as_micros().div_ceil(1000) + 1;
    Some(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Deletes the node; when at_least has time left, writes the marker in the
/// same multi so the lock stays taken by the ensemble's clock.
pub(crate) async fn release(current: Option<Arc<Session>>, lease: &Lease) -> Result<()> {
    let (session, path, view) = locate(current, lease)?;
    let client = session.client()?;
    let paths = LockPaths::new(&session.cfg.root, &lease.name);
    // The guard's watch will see the node vanish: that is this release.
    session.begin_release(&path, &lease.id);
    for attempt in 0..2 {
        let sent = BootInstant::now();
        let remaining = remaining_at_least(lease.at_least, view.acquired_recv);
        let r = match remaining {
            Some(remaining_ms) => {
                let marker = Marker {
                    owner: lease.owner.clone(),
                    id: lease.id.clone(),
                    token: view.token,
                    remaining_ms,
                }
                .encode();
                let mut w = client.new_multi_writer();
                w.add_set_data(&paths.hold, &marker, None)
                    .map_err(|e| op_error("release", &paths.hold, e))?;
                w.add_delete(&path, None)
                    .map_err(|e| op_error("release", &path, e))?;
                let f = w.commit();
                tokio::time::timeout(session.request_timeout, f)
                    .await
                    .map_err(|_| timeout_err("release", &session))?
                    .map(|_| ())
                    .map_err(multi_error)
            }
            None => tokio::time::timeout(session.request_timeout, client.delete(&path, None))
                .await
                .map_err(|_| timeout_err("release", &session))?
                .map_err(|e| (Some(0), e)),
        };
        match r {
            Ok(()) => {
                // A delete (or multi) is a write: the leader ordered it.
                session.proved(sent);
                session.forget(&path, None);
                return Ok(());
            }
            // The marker node is missing (removed by hand): recreate, retry.
            Err((Some(0), zk::Error::NoNode)) if remaining.is_some() && attempt == 0 => {
                session.ensure_dir(&client, &paths, &lease.name).await?;
            }
            Err((_, zk::Error::NoNode)) => {
                let why = "the lock node was already gone: the session expired or an operator force-released it";
                session.forget(&path, Some(why));
                return Err(Error::lost(&lease.name, why));
            }
            // The node stays registered: its at_most timer still removes it.
            Err((_, e)) => return Err(op_error("release", &path, e)),
        }
    }
    Err(Error::backend_msg(
        crate::error::KIND,
        "release",
        format!("the marker node {} keeps disappearing", paths.hold),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn at_least_rounds_up() {
        let now = BootInstant::now();
        assert_eq!(remaining_at_least(Duration::ZERO, now), None);
        let r = remaining_at_least(Duration::from_secs(2), now).unwrap();
        assert!((1990..=2001).contains(&r), "{r}");
        let past = now.checked_sub(Duration::from_secs(3)).unwrap();
        assert_eq!(remaining_at_least(Duration::from_secs(2), past), None);
    }
}
