//! An in-process dlock backend for tests: the full lock contract, no server.
//!
//! [`MemoryBackend`] keeps its locks in a store inside this process. Every
//! backend connected to the same named store (`memory://NAME`) shares its
//! locks, as nodes share a real coordinator; `memory://` (or
//! [`MemoryBackend::new`]) makes a private one. Leases are timed by one
//! clock, the host's `CLOCK_BOOTTIME` (the one dlock's guards use), so
//! expiry, `at_least`, fencing tokens and waiting behave exactly as the
//! contract says — the crate passes dlock's conformance suite.
//!
//! It is **not** a distributed lock: it excludes holders in one process
//! only. Use it to test code that takes locks without running a server.
//!
//! [`MemoryBackend::set_available`] makes a store fail every call, as a
//! coordinator that went away would, so error paths can be tested too.

mod backend;
mod store;

pub use backend::MemoryBackend;

/// The backend kind, in errors and metrics.
pub const KIND: &str = "memory";
