//! [`Schedule`]: when a job fires (a cron expression with seconds and a time
//! zone, or a fixed period).

use crate::{Error, Result};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use std::fmt;
use std::time::Duration;

/// When a job fires.
///
/// Every node computes the same firing instants from the same schedule, so
/// nodes fire together (up to their clock skew, which `lock_at_least_for`
/// absorbs) and the firing instant identifies one run across the cluster.
///
/// ```
/// use dlock::schedule::Schedule;
/// // 08:59:59 every day, Berlin time (6 fields: seconds first).
/// let s = Schedule::cron("59 59 8 * * *")?.in_time_zone("Europe/Berlin")?;
/// // 5 fields (no seconds) work too, as do @daily, @hourly ...
/// let every_quarter_hour = Schedule::cron("*/15 * * * *")?;
/// // A fixed period, aligned to the Unix epoch so all nodes agree.
/// let every_5s = Schedule::every(std::time::Duration::from_secs(5))?;
/// # Ok::<(), dlock::Error>(())
/// ```
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron {
        cron: Box<croner::Cron>,
        text: String,
        tz: Tz,
    },
    Every(Duration),
}

impl Schedule {
    /// A cron schedule in UTC.
    ///
    /// Fields: `[second] minute hour day-of-month month day-of-week [year]`;
    /// with 5 fields the seconds are `0`. Day of week: `0`–`7` (`0` and `7`
    /// are Sunday) or `MON`–`SUN`; also `L`, `W`, `#`, ranges, steps, lists and
    /// the nicknames `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`
    /// (parsed by the `croner` crate).
    pub fn cron(expr: &str) -> Result<Self> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| {
                Error::InvalidConfig(format!(
                    "cron expression {expr:?} is invalid: {e}; expected \
                     `[second] minute hour day-of-month month day-of-week`, e.g. \"59 59 8 * * *\""
                ))
            })?;
        let s = Schedule {
            kind: Kind::Cron {
                cron: Box::new(cron),
                text: expr.trim().to_string(),
                tz: Tz::UTC,
            },
        };
        if s.next_after(Utc::now()).is_none() {
            return Err(Error::InvalidConfig(format!(
                "cron expression {expr:?} never fires again"
            )));
        }
        Ok(s)
    }

    /// Evaluates the cron expression in the IANA time zone `tz`
    /// (e.g. `"Europe/Berlin"`, `"America/New_York"`, `"UTC"`), with its
    /// daylight-saving rules. Nodes in different local zones still fire together.
    pub fn in_time_zone(self, tz: &str) -> Result<Self> {
        let zone: Tz = tz.parse().map_err(|_| {
            Error::InvalidConfig(format!(
                "unknown time zone {tz:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
            ))
        })?;
        self.with_time_zone(zone)
    }

    /// Like [`Schedule::in_time_zone`], with a `chrono_tz::Tz` value.
    pub fn with_time_zone(self, zone: Tz) -> Result<Self> {
        match self.kind {
            Kind::Cron { cron, text, .. } => Ok(Schedule {
                kind: Kind::Cron {
                    cron,
                    text,
                    tz: zone,
                },
            }),
            Kind::Every(_) => Err(Error::InvalidConfig(
                "a time zone applies to cron schedules only; Schedule::every is zone-free".into(),
            )),
        }
    }

    /// Fires every `period`, at instants that are whole multiples of `period`
    /// since the Unix epoch (so every node fires at the same instants).
    /// `period` must be at least one millisecond.
    pub fn every(period: Duration) -> Result<Self> {
        if period < Duration::from_millis(1) {
            return Err(Error::InvalidConfig(format!(
                "schedule period {period:?} is shorter than 1ms"
            )));
        }
        Ok(Schedule {
            kind: Kind::Every(period),
        })
    }

    /// The time zone of a cron schedule.
    pub fn time_zone(&self) -> Option<Tz> {
        match &self.kind {
            Kind::Cron { tz, .. } => Some(*tz),
            Kind::Every(_) => None,
        }
    }

    /// The first firing strictly after `t`; `None` when the schedule never
    /// fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron { cron, tz, .. } => {
                // Whole seconds: croner works on seconds, and a firing is
                // "after" t when it is later than t's second.
                let start = tz.timestamp_opt(t.timestamp(), 0).single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                let next = next.with_timezone(&Utc);
                (next > t).then_some(next)
            }
            Kind::Every(period) => {
                let p = i128::try_from(period.as_nanos()).ok()?;
                let now = i128::from(t.timestamp_nanos_opt()?);
                let next = (now.div_euclid(p) + 1) * p;
                let next = i64::try_from(next).ok()?;
                Some(DateTime::from_timestamp_nanos(next))
            }
        }
    }

    /// The next `n` firings after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut cur = t;
        while out.len() < n {
            match self.next_after(cur) {
                Some(next) => {
                    out.push(next);
                    cur = next;
                }
                None => break,
            }
        }
        out
    }

    /// Sleeps until the next firing after now and returns its instant
    /// (`None`, at once, when the schedule never fires again). Follows the
    /// wall clock: a clock step is noticed within a minute.
    pub async fn sleep_until_next(&self) -> Option<DateTime<Utc>> {
        let next = self.next_after(Utc::now())?;
        sleep_until_wall(next).await;
        Some(next)
    }

    /// The shortest gap between the next few firings after `t` (used to warn
    /// when `lock_at_least_for` would swallow firings).
    pub(crate) fn min_gap(&self, t: DateTime<Utc>) -> Option<Duration> {
        let next = self.upcoming(t, 4);
        next.windows(2)
            .filter_map(|w| (w[1] - w[0]).to_std().ok())
            .min()
    }
}

/// Sleeps until the wall clock reads `t`, re-reading it at least once a minute.
pub(crate) async fn sleep_until_wall(t: DateTime<Utc>) {
    loop {
        let now = Utc::now();
        if now >= t {
            return;
        }
        let left = (t - now).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Cron { text, tz, .. } => write!(f, "cron \"{text}\" in {tz}"),
            Kind::Every(p) => write!(f, "every {}", humantime::format_duration(*p)),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({self})")
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    /// A cron expression, optionally followed by ` in <IANA zone>`:
    /// `"59 59 8 * * * in Europe/Berlin"`. `every 5s` gives [`Schedule::every`].
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(period) = s.strip_prefix("every ") {
            let d = humantime::parse_duration(period.trim())
                .map_err(|e| Error::InvalidConfig(format!("schedule {s:?}: bad period: {e}")))?;
            return Schedule::every(d);
        }
        match s.rsplit_once(" in ") {
            Some((expr, tz)) => Schedule::cron(expr)?.in_time_zone(tz.trim()),
            None => Schedule::cron(s),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn seconds_and_time_zone() {
        let s = Schedule::cron("59 59 8 * * *")
            .unwrap()
            .in_time_zone("Europe/Berlin")
            .unwrap();
        // Winter: CET = UTC+1.
        assert_eq!(
            s.next_after(utc("2025-01-10T00:00:00Z")),
            Some(utc("2025-01-10T07:59:59Z"))
        );
        // Summer: CEST = UTC+2.
        assert_eq!(
            s.next_after(utc("2025-07-10T00:00:00Z")),
            Some(utc("2025-07-10T06:59:59Z"))
        );
        // Strictly after: at the firing instant, the next one is a day later.
        assert_eq!(
            s.next_after(utc("2025-07-10T06:59:59Z")),
            Some(utc("2025-07-11T06:59:59Z"))
        );
        // Sub-second: still the same firing until its second has passed.
        assert_eq!(
            s.next_after(utc("2025-07-10T06:59:58.999Z")),
            Some(utc("2025-07-10T06:59:59Z"))
        );
        assert_eq!(
            s.next_after(utc("2025-07-10T06:59:59.200Z")),
            Some(utc("2025-07-11T06:59:59Z"))
        );
    }

    #[test]
    fn five_fields_mean_second_zero() {
        let s = Schedule::cron("30 4 * * *").unwrap();
        assert_eq!(
            s.next_after(utc("2025-01-10T00:00:00Z")),
            Some(utc("2025-01-10T04:30:00Z"))
        );
    }

    #[test]
    fn every_is_epoch_aligned() {
        let s = Schedule::every(Duration::from_secs(5)).unwrap();
        assert_eq!(
            s.next_after(utc("2025-01-10T00:00:03.5Z")),
            Some(utc("2025-01-10T00:00:05Z"))
        );
        assert_eq!(
            s.next_after(utc("2025-01-10T00:00:05Z")),
            Some(utc("2025-01-10T00:00:10Z"))
        );
        assert!(Schedule::every(Duration::ZERO).is_err());
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let e = Schedule::cron("61 * * * * *").unwrap_err().to_string();
        assert!(
            e.contains("cron expression \"61 * * * * *\" is invalid"),
            "{e}"
        );
        let e = Schedule::cron("* * *").unwrap_err().to_string();
        assert!(e.contains("invalid"), "{e}");
        let e = Schedule::cron("0 0 * * *")
            .unwrap()
            .in_time_zone("Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
        assert!(Schedule::every(Duration::from_secs(1))
            .unwrap()
            .in_time_zone("UTC")
            .is_err());
    }

    #[test]
    fn parses_from_text() {
        let s: Schedule = "59 59 8 * * * in America/New_York".parse().unwrap();
        assert_eq!(s.time_zone(), Some(chrono_tz::America::New_York));
        assert_eq!(s.to_string(), "cron \"59 59 8 * * *\" in America/New_York");
        let s: Schedule = "every 2s".parse().unwrap();
        assert_eq!(s.to_string(), "every 2s");
        assert_eq!(
            Schedule::cron("*/2 * * * * *")
                .unwrap()
                .min_gap(utc("2025-01-01T00:00:00Z")),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn dst_gap_still_fires() {
        // 02:30 does not exist in Berlin on 2025-03-30; the schedule must not
        // get stuck: it fires again later.
        let s = Schedule::cron("0 30 2 * * *")
            .unwrap()
            .in_time_zone("Europe/Berlin")
            .unwrap();
        let next = s.next_after(utc("2025-03-29T12:00:00Z")).unwrap();
        assert!(next > utc("2025-03-29T12:00:00Z"));
        assert!(next < utc("2025-04-01T00:00:00Z"), "{next}");
    }
}
