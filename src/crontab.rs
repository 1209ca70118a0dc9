//! Five-field cron expressions as crontab reads them (`minute hour day-of-month month
//! day-of-week`), evaluated by the `cron` crate.
//!
//! The `cron` crate wants a seconds field and numbers days of the week from 1 = Sunday, whereas
//! crontab numbers them from 0 = Sunday (7 is Sunday too). Users write crontab, so each
//! expression is translated once here: seconds are pinned to 0 and the day-of-week field is
//! expanded to day names, which both dialects read the same way.

use std::str::FromStr;

use cron::Schedule;

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), found {0}")]
    FieldCount(usize),
    #[error("invalid day-of-week {0:?}: use 0-7 (0 and 7 are Sunday) or names such as mon-fri")]
    DayOfWeek(String),
    #[error("{0}")]
    Syntax(String),
}

/// Parses a crontab expression (five fields, or a macro such as `@daily`).
pub fn parse(expression: &str) -> Result<Schedule, CronError> {
    let expression = expression.trim();
    let expanded =
        MACROS.iter().find(|(name, _)| name.eq_ignore_ascii_case(expression)).map_or(expression, |(_, fields)| fields);
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
        return Err(CronError::FieldCount(fields.len()));
    };
    let day_of_week = day_names(day_of_week)?;
    let translated = format!("0 {minute} {hour} {day_of_month} {month} {day_of_week}");
    Schedule::from_str(&translated).map_err(|error| CronError::Syntax(error.to_string()))
}

/// Expands a crontab day-of-week field into `*` or a list of day names.
fn day_names(field: &str) -> Result<String, CronError> {
    let invalid = || CronError::DayOfWeek(field.to_owned());
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse::<usize>().ok().filter(|s| *s > 0).ok_or_else(invalid)?),
            None => (item, 1),
        };
        let (first, last) = match range {
            "*" | "?" => (0, 6),
            _ => match range.split_once('-') {
                Some((first, last)) => (day_number(first).ok_or_else(invalid)?, day_number(last).ok_or_else(invalid)?),
                // `5/2` means "from Friday, every second day".
                None if item.contains('/') => (day_number(range).ok_or_else(invalid)?, 6),
                None => {
                    let day = day_number(range).ok_or_else(invalid)?;
                    (day, day)
                }
            },
        };
        if first > last {
            return Err(invalid());
        }
        for day in (first..=last).step_by(step) {
            days[day % 7] = true;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".into());
    }
    let names: Vec<&str> = DAY_NAMES.iter().zip(days).filter(|(_, on)| *on).map(|(name, _)| *name).collect();
    Ok(names.join(","))
}

/// A crontab day number (0-7, 7 being Sunday again) or a three-letter day name.
fn day_number(text: &str) -> Option<usize> {
    if let Ok(number) = text.parse::<usize>() {
        return (number <= 7).then_some(number);
    }
    DAY_NAMES.iter().position(|name| name.eq_ignore_ascii_case(text))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Utc, Weekday};

    use super::*;

    fn next_days(expression: &str, count: usize) -> Vec<Weekday> {
        // 2026-11-22 is a Sunday.
        let start = Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap();
        parse(expression).unwrap().after(&start).take(count).map(|t| t.weekday()).collect()
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
    fn minutes_hours_and_macros() {
        let start = Utc.with_ymd_and_hms(2026, 11, 22, 7, 59, 30).unwrap();
        let next = parse("30 8 * * *").unwrap().after(&start).next().unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 22, 8, 30, 0).unwrap());
        let next = parse("@daily").unwrap().after(&start).next().unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
    }

    #[test]
    fn rejects_malformed_expressions() {
        assert!(matches!(parse("0 8 * *"), Err(CronError::FieldCount(4))));
        assert!(matches!(parse("0 0 8 * * 1"), Err(CronError::FieldCount(6))));
        assert!(matches!(parse("0 8 * * 8"), Err(CronError::DayOfWeek(_))));
        assert!(matches!(parse("0 8 * * fri-mon"), Err(CronError::DayOfWeek(_))));
        assert!(matches!(parse("61 8 * * *"), Err(CronError::Syntax(_))));
        assert!(matches!(parse("0 8 * 13 *"), Err(CronError::Syntax(_))));
        assert!(matches!(parse("every day"), Err(CronError::FieldCount(2))));
    }
}
