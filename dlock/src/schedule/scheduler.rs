//! [`Scheduler`]: run async jobs on a schedule on every node, executing each
//! firing on one node.

use super::spec::{sleep_until_wall, Schedule};
use crate::{FencingToken, Locker, LostSignal};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// What a job's future may return: `()` or any `Result<T, E>` with
/// `E: Display` (an `Err` is reported as [`JobOutcome::Failed`]).
pub trait JobResult {
    /// `Err(message)` when the job failed.
    fn into_job_result(self) -> Result<(), String>;
}

impl JobResult for () {
    fn into_job_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<T, E: fmt::Display> JobResult for Result<T, E> {
    fn into_job_result(self) -> Result<(), String> {
        self.map(|_| ()).map_err(|e| e.to_string())
    }
}

type JobFn = Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A named job: its lock name, schedule, lease bounds and the async work.
///
/// ```no_run
/// use dlock::schedule::{Job, Schedule};
/// use std::time::Duration;
/// # fn f() -> dlock::Result<Job> {
/// let job = Job::new(
///     "emailLock",
///     Schedule::cron("59 59 8 * * *")?.in_time_zone("Europe/Berlin")?,
///     |ctx| async move {
///         println!("sending e-mails for {} with token {}", ctx.scheduled_at, ctx.token);
///     },
/// )
/// .lock_for(Duration::from_secs(600))
/// .at_least(Duration::from_secs(30));
/// # Ok(job) }
/// ```
#[derive(Clone)]
#[must_use = "a job does nothing until added to a scheduler"]
pub struct Job {
    pub(super) name: String,
    schedule: Schedule,
    pub(super) lock_for: Option<Duration>,
    pub(super) at_least: Option<Duration>,
    pub(super) keep_alive: Option<bool>,
    pub(super) max_hold: Option<Duration>,
    pub(super) cancel_on_lost: Option<bool>,
    pub(super) retry_within: Option<Duration>,
    pub(super) run: JobFn,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("lock_for", &self.lock_for)
            .field("at_least", &self.at_least)
            .field("keep_alive", &self.keep_alive)
            .field("max_hold", &self.max_hold)
            .field("cancel_on_lost", &self.cancel_on_lost)
            .field("retry_within", &self.retry_within)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job that runs `f` at every firing of `schedule`, on the one node
    /// that takes the lock `name`. Lease bounds start from the locker's
    /// defaults (10 minutes, keep-alive on, no `at_least`): set
    /// [`Job::lock_for`] and [`Job::at_least`] for your job.
    pub fn new<F, Fut, R>(name: impl Into<String>, schedule: Schedule, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: JobResult,
    {
        let run: JobFn = Arc::new(move |ctx| {
            let fut = f(ctx);
            async move { fut.await.into_job_result() }.boxed()
        });
        Job {
            name: name.into(),
            schedule,
            lock_for: None,
            at_least: None,
            keep_alive: None,
            max_hold: None,
            cancel_on_lost: None,
            retry_within: None,
            run,
        }
    }

    /// `lock_at_most_for`: if the node running the job dies, the next firing
    /// elsewhere can run after at most this long. Kept alive while the job runs.
    pub fn lock_for(mut self, d: Duration) -> Self {
        self.lock_for = Some(d);
        self
    }

    /// `lock_at_least_for` of the job's lock: keep it at least this long
    /// after the firing even if the job ends sooner. Not needed for "one
    /// run per firing" (each firing has its own lock, see [`Scheduler`]);
    /// it still spaces runs out if you want that.
    pub fn at_least(mut self, d: Duration) -> Self {
        self.at_least = Some(d);
        self
    }

    /// Turns the lease keep-alive off (on by default): the job must then end
    /// within `lock_for`.
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = Some(on);
        self
    }

    /// A hard ceiling on one run: keep-alive stops there, the lease counts
    /// as lost and (with `cancel_on_lost`, the default) the job is stopped.
    /// Unset (the default): the lease is kept alive as long as the job runs.
    pub fn max_hold(mut self, d: Duration) -> Self {
        self.max_hold = Some(d);
        self
    }

    /// Whether the job's future is dropped as soon as its lease is lost
    /// (the default, from the locker's [`crate::LockOptions::cancel_on_lost`]):
    /// once the lease is gone another node may run the job, so letting this
    /// run go on would break the one-node-at-a-time promise. Turn it off
    /// only for work that must not stop at an arbitrary `.await`; it then
    /// runs to its end unprotected, sees the loss through
    /// [`JobContext::lost`], and is reported as [`JobOutcome::Lost`].
    pub fn cancel_on_lost(mut self, on: bool) -> Self {
        self.cancel_on_lost = Some(on);
        self
    }

    /// Lets another node retry a firing whose runner died (or lost its
    /// lease) mid-job, until `window` after the firing instant and no later
    /// than the next firing. Without it (the default) such a firing is not
    /// run again: the next one runs as usual.
    ///
    /// The nodes that found the firing taken wait for it instead of
    /// skipping; once the runner's lease lapses (`lock_for` after its last
    /// keep-alive) one of them runs the job, with
    /// [`JobContext::retried`] set. A firing that completed (or failed with
    /// an error) is never retried. `lock_for` must be shorter than `window`
    /// for a retry to be possible; at most 12 hours.
    pub fn retry_within(mut self, window: Duration) -> Self {
        self.retry_within = Some(window);
        self
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

/// What a running job receives.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job's lock name.
    pub name: String,
    /// The firing this run belongs to (the same instant on every node).
    pub scheduled_at: DateTime<Utc>,
    /// The node (locker owner) running it.
    pub owner: String,
    /// Fencing token of this run's lease: hand it to the resource you change.
    pub token: FencingToken,
    /// Completes if the lease is lost while the job runs.
    pub lost: LostSignal,
    /// Completes when the scheduler is asked to shut down, so a long job can
    /// stop early.
    pub shutdown: ShutdownSignal,
    /// True when this node found the firing taken and took it over after
    /// its runner died or lost its lease before finishing
    /// ([`Job::retry_within`]): part of the work may already be done. A
    /// node that fires only after a dead runner's lease has lapsed cannot
    /// tell, and runs the firing as a first run.
    pub retried: bool,
}

/// How one firing went on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// The job ran to completion under the lock.
    Ran {
        /// Fencing token of the run.
        token: FencingToken,
        /// How long the job took.
        took: Duration,
    },
    /// The job ran under the lock and returned an error (or panicked).
    Failed {
        /// Fencing token of the run.
        token: FencingToken,
        /// How long the job took.
        took: Duration,
        /// The error.
        error: String,
    },
    /// The lease was lost while the job ran: the job was not protected for
    /// its whole duration (and was stopped if `cancel_on_lost` is set).
    Lost {
        /// Fencing token of the run.
        token: FencingToken,
        /// Why the lease is gone.
        reason: String,
    },
    /// A shutdown with a grace period stopped the running job; its lock was
    /// released.
    Cancelled {
        /// Fencing token of the run.
        token: FencingToken,
    },
    /// Another node ran (or is running) this firing, or is still running
    /// the job for an earlier one: this node skipped it.
    Skipped,
    /// This node's timer fired so late (a paused process, a stopped VM, a
    /// clock stepped back) that the firing is too old to run safely here;
    /// see [`Scheduler`].
    Missed {
        /// How late, by this node's clock.
        late_by: Duration,
    },
    /// The lock could not be taken (coordinator unreachable, bad
    /// configuration): the firing did not run here.
    LockError {
        /// The error.
        error: String,
    },
}

impl JobOutcome {
    /// A short label (`ran`, `failed`, `lost`, `cancelled`, `skipped`,
    /// `missed`, `lock_error`), used as the `outcome` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            JobOutcome::Ran { .. } => "ran",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::Lost { .. } => "lost",
            JobOutcome::Cancelled { .. } => "cancelled",
            JobOutcome::Skipped => "skipped",
            JobOutcome::Missed { .. } => "missed",
            JobOutcome::LockError { .. } => "lock_error",
        }
    }

    /// The fencing token, when the job ran (or started) on this node.
    pub fn token(&self) -> Option<FencingToken> {
        match self {
            JobOutcome::Ran { token, .. }
            | JobOutcome::Failed { token, .. }
            | JobOutcome::Lost { token, .. }
            | JobOutcome::Cancelled { token } => Some(*token),
            JobOutcome::Skipped | JobOutcome::Missed { .. } | JobOutcome::LockError { .. } => None,
        }
    }
}

/// One firing on one node, as published by [`Scheduler::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    /// The job's lock name.
    pub job: String,
    /// The node (locker owner).
    pub owner: String,
    /// The firing instant.
    pub scheduled_at: DateTime<Utc>,
    /// What happened.
    pub outcome: JobOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    Running,
    /// No new firings; running jobs finish.
    Stopping,
    /// Running jobs are dropped and their locks released.
    Abort,
}

/// Completes when the scheduler is asked to shut down.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    pub(super) rx: watch::Receiver<Phase>,
}

impl ShutdownSignal {
    /// True once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow() >= Phase::Stopping
    }

    /// Waits until shutdown is requested.
    pub async fn wait(&self) {
        wait_phase(self.rx.clone(), Phase::Stopping).await
    }
}

pub(super) async fn wait_phase(mut rx: watch::Receiver<Phase>, at_least: Phase) {
    // An error means the handle is gone: treat it as the strongest request.
    let _ = rx.wait_for(|p| *p >= at_least).await;
}

/// Asks a running scheduler to stop; cheap to clone, usable from anywhere
/// (a signal handler, another task).
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    tx: Arc<watch::Sender<Phase>>,
}

impl ShutdownTrigger {
    /// Requests a graceful shutdown: no new firings; running jobs finish and
    /// release their locks.
    pub fn trigger(&self) {
        self.tx.send_if_modified(|p| {
            if *p < Phase::Stopping {
                *p = Phase::Stopping;
                true
            } else {
                false
            }
        });
    }
}

/// Runs [`Job`]s on their schedules on this node; start one per node, all on
/// the same coordinator, and each firing runs on exactly one of them.
///
/// Each firing runs at most once across the cluster, not only "skipped
/// while someone holds the lock": the exclusion is keyed to the job and
/// the firing instant, and remembered for 10 minutes after the run. A node
/// whose clock is behind, or whose timer fires late (a paused process),
/// skips a firing that already ran; no `at_least` tuning is needed. A node
/// does not start a firing more than 5 minutes late by its own clock
/// ([`JobOutcome::Missed`]), so this holds while the nodes' clocks agree
/// within about 5 minutes. If the node running a firing dies mid-job the
/// firing is not run again, unless [`Job::retry_within`] lets another node
/// take it over. A run still going when the next firing comes makes that
/// firing skip (one node runs the job at a time). Each job leaves one lock
/// record per time of day it fires at (`<job>@HH:MM:SS.mmmZ`) besides its
/// own (`<job>`).
///
/// ```no_run
/// use dlock::schedule::{Job, Schedule, Scheduler};
/// use std::time::Duration;
/// # async fn f() -> dlock::Result<()> {
/// let locker = dlock::connect("sqlite://locks.db").await?;
/// let scheduler = Scheduler::new(locker).job(
///     Job::new(
///         "emailLock",
///         Schedule::cron("59 59 8 * * *")?.in_time_zone("Europe/Berlin")?,
///         |ctx| async move { println!("token {}", ctx.token) },
///     )
///     .lock_for(Duration::from_secs(600)),
/// );
/// // Runs until Ctrl-C, then waits for a running job and releases its lock.
/// scheduler.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
/// # Ok(()) }
/// ```
pub struct Scheduler {
    locker: Locker,
    jobs: Vec<Job>,
    events: broadcast::Sender<JobEvent>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("locker", &self.locker)
            .field("jobs", &self.jobs)
            .finish()
    }
}

impl Scheduler {
    /// A scheduler taking locks through `locker` (whose owner names this node).
    pub fn new(locker: Locker) -> Self {
        let (events, _) = broadcast::channel(1024);
        Scheduler {
            locker,
            jobs: Vec::new(),
            events,
        }
    }

    /// Adds a job (builder style).
    pub fn job(mut self, job: Job) -> Self {
        self.jobs.push(job);
        self
    }

    /// Adds a job.
    pub fn add(&mut self, job: Job) -> &mut Self {
        self.jobs.push(job);
        self
    }

    /// A stream of [`JobEvent`]s, one per firing per job on this node.
    /// Subscribe before [`Scheduler::start`] to see every firing; a receiver
    /// that falls more than 1024 events behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Starts every job on the current tokio runtime.
    pub fn start(self) -> SchedulerHandle {
        let (tx, rx) = watch::channel(Phase::Running);
        let now = Utc::now();
        let mut tasks = Vec::with_capacity(self.jobs.len());
        for job in self.jobs {
            if let (Some(at_least), Some(gap)) = (job.at_least, job.schedule.min_gap(now)) {
                if at_least >= gap {
                    tracing::warn!(job = %job.name, ?at_least, ?gap,
                        "dlock: lock_at_least_for is not shorter than the gap between firings; \
                         the job will run at most every other firing");
                }
            }
            if let Some(window) = job.retry_within {
                let lease = job.lock_for.unwrap_or(self.locker.defaults().lock_for);
                if lease >= window {
                    tracing::warn!(job = %job.name, ?window, ?lease,
                        "dlock: retry_within is not longer than lock_for; a dead runner's lease \
                         outlives the window, so its firing can never be retried");
                }
            }
            let locker = self.locker.clone();
            let events = self.events.clone();
            let rx = rx.clone();
            tasks.push(tokio::spawn(job_loop(locker, job, events, rx)));
        }
        SchedulerHandle {
            tx: Arc::new(tx),
            tasks,
        }
    }

    /// Starts, runs until `signal` completes (e.g. Ctrl-C), then shuts down
    /// gracefully: waits for running jobs and releases their locks.
    pub async fn run_until<F: Future>(self, signal: F) {
        let handle = self.start();
        signal.await;
        handle.shutdown().await;
    }
}

/// A started [`Scheduler`].
#[derive(Debug)]
pub struct SchedulerHandle {
    tx: Arc<watch::Sender<Phase>>,
    tasks: Vec<JoinHandle<()>>,
}

impl SchedulerHandle {
    /// A trigger that requests shutdown from elsewhere.
    pub fn trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            tx: self.tx.clone(),
        }
    }

    /// Graceful shutdown: no new firings; waits for running jobs to finish
    /// and release their locks (honouring `at_least`).
    pub async fn shutdown(self) {
        self.trigger().trigger();
        self.join().await;
    }

    /// Like [`SchedulerHandle::shutdown`], but jobs still running after
    /// `grace` are stopped (their futures dropped) and their locks released.
    /// True when everything finished within `grace`.
    pub async fn shutdown_within(self, grace: Duration) -> bool {
        self.trigger().trigger();
        let tx = self.tx.clone();
        let join = self.join();
        tokio::pin!(join);
        tokio::select! {
            _ = &mut join => true,
            _ = tokio::time::sleep(grace) => {
                tx.send_replace(Phase::Abort);
                join.await;
                false
            }
        }
    }

    /// Waits until every job loop ended (after a [`ShutdownTrigger`] fired,
    /// or when every schedule ran out).
    pub async fn wait(self) {
        self.join().await;
    }

    async fn join(self) {
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "dlock: a scheduler task ended abnormally");
            }
        }
    }
}

async fn job_loop(
    locker: Locker,
    job: Job,
    events: broadcast::Sender<JobEvent>,
    rx: watch::Receiver<Phase>,
) {
    let mut after = Utc::now();
    loop {
        if *rx.borrow() >= Phase::Stopping {
            break;
        }
        let Some(next) = job.schedule.next_after(after) else {
            tracing::info!(job = %job.name, "dlock: schedule has no further firings");
            break;
        };
        tokio::select! {
            _ = sleep_until_wall(next) => {}
            _ = wait_phase(rx.clone(), Phase::Stopping) => break,
        }
        let span = tracing::info_span!("dlock.job", job = %job.name, owner = %locker.owner(), scheduled_at = %next);
        let following = job.schedule.next_after(next);
        let outcome = super::firing::fire(&locker, &job, next, following, &rx)
            .instrument(span)
            .await;
        metrics::counter!("dlock_job_runs_total", "job" => job.name.clone(), "outcome" => outcome.label())
            .increment(1);
        let _ = events.send(JobEvent {
            job: job.name.clone(),
            owner: locker.owner().to_string(),
            scheduled_at: next,
            outcome,
        });
        // Firings missed while the job ran are skipped, not caught up.
        after = next.max(Utc::now());
    }
}
