//! The checker: what the lab's histories must never show.

use super::record::{Attempt, End, HoldRecord};
use std::collections::BTreeMap;
use std::time::Duration;

/// Timing noise a lab run allows on top of a backend's declared
/// `expiry_slack` before a lock still held counts as stuck: six labs share
/// two cores in CI, and a worker's reading of its clock can lag.
pub const STUCK_MARGIN: Duration = Duration::from_secs(1);

/// How long after a fault heals a cluster may still be electing the leader
/// it causes (3-member clusters with fast elections, on a loaded host).
pub const ELECTION_SETTLE: Duration = Duration::from_secs(3);

/// What one run recorded, as the checker reads it.
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    /// Every hold.
    pub holds: &'a [HoldRecord],
    /// Every `try_lock` that answered "held".
    pub busy: &'a [Attempt],
    /// Every acquire that failed: the coordinator may have granted it.
    pub unknown: &'a [Attempt],
    /// The backend's declared `expiry_slack`.
    pub expiry_slack: Duration,
    /// Windows in which the nemesis may have caused a leader change: from
    /// a fault's start to its end + [`ELECTION_SETTLE`]; empty for one
    /// server.
    /// etcd, ZooKeeper and Consul restart lease and session timers when a
    /// new leader takes over (README, "Guarantees and their limits"), so a
    /// lease alive at a leader change may run its full length again from
    /// there.
    pub leader_changes: &'a [(u128, u128)],
}

/// Violations found, by kind (empty: the run is clean).
#[derive(Debug, Default)]
pub struct Violations {
    /// Kind → one message per violation.
    pub by_kind: BTreeMap<&'static str, Vec<String>>,
    /// Busy `try_lock`s only a leader change explains (the lease was past
    /// `lock_for` + slack counted from its last renewal): how often the
    /// restart of lease timers at a leader change showed.
    pub held_through_a_leader_change: usize,
}

impl Violations {
    fn add(&mut self, kind: &'static str, msg: String) {
        self.by_kind.entry(kind).or_default().push(msg);
    }

    /// The number of violations of `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.by_kind.get(kind).map_or(0, Vec::len)
    }

    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.by_kind.values().all(Vec::is_empty)
    }
}

/// Every kind the checker reports, in report order.
pub const KINDS: &[&str] = &[
    "overlapping valid holds",
    "tokens not increasing in grant order",
    "valid past lock_for without keep-alive",
    "held past lock_for + declared slack",
    "checked fenced write refused",
    "fenced resource accepted a lower token",
    "loss lost() never reported",
    "hangs",
    "worker failures",
];

/// Checks the history of one run and the fenced resource's accepted tokens
/// per name (`accepted`).
///
/// A hold is valid from `start_ns` (after the acquire returned) to
/// `last_held_ns` (taken *before* an `is_held()` that answered true, so a
/// holder stopped right after the call cannot stretch it).
pub fn check(history: &History<'_>, accepted: &BTreeMap<String, Vec<u64>>) -> Violations {
    let holds = history.holds;
    let mut v = Violations::default();
    stuck(history, &mut v);
    let mut by_name: BTreeMap<&str, Vec<&HoldRecord>> = BTreeMap::new();
    for h in holds {
        by_name.entry(&h.name).or_default().push(h);
    }
    for (name, hs) in &mut by_name {
        hs.sort_by_key(|h| (h.start_ns, h.token));
        // Overlap: each hold against the longest-reaching earlier one.
        let mut reach: Option<&HoldRecord> = None;
        for h in hs.iter() {
            if let Some(r) = reach {
                if h.start_ns < r.last_held_ns && h.token != r.token {
                    v.add(
                        "overlapping valid holds",
                        format!(
                            "{name}: token {} ({}, {:?}) still held {:.1} ms after token {} ({}) was granted",
                            r.token,
                            r.process,
                            r.end,
                            (r.last_held_ns - h.start_ns) as f64 / 1e6,
                            h.token,
                            h.process
                        ),
                    );
                }
            }
            if reach.is_none_or(|r| h.last_held_ns > r.last_held_ns) {
                reach = Some(h);
            }
        }
        for w in hs.windows(2) {
            if w[1].token <= w[0].token {
                v.add(
                    "tokens not increasing in grant order",
                    format!(
                        "{name}: token {} ({}) granted after token {} ({})",
                        w[1].token, w[1].process, w[0].token, w[0].process
                    ),
                );
            }
        }
        // A write refused right after is_held() said true: a newer token
        // had been granted (and written) while this holder was valid.
        for h in hs.iter() {
            for w in h.writes.iter().filter(|w| w.checked && !w.accepted) {
                let newer = w.refused_by.unwrap_or_default();
                let granted_before = hs
                    .iter()
                    .find(|o| o.token == newer)
                    .is_none_or(|o| o.start_ns < w.at_ns);
                if granted_before {
                    v.add(
                        "checked fenced write refused",
                        format!(
                            "{name}: token {} ({}) was refused by token {newer} right after is_held() said true",
                            h.token, h.process
                        ),
                    );
                }
            }
        }
    }
    for (name, tokens) in accepted {
        for w in tokens.windows(2) {
            if w[1] < w[0] {
                v.add(
                    "fenced resource accepted a lower token",
                    format!("{name}: accepted {} after {}", w[1], w[0]),
                );
            }
        }
    }
    for h in holds {
        // Without keep-alive, validity counts from before the acquire was
        // sent (before `start_ns`), or from the last extension's send
        // (just after `extended_ns`), so it cannot reach that + lease.
        let proof_ns = h.extended_ns.unwrap_or(h.start_ns).max(h.start_ns);
        if !h.keep_alive && h.last_held_ns > proof_ns + ms_ns(h.lease_ms) {
            v.add(
                "valid past lock_for without keep-alive",
                format!(
                    "{} token {} ({}): is_held() said true {:.1} ms after the acquire or extension returned, with lock_for {} ms and no keep-alive",
                    h.name,
                    h.token,
                    h.process,
                    (h.last_held_ns - proof_ns) as f64 / 1e6,
                    h.lease_ms
                ),
            );
        }
        if h.end == End::Lost && !h.lost_reported {
            v.add(
                "loss lost() never reported",
                format!(
                    "{} token {} ({} task {}): is_held() turned false or release said LockLost, but lost() did not complete within 1 s",
                    h.name, h.token, h.process, h.task
                ),
            );
        }
    }
    v
}

fn ms_ns(ms: u64) -> u128 {
    u128::from(ms) * 1_000_000
}

/// A lock is stuck when a `try_lock` found it held although nothing could
/// still hold it: every hold of the name, and every failed acquire of it
/// (the coordinator may have granted that one), had ended more than
/// `lock_for` + the declared `expiry_slack` + [`STUCK_MARGIN`] before the
/// `try_lock` was sent. A holder renews nothing after its hold ends
/// (`end_ns`), and a coordinator keeps an unrenewed lease `lock_for` at
/// most, plus the slack it declares, counted from the later of the last
/// renewal and the last leader change while the lease was alive.
fn stuck(history: &History<'_>, v: &mut Violations) {
    let allowance = history.expiry_slack + STUCK_MARGIN;
    let allowance_ns = allowance.as_nanos();
    // Per name: (asked, could last until) of everything that could hold it.
    let mut holders: BTreeMap<&str, Vec<(u128, u128)>> = BTreeMap::new();
    for h in history.holds {
        holders
            .entry(&h.name)
            .or_default()
            .push((h.asked_ns, h.end_ns + ms_ns(h.lease_ms) + allowance_ns));
    }
    let lease_of = |name: &str| {
        history
            .holds
            .iter()
            .filter(|h| h.name == name)
            .map(|h| h.lease_ms)
            .max()
            .unwrap_or_default()
    };
    for a in history.unknown {
        let until = a.answered_ns + ms_ns(lease_of(&a.name)) + allowance_ns;
        holders
            .entry(&a.name)
            .or_default()
            .push((a.asked_ns, until));
    }
    let renewed_only = holders.clone();
    let mut changes = history.leader_changes.to_vec();
    changes.sort_unstable();
    let longest_ns = history
        .holds
        .iter()
        .map(|h| ms_ns(h.lease_ms))
        .max()
        .unwrap_or(0);
    for hs in holders.values_mut() {
        for (asked, until) in hs.iter_mut() {
            // Alive (by the bound so far) at some instant of the window: the
            // new leader may restart its timer as late as the window's end.
            for (from, to) in &changes {
                if *asked < *to && *from < *until {
                    *until = (*until).max(to + longest_ns + allowance_ns);
                }
            }
        }
    }
    let explains = |bounds: &BTreeMap<&str, Vec<(u128, u128)>>, b: &Attempt| {
        bounds.get(b.name.as_str()).is_some_and(|hs| {
            hs.iter()
                .any(|(asked, until)| *asked < b.answered_ns && b.asked_ns < *until)
        })
    };
    for b in history.busy {
        let explained = explains(&holders, b);
        if explained && !explains(&renewed_only, b) {
            v.held_through_a_leader_change += 1;
        }
        if !explained {
            let last_end = holders.get(b.name.as_str()).and_then(|hs| {
                hs.iter()
                    .filter(|(a, _)| *a < b.answered_ns)
                    .map(|(_, u)| *u)
                    .max()
            });
            v.add(
                "held past lock_for + declared slack",
                format!(
                    "{}: a try_lock by {} found it held {}, with lock_for + expiry_slack + margin ({allowance:?} on top of lock_for) counted from the end of every hold and failed acquire",
                    b.name,
                    b.process,
                    match last_end {
                        Some(u) => format!("{:.1} ms after the last of them ran out", (b.asked_ns.saturating_sub(u)) as f64 / 1e6),
                        None => "with no hold or acquire of it before".to_string(),
                    }
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::record::Write;

    fn holds_only(holds: &[HoldRecord]) -> History<'_> {
        History {
            holds,
            busy: &[],
            unknown: &[],
            expiry_slack: Duration::ZERO,
            leader_changes: &[],
        }
    }

    fn hold(name: &str, token: u64, start: u128, last: u128) -> HoldRecord {
        HoldRecord {
            process: "c1".into(),
            task: 0,
            name: name.into(),
            token,
            waited: false,
            keep_alive: false,
            lease_ms: 1000,
            asked_ns: start,
            start_ns: start,
            last_held_ns: last,
            end: End::Released,
            end_ns: last,
            lost_reported: false,
            coordinator_kept: None,
            extended_ns: None,
            writes: Vec::new(),
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let hs = [
            hold("a", 1, 0, 10),
            hold("a", 2, 11, 20),
            hold("b", 1, 5, 30),
        ];
        assert!(check(&holds_only(&hs), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn every_kind_is_caught() {
        // A long hold overlapping a later, shorter one (not only neighbours).
        let hs = [
            hold("a", 1, 0, 100),
            hold("a", 2, 10, 20),
            hold("a", 3, 50, 60),
        ];
        assert_eq!(
            check(&holds_only(&hs), &BTreeMap::new()).count("overlapping valid holds"),
            2
        );
        let hs = [hold("a", 2, 0, 10), hold("a", 1, 20, 30)];
        assert_eq!(
            check(&holds_only(&hs), &BTreeMap::new()).count("tokens not increasing in grant order"),
            1
        );
        let mut refused = hold("a", 1, 0, 10);
        refused.writes.push(Write {
            at_ns: 9,
            checked: true,
            accepted: false,
            refused_by: Some(2),
        });
        let hs = [refused, hold("a", 2, 5, 30)];
        assert_eq!(
            check(&holds_only(&hs), &BTreeMap::new()).count("checked fenced write refused"),
            1
        );
        let mut lost = hold("b", 1, 0, 10);
        lost.end = End::Lost;
        assert_eq!(
            check(&holds_only(&[lost]), &BTreeMap::new()).count("loss lost() never reported"),
            1
        );
        let accepted = BTreeMap::from([("a".to_string(), vec![1, 3, 2])]);
        assert_eq!(
            check(&holds_only(&[]), &accepted).count("fenced resource accepted a lower token"),
            1
        );
    }

    const S: u128 = 1_000_000_000;

    fn attempt(name: &str, asked: u128, answered: u128) -> Attempt {
        Attempt {
            process: "c2".into(),
            name: name.into(),
            asked_ns: asked,
            answered_ns: answered,
        }
    }

    #[test]
    fn validity_past_lock_for_without_keep_alive_is_caught() {
        // lock_for 1 s: valid 1.5 s after the acquire returned.
        let hs = [hold("a", 1, 0, S * 3 / 2)];
        let v = check(&holds_only(&hs), &BTreeMap::new());
        assert_eq!(v.count("valid past lock_for without keep-alive"), 1);
        let mut kept = hold("a", 1, 0, S * 3 / 2);
        kept.keep_alive = true;
        let v = check(&holds_only(&[kept]), &BTreeMap::new());
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_lock_held_past_every_lease_is_stuck() {
        // A hold ending at 0.5 s with lock_for 1 s, slack 1 s and the 1 s
        // margin: a try_lock sent at 3 s may find it held, one at 4 s may not.
        let hs = [hold("a", 1, 0, S / 2)];
        let busy = [
            attempt("a", 3 * S, 3 * S + 1),
            attempt("a", 4 * S, 4 * S + 1),
        ];
        let h = History {
            holds: &hs,
            busy: &busy,
            unknown: &[],
            expiry_slack: Duration::from_secs(1),
            leader_changes: &[],
        };
        assert_eq!(
            check(&h, &BTreeMap::new()).count("held past lock_for + declared slack"),
            1
        );
        // A failed acquire at 3.5 s may have been granted: it explains both.
        let unknown = [attempt("a", 3 * S + S / 2, 3 * S + S / 2 + 1)];
        let h = History {
            unknown: &unknown,
            ..h
        };
        assert!(check(&h, &BTreeMap::new()).is_empty());
        // A leader change window from 3 s to 5 s, while the hold's lease
        // may still have been alive: it may run again from 5 s, so a
        // try_lock at 7.5 s is explained, one at 9 s is not.
        let late = [
            attempt("a", 7 * S + S / 2, 8 * S),
            attempt("a", 9 * S, 9 * S + 1),
        ];
        let changes = [(3 * S, 5 * S)];
        let moved = History {
            busy: &late,
            unknown: &[],
            leader_changes: &changes,
            ..h
        };
        assert_eq!(
            check(&moved, &BTreeMap::new()).count("held past lock_for + declared slack"),
            1
        );
        // Nothing ever held "b": finding it held is stuck at once.
        let busy = [attempt("b", S, S + 1)];
        let h = History {
            busy: &busy,
            unknown: &[],
            ..h
        };
        assert_eq!(
            check(&h, &BTreeMap::new()).count("held past lock_for + declared slack"),
            1
        );
    }
}
