//! Scheduled exclusive jobs: every node runs the same [`Scheduler`]; each
//! firing of a [`Job`] executes on the one node that takes its lock.
//!
//! - [`Schedule`]: a cron expression with seconds (`"59 59 8 * * *"`) in an
//!   IANA time zone, or a fixed period.
//! - [`Job`]: lock name, schedule, `lock_for` (kept alive while the job
//!   runs), `at_least` (absorbs the drift between nodes' clocks and timers).
//! - [`Scheduler`] / [`SchedulerHandle`]: start on a tokio runtime; a
//!   graceful shutdown waits for a running job and releases its lock.
//!
//! Each firing is reported on [`Scheduler::subscribe`] as a [`JobEvent`], to
//! `tracing` (span `dlock.job`) and to `metrics`
//! (`dlock_job_runs_total{job,outcome}`, `dlock_job_duration_seconds{job}`).

mod firing;
mod scheduler;
mod spec;

pub use scheduler::{
    Job, JobContext, JobEvent, JobOutcome, JobResult, Scheduler, SchedulerHandle, ShutdownSignal,
    ShutdownTrigger,
};
pub use spec::Schedule;

/// The `chrono` crate, for [`Schedule`] instants (`DateTime<Utc>`).
pub use chrono;
/// The `chrono-tz` crate, for [`Schedule::with_time_zone`].
pub use chrono_tz;
