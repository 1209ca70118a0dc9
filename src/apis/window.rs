//! The recurring window WarmPools and NodePools share: a cron start on the wall clock of an IANA
//! time zone, closed by a duration or an end expression, and the days on which it does not
//! open. How windows are evaluated is [`crate::calendar`]'s.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

/// When a window opens and closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.duration) != has(self.end)").message("exactly one of 'duration' or 'end' must be set"))]
pub struct ScheduleWindow {
    /// Name of the window, shown in status and Events.
    #[schemars(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// When the window opens: a 5-field cron expression (minute hour day-of-month month
    /// day-of-week) in `timezone`, for example `0 8 * * mon-fri`.
    #[schemars(length(min = 9, max = 200))]
    pub start: String,
    /// How long the window stays open, for example `10h`. Exclusive with `end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// When the window closes: the first time this cron expression fires after `start`.
    /// Exclusive with `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 200))]
    pub end: Option<String>,
    /// IANA time zone of `start`, `end` and the exclusions, for example `Europe/Berlin`.
    /// Daylight-saving changes follow the IANA rules.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// A day, or an inclusive range of days, on which windows do not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.date) != has(self.from)").message("an exclusion needs exactly one of 'date' or 'from'/'to'"),
    validation = Rule::new("has(self.from) == has(self.to)").message("'from' and 'to' go together"),
    validation = Rule::new("has(self.from) ? self.from <= self.to : true").message("'from' must not be after 'to'").field_path(".from"),
)]
pub struct Exclusion {
    /// A single day, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10), regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub date: Option<String>,
    /// First day of a range, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10), regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub from: Option<String>,
    /// Last day of a range (included), `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10), regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub to: Option<String>,
}
