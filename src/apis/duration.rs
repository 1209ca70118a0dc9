//! Durations as they appear in the API: Go duration strings limited to whole hours, minutes and
//! seconds (`720h`, `1h30m`, `90s`), and a "nillable" variant that also accepts `Never`.
//!
//! They deserialize from and serialize to strings, and their schema carries the same pattern
//! Karpenter uses so the apiserver rejects `"5 minutes"` with a message naming the field.

use std::{fmt, str::FromStr, time::Duration as StdDuration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h))+$";
const NILLABLE_DURATION_PATTERN: &str = r"^(([0-9]+(s|m|h))+|Never)$";

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
        json_schema!({ "type": "string", "pattern": DURATION_PATTERN })
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
        json_schema!({ "type": "string", "pattern": NILLABLE_DURATION_PATTERN })
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
    fn nillable_accepts_never() {
        assert_eq!("Never".parse::<NillableDuration>().unwrap().duration(), None);
        assert_eq!("10m".parse::<NillableDuration>().unwrap().duration(), Some(Duration::from_secs(600)));
        assert_eq!(serde_json::to_value(NillableDuration::NEVER).unwrap(), "Never");
        assert!(serde_json::from_value::<NillableDuration>("never".into()).is_err());
    }
}
