//! `dlock run`: run a command under the lock.

use crate::cli::{OnLost, RunArgs};
use crate::exit;
use crate::signals::Signals;
use dlock::LockGuard;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use tokio::time::Instant;

/// Runs `args.command` under the lock; returns the exit code.
pub async fn run(url: &str, args: RunArgs, quiet: bool, signals: &mut Signals) -> u8 {
    let locker = match crate::connect(url, args.owner.as_deref()).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dlock: {e}");
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
            eprintln!("dlock: cannot take lock {:?}: {e}", args.name);
            return exit::LOCK_ERROR;
        }
    };
    tracing::info!(lock = %args.name, token = guard.token().get(), "lock taken");

    let program = &args.command[0];
    let mut cmd = tokio::process::Command::new(program);
    // The coordinator URL may carry a password: the command gets the token,
    // not the credentials (it can ask for them itself if it needs them).
    cmd.args(&args.command[1..])
        .env_remove("DLOCK_URL")
        .env("DLOCK_TOKEN", guard.token().to_string())
        .env("DLOCK_NAME", &args.name)
        .env("DLOCK_OWNER", locker.owner());
    crate::child::die_with_parent(&mut cmd, death_signal(args.on_lost));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
            eprintln!("dlock: cannot run {}: {e}", program.to_string_lossy());
            release(guard, &args.name).await;
            return code;
        }
    };
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);

    let lost = guard.lost();
    let mut lost_reason: Option<String> = None;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            reason = lost.wait(), if lost_reason.is_none() => {
                eprintln!("dlock: lock {:?} lost while the command ran: {reason}", args.name);
                match args.on_lost {
                    OnLost::Term => {
                        send(pid, Signal::SIGTERM);
                        kill_at = Some(Instant::now() + args.kill_after);
                    }
                    OnLost::Kill => send(pid, Signal::SIGKILL),
                    OnLost::Ignore => eprintln!("dlock: --on-lost ignore: the command keeps running unprotected"),
                }
                lost_reason = Some(reason);
            }
            sig = signals.recv() => {
                tracing::info!(signal = %sig, "forwarding signal to the command");
                send(pid, sig);
            }
            _ = sleep_until(kill_at), if kill_at.is_some() => {
                eprintln!("dlock: the command still runs {} after SIGTERM; sending SIGKILL",
                    humantime::format_duration(args.kill_after));
                send(pid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    let code = match status {
        Ok(st) => status_code(st),
        Err(e) => {
            eprintln!("dlock: waiting for the command failed: {e}");
            exit::LOCK_ERROR
        }
    };
    if lost_reason.is_some() {
        drop(guard);
        return exit::LOST;
    }
    match guard.release().await {
        Ok(()) => code,
        Err(e) if e.is_lock_lost() => {
            eprintln!(
                "dlock: lock {:?} was lost before the command ended: {e}",
                args.name
            );
            exit::LOST
        }
        Err(e) => {
            // The command ran under the lock; the lease ends by itself.
            eprintln!(
                "dlock: releasing lock {:?} failed ({e}); it frees itself after --lock-for",
                args.name
            );
            code
        }
    }
}

async fn release(guard: LockGuard, name: &str) {
    if let Err(e) = guard.release().await {
        eprintln!("dlock: releasing lock {name:?} failed ({e}); it frees itself after --lock-for");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

fn death_signal(on_lost: OnLost) -> Option<Signal> {
    match on_lost {
        OnLost::Term => Some(Signal::SIGTERM),
        OnLost::Kill => Some(Signal::SIGKILL),
        OnLost::Ignore => None,
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
