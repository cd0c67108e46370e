//! Exit codes of `dlock` (sysexits.h values where one fits).

/// Bad command line (EX_USAGE).
pub const USAGE: u8 = 64;
/// The lock could not be taken, inspected or released: coordinator
/// unreachable, credentials refused, bad URL or name (EX_UNAVAILABLE).
/// `dlock run` did not start the command.
pub const LOCK_ERROR: u8 = 69;
/// `dlock run`: another owner holds the lock (after `--wait`); the command
/// did not run (EX_TEMPFAIL). Change it with `--skipped-exit-code`.
pub const SKIPPED: u8 = 75;
/// `dlock run`: the lock was lost while the command ran; the command was
/// signalled as `--on-lost` says (EX_PROTOCOL).
pub const LOST: u8 = 76;
/// The command was found but could not be executed (shell convention).
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found (shell convention).
pub const NOT_FOUND: u8 = 127;
