//! The `#[try_lock]` attribute of [dlock](https://docs.rs/dlock): the Rust
//! form of ShedLock's `@SchedulerLock` / `@TryLock`.
//!
//! Use it through the `dlock` crate, as `#[dlock::try_lock(...)]`; the
//! expansion calls into `dlock`, so this crate is not useful on its own.
//!
//! ```ignore
//! #[dlock::try_lock(name = "emailLock", lock_for = "10m", at_least = "30s")]
//! async fn send_daily_emails() -> usize { /* runs on one node at a time */ 42 }
//!
//! // The return type `T` becomes `dlock::Result<Option<T>>`:
//! match send_daily_emails().await? {
//!     Some(sent) => println!("sent {sent}"),
//!     None => println!("another node holds emailLock: skipped"),
//! }
//! ```
//!
//! See `dlock::try_lock` for the full reference.

mod args;
mod expand;

use proc_macro::TokenStream;

/// Runs an `async fn` only when the named distributed lock could be taken.
///
/// The function's return type `T` becomes `dlock::Result<Option<T>>`:
/// `Ok(Some(value))` when the body ran under the lock, `Ok(None)` when another
/// owner held it (skipped), `Err(_)` when the lock could not be taken or
/// released, or when the lease was lost while the body ran (by default the
/// body is then stopped at once: its future is dropped at the loss, before
/// the coordinator can grant the lock to another node).
///
/// Arguments (`name` is required; durations are human strings checked at
/// compile time, like `"10m"`, `"30s"`, `"1h 30m"`, `"250ms"`):
///
/// | argument | meaning | default |
/// |---|---|---|
/// | `name = "emailLock"` | lock name; any expression implementing `Display` works (`format!("import:{}", file)`) | required |
/// | `lock_for = "10m"` | `lock_at_most_for`: the lease length (kept alive while the body runs) | the locker's default (10 min) |
/// | `at_least = "30s"` | minimum hold, even if the body finishes sooner | the locker's default (zero) |
/// | `wait = "1m"` | wait up to this long for the holder instead of skipping | zero: skip at once |
/// | `keep_alive = false` | do not extend the lease while the body runs | the locker's default (on) |
/// | `max_hold = "1h"` | ceiling on one hold: keep-alive stops there and the lease counts as lost | the locker's default (none) |
/// | `cancel_on_lost = false` | let the body run to its end after the lease is lost (the answer is still `Err(LockLost)`) | the locker's default (on: the body is dropped at the loss) |
/// | `owner = "node-a"` | owner name for this call | the locker's owner |
/// | `locker = self.locker` | a `dlock::Locker`, `&Locker` or `Arc<Locker>` expression | `dlock::default_locker()` |
///
/// Inside the body, `dlock::current_lock()` returns the fencing token and the
/// loss signal of the lease.
#[proc_macro_attribute]
pub fn try_lock(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::try_lock(attr.into(), item.into()).into()
}
