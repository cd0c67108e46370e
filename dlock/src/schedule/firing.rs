//! One firing of a job on one node: at most once across the cluster.
//!
//! Two locks per firing:
//! - the **firing lock** `<job>@<time of day, UTC>` (for example
//!   `emailLock@08:59:59.000Z`) says "this firing is taken". Its holder keeps
//!   it for [`FIRING_MEMORY`] after the run ends ([`crate::LockGuard::release_after`]),
//!   so a node whose timer fires the same instant late — a clock that is
//!   behind, a paused process — finds it taken and skips. The name repeats
//!   only for firings whole days apart, far beyond that memory, so each job
//!   leaves at most one record per time of day it fires at (SQL rows and
//!   Redis hashes are kept, not deleted, to keep their fencing counters).
//! - the **job lock** `<job>` keeps the job to one node at a time across
//!   firings (a run longer than the gap makes the next firing skip), with
//!   the job's own `lock_for`, `at_least`, keep-alive and `max_hold`; its
//!   fencing token is the one the job sees.
//!
//! A node does not start a firing more than [`MISFIRE_AFTER`] late by its
//! own clock: after that the firing lock may be forgotten. So a firing runs
//! at most once while the nodes' clocks agree within about
//! `FIRING_MEMORY - MISFIRE_AFTER` (5 minutes).

use super::scheduler::{wait_phase, Job, JobContext, JobOutcome, Phase, ShutdownSignal};
use crate::try_lock::with_current;
use crate::{Error, LockContext, LockGuard, LockName, Locker, LostSignal};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a firing lock stays taken after its run ends (and, without
/// `retry_within`, how long it outlives a runner that died).
pub(crate) const FIRING_MEMORY: Duration = Duration::from_secs(600);

/// A firing this late by the local clock is not started here.
pub(crate) const MISFIRE_AFTER: Duration = Duration::from_secs(300);

/// The longest `retry_within`: firing lock names repeat a day apart, and the
/// memory of one firing (window + [`FIRING_MEMORY`]) must end before then.
pub(crate) const MAX_RETRY_WINDOW: Duration = Duration::from_secs(12 * 3600);

/// The firing lock's name: the job name and the firing's time of day in UTC.
pub(crate) fn firing_lock_name(job: &str, at: DateTime<Utc>) -> crate::Result<LockName> {
    LockName::new(job)?;
    let name = format!("{job}@{}", at.format("%H:%M:%S%.3fZ"));
    LockName::new(name).map_err(|e| {
        Error::InvalidConfig(format!(
            "job name {job:?} is too long: each firing takes a lock named \
             \"<job>@HH:MM:SS.mmmZ\" (14 bytes more), which must fit in {} bytes ({e})",
            crate::MAX_NAME_BYTES
        ))
    })
}

enum End {
    Done(Result<(), String>),
    Lost(String),
    Aborted,
}

/// Runs one firing here if no node ran it (see the module docs).
/// `following` is the next firing, which a retry wait never reaches.
pub(crate) async fn fire(
    locker: &Locker,
    job: &Job,
    scheduled_at: DateTime<Utc>,
    following: Option<DateTime<Utc>>,
    rx: &watch::Receiver<Phase>,
) -> JobOutcome {
    let late_by = (Utc::now() - scheduled_at).to_std().unwrap_or_default();
    if late_by > MISFIRE_AFTER {
        tracing::warn!(
            ?late_by,
            "dlock: firing missed: this node's timer fired too late to run it safely"
        );
        return JobOutcome::Missed { late_by };
    }
    let firing = match take_firing(locker, job, scheduled_at, following).await {
        Ok(Some(taken)) => taken,
        Ok(None) => {
            tracing::debug!("dlock: skipped, another node took this firing");
            return JobOutcome::Skipped;
        }
        Err(e) => return lock_error(e),
    };
    let job_lock = match take_job_lock(locker, job, firing.job_lock_wait).await {
        Ok(Some(g)) => g,
        Ok(None) => {
            tracing::debug!("dlock: skipped, another node still runs this job");
            // Not run here: whoever can take the job lock in time may.
            let _ = firing.guard.release().await;
            return JobOutcome::Skipped;
        }
        Err(e) => {
            let _ = firing.guard.release().await;
            return lock_error(e);
        }
    };
    let token = job_lock.token();
    let lost = job_lock.lost();
    let firing_lost = firing.guard.lost();
    let ctx = JobContext {
        name: job.name.clone(),
        scheduled_at,
        owner: locker.owner().to_string(),
        token,
        lost: lost.clone(),
        shutdown: ShutdownSignal { rx: rx.clone() },
        retried: firing.retried,
    };
    let lock_ctx = LockContext {
        name: job_lock.name(),
        token,
        lost: lost.clone(),
    };
    let cancel_on_lost = job
        .cancel_on_lost
        .unwrap_or(locker.defaults().cancel_on_lost);
    let started = Instant::now();
    let work = AssertUnwindSafe(with_current(lock_ctx, (job.run)(ctx))).catch_unwind();
    let end = tokio::select! {
        r = work => End::Done(r.unwrap_or_else(|p| Err(format!("job panicked: {}", panic_message(&*p))))),
        // Either lock lost: another node may take the job, or this firing.
        reason = first_loss(&lost, &firing_lost), if cancel_on_lost => End::Lost(reason),
        _ = wait_phase(rx.clone(), Phase::Abort) => End::Aborted,
    };
    let took = started.elapsed();
    metrics::histogram!("dlock_job_duration_seconds", "job" => job.name.clone())
        .record(took.as_secs_f64());
    let released = job_lock.release().await;
    let completed = matches!(end, End::Done(_));
    let firing_end = finish_firing(locker, firing.guard, completed, job.retry_within).await;
    let outcome = match (end, released, firing_end) {
        (End::Lost(reason), _, _) => JobOutcome::Lost { token, reason },
        (_, Err(e), _) | (_, _, Err(e)) if e.is_lock_lost() => JobOutcome::Lost {
            token,
            reason: e.to_string(),
        },
        (End::Aborted, _, _) => JobOutcome::Cancelled { token },
        (End::Done(r), released, firing_end) => {
            if let Err(e) = released.and(firing_end) {
                tracing::warn!(error = %format_args!("{e:#}"), "dlock: ending the job's locks failed; they expire by themselves");
            }
            match r {
                Ok(()) => JobOutcome::Ran { token, took },
                Err(error) => JobOutcome::Failed { token, took, error },
            }
        }
    };
    match &outcome {
        JobOutcome::Ran { .. } => tracing::info!(token = token.0, ?took, "dlock: job ran"),
        JobOutcome::Failed { error, .. } => {
            tracing::warn!(token = token.0, ?took, %error, "dlock: job failed")
        }
        JobOutcome::Lost { reason, .. } => {
            tracing::warn!(token = token.0, %reason, "dlock: job lost its lock while running")
        }
        JobOutcome::Cancelled { .. } => {
            tracing::warn!(token = token.0, "dlock: job stopped by shutdown")
        }
        _ => {}
    }
    outcome
}

/// A firing lock this node holds.
struct Firing {
    guard: LockGuard,
    /// Taken over from a runner that did not finish.
    retried: bool,
    /// How long the job lock may be waited for: a retry waits for the dead
    /// runner's job lock to lapse too; a first run does not wait.
    job_lock_wait: Duration,
}

/// Takes this firing's lock, or answers `None` when another node has it
/// (with `retry_within`, after waiting for it up to the retry deadline).
async fn take_firing(
    locker: &Locker,
    job: &Job,
    scheduled_at: DateTime<Utc>,
    following: Option<DateTime<Utc>>,
) -> crate::Result<Option<Firing>> {
    let name = firing_lock_name(&job.name, scheduled_at)?;
    if let Some(window) = job.retry_within {
        if window > MAX_RETRY_WINDOW {
            return Err(Error::InvalidConfig(format!(
                "job {:?}: retry_within of {} is longer than {} (firing locks repeat a day apart)",
                job.name,
                humantime::format_duration(window),
                humantime::format_duration(MAX_RETRY_WINDOW)
            )));
        }
    }
    // Without retries the firing lock outlives a dead runner by the whole
    // memory, so nobody runs its firing again; with them it lapses with the
    // job's lease, so a waiting node can take over.
    let lease = match job.retry_within {
        Some(_) => job.lock_for.unwrap_or(locker.defaults().lock_for),
        None => FIRING_MEMORY,
    };
    let acquire = || {
        let mut a = locker
            .acquire(name.as_str())
            .lock_for(lease)
            .at_least(Duration::ZERO)
            .keep_alive(true);
        if let Some(d) = job.max_hold {
            a = a.max_hold(d);
        }
        a
    };
    let first_run = |guard| Firing {
        guard,
        retried: false,
        job_lock_wait: Duration::ZERO,
    };
    if let Some(guard) = acquire().try_lock().await? {
        return Ok(Some(first_run(guard)));
    }
    let Some(window) = job.retry_within else {
        return Ok(None);
    };
    // Taken: wait in case its runner dies before finishing.
    let until = retry_deadline(scheduled_at, window, following);
    let wait = (until - Utc::now()).to_std().unwrap_or_default();
    let Some(guard) = acquire().wait(wait).lock().await? else {
        return Ok(None);
    };
    Ok(Some(Firing {
        guard,
        retried: true,
        job_lock_wait: (until - Utc::now()).to_std().unwrap_or_default(),
    }))
}

/// Until when a node that found a firing taken waits to retry it: the
/// window, cut a little before the next firing so that one starts on time.
fn retry_deadline(
    scheduled_at: DateTime<Utc>,
    window: Duration,
    following: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let by_window = scheduled_at + window;
    match following {
        Some(next) => {
            let gap = (next - scheduled_at).to_std().unwrap_or_default();
            let margin = (gap / 10).min(Duration::from_secs(1));
            by_window.min(next - margin)
        }
        None => by_window,
    }
}

/// The job lock, with the job's own lease settings.
async fn take_job_lock(
    locker: &Locker,
    job: &Job,
    wait: Duration,
) -> crate::Result<Option<LockGuard>> {
    let mut acquire = locker.acquire(job.name.clone()).wait(wait);
    if let Some(d) = job.lock_for {
        acquire = acquire.lock_for(d);
    }
    if let Some(d) = job.at_least {
        acquire = acquire.at_least(d);
    }
    if let Some(on) = job.keep_alive {
        acquire = acquire.keep_alive(on);
    }
    if let Some(d) = job.max_hold {
        acquire = acquire.max_hold(d);
    }
    acquire.lock().await
}

/// Ends the firing lock: a run that completed (or failed with an error) is
/// remembered for [`FIRING_MEMORY`] past the retry window; an interrupted
/// one is let go at once when a retry is allowed, else remembered too.
async fn finish_firing(
    locker: &Locker,
    guard: LockGuard,
    completed: bool,
    retry_within: Option<Duration>,
) -> crate::Result<()> {
    match retry_within {
        Some(_) if !completed => guard.release().await,
        window => {
            let memory = FIRING_MEMORY + window.unwrap_or_default();
            // Rounded up to a length the backend honours (whole seconds on
            // etcd): remembering a little longer is always safe.
            let memory = locker.backend().capabilities().round_up_lease(memory);
            guard.release_after(memory).await
        }
    }
}

/// The first of two losses.
async fn first_loss(a: &LostSignal, b: &LostSignal) -> String {
    tokio::select! {
        r = a.wait() => r,
        r = b.wait() => format!("this firing's lock was lost: {r}"),
    }
}

fn lock_error(e: Error) -> JobOutcome {
    tracing::warn!(error = %format_args!("{e:#}"), "dlock: could not take the job lock; this firing did not run here");
    JobOutcome::LockError {
        error: format!("{e:#}"),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, h, m, s).unwrap()
            + chrono::TimeDelta::milliseconds(ms.into())
    }

    #[test]
    fn firing_lock_names_repeat_only_at_the_same_time_of_day() {
        let a = firing_lock_name("job", utc(8, 59, 59, 0)).unwrap();
        assert_eq!(a.as_str(), "job@08:59:59.000Z");
        let next_day =
            firing_lock_name("job", utc(8, 59, 59, 0) + chrono::TimeDelta::days(1)).unwrap();
        assert_eq!(a, next_day);
        let ms_later = firing_lock_name("job", utc(8, 59, 59, 200)).unwrap();
        assert_ne!(a, ms_later);
    }

    #[test]
    fn a_job_name_without_room_for_the_firing_is_a_clear_error() {
        let e = firing_lock_name(&"j".repeat(250), utc(0, 0, 0, 0)).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        // Invalid as a lock name by itself: the lock name's own error.
        let e = firing_lock_name("", utc(0, 0, 0, 0)).unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    }

    #[test]
    fn a_retry_wait_stops_before_the_next_firing() {
        let t = utc(9, 0, 0, 0);
        let next = utc(9, 0, 10, 0);
        assert_eq!(
            retry_deadline(t, Duration::from_secs(3), Some(next)),
            utc(9, 0, 3, 0)
        );
        assert_eq!(
            retry_deadline(t, Duration::from_secs(60), Some(next)),
            utc(9, 0, 9, 0)
        );
        assert_eq!(
            retry_deadline(t, Duration::from_secs(60), None),
            utc(9, 1, 0, 0)
        );
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_firing_too_late_by_the_local_clock_is_missed_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("locks.db").display());
        let locker = crate::connect(&url).await.unwrap();
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        let job = Job::new(
            "late",
            super::super::Schedule::every(Duration::from_secs(60)).unwrap(),
            move |_| {
                let r = r.clone();
                async move { r.store(true, std::sync::atomic::Ordering::SeqCst) }
            },
        );
        let (_tx, rx) = watch::channel(Phase::Running);
        let at = Utc::now() - chrono::TimeDelta::seconds(301);
        let outcome = fire(&locker, &job, at, None, &rx).await;
        assert!(
            matches!(outcome, JobOutcome::Missed { late_by } if late_by > MISFIRE_AFTER),
            "{outcome:?}"
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        // Within the threshold it runs.
        let outcome = fire(
            &locker,
            &job,
            Utc::now() - chrono::TimeDelta::seconds(290),
            None,
            &rx,
        )
        .await;
        assert!(matches!(outcome, JobOutcome::Ran { .. }), "{outcome:?}");
    }
}
