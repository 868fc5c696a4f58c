//! Build schedules: a five-field cron expression or an `@daily`-style macro, always in UTC.
//! The controller asks for the next tick strictly after `now` and requeues until then.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, Zoned};

/// Errors of schedule handling. The message is what a `Stalled` condition shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("spec.schedule {expression:?} is not a valid cron expression: {reason}")]
    Invalid { expression: String, reason: String },
    #[error("spec.schedule {expression:?} never fires after {after}")]
    NeverFires { expression: String, after: String },
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
}

// croner has no `@midnight`; it is the classic cron alias of `@daily`.
const ALIASES: [(&str, &str); 1] = [("@midnight", "@daily")];

impl Schedule {
    /// Parses five fields (minute hour day-of-month month day-of-week) or a macro (`@yearly`,
    /// `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`). Seconds and year
    /// fields are rejected: a schedule that looks like cron must mean what cron means.
    pub fn parse(expression: &str) -> Result<Self, Error> {
        let trimmed = expression.trim();
        let invalid = |reason: String| Error::Invalid { expression: expression.to_string(), reason };
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(trimmed))
            .map_or(trimmed, |(_, target)| *target);
        if !canonical.starts_with('@') {
            let fields = canonical.split_whitespace().count();
            if fields != 5 {
                return Err(invalid(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
                )));
            }
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(canonical).map_err(|e| invalid(e.to_string()))?;
        Ok(Self { expression: expression.to_string(), cron })
    }

    /// The expression as written in the spec.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `now` (UTC).
    pub fn next_after(&self, now: Timestamp) -> Result<Timestamp, Error> {
        let zoned = Zoned::new(now, TimeZone::UTC);
        self.cron
            .find_next_occurrence(&zoned, false)
            .map(|z| z.timestamp())
            .map_err(|_| Error::NeverFires { expression: self.expression.clone(), after: now.to_string() })
    }
}

/// Parses `expression` and returns its next tick after `now` in one step.
pub fn next_tick(expression: &str, now: Timestamp) -> Result<Timestamp, Error> {
    Schedule::parse(expression)?.next_after(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn nightly_schedule_fires_at_six_utc() {
        let s = Schedule::parse("00 06 * * *").unwrap();
        assert_eq!(s.next_after(ts("2026-04-20T05:59:59Z")).unwrap(), ts("2026-04-20T06:00:00Z"));
        // Strictly after: a tick exactly at `now` is not the next one.
        assert_eq!(s.next_after(ts("2026-04-20T06:00:00Z")).unwrap(), ts("2026-04-21T06:00:00Z"));
        assert_eq!(s.next_after(ts("2026-12-31T07:00:00Z")).unwrap(), ts("2027-01-01T06:00:00Z"));
    }

    #[test]
    fn macros_and_ranges() {
        assert_eq!(next_tick("@daily", ts("2026-04-20T05:00:00Z")).unwrap(), ts("2026-04-21T00:00:00Z"));
        assert_eq!(next_tick("@midnight", ts("2026-04-20T05:00:00Z")).unwrap(), ts("2026-04-21T00:00:00Z"));
        assert_eq!(next_tick("@hourly", ts("2026-04-20T05:10:00Z")).unwrap(), ts("2026-04-20T06:00:00Z"));
        assert_eq!(next_tick("@weekly", ts("2026-04-20T05:10:00Z")).unwrap(), ts("2026-04-26T00:00:00Z"));
        assert_eq!(next_tick("@monthly", ts("2026-04-20T05:10:00Z")).unwrap(), ts("2026-05-01T00:00:00Z"));
        assert_eq!(next_tick("@yearly", ts("2026-04-20T05:10:00Z")).unwrap(), ts("2027-01-01T00:00:00Z"));
        assert_eq!(next_tick("*/15 * * * *", ts("2026-04-20T05:10:00Z")).unwrap(), ts("2026-04-20T05:15:00Z"));
        // 2026-04-20 is a Monday; "1-5" is Monday to Friday.
        assert_eq!(next_tick("30 2 * * 1-5", ts("2026-04-25T00:00:00Z")).unwrap(), ts("2026-04-27T02:30:00Z"));
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        for bad in ["", "61 * * * *", "* * * *", "0 0 6 * * *", "0 25 * * *", "@sometimes", "a b c d e"] {
            let err = Schedule::parse(bad).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("spec.schedule"), "{bad}: {text}");
            assert!(matches!(err, Error::Invalid { .. }), "{bad}");
        }
        let text = Schedule::parse("0 0 6 * * *").unwrap_err().to_string();
        assert!(text.contains("expected 5 fields"), "{text}");
    }

    #[test]
    fn impossible_dates_never_fire() {
        let err = next_tick("0 0 30 2 *", ts("2026-01-01T00:00:00Z")).unwrap_err();
        assert!(matches!(err, Error::NeverFires { .. }), "{err}");
    }
}
