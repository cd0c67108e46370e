//! [`Scheduler`]: run async jobs on a schedule on every node, executing each
//! firing on one node.

use super::spec::{sleep_until_wall, Schedule};
use crate::try_lock::with_current;
use crate::{FencingToken, LockContext, Locker, LostSignal};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    name: String,
    schedule: Schedule,
    lock_for: Option<Duration>,
    at_least: Option<Duration>,
    keep_alive: Option<bool>,
    cancel_on_lost: bool,
    run: JobFn,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("lock_for", &self.lock_for)
            .field("at_least", &self.at_least)
            .field("keep_alive", &self.keep_alive)
            .field("cancel_on_lost", &self.cancel_on_lost)
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
            cancel_on_lost: false,
            run,
        }
    }

    /// `lock_at_most_for`: if the node running the job dies, the next firing
    /// elsewhere can run after at most this long. Kept alive while the job runs.
    pub fn lock_for(mut self, d: Duration) -> Self {
        self.lock_for = Some(d);
        self
    }

    /// `lock_at_least_for`: keep the lock at least this long after the firing
    /// even if the job ends sooner, so a node whose clock (or timer) is a
    /// little late skips this firing instead of running it again. Set it
    /// above the clock skew between nodes and below the gap between firings.
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

    /// Stop (drop) the job's future as soon as the lease is lost, instead of
    /// letting it finish unprotected. Off by default: the job sees the loss
    /// through [`JobContext::lost`] and decides.
    pub fn cancel_on_lost(mut self, on: bool) -> Self {
        self.cancel_on_lost = on;
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
    /// Another node held the lock: this node skipped the firing.
    Skipped,
    /// The lock could not be taken (coordinator unreachable, bad
    /// configuration): the firing did not run here.
    LockError {
        /// The error.
        error: String,
    },
}

impl JobOutcome {
    /// A short label (`ran`, `failed`, `lost`, `cancelled`, `skipped`,
    /// `lock_error`), used as the `outcome` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            JobOutcome::Ran { .. } => "ran",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::Lost { .. } => "lost",
            JobOutcome::Cancelled { .. } => "cancelled",
            JobOutcome::Skipped => "skipped",
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
            JobOutcome::Skipped | JobOutcome::LockError { .. } => None,
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
enum Phase {
    Running,
    /// No new firings; running jobs finish.
    Stopping,
    /// Running jobs are dropped and their locks released.
    Abort,
}

/// Completes when the scheduler is asked to shut down.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    rx: watch::Receiver<Phase>,
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

async fn wait_phase(mut rx: watch::Receiver<Phase>, at_least: Phase) {
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
///     .lock_for(Duration::from_secs(600))
///     .at_least(Duration::from_secs(30)),
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
        let outcome = fire(&locker, &job, next, &rx).instrument(span).await;
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

enum End {
    Done(Result<(), String>),
    Lost(String),
    Aborted,
}

async fn fire(
    locker: &Locker,
    job: &Job,
    scheduled_at: DateTime<Utc>,
    rx: &watch::Receiver<Phase>,
) -> JobOutcome {
    let mut acquire = locker.acquire(job.name.clone());
    if let Some(d) = job.lock_for {
        acquire = acquire.lock_for(d);
    }
    if let Some(d) = job.at_least {
        acquire = acquire.at_least(d);
    }
    if let Some(on) = job.keep_alive {
        acquire = acquire.keep_alive(on);
    }
    let guard = match acquire.try_lock().await {
        Ok(Some(g)) => g,
        Ok(None) => {
            tracing::debug!("dlock: skipped, another node holds the lock");
            return JobOutcome::Skipped;
        }
        Err(e) => {
            tracing::warn!(error = %format_args!("{e:#}"), "dlock: could not take the job lock; this firing did not run here");
            return JobOutcome::LockError {
                error: format!("{e:#}"),
            };
        }
    };
    let token = guard.token();
    let lost = guard.lost();
    let ctx = JobContext {
        name: job.name.clone(),
        scheduled_at,
        owner: locker.owner().to_string(),
        token,
        lost: lost.clone(),
        shutdown: ShutdownSignal { rx: rx.clone() },
    };
    let lock_ctx = LockContext {
        name: guard.name(),
        token,
        lost: lost.clone(),
    };
    let started = Instant::now();
    let work = AssertUnwindSafe(with_current(lock_ctx, (job.run)(ctx))).catch_unwind();
    let end = tokio::select! {
        r = work => End::Done(r.unwrap_or_else(|p| Err(format!("job panicked: {}", panic_message(&*p))))),
        reason = lost.wait(), if job.cancel_on_lost => End::Lost(reason),
        _ = wait_phase(rx.clone(), Phase::Abort) => End::Aborted,
    };
    let took = started.elapsed();
    metrics::histogram!("dlock_job_duration_seconds", "job" => job.name.clone())
        .record(took.as_secs_f64());
    let released = guard.release().await;
    let outcome = match (end, released) {
        (End::Lost(reason), _) => JobOutcome::Lost { token, reason },
        (_, Err(e)) if e.is_lock_lost() => JobOutcome::Lost {
            token,
            reason: e.to_string(),
        },
        (End::Aborted, _) => JobOutcome::Cancelled { token },
        (End::Done(r), released) => {
            if let Err(e) = released {
                tracing::warn!(error = %format_args!("{e:#}"), "dlock: releasing the job lock failed; it expires by itself after lock_for");
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

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
