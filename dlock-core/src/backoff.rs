//! The delays of every retry loop in dlock: exponential, capped, and (by
//! default) jittered so that many clients that failed together do not retry
//! in step. Built on `backon`.

use backon::BackoffBuilder;
use std::time::Duration;

/// Delays for a retry loop: `first`, then doubling up to `max`; with
/// jitter, each delay gets a random extra of up to itself. Call
/// [`Backoff::reset`] after a success.
///
/// ```
/// use dlock_core::backoff::Backoff;
/// use std::time::Duration;
/// let mut b = Backoff::exact(Duration::from_millis(100), Duration::from_millis(300));
/// let mut ms = || b.next_delay().as_millis();
/// assert_eq!([ms(), ms(), ms(), ms()], [100, 200, 300, 300]);
/// b.reset();
/// assert_eq!(b.next_delay().as_millis(), 100);
/// ```
#[derive(Debug)]
pub struct Backoff {
    builder: backon::ExponentialBuilder,
    delays: backon::ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Jittered delays from `first` doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self::from_builder(Self::builder(first, max).with_jitter(), max)
    }

    /// The same without jitter (for a loop that runs in one process only,
    /// where spreading retries out buys nothing).
    pub fn exact(first: Duration, max: Duration) -> Self {
        Self::from_builder(Self::builder(first, max), max)
    }

    fn builder(first: Duration, max: Duration) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(max.max(first))
            .with_factor(2.0)
            .without_max_times()
    }

    fn from_builder(builder: backon::ExponentialBuilder, max: Duration) -> Self {
        Backoff {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on attempts the iterator never ends; `max` is
        // only a fallback.
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from the first delay.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_the_delay_and_twice_it() {
        let (first, max) = (Duration::from_millis(10), Duration::from_millis(80));
        for _ in 0..50 {
            let mut b = Backoff::new(first, max);
            let mut base = first;
            for _ in 0..6 {
                let d = b.next_delay();
                // (backon computes in f32: allow a microsecond of rounding)
                let slack = Duration::from_micros(1);
                assert!(
                    d + slack >= base && d <= base * 2 + slack,
                    "{d:?} for base {base:?}"
                );
                base = (base * 2).min(max);
            }
        }
    }
}
