//! Making the command die with `dlock run`.

use nix::sys::signal::Signal;

/// Asks the kernel to send `signal` to the command when `dlock run` dies
/// (even by SIGKILL), so an orphaned command never keeps running after its
/// lock has expired and another node has taken it. Linux only; elsewhere,
/// and with `None`, nothing is set.
pub fn die_with_parent(cmd: &mut tokio::process::Command, signal: Option<Signal>) {
    #[cfg(target_os = "linux")]
    if let Some(signal) = signal {
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, getppid); it
        // allocates nothing and takes no locks.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
                // dlock died between fork and prctl: do not run unguarded.
                // (No allocation here: ECHILD stands for it.)
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from(nix::errno::Errno::ECHILD));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (cmd, signal);
}
