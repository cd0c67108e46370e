//! In-process waiting lines: the waiters of one [`crate::Locker`] (and its
//! clones) for one lock name queue here, first come first served, and only
//! the first in line waits at the coordinator and asks it for the lock.
//!
//! Without a line, every waiter of a process is woken by each release and
//! asks the coordinator again, so one release cost it a request per waiter
//! (the scale benchmark counted 81 per release on PostgreSQL with 256
//! waiters). With it, a release costs one request per process (per
//! `Locker`), and the waiters of a process take the lock in the order they
//! asked. The line only decides who of this process asks; the coordinator
//! still decides who holds the lock, so it changes nothing about safety.

use crate::LockName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// Lines by lock name; a name's entry lives while anyone is in its line.
#[derive(Default)]
pub(crate) struct WaitingLines {
    lines: Mutex<HashMap<LockName, Arc<tokio::sync::Mutex<()>>>>,
}

/// The turn of the first in line: while it lives, the others of the line
/// wait. Dropping it (the lock taken, the wait given up or cancelled) lets
/// the next one in.
pub(crate) struct Turn {
    lines: Arc<WaitingLines>,
    name: LockName,
    guard: Option<OwnedMutexGuard<()>>,
}

impl WaitingLines {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<LockName, Arc<tokio::sync::Mutex<()>>>> {
        // A panic elsewhere while holding this lock leaves a usable map.
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (FIFO) until this waiter is first in `name`'s line. Cancel
    /// safe: a waiter dropped while queued leaves the line.
    pub(crate) async fn turn(self: &Arc<Self>, name: &LockName) -> Turn {
        let line = self.entries().entry(name.clone()).or_default().clone();
        let mut turn = Turn {
            lines: self.clone(),
            name: name.clone(),
            guard: None,
        };
        turn.guard = Some(line.lock_owned().await);
        turn
    }

    /// Forgets `name`'s line when nobody is in it any more.
    fn prune(&self, name: &LockName) {
        let mut lines = self.entries();
        if lines.get(name).is_some_and(|l| Arc::strong_count(l) == 1) {
            lines.remove(name);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // The guard holds its line's Arc: let go of it before counting.
        drop(self.guard.take());
        self.lines.prune(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn name(s: &str) -> LockName {
        LockName::new(s).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[tokio::test]
    async fn one_turn_at_a_time_in_arrival_order_and_lines_are_forgotten() {
        let lines = Arc::new(WaitingLines::default());
        let first = lines.turn(&name("a")).await;
        // Another name has a line of its own.
        let other = lines.turn(&name("b")).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (lines, order) = (lines.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _t = lines.turn(&name("a")).await;
                order.lock().unwrap_or_else(|p| p.into_inner()).push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            // Queue them in a known order.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(order.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        drop(first);
        for t in tasks {
            assert!(t.await.is_ok());
        }
        assert_eq!(
            *order.lock().unwrap_or_else(|p| p.into_inner()),
            vec![0, 1, 2]
        );
        assert_eq!(lines.entries().len(), 1, "a's line outlived its waiters");
        drop(other);
        assert!(lines.entries().is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_line() {
        let lines = Arc::new(WaitingLines::default());
        let first = lines.turn(&name("a")).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), lines.turn(&name("a"))).await;
        assert!(gave_up.is_err());
        drop(first);
        let next = tokio::time::timeout(Duration::from_secs(1), lines.turn(&name("a"))).await;
        assert!(
            next.is_ok(),
            "the line stayed blocked by a cancelled waiter"
        );
        drop(next);
        assert!(lines.entries().is_empty());
    }
}
