//! The command line, as clap derives it.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::time::Duration;

const ABOUT: &str = "Run a command under a distributed lock, like flock(1) across machines.";

const LONG_ABOUT: &str = "\
Run a command under a distributed lock, like flock(1) across machines, on the
coordinator you already run: SQLite (one host), PostgreSQL, MySQL/MariaDB,
etcd, ZooKeeper or Consul. The URL picks the coordinator.";

const EXAMPLES: &str = "\
Examples:
  # crontab line on every node: the report runs on one of them each morning
  59 8 * * *  dlock run --url postgres://dlock:pw@db/locks --name nightly-report \\
                --lock-for 10m --at-least 30s --skipped-exit-code 0 -- /usr/local/bin/report

  export DLOCK_URL=sqlite:///var/lib/dlock/locks.db
  dlock run --name import --lock-for 5m --wait 1m -- ./import.sh data.csv
  dlock status import billing
  dlock status --json import | jq '.[0].token'
  dlock release import --force

URL schemes: sqlite://file.db, sqlite:///abs/path.db, postgres://, mysql://,
mariadb://, etcd://, zk://, consul://, redis://, rediss:// (as far as this build
includes them).";

/// `dlock`: distributed locks for shell scripts and cron lines.
///
/// `Debug` hides the URL's password and secret options (`password=`,
/// `token=`): a log line or panic message must not carry them.
#[derive(Parser)]
#[command(name = "dlock", version, about = ABOUT, long_about = LONG_ABOUT,
          after_long_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// Coordinator URL, e.g. postgres://user:pass@host/db or sqlite:///var/lib/dlock.db
    #[arg(long, env = "DLOCK_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,

    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr (no "skipped" message).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field(
                "url",
                &self
                    .url
                    .as_deref()
                    .map(dlock::backend::url_options::redact_url),
            )
            .field("verbose", &self.verbose)
            .field("quiet", &self.quiet)
            .field("command", &self.command)
            .finish()
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND only if the lock NAME could be taken; hold it (kept alive)
    /// while COMMAND runs, release it when COMMAND exits.
    #[command(after_long_help = RUN_HELP,
              override_usage = "dlock run [OPTIONS] --name <NAME> --lock-for <DURATION> -- <COMMAND>...")]
    Run(RunArgs),
    /// Show who holds locks: holder, since, until, fencing token.
    #[command(after_long_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Operator override: free a lock whoever holds it (needs --force).
    #[command(after_long_help = RELEASE_HELP)]
    Release(ReleaseArgs),
}

const RUN_HELP: &str = concat!(
    "\
COMMAND gets these environment variables:
  DLOCK_TOKEN  the fencing token of this acquisition (strictly greater than every
               earlier one for NAME): pass it to what you write, and let that
               reject writes with a smaller token
  DLOCK_NAME   the lock name
  DLOCK_OWNER  the owner name
and not DLOCK_URL (the coordinator's credentials stay with dlock).

COMMAND runs in a process group of its own. SIGINT, SIGTERM, SIGHUP and
SIGQUIT sent to dlock are forwarded to that whole group, SIGUSR1 and SIGUSR2
to COMMAND itself; dlock waits for COMMAND, kills what it left running in
its group, then releases the lock.

The whole group is dead before the coordinator could give the lock to
anyone else: when the lease could not be renewed and only --kill-after plus
a margin of it is left, the group gets SIGTERM, and SIGKILL when the margin
is reached or the lock is lost. A sentinel process in the group does the
same if dlock dies or is stopped. --on-lost ignore gives that guarantee up.

Examples:
  dlock run --url sqlite:///tmp/locks.db --name backup --lock-for 10m -- ./backup.sh
  dlock run --name report --lock-for 10m --at-least 30s --skipped-exit-code 0 -- ./report
  dlock run --name deploy --lock-for 2m --wait 5m --on-lost kill -- make deploy

",
    "Exit codes of `dlock run`:
  N    the command's own exit code (128+S when it was killed by signal S, or
       when dlock got signal S while still waiting for the lock)
  64   bad command line
  69   the lock could not be taken (coordinator unreachable, bad URL or name);
       the command did not run
  75   skipped: another owner holds the lock (change with --skipped-exit-code);
       the command did not run
  76   the lock was lost, or could not be renewed in time, while the command
       ran (the command was signalled as --on-lost says)
  126  the command could not be executed
  127  the command was not found"
);

const STATUS_HELP: &str = "\
Examples:
  dlock status --url postgres://dlock:pw@db/locks nightly-report
  dlock status --json import billing
  dlock status --url postgres://dlock:pw@db/locks     # every lock held now

Without NAME, every lock held now is shown (on backends that can list them:
all that ship with dlock).

--json prints an array with one object per NAME:
  [{\"name\": \"import\", \"held\": true, \"owner\": \"web-1:4242\",
    \"acquisition_id\": \"...\", \"token\": 17,
    \"locked_at\": \"2025-01-10T08:59:59.120Z\", \"lock_until\": \"2025-01-10T09:09:59.120Z\"}]
Times are the coordinator's, in UTC (RFC 3339); fields unknown to a backend are null.
A free lock is {\"name\": ..., \"held\": false, ...} with null fields.

Exit codes: 0 on success, 64 bad command line, 69 the coordinator could not be asked.";

const RELEASE_HELP: &str = "\
A lock taken by `dlock run` is released when its command exits; use this only
to free a lock whose holder is stuck. The holder is not told: it learns at its
next keep-alive (then its command's process group is killed, unless --on-lost
ignore). The fencing token counter is kept, so the next holder's token is
still greater.

Example:
  dlock release --url postgres://dlock:pw@db/locks nightly-report --force

Exit codes: 0 released (or was not held), 64 bad command line or no --force,
69 the coordinator could not be asked.";

/// What to do with COMMAND (its whole process group) when the lease runs out
/// or is lost while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnLost {
    /// SIGTERM --kill-after before the lease would run out without renewal,
    /// SIGKILL just before it does or once it is lost.
    Term,
    /// SIGKILL just before the lease would run out without renewal, or once
    /// it is lost.
    Kill,
    /// Let it run, unprotected: it may overlap the next holder; exit 76.
    Ignore,
}

/// `dlock run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Lock name (any UTF-8, up to 255 bytes).
    #[arg(short, long)]
    pub name: String,

    /// Lease length (lock_at_most_for): kept alive while COMMAND runs; if
    /// this host dies, the lock frees itself after at most this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_for: Duration,

    /// Keep the lock at least this long after taking it, even if COMMAND ends
    /// sooner (absorbs clock drift between nodes firing the same cron line).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub at_least: Duration,

    /// Wait up to this long for the holder to let go instead of skipping.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub wait: Duration,

    /// Owner name recorded with the lock (default: HOST:PID).
    #[arg(long)]
    pub owner: Option<String>,

    /// What to do with COMMAND if the lock is lost while it runs.
    #[arg(long, value_enum, default_value_t = OnLost::Term)]
    pub on_lost: OnLost,

    /// With --on-lost term: SIGKILL if COMMAND still runs this long after
    /// SIGTERM. --kill-after plus a margin of --lock-for/20 (10 ms to 1 s)
    /// may be at most a third of --lock-for. [default: 10s, or the most
    /// that fits]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub kill_after: Option<Duration>,

    /// Do not extend the lease: COMMAND must end within --lock-for, or the
    /// lock is lost (and COMMAND signalled).
    #[arg(long)]
    pub no_keep_alive: bool,

    /// Exit code when skipped because another owner holds the lock
    /// (0 makes skipping silent for cron).
    #[arg(long, value_name = "CODE", default_value_t = crate::exit::SKIPPED)]
    pub skipped_exit_code: u8,

    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

/// `dlock status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Lock names to show; none: every lock held now.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Print JSON (an array, one object per NAME) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dlock release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Lock name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Confirm: free the lock whoever holds it.
    #[arg(long)]
    pub force: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write e.g. 30s, 10m, 1h30m or 250ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_url_password() {
        let cli = Cli::try_parse_from([
            "dlock",
            "--url",
            "postgres://dlock:s3cret@db.example:5432/locks?password=p4ss&token=t0ken&table=t",
            "run",
            "--name",
            "n",
            "--lock-for",
            "5s",
            "--",
            "true",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        for secret in ["s3cret", "p4ss", "t0ken"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // Everything else is still there to debug with.
        assert!(shown.contains("db.example:5432/locks"), "{shown}");
        assert!(shown.contains("table=t"), "{shown}");
        assert!(shown.contains("lock_for: 5s"), "{shown}");
    }
}
