//! Durations as they appear in the API: Go duration strings limited to whole hours, minutes and
//! seconds (`720h`, `1h30m`, `90s`), and a "nillable" variant that also accepts `Never`.
//!
//! They deserialize from and serialize to strings, and their schema carries the same pattern
//! Karpenter uses so the apiserver rejects `"5 minutes"` with a message naming the field, plus an
//! upper bound ([`MAX_DURATION`], a year) that the apiserver checks with a CEL rule.
//!
//! Objects stored before that bound existed can still hold larger values, up to `u64` seconds.
//! Such a value still decodes; arithmetic on instants goes through [`Duration::delta`], which
//! saturates instead of overflowing, and the controllers report the value as invalid.

use std::{fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h))+$";
const NILLABLE_DURATION_PATTERN: &str = r"^(([0-9]+(s|m|h))+|Never)$";
/// Longer than any duration can sensibly be written; keeps the CEL rule's input small.
const MAX_LENGTH: u64 = 32;

/// The largest duration any field accepts: a year (8760h). Windows, lead times, budgets,
/// consolidation and expiry longer than that are better written as `Never` or a schedule.
pub const MAX_DURATION: Duration = Duration::from_secs(8760 * 3600);
/// The CEL rule that bounds a duration string. `duration()` parses with Go's rules and fails to
/// evaluate past about 2,562,047h, so a regular expression that only small enough numbers match
/// comes first (`&&` turns its `false` into the rule's result, never an evaluation error).
/// That matters beyond the message: a status write to an object stored before the bound existed
/// is allowed only when the rule evaluates (validation ratcheting skips unchanged values that
/// fail a rule, not ones whose rule cannot be evaluated).
const MAX_DURATION_RULE: &str =
    "self.matches('^([0-9]{1,6}h)?([0-9]{1,7}m)?([0-9]{1,9}s)?$') && duration(self) <= duration('8760h')";
const MAX_DURATION_MESSAGE: &str =
    "must be at most 8760h (a year), written as hours, minutes and seconds in that order (1h30m)";

/// A parse failure for a duration string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected whole hours, minutes and seconds such as 720h, 1h30m or 90s")]
pub struct DurationParseError {
    input: String,
}

/// A non-negative duration written as a Go duration string (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration(StdDuration);

impl Duration {
    pub const fn from_secs(seconds: u64) -> Self {
        Self(StdDuration::from_secs(seconds))
    }

    pub const fn as_std(self) -> StdDuration {
        self.0
    }

    /// As a signed chrono delta for arithmetic on instants, saturating at `TimeDelta::MAX`
    /// (about 292 million years) instead of failing. Adding it to an instant can still pass the
    /// largest date chrono represents: use `checked_add_signed` and decide what "never" means.
    pub fn delta(self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.0).unwrap_or(chrono::TimeDelta::MAX)
    }

    /// Whether the duration is within [`MAX_DURATION`], the bound the schema enforces.
    pub fn within_bound(self) -> bool {
        self <= MAX_DURATION
    }
}

impl From<StdDuration> for Duration {
    fn from(value: StdDuration) -> Self {
        Self(value)
    }
}

impl FromStr for Duration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || DurationParseError { input: input.to_owned() };
        let mut rest = input;
        let mut total: u64 = 0;
        if rest.is_empty() {
            return Err(error());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
            if digits == 0 {
                return Err(error());
            }
            let amount: u64 = rest[..digits].parse().map_err(|_| error())?;
            let unit = match rest.as_bytes()[digits] {
                b'h' => 3600,
                b'm' => 60,
                b's' => 1,
                _ => return Err(error()),
            };
            total = amount.checked_mul(unit).and_then(|s| total.checked_add(s)).ok_or_else(error)?;
            rest = &rest[digits + 1..];
        }
        Ok(Self(StdDuration::from_secs(total)))
    }
}

impl fmt::Display for Duration {
    /// Canonical form: the largest units first, zero units left out (`1h30m`, `0s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        if hours == 0 && minutes == 0 {
            return write!(f, "{seconds}s");
        }
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 {
            write!(f, "{seconds}s")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Duration {
    type Error = DurationParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Duration> for String {
    fn from(value: Duration) -> Self {
        value.to_string()
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": MAX_LENGTH,
            "x-kubernetes-validations": [{"rule": MAX_DURATION_RULE, "message": MAX_DURATION_MESSAGE}],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A duration that may also be `Never` (for `expireAfter`, `consolidateAfter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NillableDuration(Option<Duration>);

impl NillableDuration {
    pub const NEVER: Self = Self(None);

    pub const fn after(duration: Duration) -> Self {
        Self(Some(duration))
    }

    /// The duration, or `None` for `Never`.
    pub const fn duration(self) -> Option<Duration> {
        self.0
    }
}

impl FromStr for NillableDuration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input == "Never" { Ok(Self::NEVER) } else { input.parse().map(|d| Self(Some(d))) }
    }
}

impl fmt::Display for NillableDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(duration) => duration.fmt(f),
            None => f.write_str("Never"),
        }
    }
}

impl TryFrom<String> for NillableDuration {
    type Error = DurationParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<NillableDuration> for String {
    fn from(value: NillableDuration) -> Self {
        value.to_string()
    }
}

impl JsonSchema for NillableDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NillableDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": NILLABLE_DURATION_PATTERN,
            "maxLength": MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": format!("self == 'Never' || ({MAX_DURATION_RULE})"),
                "message": MAX_DURATION_MESSAGE,
            }],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_go_durations() {
        for (input, seconds, canonical) in [
            ("720h", 720 * 3600, "720h"),
            ("1h30m", 5400, "1h30m"),
            ("90s", 90, "1m30s"),
            ("0s", 0, "0s"),
            ("2h0m5s", 7205, "2h5s"),
        ] {
            let parsed: Duration = input.parse().unwrap();
            assert_eq!(parsed.as_std().as_secs(), seconds, "{input}");
            assert_eq!(parsed.to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn rejects_what_the_schema_pattern_rejects() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for input in ["", "5", "h", "1.5h", "-1h", "5 minutes", "1d", "1h 30m"] {
            assert!(input.parse::<Duration>().is_err(), "{input}");
            assert!(!pattern.is_match(input), "{input}");
        }
        for input in ["1h", "1h30m", "0s", "100m"] {
            assert!(input.parse::<Duration>().is_ok(), "{input}");
            assert!(pattern.is_match(input), "{input}");
        }
    }

    #[test]
    fn deltas_saturate_instead_of_overflowing() {
        assert_eq!(Duration::from_secs(90).delta(), chrono::TimeDelta::seconds(90));
        let huge: Duration = "2300000000h".parse().unwrap();
        assert_eq!(huge.delta(), chrono::TimeDelta::seconds(2_300_000_000 * 3600));
        assert_eq!(Duration::from_secs(u64::MAX).delta(), chrono::TimeDelta::MAX);
        assert!(!huge.within_bound());
        assert!(MAX_DURATION.within_bound() && !Duration::from_secs(8760 * 3600 + 1).within_bound());
    }

    #[test]
    fn nillable_accepts_never() {
        assert_eq!("Never".parse::<NillableDuration>().unwrap().duration(), None);
        assert_eq!("10m".parse::<NillableDuration>().unwrap().duration(), Some(Duration::from_secs(600)));
        assert_eq!(serde_json::to_value(NillableDuration::NEVER).unwrap(), "Never");
        assert!(serde_json::from_value::<NillableDuration>("never".into()).is_err());
    }
}
