//! Run-time support for `#[dlock::try_lock]`: the process-wide default
//! locker, the current lock of a running body, and the glue the macro expands to.

use crate::{Error, LockContext, Locker, Result};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

static DEFAULT_LOCKER: RwLock<Option<Locker>> = RwLock::new(None);

tokio::task_local! {
    static CURRENT: LockContext;
}

/// Sets the process-wide locker that `#[dlock::try_lock]` functions without a
/// `locker = ...` argument use. Call it once at start-up; calling it again
/// replaces the locker and returns the previous one.
///
/// ```no_run
/// # async fn f() -> dlock::Result<()> {
/// dlock::set_default_locker(dlock::connect("sqlite://locks.db").await?);
/// # Ok(()) }
/// ```
pub fn set_default_locker(locker: Locker) -> Option<Locker> {
    let mut slot = DEFAULT_LOCKER.write().unwrap_or_else(|p| p.into_inner());
    slot.replace(locker)
}

/// The locker set by [`set_default_locker`]; an
/// [`Error::InvalidConfig`] saying what to do when none was set.
pub fn default_locker() -> Result<Locker> {
    let slot = DEFAULT_LOCKER.read().unwrap_or_else(|p| p.into_inner());
    slot.clone().ok_or_else(|| {
        Error::InvalidConfig(
            "no default dlock locker: call dlock::set_default_locker(dlock::connect(url).await?) \
             at start-up, or give the function a locker with #[dlock::try_lock(locker = ...)]"
                .into(),
        )
    })
}

/// The lock held by the `#[dlock::try_lock]` function (or scheduled job)
/// whose body is running on this task: its name, fencing token and loss
/// signal. `None` outside such a body.
///
/// ```no_run
/// #[dlock::try_lock(name = "billing", lock_for = "5m")]
/// async fn bill() {
///     if let Some(lock) = dlock::current_lock() {
///         // Hand the token to the resource so it rejects a stale holder.
///         println!("billing under token {}", lock.token);
///     }
/// }
/// ```
pub fn current_lock() -> Option<LockContext> {
    CURRENT.try_with(|c| c.clone()).ok()
}

/// Runs `fut` with `ctx` as [`current_lock`].
pub(crate) async fn with_current<F: Future>(ctx: LockContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// What the macro expansion calls. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Where a `locker = ...` argument gets its [`Locker`] from.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be used as `locker = ...` of #[dlock::try_lock]",
        label = "expected a dlock::Locker, &Locker, Arc<Locker> or Box<Locker>"
    )]
    pub trait LockerSource {
        /// A clone of the locker (cheap: an `Arc` and a few strings).
        fn to_locker(&self) -> Locker;
    }

    impl LockerSource for Locker {
        fn to_locker(&self) -> Locker {
            self.clone()
        }
    }
    impl<T: LockerSource + ?Sized> LockerSource for &T {
        fn to_locker(&self) -> Locker {
            (**self).to_locker()
        }
    }
    impl<T: LockerSource + ?Sized> LockerSource for &mut T {
        fn to_locker(&self) -> Locker {
            (**self).to_locker()
        }
    }
    impl<T: LockerSource + ?Sized> LockerSource for Arc<T> {
        fn to_locker(&self) -> Locker {
            (**self).to_locker()
        }
    }
    impl<T: LockerSource + ?Sized> LockerSource for Box<T> {
        fn to_locker(&self) -> Locker {
            (**self).to_locker()
        }
    }

    /// Gives the wrapped body's future a named output type, so `?` and
    /// `return` inside it infer exactly as in the original function.
    pub fn body<T, F: Future<Output = T>>(f: F) -> F {
        f
    }

    /// One call of a `#[try_lock]` function.
    #[derive(Debug)]
    pub struct TryLockCall {
        /// Lock name.
        pub name: String,
        /// `lock_for`, or the locker's default.
        pub lock_for: Option<Duration>,
        /// `at_least`, or the locker's default.
        pub at_least: Option<Duration>,
        /// `wait`, or zero.
        pub wait: Option<Duration>,
        /// `keep_alive`, or the locker's default.
        pub keep_alive: Option<bool>,
        /// `owner`, or the locker's.
        pub owner: Option<String>,
        /// `max_hold`, or the locker's default.
        pub max_hold: Option<Duration>,
        /// `cancel_on_lost`, or the locker's default (on).
        pub cancel_on_lost: Option<bool>,
    }

    impl TryLockCall {
        /// Takes the lock, runs `body` if it was taken, releases.
        pub async fn run<T, F>(self, locker: Locker, body: F) -> Result<Option<T>>
        where
            F: Future<Output = T>,
        {
            let locker = match self.owner {
                Some(owner) => locker.with_owner(owner)?,
                None => locker,
            };
            let mut opts = locker
                .defaults()
                .clone()
                .wait(self.wait.unwrap_or(Duration::ZERO));
            if let Some(d) = self.lock_for {
                opts.lock_for = d;
            }
            if let Some(d) = self.at_least {
                opts.at_least = d;
            }
            if let Some(on) = self.keep_alive {
                opts.keep_alive = on;
            }
            if let Some(d) = self.max_hold {
                opts.max_hold = Some(d);
            }
            if let Some(on) = self.cancel_on_lost {
                opts.cancel_on_lost = on;
            }
            locker
                .run_exclusive(self.name, opts, |ctx| with_current(ctx, body))
                .await
        }
    }
}
