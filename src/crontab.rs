//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) as Kubernetes
//! CronJobs and Karpenter's disruption budgets read them, evaluated by the `croner` crate:
//!
//! - when both day-of-month and day-of-week are restricted, a day matches if either does (`0 9
//!   1-7 * mon` fires on days 1 to 7 and on every Monday), Vixie cron's rule; when one of them is
//!   `*` (or `?`), only the other restricts;
//! - day-of-week counts from 0 = Sunday, 7 is Sunday again, names such as `mon-fri` work; months
//!   take names too (`jan`); `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//!   `@midnight` and `@hourly` stand for their five fields.
//!
//! Expressions are evaluated on a wall clock without a zone ([`NaiveDateTime`]); callers map wall
//! times to instants by their zone's rules. A refused expression is reported in the user's own
//! fields: each field is checked on its own, and the one at fault is named.

use chrono::{NaiveDateTime, TimeZone, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// The five fields, in order, as the error messages name them, with what each takes.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or sun-sat"),
];

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), found {0}")]
    FieldCount(usize),
    #[error("the {field} field {value:?} is invalid: {problem}")]
    Field { field: &'static str, value: String, problem: String },
    #[error("no date ever matches it")]
    Never,
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

/// The parser for crontab's five fields: no seconds, no year, day-of-month OR day-of-week.
fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).dom_and_dow(false).build()
}

impl Schedule {
    /// Parses a crontab expression (five fields, or a macro such as `@daily`).
    pub fn parse(expression: &str) -> Result<Self, CronError> {
        let expression = expression.trim();
        let expanded = MACROS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(expression))
            .map_or(expression, |(_, fields)| fields);
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != FIELDS.len() {
            return Err(CronError::FieldCount(fields.len()));
        }
        for (index, value) in fields.iter().enumerate() {
            check_field(index, value)?;
        }
        let cron = parser().parse(&fields.join(" ")).map_err(|error| CronError::Field {
            field: "day-of-week",
            value: fields[4].to_owned(),
            problem: error.to_string(),
        })?;
        // Catches days that exist in no month (`0 0 30 2 *`) once, instead of at every use.
        let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().ok_or(CronError::Never)?;
        cron.find_next_occurrence(&epoch, true).map_err(|_| CronError::Never)?;
        Ok(Self(cron))
    }

    /// The first firing strictly after `after`; `None` when none is left (past year 5000).
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        self.0.find_next_occurrence(&Utc.from_utc_datetime(&after), false).ok().map(|at| at.naive_utc())
    }

    /// The last firing at or before `at`.
    pub fn last_at_or_before(&self, at: NaiveDateTime) -> Option<NaiveDateTime> {
        self.0.find_previous_occurrence(&Utc.from_utc_datetime(&at), true).ok().map(|found| found.naive_utc())
    }
}

/// Checks one field alone (the others `*`), so an error names the field the user wrote.
fn check_field(index: usize, value: &str) -> Result<(), CronError> {
    let (field, takes) = FIELDS[index];
    let refuse = |problem: String| CronError::Field { field, value: value.to_owned(), problem };
    // croner reads day and month names anywhere in the expression; crontab only in their fields.
    let names_allowed = matches!(field, "month" | "day-of-week");
    let letters_allowed = |c: char| names_allowed || (field == "day-of-month" && matches!(c, 'L' | 'W' | 'l' | 'w'));
    if let Some(letter) = value.chars().find(|c| c.is_ascii_alphabetic() && !letters_allowed(*c)) {
        return Err(refuse(format!("{letter:?} has no meaning in the {field} field")));
    }
    let mut probe = ["*"; 5];
    probe[index] = value;
    match parser().parse(&probe.join(" ")) {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = error.to_string();
            let problem = text.strip_prefix("Component error: ").unwrap_or(&text).trim_end_matches('.');
            Err(refuse(format!("{problem} (the {field} field takes {takes}, ranges a-b, lists and /steps)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, NaiveDate, Weekday};

    use super::*;

    fn wall(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d).and_then(|day| day.and_hms_opt(h, mi, 0)).unwrap()
    }

    fn firings(expression: &str, from: NaiveDateTime, count: usize) -> Vec<NaiveDateTime> {
        let schedule = Schedule::parse(expression).unwrap();
        std::iter::successors(schedule.next_after(from), |at| schedule.next_after(*at)).take(count).collect()
    }

    fn next_days(expression: &str, count: usize) -> Vec<Weekday> {
        // 2026-11-22 is a Sunday.
        firings(expression, wall(2026, 11, 22, 0, 0), count).iter().map(|t| t.weekday()).collect()
    }

    #[test]
    fn weekdays_are_numbered_as_in_crontab() {
        use Weekday::*;
        assert_eq!(next_days("0 8 * * 1-5", 5), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(next_days("0 8 * * mon-fri", 5), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(next_days("0 8 * * 0", 2), [Sun, Sun]);
        assert_eq!(next_days("0 8 * * 7", 2), [Sun, Sun]);
        assert_eq!(next_days("0 8 * * 5-7", 3), [Sun, Fri, Sat]);
        assert_eq!(next_days("0 8 * * 1-5/2", 3), [Mon, Wed, Fri]);
        assert_eq!(next_days("0 8 * * 6,0", 2), [Sun, Sat]);
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // Days 1-7 of December 2026 and every Monday: Dec 1..7, then Mondays 14, 21, 28.
        let days: Vec<u32> = firings("0 9 1-7 * mon", wall(2026, 11, 30, 12, 0), 10).iter().map(|t| t.day()).collect();
        assert_eq!(days, [1, 2, 3, 4, 5, 6, 7, 14, 21, 28]);
        // One of them unrestricted: only the other counts.
        let days: Vec<u32> = firings("0 9 1-3 * *", wall(2026, 11, 30, 12, 0), 4).iter().map(|t| t.day()).collect();
        assert_eq!(days, [1, 2, 3, 1]);
        let days: Vec<u32> = firings("0 9 * * mon", wall(2026, 11, 30, 12, 0), 2).iter().map(|t| t.day()).collect();
        assert_eq!(days, [7, 14]);
        // A step is a restriction (as in Kubernetes): odd days or Mondays.
        let days: Vec<u32> = firings("0 9 */2 * mon", wall(2026, 12, 1, 12, 0), 4).iter().map(|t| t.day()).collect();
        assert_eq!(days, [3, 5, 7, 9]);
    }

    #[test]
    fn minutes_hours_and_macros() {
        let start = wall(2026, 11, 22, 7, 59);
        assert_eq!(firings("30 8 * * *", start, 1), [wall(2026, 11, 22, 8, 30)]);
        assert_eq!(firings("@daily", start, 1), [wall(2026, 11, 23, 0, 0)]);
        assert_eq!(firings("@midnight", start, 1), [wall(2026, 11, 23, 0, 0)]);
        assert_eq!(firings("0 0 1 jan *", start, 1), [wall(2027, 1, 1, 0, 0)]);
        let schedule = Schedule::parse("0 8 * * *").unwrap();
        assert_eq!(schedule.last_at_or_before(wall(2026, 11, 22, 8, 0)), Some(wall(2026, 11, 22, 8, 0)));
        assert_eq!(schedule.last_at_or_before(wall(2026, 11, 22, 7, 59)), Some(wall(2026, 11, 21, 8, 0)));
    }

    #[test]
    fn refusals_name_the_users_field() {
        assert_eq!(Schedule::parse("0 8 * *").unwrap_err(), CronError::FieldCount(4));
        assert_eq!(Schedule::parse("0 0 8 * * 1").unwrap_err(), CronError::FieldCount(6));
        assert_eq!(Schedule::parse("every day").unwrap_err(), CronError::FieldCount(2));
        for (expression, field) in [
            ("0 25 * * *", "hour"),
            ("61 8 * * *", "minute"),
            ("0 8 * 13 *", "month"),
            ("0 8 32 * *", "day-of-month"),
            ("0 8 * * 8", "day-of-week"),
            ("0 sun * * *", "hour"),
            ("0 8 * * fri-mon", "day-of-week"),
        ] {
            match Schedule::parse(expression) {
                Err(CronError::Field { field: named, .. }) => assert_eq!(named, field, "{expression}"),
                other => panic!("{expression}: expected the {field} field refused, got {other:?}"),
            }
        }
        let message = Schedule::parse("0 25 * * *").unwrap_err().to_string();
        assert!(message.starts_with("the hour field \"25\" is invalid"), "{message}");
        assert!(message.contains("0-23"), "{message}");
        assert_eq!(Schedule::parse("0 0 30 2 *").unwrap_err(), CronError::Never);
    }
}
