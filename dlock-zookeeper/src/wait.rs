//! Waiting for a held lock: queue a ticket node and watch only its
//! predecessor (no herd), keeping the ticket's place for the next attempt.

use crate::acquire::{read_queue, Verdict};
use crate::error::{connection_broke, op_error, outcome_unknown};
use crate::nodes::{contenders, LockPaths, NodeData};
use crate::session::{Session, Ticket};
use dlock_core::BootInstant;
use dlock_core::{new_acquisition_id, Error, LockName, Result};
use std::sync::Arc;
use std::time::Duration;
use zookeeper_client as zk;

/// Deletes the ticket unless it was parked (a cancelled or timed-out wait
/// must not leave a node in the queue).
struct TicketGuard {
    session: Arc<Session>,
    ticket: Option<Ticket>,
}

impl TicketGuard {
    fn ticket(&self) -> Result<&Ticket> {
        self.ticket.as_ref().ok_or_else(|| {
            Error::backend_msg(
                crate::error::KIND,
                "wait",
                "internal: ticket already handed over",
            )
        })
    }

    fn park(mut self, dir: &str) {
        if let Some(t) = self.ticket.take() {
            self.session.park(dir, t);
        }
    }

    async fn delete(mut self) {
        if let Some(t) = self.ticket.take() {
            self.session.delete_or_orphan(&t.path).await;
        }
    }

    fn disarm(mut self) {
        self.ticket = None;
    }
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            let s = self.session.clone();
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move { s.delete_or_orphan(&t.path).await });
            }
        }
    }
}

enum Place {
    Lowest,
    Behind(String),
    Gone,
}

fn place(children: &[String], seq: i64) -> Place {
    let queue = contenders(children);
    match queue.iter().position(|c| c.seq == seq) {
        Some(0) => Place::Lowest,
        Some(i) => match queue.get(i - 1) {
            Some(pred) => Place::Behind(pred.name.clone()),
            None => Place::Gone,
        },
        None => Place::Gone,
    }
}

/// Queues a new ticket; answers it with the queue as read right after it.
async fn new_ticket(
    session: &Arc<Session>,
    client: &zk::Client,
    paths: &LockPaths,
    name: &LockName,
) -> Result<(Ticket, Vec<String>, Option<u64>)> {
    let id = new_acquisition_id();
    let prefix = paths.node_prefix(&id);
    let data = NodeData {
        id: id.clone(),
        name: name.as_str().to_string(),
        ..NodeData::default()
    }
    .encode();
    let opts = zk::CreateMode::EphemeralSequential.with_acls(session.acls());
    let pending = session.pending_create(&paths.dir, &id);
    for attempt in 0..3 {
        let sent = BootInstant::now();
        let create = client.create(&prefix, &data, &opts);
        let read = read_queue(client, paths)?;
        let (created, queue) =
            tokio::time::timeout(session.request_timeout, futures::future::join(create, read))
                .await
                .map_err(|_| Error::Timeout {
                    operation: "queue a waiting ticket",
                    after: session.request_timeout,
                })?;
        let (stat, seq) = match created {
            Ok(ok) => ok,
            Err(zk::Error::NoNode) if attempt < 2 => {
                session.ensure_dir(client, paths, name).await?;
                continue;
            }
            Err(e) => {
                if !outcome_unknown(&e) {
                    pending.settle();
                }
                return Err(op_error("wait", &paths.dir, e));
            }
        };
        // A create is a write: the leader ordered it, so it proves the session.
        session.proved(sent);
        let path = format!("{prefix}{seq}");
        let ticket = Ticket::new(path, id, seq.into_i64(), &stat);
        let queue = match queue {
            Ok(q) => q,
            Err(e) => {
                session.delete_or_orphan(&ticket.path).await;
                pending.settle();
                return Err(e);
            }
        };
        // The caller's TicketGuard owns the node from here (no await between).
        pending.settle();
        let blocked = match queue.verdict(ticket.seq, stat.ctime) {
            Verdict::Blocked(ms) => Some(ms),
            _ => None,
        };
        let children = queue.children.unwrap_or_default();
        return Ok((ticket, children, blocked));
    }
    Err(Error::backend_msg(
        crate::error::KIND,
        "wait",
        format!("the lock directory {} vanished while queueing", paths.dir),
    ))
}

/// Returns when the ticket is first in line (parked for the next
/// `try_acquire`), or after `max_wait` (ticket removed).
pub(crate) async fn wait_for_release(
    session: Arc<Session>,
    name: &LockName,
    max_wait: Duration,
) -> Result<()> {
    let deadline = BootInstant::now() + max_wait;
    let paths = LockPaths::new(&session.cfg.root, name);
    let client = session.client()?;
    let (guard, mut children) = match session.take_ticket(&paths.dir) {
        Some(t) => (
            TicketGuard {
                session: session.clone(),
                ticket: Some(t),
            },
            None,
        ),
        None => {
            let (mut t, kids, blocked) = new_ticket(&session, &client, &paths, name).await?;
            if let Some(ms) = blocked {
                t.blocked_until =
                    Some(BootInstant::now() + Duration::from_millis(ms.saturating_add(1)));
            }
            (
                TicketGuard {
                    session: session.clone(),
                    ticket: Some(t),
                },
                Some(kids),
            )
        }
    };
    let mut guard = guard;
    let mut broken = 0;
    loop {
        let ticket = guard.ticket()?.clone();
        if let Some(until) = ticket.blocked_until {
            // First in line, but a released holder's lock_at_least_for is
            // still running: sleep it out, then let try_acquire check again.
            if until > BootInstant::now() {
                dlock_core::clock::sleep_until(until.min(deadline)).await;
            }
            if BootInstant::now() >= deadline {
                guard.delete().await;
                return Ok(());
            }
            if let Some(t) = guard.ticket.as_mut() {
                t.blocked_until = None;
            }
            guard.park(&paths.dir);
            return Ok(());
        }
        let kids = match children.take() {
            Some(k) => k,
            None => {
                let r =
                    tokio::time::timeout(session.request_timeout, client.list_children(&paths.dir))
                        .await;
                match r {
                    Ok(Ok(k)) => k,
                    Ok(Err(zk::Error::NoNode)) => Vec::new(),
                    Ok(Err(e))
                        if reconnected_in_time(&session, &e, &mut broken, deadline).await =>
                    {
                        continue
                    }
                    Ok(Err(e)) => return Err(op_error("wait", &paths.dir, e)),
                    Err(_) => {
                        return Err(Error::Timeout {
                            operation: "wait: list the lock queue",
                            after: session.request_timeout,
                        })
                    }
                }
            }
        };
        let pred = match place(&kids, ticket.seq) {
            Place::Gone => {
                guard.disarm();
                return Ok(());
            }
            Place::Lowest => {
                guard.park(&paths.dir);
                return Ok(());
            }
            Place::Behind(pred) => paths.child(&pred),
        };
        let now = BootInstant::now();
        if now >= deadline {
            guard.delete().await;
            return Ok(());
        }
        let watched =
            tokio::time::timeout(session.request_timeout, client.check_and_watch_stat(&pred)).await;
        let watcher = match watched {
            Ok(Ok((None, _))) => continue,
            Ok(Ok((Some(_), w))) => w,
            Ok(Err(e)) if reconnected_in_time(&session, &e, &mut broken, deadline).await => {
                continue
            }
            Ok(Err(e)) => return Err(op_error("wait: watch the predecessor", &pred, e)),
            Err(_) => {
                return Err(Error::Timeout {
                    operation: "wait: watch the predecessor",
                    after: session.request_timeout,
                })
            }
        };
        tokio::select! {
            ev = watcher.changed() => {
                if ev.event_type == zk::EventType::Session {
                    // Terminal session state: the next call opens a new session.
                    guard.disarm();
                    return Ok(());
                }
            }
            _ = dlock_core::clock::sleep_until(deadline) => {
                guard.delete().await;
                return Ok(());
            }
        }
    }
}

/// Whether a read of the wait failed because the connection broke and the
/// client is back within the session (so the ticket, an ephemeral node of
/// that session, still stands and the read can be asked again): at most
/// twice per wait, and not past `deadline` or a request timeout.
async fn reconnected_in_time(
    session: &Session,
    e: &zk::Error,
    broken: &mut u32,
    deadline: BootInstant,
) -> bool {
    if !connection_broke(e) || *broken >= 2 {
        return false;
    }
    *broken += 1;
    let by = deadline.min(BootInstant::now() + session.request_timeout);
    session.reconnected(by).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predecessor_is_the_next_lower() {
        let kids: Vec<String> = ["n-a-0000000001", "n-b-0000000003", "hold", "n-c-0000000007"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(matches!(place(&kids, 1), Place::Lowest));
        assert!(matches!(place(&kids, 7), Place::Behind(p) if p == "n-b-0000000003"));
        assert!(matches!(place(&kids, 5), Place::Gone));
    }
}
