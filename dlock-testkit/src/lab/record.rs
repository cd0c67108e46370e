//! What a lab worker reports for each hold, one JSON line per hold, written
//! (and flushed) as soon as the hold ends: a worker stopped or killed later
//! has already told what it did.

use serde::{Deserialize, Serialize};

/// How a hold ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    /// `release()` answered `Ok`.
    Released,
    /// The guard was dropped (background release).
    Dropped,
    /// `is_held()` turned false, or `release()` answered `LockLost`.
    Lost,
    /// `release()` failed otherwise (the coordinator did not answer).
    ReleaseFailed,
    /// The process exited while holding, without releasing.
    Abandoned,
}

/// One write to the fenced resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// CLOCK_MONOTONIC ns taken before the write (and before the
    /// `is_held()` check when `checked`).
    pub at_ns: u128,
    /// Whether `is_held()` answered true just before (at `at_ns`).
    pub checked: bool,
    /// Whether the resource accepted it.
    pub accepted: bool,
    /// The highest token the resource had seen when it refused the write.
    pub refused_by: Option<u64>,
}

/// One hold, as its worker saw it. Times are CLOCK_MONOTONIC ns: one clock
/// for every process on the host, whatever its network namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    /// Worker process (its client namespace).
    pub process: String,
    /// Task within the process.
    pub task: usize,
    /// Lock name.
    pub name: String,
    /// Fencing token.
    pub token: u64,
    /// Acquired with `lock()` (waiting) rather than `try_lock()`.
    pub waited: bool,
    /// Keep-alive on.
    pub keep_alive: bool,
    /// `lock_for`, ms.
    pub lease_ms: u64,
    /// Before the acquire call that granted it was made.
    pub asked_ns: u128,
    /// After the acquire returned.
    pub start_ns: u128,
    /// The last instant (taken before the call) `is_held()` answered true.
    pub last_held_ns: u128,
    /// How it ended.
    pub end: End,
    /// When it ended, as the worker saw it: after `release()` returned, the
    /// guard was dropped, the loss was seen, or right before the exit. The
    /// holder renews nothing after this.
    pub end_ns: u128,
    /// For `End::Lost`: whether `lost()` completed within a second of it.
    pub lost_reported: bool,
    /// For `End::Lost`: what the coordinator said right after, asked with
    /// `inspect()`: `Some(true)` if it still had this very hold (same
    /// token), so the loss was the client's alone; `None` if it did not
    /// answer within a few seconds.
    #[serde(default)]
    pub coordinator_kept: Option<bool>,
    /// Before the last `extend()` that answered `Ok` was made (holds
    /// without keep-alive extend once, explicitly): validity counts from
    /// no earlier than this.
    #[serde(default)]
    pub extended_ns: Option<u128>,
    /// Writes to the fenced resource during the hold.
    pub writes: Vec<Write>,
}

/// One acquire that did not grant a hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Worker process.
    pub process: String,
    /// Lock name.
    pub name: String,
    /// Before the call.
    pub asked_ns: u128,
    /// After it returned.
    pub answered_ns: u128,
}

/// A lock operation, as the availability table counts it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `try_lock()`, or `lock()` with a wait.
    Acquire,
    /// `LockGuard::extend()`.
    Extend,
    /// `LockGuard::release()`.
    Release,
}

/// One lock operation and how it answered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Worker process.
    pub process: String,
    /// Which operation.
    pub op: Op,
    /// An acquire that waited for the lock (`lock()`): its time is not
    /// the coordinator's, so it counts for errors, not for latency.
    pub waited: bool,
    /// Before the call.
    pub asked_ns: u128,
    /// After it returned.
    pub answered_ns: u128,
    /// The error it answered, if any (`Busy` and a granted lock are
    /// answers, not errors).
    pub error: Option<String>,
}

/// What a worker prints besides holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// The worker connected; its backend declares this `expiry_slack`.
    Started {
        /// `Capabilities::expiry_slack`, ms.
        expiry_slack_ms: u64,
    },
    /// A hold ended.
    Hold(HoldRecord),
    /// A `try_lock` answered "held by someone else".
    Busy(Attempt),
    /// An acquire answered an error (expected under faults; counted). Its
    /// outcome is unknown: the coordinator may have granted it.
    AcquireError(Attempt, String),
    /// A lock operation answered (or failed).
    Op(OpRecord),
    /// A call did not answer within its deadline: a hang.
    Hang(String),
    /// The worker finished its run.
    Done,
}
