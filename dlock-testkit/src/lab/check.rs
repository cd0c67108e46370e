//! The checker: what the lab's histories must never show.

use super::record::{End, HoldRecord};
use std::collections::BTreeMap;

/// Violations found, by kind (empty: the run is clean).
#[derive(Debug, Default)]
pub struct Violations {
    /// Kind → one message per violation.
    pub by_kind: BTreeMap<&'static str, Vec<String>>,
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
    "checked fenced write refused",
    "fenced resource accepted a lower token",
    "loss lost() never reported",
    "hangs",
    "worker failures",
];

/// Checks the holds of one run and the fenced resource's accepted tokens
/// per name (`accepted`).
///
/// A hold is valid from `start_ns` (after the acquire returned) to
/// `last_held_ns` (taken *before* an `is_held()` that answered true, so a
/// holder stopped right after the call cannot stretch it).
pub fn check(holds: &[HoldRecord], accepted: &BTreeMap<String, Vec<u64>>) -> Violations {
    let mut v = Violations::default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::record::Write;

    fn hold(name: &str, token: u64, start: u128, last: u128) -> HoldRecord {
        HoldRecord {
            process: "c1".into(),
            task: 0,
            name: name.into(),
            token,
            waited: false,
            keep_alive: false,
            lease_ms: 1000,
            start_ns: start,
            last_held_ns: last,
            end: End::Released,
            lost_reported: false,
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
        assert!(check(&hs, &BTreeMap::new()).is_empty());
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
            check(&hs, &BTreeMap::new()).count("overlapping valid holds"),
            2
        );
        let hs = [hold("a", 2, 0, 10), hold("a", 1, 20, 30)];
        assert_eq!(
            check(&hs, &BTreeMap::new()).count("tokens not increasing in grant order"),
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
            check(&hs, &BTreeMap::new()).count("checked fenced write refused"),
            1
        );
        let mut lost = hold("b", 1, 0, 10);
        lost.end = End::Lost;
        assert_eq!(
            check(&[lost], &BTreeMap::new()).count("loss lost() never reported"),
            1
        );
        let accepted = BTreeMap::from([("a".to_string(), vec![1, 3, 2])]);
        assert_eq!(
            check(&[], &accepted).count("fenced resource accepted a lower token"),
            1
        );
    }
}
