//! [`BootInstant`]: the local clock every lease's validity is measured on.
//!
//! `std::time::Instant` is CLOCK_MONOTONIC on Linux, which stops while the
//! machine is suspended (a paused VM, a closed laptop lid). A lease is timed
//! by the coordinator, whose clock keeps running: after a suspend longer than
//! the lease, a guard measured on CLOCK_MONOTONIC would still believe it holds
//! a lock the coordinator has long given to someone else. CLOCK_BOOTTIME
//! counts suspended time, so a guard comes back from a suspend *not* holding.
//!
//! On other platforms this falls back to `std::time::Instant`.

use std::ops::Add;
use std::time::Duration;

/// An instant on the local clock that keeps counting while the machine is
/// suspended (CLOCK_BOOTTIME on Linux).
///
/// Arithmetic saturates instead of panicking: `instant + Duration::MAX` is
/// the far future, never an overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Duration);

impl BootInstant {
    /// The current instant.
    pub fn now() -> BootInstant {
        BootInstant(read_clock())
    }

    /// Time since this instant (zero if it is in the future).
    pub fn elapsed(self) -> Duration {
        BootInstant::now().saturating_duration_since(self)
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Time from now until this instant (zero once it has passed).
    pub fn remaining(self) -> Duration {
        self.saturating_duration_since(BootInstant::now())
    }

    /// `self + d`, or `None` when that cannot be represented.
    pub fn checked_add(self, d: Duration) -> Option<BootInstant> {
        self.0.checked_add(d).map(BootInstant)
    }

    /// `self - d`, or `None` before the clock's origin.
    pub fn checked_sub(self, d: Duration) -> Option<BootInstant> {
        self.0.checked_sub(d).map(BootInstant)
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(d))
    }

    /// True once this instant has passed.
    pub fn has_passed(self) -> bool {
        BootInstant::now() >= self
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;
    /// Saturating: never panics.
    fn add(self, d: Duration) -> BootInstant {
        self.saturating_add(d)
    }
}

/// Longest single timer sleep in [`sleep_until`]: a suspend can make a
/// tokio timer (CLOCK_MONOTONIC) late by the suspended time, so long sleeps
/// wake up now and then to look at the clock that counts it.
const MAX_TIMER_STEP: Duration = Duration::from_millis(500);

/// Sleeps until `deadline` by [`BootInstant`]; after a suspend it wakes no
/// later than 500 ms (its longest single timer step) past the deadline.
pub async fn sleep_until(deadline: BootInstant) {
    loop {
        let left = deadline.remaining();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(MAX_TIMER_STEP)).await;
    }
}

#[cfg(target_os = "linux")]
fn read_clock() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => Duration::new(
            u64::try_from(ts.tv_sec()).unwrap_or(0),
            u32::try_from(ts.tv_nsec()).unwrap_or(0),
        ),
        // CLOCK_BOOTTIME exists since Linux 2.6.39; this cannot fail on a
        // kernel Rust supports. Fall back to the monotonic clock regardless.
        Err(_) => fallback_clock(),
    }
}

#[cfg(not(target_os = "linux"))]
fn read_clock() -> Duration {
    fallback_clock()
}

/// `std::time::Instant` as a duration since the first call in this process.
fn fallback_clock() -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_clock_that_counts_suspended_time() {
        // CLOCK_MONOTONIC and CLOCK_BOOTTIME differ by the time this machine
        // spent suspended since boot (often zero), so "close to MONOTONIC"
        // proves nothing; compare against a direct BOOTTIME reading instead.
        use nix::time::{clock_gettime, ClockId};
        let before = clock_gettime(ClockId::CLOCK_BOOTTIME).unwrap();
        let ours = BootInstant::now().0;
        let after = clock_gettime(ClockId::CLOCK_BOOTTIME).unwrap();
        let as_dur =
            |ts: nix::sys::time::TimeSpec| Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
        assert!(as_dur(before) <= ours && ours <= as_dur(after));
    }

    #[test]
    fn arithmetic_saturates() {
        let now = BootInstant::now();
        let far = now + Duration::MAX;
        assert!(far > now);
        assert_eq!(far.checked_add(Duration::from_secs(1)), None);
        assert_eq!(now.saturating_duration_since(far), Duration::ZERO);
        assert!(!far.has_passed());
    }

    #[tokio::test]
    async fn sleep_until_waits_for_the_deadline() {
        let d = BootInstant::now() + Duration::from_millis(30);
        sleep_until(d).await;
        assert!(d.has_passed());
    }
}
