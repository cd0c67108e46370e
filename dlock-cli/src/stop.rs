//! When `dlock run` stops its command: early enough that the command's whole
//! process group is dead before the coordinator could grant the lock to
//! anyone else.
//!
//! The guard's local validity (`remaining()`) ends no later than the
//! coordinator's expiry. Counting down that validity without a successful
//! renewal:
//!
//! ```text
//! lock_for ── renew point (2/3 left) ── ... retries ... ── TERM ── KILL ── end of validity
//!                                            kill_after + margin ┘   margin ┘
//! ```
//!
//! and at once SIGKILL once the loss is declared.

use crate::cli::OnLost;
use std::time::Duration;

/// `--kill-after` when not given, if the lease leaves room for it.
pub const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

/// What `dlock run` does to the command as its lease runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopPlan {
    /// `--on-lost`.
    pub on_lost: OnLost,
    /// Time between SIGTERM and SIGKILL (`--on-lost term`).
    pub kill_after: Duration,
    /// SIGKILL goes out when this much local validity is left: time for
    /// the kernel to deliver it and for timers that fire a little late.
    pub margin: Duration,
}

impl StopPlan {
    /// The margin for a lease of `lock_for`: a twentieth of it, 10 ms to 1 s.
    pub fn margin(lock_for: Duration) -> Duration {
        (lock_for / 20).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// The latest SIGTERM may come before the end of validity: a third of
    /// the lease, so that the keep-alive (due when two thirds are left) has
    /// the middle third to retry before the command is told to stop.
    pub fn room(lock_for: Duration) -> Duration {
        lock_for / 3
    }

    /// The plan for `--lock-for`, `--on-lost` and `--kill-after` (`None`:
    /// the default, shortened to what fits the lease), or a usage error
    /// saying what does not fit.
    pub fn new(
        on_lost: OnLost,
        lock_for: Duration,
        kill_after: Option<Duration>,
    ) -> Result<Self, String> {
        let margin = Self::margin(lock_for);
        let room = Self::room(lock_for);
        let fits = room.saturating_sub(margin);
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if on_lost != OnLost::Ignore && margin > room {
            return Err(format!(
                "--lock-for {} is too short to stop the command in time: use at least {}",
                show(lock_for),
                show(Duration::from_millis(30))
            ));
        }
        let kill_after = match kill_after {
            None => DEFAULT_KILL_AFTER.min(fits),
            Some(k) if on_lost == OnLost::Term && k > fits => {
                return Err(format!(
                    "--kill-after {} does not fit --lock-for {}: SIGTERM goes out when \
                     --kill-after + {} (a safety margin) of the lease are left without a \
                     renewal, which may be at most a third of --lock-for ({}) so that the \
                     keep-alive can retry first; use --kill-after {} or less, or a longer \
                     --lock-for",
                    show(k),
                    show(lock_for),
                    show(margin),
                    show(room),
                    show(fits)
                ));
            }
            Some(k) => k,
        };
        Ok(StopPlan {
            on_lost,
            kill_after,
            margin,
        })
    }

    /// True when `dlock` stops the command at all (not `--on-lost ignore`).
    pub fn stops(&self) -> bool {
        self.on_lost != OnLost::Ignore
    }

    /// SIGTERM goes to the group when this much validity is left.
    pub fn term_when_left(&self) -> Option<Duration> {
        (self.on_lost == OnLost::Term).then(|| self.kill_after + self.margin)
    }

    /// SIGKILL goes to the group when this much validity is left.
    pub fn kill_when_left(&self) -> Option<Duration> {
        self.stops().then_some(self.margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_default_kill_after_fits_any_lease() {
        let p = StopPlan::new(OnLost::Term, ms(3000), None).unwrap();
        assert_eq!(p.margin, ms(150));
        assert_eq!(p.kill_after, ms(850));
        assert_eq!(p.term_when_left(), Some(ms(1000)));
        assert_eq!(p.kill_when_left(), Some(ms(150)));
        let p = StopPlan::new(OnLost::Term, Duration::from_secs(600), None).unwrap();
        assert_eq!((p.kill_after, p.margin), (DEFAULT_KILL_AFTER, ms(1000)));
        for lock_for in [
            ms(30),
            ms(100),
            ms(1000),
            ms(7000),
            Duration::from_secs(3600),
        ] {
            let p = StopPlan::new(OnLost::Term, lock_for, None).unwrap();
            let term = p.term_when_left().unwrap();
            assert!(term <= lock_for / 3, "{lock_for:?}: {p:?}");
            assert!(p.margin > Duration::ZERO && p.margin <= term, "{p:?}");
        }
    }

    #[test]
    fn a_kill_after_that_does_not_fit_is_refused() {
        let e = StopPlan::new(OnLost::Term, ms(3000), Some(ms(10_000))).unwrap_err();
        assert!(
            e.contains("--kill-after 10s") && e.contains("--lock-for 3s"),
            "{e}"
        );
        assert!(e.contains("850ms or less"), "{e}");
        assert!(StopPlan::new(OnLost::Term, ms(3000), Some(ms(850))).is_ok());
        assert!(StopPlan::new(OnLost::Term, ms(3000), Some(ms(851))).is_err());
        // Without SIGTERM, --kill-after does not matter.
        let p = StopPlan::new(OnLost::Kill, ms(3000), Some(ms(10_000))).unwrap();
        assert_eq!(p.term_when_left(), None);
        assert_eq!(p.kill_when_left(), Some(ms(150)));
        let p = StopPlan::new(OnLost::Ignore, ms(10), None).unwrap();
        assert_eq!((p.term_when_left(), p.kill_when_left()), (None, None));
        assert!(StopPlan::new(OnLost::Kill, ms(20), None).is_err());
    }
}
