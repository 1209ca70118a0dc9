//! Kubernetes timestamps on the controllers' clock: the API types carry `jiff` timestamps, the
//! controllers reckon in `chrono`. Whole seconds, as the API serializes them.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `time` as a chrono time; `None` outside chrono's range.
pub fn utc(time: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.0.as_second(), 0)
}

/// An RFC 3339 time a status field holds as text; `None` when it does not read.
pub fn from_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|time| time.to_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_time_reads_to_the_second() {
        let time: Time = serde_json::from_str("\"2026-12-04T10:00:05Z\"").expect("a time");
        assert_eq!(utc(&time).map(|t| t.to_rfc3339()), Some("2026-12-04T10:00:05+00:00".to_owned()));
        assert_eq!(from_rfc3339("2026-12-04T11:00:05+01:00"), utc(&time));
        assert_eq!(from_rfc3339("soon"), None);
    }
}
