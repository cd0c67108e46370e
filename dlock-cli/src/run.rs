//! `dlock run`: run a command under the lock.

use crate::cli::{OnLost, RunArgs};
use crate::exit;
use crate::group::Group;
use crate::signals::Signals;
use crate::stop::StopPlan;
use dlock::LockGuard;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::time::Instant;

/// The longest `dlock run` sleeps between looks at the lease: a timer does
/// not count suspended time, the lease's clock does.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Runs `args.command` under the lock; returns the exit code.
pub async fn run(url: &str, args: RunArgs, quiet: bool, signals: &mut Signals) -> u8 {
    let plan = match StopPlan::new(args.on_lost, args.lock_for, args.kill_after) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dlock: {e:#}");
            return exit::USAGE;
        }
    };
    let locker = match crate::connect(url, args.owner.as_deref()).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dlock: {e:#}");
            return exit::LOCK_ERROR;
        }
    };
    let acquire = locker
        .acquire(args.name.clone())
        .lock_for(args.lock_for)
        .at_least(args.at_least)
        .wait(args.wait)
        .keep_alive(!args.no_keep_alive)
        .lock();
    let guard = tokio::select! {
        r = acquire => r,
        sig = signals.recv() => {
            // Interrupted while waiting for the lock: nothing runs. Whatever
            // the acquisition had in flight is abandoned; a lease it may have
            // been granted expires after --lock-for.
            eprintln!("dlock: interrupted by {sig} while taking lock {:?}", args.name);
            return signal_exit_code(sig);
        }
    };
    let guard = match guard {
        Ok(Some(g)) => g,
        Ok(None) => {
            if !quiet {
                let holder = match locker.inspect(args.name.clone()).await {
                    Ok(Some(info)) => format!(" by {} (token {})", info.owner, info.token),
                    _ => String::new(),
                };
                eprintln!(
                    "dlock: lock {:?} is held{holder}; skipped {}",
                    args.name,
                    display_command(&args.command)
                );
            }
            return args.skipped_exit_code;
        }
        Err(e) => {
            eprintln!("dlock: cannot take lock {:?}: {e:#}", args.name);
            return exit::LOCK_ERROR;
        }
    };
    tracing::info!(lock = %args.name, token = guard.token().get(), "lock taken");

    let mut group = match Group::start(&plan, guard.lease().remaining()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("dlock: cannot set up the command's process group: {e}");
            release(guard, &args.name).await;
            return exit::LOCK_ERROR;
        }
    };
    let program = &args.command[0];
    let mut cmd = tokio::process::Command::new(program);
    // The coordinator URL may carry a password: the command gets the token,
    // not the credentials (it can ask for them itself if it needs them).
    cmd.args(&args.command[1..])
        .env_remove("DLOCK_URL")
        .env("DLOCK_TOKEN", guard.token().to_string())
        .env("DLOCK_NAME", &args.name)
        .env("DLOCK_OWNER", locker.owner());
    group.prepare(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
            eprintln!("dlock: cannot run {}: {e}", program.to_string_lossy());
            group.finish(plan.stops()).await;
            release(guard, &args.name).await;
            return code;
        }
    };
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    group.spawned(child.id());

    let lost = guard.lost();
    let mut lost_reason: Option<String> = None;
    // Set once SIGTERM went out because the lease ran short: SIGKILL then.
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        let left = guard.lease().remaining();
        if !killed && plan.stops() {
            let now = Instant::now();
            let short = plan.kill_when_left().is_some_and(|k| left <= k);
            let overdue = kill_at.is_some_and(|at| now >= at);
            if lost_reason.is_some() || !guard.is_held() || short || overdue {
                if overdue && !short && guard.is_held() {
                    eprintln!(
                        "dlock: the command still runs {} after SIGTERM; sending SIGKILL to its process group",
                        humantime::format_duration(plan.kill_after)
                    );
                } else if lost_reason.is_none() {
                    eprintln!(
                        "dlock: lock {:?} could not be renewed and its lease is about to run out; \
                         sending SIGKILL to the command's process group",
                        args.name
                    );
                }
                group.signal(Signal::SIGKILL);
                killed = true;
            } else if kill_at.is_none() && plan.term_when_left().is_some_and(|t| left <= t) {
                eprintln!(
                    "dlock: lock {:?} could not be renewed and has {} of its lease left; \
                     stopping the command (SIGTERM to its process group, SIGKILL within {})",
                    args.name,
                    humantime::format_duration(round_ms(left)),
                    humantime::format_duration(plan.kill_after)
                );
                group.signal(Signal::SIGTERM);
                group.signal(Signal::SIGCONT);
                kill_at = Some(now + plan.kill_after);
            }
        }
        group.lease_left(left);
        let wake = next_look(&plan, left, kill_at, killed);
        tokio::select! {
            st = child.wait() => break st,
            reason = lost.wait(), if lost_reason.is_none() => {
                eprintln!("dlock: lock {:?} lost while the command ran: {reason}", args.name);
                match args.on_lost {
                    OnLost::Term | OnLost::Kill => {
                        // The lock may be someone else's already: no grace.
                        if !killed {
                            eprintln!("dlock: sending SIGKILL to the command's process group");
                            group.signal(Signal::SIGKILL);
                            killed = true;
                        }
                    }
                    OnLost::Ignore => eprintln!(
                        "dlock: --on-lost ignore: the command keeps running unprotected"
                    ),
                }
                lost_reason = Some(reason);
            }
            sig = signals.recv() => {
                tracing::info!(signal = %sig, "forwarding signal to the command");
                forward(&group, pid, sig);
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    };
    let code = match status {
        Ok(st) => status_code(st),
        Err(e) => {
            eprintln!("dlock: waiting for the command failed: {e}");
            exit::LOCK_ERROR
        }
    };
    // Nothing the command started may run on once the lock is let go.
    group.finish(plan.stops()).await;
    if lost_reason.is_some() {
        drop(guard);
        return exit::LOST;
    }
    let stopped = kill_at.is_some() || killed;
    match guard.release().await {
        Ok(()) if stopped => exit::LOST,
        Ok(()) => code,
        Err(e) if e.is_lock_lost() => {
            if !stopped {
                eprintln!(
                    "dlock: lock {:?} was lost before the command ended: {e:#}",
                    args.name
                );
            }
            exit::LOST
        }
        Err(e) => {
            // The command ran under the lock; the lease ends by itself.
            eprintln!(
                "dlock: releasing lock {:?} failed ({e:#}); it frees itself after --lock-for",
                args.name
            );
            if stopped {
                exit::LOST
            } else {
                code
            }
        }
    }
}

/// When to look at the lease next: when it reaches the next point of
/// `plan` (assuming no renewal), at most [`LOOK_EVERY`] from now.
fn next_look(plan: &StopPlan, left: Duration, kill_at: Option<Instant>, killed: bool) -> Instant {
    let now = Instant::now();
    let mut wait = LOOK_EVERY;
    if !killed {
        let points = [
            plan.term_when_left().filter(|_| kill_at.is_none()),
            plan.kill_when_left(),
        ];
        for p in points.into_iter().flatten() {
            wait = wait.min(left.saturating_sub(p));
        }
        if let Some(at) = kill_at {
            wait = wait.min(at.saturating_duration_since(now));
        }
    }
    now + wait
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Signals meant to end the command go to its whole group (and wake it if
/// it is stopped, as a shell's `kill` does); SIGUSR1/2 are messages for
/// COMMAND itself.
fn forward(group: &Group, pid: Option<Pid>, sig: Signal) {
    match sig {
        Signal::SIGUSR1 | Signal::SIGUSR2 => send(pid, sig),
        _ => {
            group.signal(sig);
            group.signal(Signal::SIGCONT);
        }
    }
}

async fn release(guard: LockGuard, name: &str) {
    if let Err(e) = guard.release().await {
        eprintln!(
            "dlock: releasing lock {name:?} failed ({e:#}); it frees itself after --lock-for"
        );
    }
}

fn send(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        // ESRCH (already exited) is fine: its status is collected next.
        if let Err(e) = nix::sys::signal::kill(pid, sig) {
            if e != nix::errno::Errno::ESRCH {
                eprintln!("dlock: sending {sig} to the command failed: {e}");
            }
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal number.
fn status_code(st: ExitStatus) -> u8 {
    if let Some(c) = st.code() {
        return u8::try_from(c).unwrap_or(1);
    }
    match st.signal() {
        Some(s) => u8::try_from(128 + s).unwrap_or(255),
        None => 1,
    }
}

fn signal_exit_code(sig: Signal) -> u8 {
    u8::try_from(128 + sig as i32).unwrap_or(255)
}

fn display_command(cmd: &[std::ffi::OsString]) -> String {
    let parts: Vec<String> = cmd
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let s = parts.join(" ");
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_mapping() {
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(signal_exit_code(Signal::SIGINT), 130);
    }

    #[test]
    fn long_commands_are_shortened() {
        let long = vec![std::ffi::OsString::from("é".repeat(60))];
        assert!(display_command(&long).ends_with("..."));
    }
}
