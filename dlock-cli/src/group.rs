//! The command's own process group, and the sentinel that stops it even when
//! `dlock` cannot.
//!
//! `dlock run` starts COMMAND in a new process group, so one signal reaches
//! every process it starts (`sh -c 'a; b'`, pipelines, background jobs), not
//! only the direct child.
//!
//! When `dlock` stops the command at all (`--on-lost term|kill`), a small
//! *sentinel* process leads that group. It is forked from `dlock` (it never
//! execs), ignores every signal it can, and waits on a pipe from `dlock`:
//!
//! - `dlock` writes the instant (CLOCK_BOOTTIME, which counts suspended time)
//!   by which the group must be dead: end of the lease's local validity minus
//!   the margin, moved on each renewal. When that instant passes, the
//!   sentinel SIGKILLs the group, itself included, whatever `dlock` is doing:
//!   killed, stopped (SIGSTOP, Ctrl-Z) or starved, `dlock` cannot let the
//!   command run past its lease.
//! - When the pipe closes without that (`dlock` died, even by SIGKILL), the
//!   sentinel sends SIGTERM (`--on-lost term`) then SIGKILL after
//!   `--kill-after` or at that instant, whichever comes first; with
//!   `--on-lost kill`, SIGKILL at once.
//!
//! The group leader being `dlock`'s own unreaped child also keeps the group
//! id from being reused while `dlock` may still signal it.
//!
//! What a process group cannot cover: a process that leaves it (`setsid`,
//! `setpgid`, a shell with job control) and one stuck in an uninterruptible
//! system call (state D) until that call returns. The sentinel itself is
//! stopped only by SIGKILL aimed at it (or at the whole group).

use crate::stop::StopPlan;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// COMMAND's process group (and its sentinel, if any).
pub struct Group {
    /// The group id, once its leader exists.
    pgid: Option<Pid>,
    sentinel: Option<Sentinel>,
}

struct Sentinel {
    pid: Pid,
    /// Write end of the deadline pipe (non-blocking, close-on-exec).
    tx: OwnedFd,
    margin: Duration,
    /// The last deadline written (CLOCK_BOOTTIME nanoseconds).
    sent: i64,
}

impl Group {
    /// Prepares the group for a command that holds a lease with `remaining`
    /// local validity: with `plan` stopping the command, forks the sentinel
    /// that leads it.
    pub fn start(plan: &StopPlan, remaining: Duration) -> std::io::Result<Group> {
        if !plan.stops() {
            return Ok(Group {
                pgid: None,
                sentinel: None,
            });
        }
        let kill_at = deadline(remaining, plan.margin);
        let term = plan.term_when_left().is_some();
        let sentinel = fork_sentinel(kill_at, term, plan.kill_after, plan.margin)?;
        Ok(Group {
            pgid: Some(sentinel.pid),
            sentinel: Some(sentinel),
        })
    }

    /// Makes `cmd` join the group (or lead a new one, without a sentinel).
    pub fn prepare(&self, cmd: &mut tokio::process::Command) {
        cmd.process_group(self.pgid.map_or(0, Pid::as_raw));
    }

    /// Records the spawned command's pid (the group id when it leads).
    pub fn spawned(&mut self, pid: Option<u32>) {
        if self.pgid.is_none() {
            self.pgid = pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
        }
    }

    /// Sends `sig` to every process in the group.
    pub fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH: nobody left, nothing to do.
            if let Err(e) = nix::sys::signal::killpg(pgid, sig) {
                if e != nix::errno::Errno::ESRCH {
                    eprintln!("dlock: sending {sig} to the command's process group failed: {e}");
                }
            }
        }
    }

    /// Tells the sentinel the lease now has `remaining` local validity: the
    /// group must be dead `margin` before that ends.
    pub fn lease_left(&mut self, remaining: Duration) {
        if let Some(s) = self.sentinel.as_mut() {
            let at = deadline(remaining, s.margin);
            if (at - s.sent).abs() > 1_000_000 {
                let bytes = at.to_le_bytes();
                // Eight bytes are written whole or not at all (PIPE_BUF). A
                // full pipe (sentinel stopped) or a gone sentinel only loses
                // a later deadline; the earlier one it keeps is safe.
                // SAFETY: writes from a valid buffer to an fd we own.
                #[allow(unsafe_code)]
                let n =
                    unsafe { libc::write(s.tx.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
                if n == 8 {
                    s.sent = at;
                }
            }
        }
    }

    /// After the command exited: with `kill`, SIGKILLs what it left running
    /// in its group (background jobs would otherwise run on after the lock
    /// is released); reaps the sentinel.
    pub async fn finish(self, kill: bool) {
        if kill {
            self.signal(Signal::SIGKILL);
        }
        if let Some(s) = self.sentinel {
            drop(s.tx);
            let _ = nix::sys::signal::kill(s.pid, Signal::SIGKILL);
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            // SIGKILLed just now: dead within moments; a zombie until reaped.
            while let Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) =
                waitpid(s.pid, Some(WaitPidFlag::WNOHANG))
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// Nanoseconds of CLOCK_BOOTTIME (Linux: counts suspended time; elsewhere
/// CLOCK_MONOTONIC). Async-signal-safe.
fn now_ns() -> i64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_BOOTTIME;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(CLOCK, &mut ts);
    }
    // (time_t and c_long are i64 on 64-bit targets only.)
    #[allow(clippy::useless_conversion)]
    let (sec, nsec) = (i64::from(ts.tv_sec), i64::from(ts.tv_nsec));
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The instant (see [`now_ns`]) by which the group must be dead.
fn deadline(remaining: Duration, margin: Duration) -> i64 {
    now_ns().saturating_add(nanos(remaining.saturating_sub(margin)))
}

fn fork_sentinel(
    kill_at: i64,
    term: bool,
    kill_after: Duration,
    margin: Duration,
) -> std::io::Result<Sentinel> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array; both are owned below.
    #[allow(unsafe_code)]
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds from pipe, owned by nobody else.
    #[allow(unsafe_code)]
    let (rx, tx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Close-on-exec, both: the command must not hold the write end (its
    // closing is how the sentinel learns that dlock is gone) nor the read
    // end. (No other thread of dlock forks meanwhile.) The write end does
    // not block dlock.
    // SAFETY: fcntl on fds we own.
    #[allow(unsafe_code)]
    unsafe {
        for fd in [rx.as_raw_fd(), tx.as_raw_fd()] {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let fl = libc::fcntl(tx.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(tx.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let max_fd = open_max();
    let kill_after = nanos(kill_after);

    // No signal handler may run in the child before it has ignored them
    // all (the runtime's handlers write to the runtime's own pipe).
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all),
        Some(&mut old),
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: dlock may have other threads (the runtime's blocking pool,
    // SQLite's worker). The child runs only `sentinel`, which makes
    // async-signal-safe system calls on values computed before the fork,
    // never allocates, never takes a lock and never returns.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; we are the child.
        #[allow(unsafe_code)]
        unsafe {
            sentinel(
                rx.as_raw_fd(),
                tx.as_raw_fd(),
                max_fd,
                kill_at,
                term,
                kill_after,
            )
        }
    }
    let forked = std::io::Error::last_os_error();
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old),
        None,
    );
    drop(rx);
    if pid < 0 {
        return Err(forked);
    }
    let pid = Pid::from_raw(pid);
    // Also here, not only in the child: the command joins this group next,
    // which must exist by then. (The child never execs, so this cannot fail
    // with EACCES.)
    if let Err(e) = nix::unistd::setpgid(pid, pid) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e.into());
    }
    Ok(Sentinel {
        pid,
        tx,
        margin,
        sent: kill_at,
    })
}

/// Upper bound of fd numbers to close when close_range is not available.
fn open_max() -> libc::c_int {
    // SAFETY: sysconf has no memory effects.
    #[allow(unsafe_code)]
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    libc::c_int::try_from(n)
        .unwrap_or(65_536)
        .clamp(1024, 65_536)
}

const GONE: &[u8] = b"dlock: dlock is gone; stopping its command's process group\n";

/// The sentinel: never returns.
///
/// # Safety
/// Only in the child of `fork`: makes async-signal-safe calls only.
#[allow(unsafe_code)]
unsafe fn sentinel(
    rx: libc::c_int,
    tx: libc::c_int,
    max_fd: libc::c_int,
    mut kill_at: i64,
    term_on_exit: bool,
    kill_after: i64,
) -> ! {
    // SAFETY (whole body): system calls on our own fds, pids and stack
    // buffers; nothing here allocates or locks.
    unsafe {
        // Ignore every signal but KILL and STOP (which cannot be); faults
        // keep their default action.
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
            let act = match sig {
                libc::SIGKILL | libc::SIGSTOP => continue,
                libc::SIGSEGV
                | libc::SIGBUS
                | libc::SIGFPE
                | libc::SIGILL
                | libc::SIGTRAP
                | libc::SIGABRT
                | libc::SIGSYS
                | libc::SIGCHLD => &dfl,
                _ => &ign,
            };
            libc::sigaction(sig, act, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());

        // Keep only the pipe and stderr: no copy of dlock's coordinator
        // connections, of the pipe's write end (its closing is the news
        // that dlock is gone) or of dlock's stdin/stdout.
        libc::close(tx);
        libc::close(0);
        libc::close(1);
        close_from(3, rx, max_fd);

        libc::setpgid(0, 0);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        libc::prctl(
            libc::PR_SET_NAME,
            c"dlock-sentinel".as_ptr() as libc::c_ulong,
        );
        let group = -libc::getpid();

        let mut open = true;
        let mut buf = [0u8; 64];
        let mut carry = [0u8; 8];
        let mut have = 0usize;
        loop {
            let now = now_ns();
            if now >= kill_at {
                libc::kill(group, libc::SIGKILL);
                libc::_exit(0);
            }
            // Up to 100 ms at a time: a poll's timeout does not count
            // suspended time, the deadline does.
            let left_ms = (kill_at - now) / 1_000_000 + 1;
            let wait = libc::c_int::try_from(left_ms.clamp(1, 100)).unwrap_or(100);
            if !open {
                libc::poll(std::ptr::null_mut(), 0, wait);
                continue;
            }
            let mut pfd = libc::pollfd {
                fd: rx,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, wait) <= 0 {
                continue;
            }
            let n = libc::read(rx, buf.as_mut_ptr().cast(), buf.len());
            if n > 0 {
                // Whole 8-byte deadlines; the last one counts.
                for &b in buf.iter().take(usize::try_from(n).unwrap_or(0)) {
                    if let Some(slot) = carry.get_mut(have) {
                        *slot = b;
                    }
                    have += 1;
                    if have == 8 {
                        kill_at = i64::from_le_bytes(carry);
                        have = 0;
                    }
                }
                continue;
            }
            if n < 0 {
                // (Reads errno; builds no message, allocates nothing.)
                let e = std::io::Error::last_os_error().raw_os_error();
                if e == Some(libc::EINTR) || e == Some(libc::EAGAIN) {
                    continue;
                }
            }
            // End of file (or a broken pipe): dlock is gone.
            open = false;
            libc::close(rx);
            libc::write(2, GONE.as_ptr().cast(), GONE.len());
            if term_on_exit {
                libc::kill(group, libc::SIGTERM);
                libc::kill(group, libc::SIGCONT);
                kill_at = kill_at.min(now_ns().saturating_add(kill_after));
            } else {
                kill_at = now;
            }
        }
    }
}

/// Closes every fd from `first` on but `keep` (`keep >= first`).
#[allow(unsafe_code)]
unsafe fn close_from(first: libc::c_int, keep: libc::c_int, max_fd: libc::c_int) {
    // SAFETY: closing fds in the forked child, which owns its copies.
    unsafe {
        #[cfg(target_os = "linux")]
        {
            // close_range(lo, hi) for lo..=hi; an empty range is done.
            let range = |lo: libc::c_int, hi: libc::c_uint| {
                let Ok(lo) = libc::c_uint::try_from(lo) else {
                    return false;
                };
                lo > hi || libc::syscall(libc::SYS_close_range, lo, hi, 0) == 0
            };
            let below = match libc::c_uint::try_from(keep) {
                Ok(k) if k > 0 => range(first, k - 1),
                _ => false,
            };
            if below && range(keep.saturating_add(1), libc::c_uint::MAX) {
                return;
            }
        }
        // No close_range (old kernel, other systems): one by one.
        for fd in first..max_fd {
            if fd != keep {
                libc::close(fd);
            }
        }
    }
}
