//! A lab worker: one process in a client namespace, several tasks taking
//! holds every way users do (`try_lock`, `lock` with a wait, keep-alive on
//! and off, release, drop, and one exit without release), writing to the
//! fenced resource, and reporting each hold as one JSON line.

use super::fence::{Fence, Verdict};
use super::record::{Attempt, End, HoldRecord, Line, Op, OpRecord, Write};
use super::seeded::Seeded;
use crate::history::mono_ns;
use crate::ConnectFn;
use dlock_core::{Error, LockBackend, LockGuard, Locker};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Environment variable that turns the lab binary into a worker.
pub(crate) const ENV: &str = "DLOCK_LAB_WORKER";

/// What a worker is told to do.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct WorkerSpec {
    /// Its name (the client namespace).
    pub process: String,
    /// The coordinator URL it connects to.
    pub url: String,
    /// Names to contend for.
    pub names: Vec<String>,
    /// Tasks in the process.
    pub tasks: usize,
    /// How long to keep taking holds, ms.
    pub run_ms: u64,
    /// `lock_for`, ms.
    pub lease_ms: u64,
    /// Where the fenced resource lives.
    pub fence_dir: PathBuf,
    /// A lab self-test: run on this seeded bug.
    pub seeded: Option<Seeded>,
}

/// How long one call may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(40);

fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    if let Ok(json) = serde_json::to_string(line) {
        let _ = writeln!(out, "{json}");
        let _ = out.flush();
    }
}

/// Runs the worker; the process exits (without releasing its last hold).
pub(crate) async fn run(spec: WorkerSpec, connect: ConnectFn) -> Result<(), String> {
    let backend = match tokio::time::timeout(HANG, connect(spec.url.clone())).await {
        Ok(Ok(b)) => match spec.seeded {
            Some(bug) => bug.wrap(b),
            None => b,
        },
        Ok(Err(e)) => return Err(format!("connect {}: {e:#}", spec.url)),
        Err(_) => {
            emit(&Line::Hang(format!("connect to {}", spec.url)));
            return Ok(());
        }
    };
    let slack = backend.capabilities().expiry_slack;
    emit(&Line::Started {
        expiry_slack_ms: u64::try_from(slack.as_millis()).unwrap_or(u64::MAX),
    });
    let fence = Fence::new(&spec.fence_dir)?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.run_ms);
    let mut set = tokio::task::JoinSet::new();
    for task in 0..spec.tasks {
        let locker = Locker::from_arc(backend.clone())
            .with_owner(format!("{}-{task}", spec.process))
            .map_err(|e| e.to_string())?;
        let w = Task {
            spec: spec.clone(),
            task,
            locker,
            backend: backend.clone(),
            fence: fence.clone(),
        };
        set.spawn(async move { w.run_until(deadline).await });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| format!("worker task: {e}"))?;
    }
    // The cron pattern: take one more lock and exit without releasing it.
    let abandoned = Task {
        spec: spec.clone(),
        task: spec.tasks,
        locker: Locker::from_arc(backend.clone())
            .with_owner(format!("{}-exit", spec.process))
            .map_err(|e| e.to_string())?,
        backend,
        fence,
    };
    abandoned.abandon_one().await;
    emit(&Line::Done);
    std::process::exit(0);
}

/// Whether `lost()` completes within a second: a guard that no longer holds
/// must have said so.
async fn reported(lost: &dlock_core::LostSignal) -> bool {
    tokio::time::timeout(Duration::from_secs(1), lost.wait())
        .await
        .is_ok()
}

struct Task {
    spec: WorkerSpec,
    task: usize,
    locker: Locker,
    /// The same backend, to ask the coordinator about a loss.
    backend: Arc<dyn LockBackend>,
    fence: Fence,
}

/// How long the worker keeps asking the coordinator, after a loss, whether
/// it still has the hold.
const ASK_AFTER_LOSS: Duration = Duration::from_secs(3);

/// Reports one lock operation.
fn emit_op(process: &str, op: Op, waited: bool, asked_ns: u128, error: Option<String>) {
    emit(&Line::Op(OpRecord {
        process: process.to_string(),
        op,
        waited,
        asked_ns,
        answered_ns: mono_ns(),
        error,
    }));
}

/// One hold being taken.
struct Plan {
    name: String,
    waited: bool,
    keep_alive: bool,
    /// How long to hold.
    hold: Duration,
    /// Long holds end with a write that does not check `is_held()` first
    /// when the task was just paused (the fenced resource must refuse it
    /// if a newer holder wrote).
    long: bool,
}

impl Task {
    fn lease(&self) -> Duration {
        Duration::from_millis(self.spec.lease_ms)
    }

    fn plan(&self) -> Plan {
        let mut rng = rand::rng();
        let keep_alive = rng.random_bool(0.5);
        let long = rng.random_bool(0.3);
        let hold = if !long {
            Duration::from_millis(rng.random_range(0..200))
        } else if keep_alive {
            self.lease().mul_f64(1.5)
        } else {
            self.lease().mul_f64(0.7)
        };
        Plan {
            name: self.spec.names[rng.random_range(0..self.spec.names.len())].clone(),
            waited: rng.random_bool(0.5),
            keep_alive,
            hold,
            long,
        }
    }

    /// Takes `p`'s lock; with the instant before the call.
    async fn acquire(&self, p: &Plan) -> Option<(LockGuard, u128)> {
        let req = self
            .locker
            .acquire(p.name.clone())
            .lock_for(self.lease())
            .keep_alive(p.keep_alive);
        let asked_ns = mono_ns();
        let r = if p.waited {
            tokio::time::timeout(HANG, req.wait(Duration::from_secs(2)).lock()).await
        } else {
            tokio::time::timeout(HANG, req.try_lock()).await
        };
        let attempt = || Attempt {
            process: self.spec.process.clone(),
            name: p.name.clone(),
            asked_ns,
            answered_ns: mono_ns(),
        };
        if let Ok(r) = &r {
            let error = r.as_ref().err().map(|e| format!("{e:#}"));
            emit_op(&self.spec.process, Op::Acquire, p.waited, asked_ns, error);
        }
        match r {
            Err(_) => {
                emit(&Line::Hang(format!("acquire of {}", p.name)));
                None
            }
            Ok(Err(e)) => {
                emit(&Line::AcquireError(attempt(), format!("{e:#}")));
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
            Ok(Ok(None)) => {
                if !p.waited {
                    emit(&Line::Busy(attempt()));
                }
                let pause = rand::rng().random_range(0..20);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                None
            }
            Ok(Ok(Some(g))) => Some((g, asked_ns)),
        }
    }

    async fn run_until(&self, deadline: tokio::time::Instant) {
        while tokio::time::Instant::now() < deadline {
            let p = self.plan();
            if let Some((g, asked_ns)) = self.acquire(&p).await {
                let mut rec = self.hold(&p, g, asked_ns).await;
                rec.end_ns = mono_ns();
                emit(&Line::Hold(rec));
            }
        }
    }

    /// Takes one lock and exits the process while holding it.
    async fn abandon_one(&self) {
        for _ in 0..50 {
            let p = self.plan();
            if let Some((g, asked_ns)) = self.acquire(&p).await {
                let start_ns = mono_ns();
                let mut rec = self.record(&p, g.token().0, asked_ns, start_ns);
                let t0 = mono_ns();
                if g.is_held() {
                    rec.last_held_ns = t0;
                }
                rec.end = End::Abandoned;
                rec.end_ns = mono_ns();
                emit(&Line::Hold(rec));
                emit(&Line::Done);
                std::process::exit(0);
            }
        }
    }

    fn record(&self, p: &Plan, token: u64, asked_ns: u128, start_ns: u128) -> HoldRecord {
        HoldRecord {
            process: self.spec.process.clone(),
            task: self.task,
            name: p.name.clone(),
            token,
            waited: p.waited,
            keep_alive: p.keep_alive,
            lease_ms: self.spec.lease_ms,
            asked_ns,
            start_ns,
            last_held_ns: start_ns,
            end: End::Released,
            end_ns: start_ns,
            lost_reported: false,
            coordinator_kept: None,
            extended_ns: None,
            writes: Vec::new(),
        }
    }

    fn write(&self, rec: &mut HoldRecord, at_ns: u128, checked: bool) {
        let verdict = self.fence.write(&rec.name, rec.token);
        let (accepted, refused_by) = match verdict {
            Ok(Verdict::Accepted) => (true, None),
            Ok(Verdict::Refused(max)) => (false, Some(max)),
            Err(_) => return,
        };
        rec.writes.push(Write {
            at_ns,
            checked,
            accepted,
            refused_by,
        });
    }

    async fn hold(&self, p: &Plan, g: LockGuard, asked_ns: u128) -> HoldRecord {
        let start_ns = mono_ns();
        let mut rec = self.record(p, g.token().0, asked_ns, start_ns);
        let lost = g.lost();
        let mut gone = false;
        // A checked write first.
        let t0 = mono_ns();
        if g.is_held() {
            rec.last_held_ns = t0;
            self.write(&mut rec, t0, true);
        } else {
            gone = true;
        }
        let began = tokio::time::Instant::now();
        let until = began + p.hold;
        // Without keep-alive, one explicit extension halfway through.
        let mut extend_at = (!p.keep_alive).then(|| began + p.hold / 2);
        let mut blind_done = false;
        while !gone && tokio::time::Instant::now() < until {
            if extend_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                extend_at = None;
                if !self.extend(&g, &mut rec).await {
                    gone = true;
                    break;
                }
            }
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let step = Duration::from_millis(100).min(left);
            let before = mono_ns();
            tokio::time::sleep(step).await;
            let slept = Duration::from_nanos(
                u64::try_from(mono_ns().saturating_sub(before)).unwrap_or(u64::MAX),
            );
            if p.long && !blind_done && slept > step + Duration::from_millis(500) {
                // Just woke from a pause: write without looking first.
                blind_done = true;
                let at = mono_ns();
                self.write(&mut rec, at, false);
            }
            let t0 = mono_ns();
            if g.is_held() {
                rec.last_held_ns = t0;
            } else {
                gone = true;
            }
        }
        if gone {
            rec.end = End::Lost;
            rec.lost_reported = reported(&lost).await;
            rec.coordinator_kept = self.coordinator_kept(&rec).await;
            return rec;
        }
        if rand::rng().random_bool(0.2) {
            drop(g);
            rec.end = End::Dropped;
            return rec;
        }
        let t0 = mono_ns();
        if g.is_held() {
            rec.last_held_ns = t0;
        }
        let asked_ns = mono_ns();
        let released = tokio::time::timeout(HANG, g.release()).await;
        if let Ok(r) = &released {
            let error = r.as_ref().err().map(|e| format!("{e:#}"));
            emit_op(&self.spec.process, Op::Release, false, asked_ns, error);
        }
        match released {
            Err(_) => {
                emit(&Line::Hang(format!(
                    "release of {} (token {})",
                    rec.name, rec.token
                )));
                rec.end = End::ReleaseFailed;
            }
            Ok(Ok(())) => rec.end = End::Released,
            Ok(Err(Error::LockLost { .. })) => {
                rec.end = End::Lost;
                rec.lost_reported = reported(&lost).await;
                rec.coordinator_kept = self.coordinator_kept(&rec).await;
            }
            Ok(Err(_)) => rec.end = End::ReleaseFailed,
        }
        rec
    }
}

impl Task {
    /// One explicit `extend()` by the lease length; false when it answered
    /// that the lock is lost (the hold ends there).
    async fn extend(&self, g: &LockGuard, rec: &mut HoldRecord) -> bool {
        let asked_ns = mono_ns();
        let r = match tokio::time::timeout(HANG, g.extend(self.lease())).await {
            Ok(r) => r,
            Err(_) => {
                emit(&Line::Hang(format!(
                    "extend of {} (token {})",
                    rec.name, rec.token
                )));
                return true;
            }
        };
        emit_op(
            &self.spec.process,
            Op::Extend,
            false,
            asked_ns,
            r.as_ref().err().map(|e| format!("{e:#}")),
        );
        match r {
            Ok(()) => {
                // Before the call: the guard counts the new validity from
                // its own send, a moment later (the 1% + 2 ms it keeps in
                // hand covers that moment). An answer arriving after the
                // guard's validity ended must not revive it; counting from
                // the answer would hide that.
                rec.extended_ns = Some(asked_ns);
                true
            }
            Err(Error::LockLost { .. }) => false,
            // Unknown outcome: the guard still counts its validity from
            // the last proof, as is_held() will show.
            Err(_) => true,
        }
    }

    /// Whether the coordinator still had this hold right after its holder
    /// saw it lost (`None`: it did not answer in time).
    async fn coordinator_kept(&self, rec: &HoldRecord) -> Option<bool> {
        let name = dlock_core::LockName::new(rec.name.clone()).ok()?;
        let until = tokio::time::Instant::now() + ASK_AFTER_LOSS;
        while tokio::time::Instant::now() < until {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.backend.inspect(&name)).await {
                Ok(Ok(info)) => return Some(info.is_some_and(|i| i.token.0 == rec.token)),
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => return None,
            }
        }
        None
    }
}
