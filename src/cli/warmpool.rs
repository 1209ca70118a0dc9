//! `stoker warmpool preview`: a WarmPool's size over the coming days, as a table of transitions
//! (with the windows open after each) and optionally an SVG step chart (every level labelled,
//! each window's runs shaded with its name, excluded days marked), in UTC or the schedule's own
//! time zone, so an edit can be checked before it reaches a cluster.

use std::{fmt::Write as _, process::ExitCode};

use chrono::{DateTime, Utc};

use super::{
    CliError, PreviewRange,
    input::Document,
    timeline::{self, Backdrop, Timeline},
};
use crate::{apis::WarmPool, controllers::warmpool::windows::Windows};

/// One WarmPool's preview.
pub struct Preview {
    pub name: String,
    pub transitions: Vec<(DateTime<Utc>, i32)>,
    pub backdrop: Backdrop,
}

/// Previews every WarmPool among `documents` (other kinds are ignored), their percentages taken
/// of `workload_replicas`, in UTC or (`in_schedule_zone`) each pool's own time zone.
pub fn previews(
    documents: &[Document],
    from: DateTime<Utc>,
    days: u32,
    workload_replicas: Option<i32>,
    in_schedule_zone: bool,
) -> Result<Vec<Preview>, String> {
    let workload = workload_replicas.ok_or_else(|| "pass --workload-replicas to preview a percentage".to_owned());
    let until = timeline::until(from, days)?;
    let mut out = Vec::new();
    for pool in timeline::of_kind::<WarmPool>(documents, "WarmPool")? {
        let name = format!(
            "{}/{}",
            pool.metadata.namespace.as_deref().unwrap_or("default"),
            pool.metadata.name.as_deref().unwrap_or("")
        );
        let windows = Windows::new(&pool.spec, &workload).map_err(|errors| {
            format!("WarmPool {name}: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        let runs = windows.runs(from, until);
        let backdrop = Backdrop::new((from, until), runs, windows.exclusions(), windows.zone(), in_schedule_zone);
        out.push(Preview { name, transitions: windows.transitions(from, until), backdrop });
    }
    if out.is_empty() {
        return Err("no WarmPool in the input".into());
    }
    Ok(out)
}

/// The transitions as a table, with the windows open after each.
pub fn table(preview: &Preview) -> String {
    let backdrop = &preview.backdrop;
    let mut out = backdrop.heading(&format!("WarmPool {}", preview.name));
    let _ = writeln!(out, "{:<26} {:>10}  WINDOWS", format!("TIME ({})", backdrop.zone), "PAUSE PODS");
    for (time, replicas) in &preview.transitions {
        let open: Vec<&str> =
            backdrop.runs.iter().filter(|r| r.opens <= *time && *time < r.closes).map(|r| r.name.as_str()).collect();
        let open = if open.is_empty() { "baseline".to_owned() } else { open.join(", ") };
        let local = backdrop.local(*time);
        let _ = writeln!(out, "{local:<26} {replicas:>10}  {open}");
    }
    out
}

/// The size over time as an SVG step chart (see [`timeline::svg`]).
pub fn svg(preview: &Preview) -> String {
    timeline::svg(&Timeline {
        title: format!("WarmPool {}: pause pods held", preview.name),
        steps: preview.transitions.iter().map(|(at, size)| (*at, f64::from(*size), size.to_string())).collect(),
        backdrop: &preview.backdrop,
    })
}

/// Runs the command: prints each table and writes the charts when asked.
pub fn run(documents: &[Document], range: &PreviewRange, workload_replicas: Option<i32>) -> Result<ExitCode, CliError> {
    timeline::show(
        range,
        |from, days| previews(documents, from, days, workload_replicas, range.schedule_timezone),
        table,
        svg,
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const POOL: &str = "
apiVersion: stoker.dev/v1alpha1
kind: WarmPool
metadata: {name: rush, namespace: shop}
spec:
  leadTime: 0s
  resources: {requests: {cpu: 500m}}
  schedules:
  - {name: day, start: '0 8 * * mon-fri', duration: 10h, replicas: 20}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
";

    fn documents(text: &str) -> Vec<Document> {
        super::super::input::parse(std::path::Path::new("pool.yaml"), text).unwrap()
    }

    #[test]
    fn tables_list_each_transition() {
        let monday = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        let previews = previews(&documents(POOL), monday, 2, None, false).unwrap();
        assert_eq!(previews.len(), 1);
        let sizes: Vec<i32> = previews[0].transitions.iter().map(|(_, r)| *r).collect();
        assert_eq!(sizes, [0, 20, 0, 20, 0]);
        let table = table(&previews[0]);
        assert!(table.contains("Mon 2026-11-23 08:00"), "{table}");
        let chart = svg(&previews[0]);
        assert!(chart.starts_with("<svg") && chart.contains("<path d=\"M56.0,"), "{chart}");
        assert_eq!(chart.matches(r##"stroke="#ddd""##).count(), 2, "a line per day");
        // Every level is labelled, each run of the window shaded with its name.
        assert_eq!(chart.matches(r##"fill="#d9480f">20<"##).count(), 2, "{chart}");
        assert_eq!(chart.matches(r##"fill-opacity="0.18""##).count(), 2);
        assert!(chart.contains(">day</text>"));
        let opens: Vec<String> = previews[0].backdrop.runs.iter().map(|r| r.opens.to_rfc3339()).collect();
        assert_eq!(opens, ["2026-11-23T08:00:00+00:00", "2026-11-24T08:00:00+00:00"]);
    }

    #[test]
    fn the_schedule_zone_windows_and_exclusions_are_shown_on_request() {
        let monday = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        let berlin = POOL
            .replace("replicas: 20}", "replicas: 20, timezone: Europe/Berlin}")
            .replace("  schedules:", "  exclusions: [{date: '2026-11-24'}]\n  schedules:");
        let previews = previews(&documents(&berlin), monday, 3, None, true).unwrap();
        let table = table(&previews[0]);
        // 08:00 in Berlin is 07:00 UTC, shown as Berlin time; the excluded Tuesday has no window.
        assert!(table.contains("Mon 2026-11-23 08:00 CET           20  day"), "{table}");
        assert!(table.contains("Mon 2026-11-23 18:00 CET            0  baseline"), "{table}");
        assert!(!table.contains("Tue 2026-11-24 08:00"), "{table}");
        assert!(table.contains("Wed 2026-11-25 08:00 CET"), "{table}");
        let chart = svg(&previews[0]);
        assert!(chart.contains("(Europe/Berlin)"), "{chart}");
        assert_eq!(chart.matches(">excluded</text>").count(), 1, "{chart}");
        assert!(chart.contains("<title>excluded 2026-11-24 – 2026-11-24</title>"));
        let utc = super::previews(&documents(&berlin), monday, 3, None, false).unwrap();
        assert!(table_of(&utc).contains("Mon 2026-11-23 07:00 UTC"), "{}", table_of(&utc));
    }

    fn table_of(previews: &[Preview]) -> String {
        table(&previews[0])
    }

    #[test]
    fn invalid_pools_are_reported_with_the_field() {
        let error = previews(&documents(&POOL.replace("0 8 * * mon-fri", "0 8 * *")), Utc::now(), 1, None, false)
            .err()
            .unwrap();
        assert!(error.contains("spec.schedules[0].start"), "{error}");
        assert!(previews(&documents("kind: Deployment"), Utc::now(), 1, None, false).is_err());
    }

    #[test]
    fn percentages_are_previewed_over_the_given_workload() {
        let monday = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        let relative = POOL
            .replace("replicas: 20}", "percentage: 25}")
            .replace("  resources:", "  scalableRef: {kind: Deployment, name: web}\n  resources:");
        let previews = previews(&documents(&relative), monday, 1, Some(30), false).unwrap();
        let sizes: Vec<i32> = previews[0].transitions.iter().map(|(_, r)| *r).collect();
        assert_eq!(sizes, [0, 8, 0], "25% of 30, rounded up");
        let error = super::previews(&documents(&relative), monday, 1, None, false).err().unwrap();
        assert!(error.contains("--workload-replicas") && error.contains("spec.schedules[0].percentage"), "{error}");
    }
}
