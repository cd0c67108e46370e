//! The znode layout: where a lock lives, how its nodes are named, what they hold.
//!
//! ```text
//! <root>/<encoded name>                    persistent, one per lock name ever used
//! <root>/<encoded name>/hold               persistent: the lock_at_least_for marker
//! <root>/<encoded name>/n-<id>-0000000042  ephemeral sequential: one contender
//! ```
//!
//! The lowest `n-` child holds the lock. `<id>` is the 32-hex-digit
//! acquisition id, so a create whose answer was lost can be found again.

use dlock_core::LockName;
use serde::{Deserialize, Serialize};

/// Prefix of every contender node.
pub const NODE_PREFIX: &str = "n-";
/// Name of the `lock_at_least_for` marker node.
pub const HOLD: &str = "hold";

/// Paths of one lock name under a root.
#[derive(Clone, Debug)]
pub struct LockPaths {
    /// `<root>/<encoded name>`.
    pub dir: String,
    /// `<dir>/hold`.
    pub hold: String,
}

impl LockPaths {
    /// The directory of `name` under `root`. [`LockName::path_segment`]
    /// percent-encodes every byte outside `[A-Za-z0-9_.-]` and a leading `.`,
    /// so no `/`, `.`, `..` or empty segment, and no character ZooKeeper
    /// refuses, ever reaches a path.
    pub fn new(root: &str, name: &LockName) -> Self {
        Self::of_segment(root, &name.path_segment())
    }

    /// The paths of the lock directory `<root>/<segment>`, as listed.
    pub fn of_segment(root: &str, segment: &str) -> Self {
        let dir = format!("{root}/{segment}");
        let hold = format!("{dir}/{HOLD}");
        LockPaths { dir, hold }
    }

    /// The path prefix a new contender node is created with.
    pub fn node_prefix(&self, id: &str) -> String {
        format!("{}/{NODE_PREFIX}{id}-", self.dir)
    }

    /// The full path of a child.
    pub fn child(&self, child: &str) -> String {
        format!("{}/{child}", self.dir)
    }
}

/// The lock name a directory segment encodes: the exact inverse of
/// [`LockName::path_segment`]. `None` for anything that encoding cannot
/// produce (bad escapes, invalid UTF-8, non-canonical spelling).
pub fn name_of_segment(segment: &str) -> Option<LockName> {
    let name = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    let name = LockName::new(name.into_owned()).ok()?;
    (name.path_segment() == segment).then_some(name)
}

/// A contender child, parsed from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contender {
    /// The child's name.
    pub name: String,
    /// Acquisition id embedded in the name.
    pub id: String,
    /// Sequence number the server appended.
    pub seq: i64,
}

/// Parses `n-<id>-<seq>`; anything else (the marker, foreign nodes) is `None`.
///
/// `<id>` never contains `-` (32 hex digits); `<seq>` is what the server
/// appended: `%010d` of the parent's 32-bit `cversion`, which is negative
/// (`-2147483648`) once the counter has wrapped.
pub fn parse_contender(child: &str) -> Option<Contender> {
    let rest = child.strip_prefix(NODE_PREFIX)?;
    let (id, seq) = rest.split_once('-')?;
    if id.is_empty() {
        return None;
    }
    let seq: i64 = seq.parse().ok()?;
    Some(Contender {
        name: child.to_string(),
        id: id.to_string(),
        seq,
    })
}

/// Order of two sequence numbers in serial-number arithmetic modulo 2^32
/// (RFC 1982): correct across the server's counter wrap-around as long as
/// the nodes compared were created fewer than 2^31 sequence steps apart.
pub fn seq_distance(from: i64, to: i64) -> i32 {
    (to as u32).wrapping_sub(from as u32) as i32
}

/// The contenders among `children`, first in line first (wrap-safe).
pub fn contenders(children: &[String]) -> Vec<Contender> {
    let mut v: Vec<Contender> = children.iter().filter_map(|c| parse_contender(c)).collect();
    if let Some(pivot) = v.first().map(|c| c.seq) {
        // Distances from any member are a total order within the window.
        v.sort_by_key(|c| seq_distance(pivot, c.seq));
    }
    v
}

/// What a contender node stores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeData {
    /// The owner (empty while the node is a waiting ticket not yet claimed).
    #[serde(default)]
    pub owner: String,
    /// Acquisition id.
    #[serde(default)]
    pub id: String,
    /// `lock_at_most_for` in milliseconds.
    #[serde(default)]
    pub at_most_ms: u64,
    /// `lock_at_least_for` in milliseconds.
    #[serde(default)]
    pub at_least_ms: u64,
    /// The lock name as given, for operators reading the tree.
    #[serde(default)]
    pub name: String,
}

impl NodeData {
    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses JSON bytes; unreadable data gives an empty record.
    pub fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// The `lock_at_least_for` marker, written atomically with the release.
///
/// The lock stays taken while `server time < mtime + remaining_ms`, where
/// `mtime` is the marker node's modification time, stamped by the ensemble's
/// leader when the release was committed, and "server time" is the timestamp
/// of a write the contender made itself. No client clock is involved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Owner of the released lease.
    #[serde(default)]
    pub owner: String,
    /// Acquisition id of the released lease.
    #[serde(default)]
    pub id: String,
    /// Fencing token of the released lease.
    #[serde(default)]
    pub token: u64,
    /// How long after the marker's mtime the lock stays taken.
    #[serde(default)]
    pub remaining_ms: u64,
}

impl Marker {
    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the marker node's data; empty or unreadable data is "no marker".
    pub fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// The server time (ms since the epoch) until which the lock stays
    /// taken, given the marker node's mtime. `None` when no time remains.
    pub fn until_ms(&self, mtime: i64) -> Option<i64> {
        if self.remaining_ms == 0 {
            return None;
        }
        let rem = i64::try_from(self.remaining_ms).unwrap_or(i64::MAX);
        Some(mtime.saturating_add(rem))
    }
}

/// Whether the marker blocks a contender whose freshest server timestamp is
/// `now_ms`; if so, for how many milliseconds (by that timestamp).
pub fn blocked_for_ms(marker: &Marker, marker_mtime: i64, now_ms: i64) -> Option<u64> {
    let until = marker.until_ms(marker_mtime)?;
    if now_ms < until {
        u64::try_from(until - now_ms).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn odd_names_stay_one_segment() {
        for n in [
            "a/b",
            "..",
            ".",
            "/x/",
            "a//b",
            "%",
            "zookeeper",
            "ü 🔒",
            "\t\n",
        ] {
            let p = LockPaths::new("/dlock", &LockName::new(n).unwrap());
            let seg = p.dir.strip_prefix("/dlock/").unwrap();
            assert!(
                !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('/'),
                "{n:?} -> {seg}"
            );
            assert!(seg.bytes().all(|b| b.is_ascii_graphic()), "{seg}");
        }
        let longest = LockName::new("é".repeat(127)).unwrap();
        assert!(LockPaths::new("/r", &longest).dir.len() < 1000);
    }

    #[test]
    fn segments_decode_exactly() {
        for n in ["a/b", "ünï %", ".x", "a.b", "%41", " ", "🔒"] {
            let name = LockName::new(n).unwrap();
            assert_eq!(name_of_segment(&name.path_segment()), Some(name));
        }
        for seg in ["%", "%4", "%zz", "%41", "%2e", ".x", "a b", "%FF", ""] {
            assert_eq!(name_of_segment(seg), None, "{seg}");
        }
    }

    #[test]
    fn contender_names() {
        let kids: Vec<String> = [
            "n-abc-0000000010",
            "hold",
            "n-def-0000000002",
            "n-fff-0000000005",
            "n-bad-xx",
            "n--0000000001",
            "x-abc-0000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = contenders(&kids);
        let seqs: Vec<i64> = c.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [2, 5, 10]);
        assert_eq!(c[1].id, "fff");
    }

    #[test]
    fn order_survives_the_counter_wrap() {
        // The server formats the wrapped 32-bit counter with %010d.
        let kids: Vec<String> = [
            "n-c--2147483647",
            "n-a-2147483646",
            "n-d--2147483646",
            "n-b-2147483647",
            "n-e--000000005",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for rot in 0..kids.len() {
            let mut k = kids.clone();
            k.rotate_left(rot);
            let ids: Vec<String> = contenders(&k).into_iter().map(|c| c.id).collect();
            assert_eq!(ids, ["a", "b", "c", "d", "e"], "rotation {rot}");
        }
        assert!(seq_distance(2_147_483_647, -2_147_483_648) == 1);
        assert!(seq_distance(-5, 3) == 8);
    }

    #[test]
    fn marker_window() {
        let m = Marker {
            remaining_ms: 1000,
            ..Marker::default()
        };
        assert_eq!(blocked_for_ms(&m, 5_000, 5_500), Some(500));
        assert_eq!(blocked_for_ms(&m, 5_000, 6_000), None);
        assert_eq!(blocked_for_ms(&Marker::default(), 5_000, 0), None);
        assert_eq!(Marker::decode(b""), Marker::default());
        let round = Marker::decode(&m.encode());
        assert_eq!(round, m);
    }
}
