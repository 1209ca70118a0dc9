//! `stoker warmpool preview`: a WarmPool's size over the coming days, as a table of transitions
//! (with the windows open after each) and optionally an SVG step chart (every level labelled,
//! each window's runs shaded with its name, excluded days marked), in UTC or the schedule's own
//! time zone, so an edit can be checked before it reaches a cluster.

use std::{fmt::Write as _, path::Path};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::{CliError, input::Document};
use crate::{apis::WarmPool, calendar::Run, controllers::warmpool::windows::Windows};

/// One WarmPool's preview.
pub struct Preview {
    pub name: String,
    pub transitions: Vec<(DateTime<Utc>, i32)>,
    /// Each window's runs within the range.
    pub runs: Vec<Run>,
    /// Excluded days (inclusive ranges) that meet the range.
    pub excluded: Vec<(NaiveDate, NaiveDate)>,
    /// The zone times are shown in.
    pub zone: Tz,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
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
    let until = from
        .checked_add_signed(Duration::days(i64::from(days)))
        .ok_or_else(|| format!("{from} plus {days} days is past the last date stoker can represent"))?;
    let mut out = Vec::new();
    for document in documents {
        if document.value.get("kind").and_then(|k| k.as_str()) != Some("WarmPool") {
            continue;
        }
        let pool: WarmPool = serde_path_to_error::deserialize(&document.value)
            .map_err(|e| format!("{}: {}: {}", document.label, e.path(), e.inner()))?;
        let name = format!(
            "{}/{}",
            pool.metadata.namespace.as_deref().unwrap_or("default"),
            pool.metadata.name.as_deref().unwrap_or("")
        );
        let windows = Windows::new(&pool.spec, &workload).map_err(|errors| {
            format!("WarmPool {name}: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        let zone = if in_schedule_zone { windows.zone().unwrap_or(Tz::UTC) } else { Tz::UTC };
        let (first, last) = (from.with_timezone(&zone).date_naive(), until.with_timezone(&zone).date_naive());
        let excluded = windows.exclusions().iter().filter(|(a, b)| *b >= first && *a <= last).copied().collect();
        out.push(Preview {
            name,
            transitions: windows.transitions(from, until),
            runs: windows.runs(from, until),
            excluded,
            zone,
            from,
            until,
        });
    }
    if out.is_empty() {
        return Err("no WarmPool in the input".into());
    }
    Ok(out)
}

/// The transitions as a table, with the windows open after each.
pub fn table(preview: &Preview) -> String {
    let mut out = format!(
        "WarmPool {} from {} for {} days\n",
        preview.name,
        preview.from.with_timezone(&preview.zone).format("%Y-%m-%d %H:%M %Z"),
        (preview.until - preview.from).num_days()
    );
    let _ = writeln!(out, "{:<26} {:>10}  WINDOWS", format!("TIME ({})", preview.zone), "PAUSE PODS");
    for (time, replicas) in &preview.transitions {
        let open: Vec<&str> =
            preview.runs.iter().filter(|r| r.opens <= *time && *time < r.closes).map(|r| r.name.as_str()).collect();
        let open = if open.is_empty() { "baseline".to_owned() } else { open.join(", ") };
        let local = time.with_timezone(&preview.zone).format("%a %Y-%m-%d %H:%M %Z").to_string();
        let _ = writeln!(out, "{local:<26} {replicas:>10}  {open}");
    }
    out
}

/// Window shades, one colour per window name in order of appearance.
const SHADES: [&str; 6] = ["#4dabf7", "#69db7c", "#ffa94d", "#b197fc", "#f783ac", "#3bc9db"];

/// The size over time as an SVG step chart: a grid line per day (midnight in the preview's
/// zone), every level labelled, each window's runs shaded and named, excluded days hatched.
pub fn svg(preview: &Preview) -> String {
    let (width, height, left, top, bottom) = (960.0, 340.0, 56.0, 56.0, 40.0);
    let plot_width = width - left - 16.0;
    let plot_height = height - top - bottom;
    let axis_y = top + plot_height;
    let span = (preview.until - preview.from).num_seconds().max(1) as f64;
    let max = preview.transitions.iter().map(|(_, r)| *r).max().unwrap_or(0).max(1) as f64;
    let x = |t: DateTime<Utc>| {
        left + (t.clamp(preview.from, preview.until) - preview.from).num_seconds() as f64 / span * plot_width
    };
    let y = |r: i32| top + plot_height - f64::from(r) / max * plot_height;
    let zone = preview.zone;
    let midnight = |day: NaiveDate| -> Option<DateTime<Utc>> {
        zone.from_local_datetime(&day.and_time(chrono::NaiveTime::MIN)).earliest().map(|t| t.with_timezone(&Utc))
    };

    let mut shades = String::new();
    let mut names: Vec<&str> = Vec::new();
    for run in &preview.runs {
        let index = names.iter().position(|n| *n == run.name).unwrap_or_else(|| {
            names.push(&run.name);
            names.len() - 1
        });
        let (x1, x2) = (x(run.opens), x(run.closes));
        let _ = write!(
            shades,
            r##"<rect x="{x1:.1}" y="{top}" width="{:.1}" height="{plot_height:.1}" fill="{}" fill-opacity="0.18"><title>{} {} – {}</title></rect><text x="{:.1}" y="{:.1}" font-size="11" fill="#333">{}</text>"##,
            (x2 - x1).max(0.5),
            SHADES[index % SHADES.len()],
            run.name,
            run.opens.with_timezone(&zone).format("%a %H:%M"),
            run.closes.with_timezone(&zone).format("%a %H:%M %Z"),
            x1 + 3.0,
            top - 6.0 - 12.0 * (index % 2) as f64,
            run.name
        );
    }
    let mut excluded = String::new();
    for (first, last) in &preview.excluded {
        let (Some(opens), Some(closes)) = (midnight(*first), last.succ_opt().and_then(midnight)) else { continue };
        let (x1, x2) = (x(opens), x(closes));
        if x2 <= x1 {
            continue;
        }
        let _ = write!(
            excluded,
            r##"<rect x="{x1:.1}" y="{top}" width="{:.1}" height="{plot_height:.1}" fill="url(#excluded)"><title>excluded {first} – {last}</title></rect><text x="{:.1}" y="{:.1}" font-size="10" fill="#868e96">excluded</text>"##,
            x2 - x1,
            x1 + 3.0,
            axis_y - 6.0
        );
    }
    let mut path = String::new();
    let mut levels = String::new();
    for (index, (time, replicas)) in preview.transitions.iter().enumerate() {
        let next = preview.transitions.get(index + 1).map_or(preview.until, |(t, _)| *t);
        let command = if index == 0 { 'M' } else { 'L' };
        let _ = write!(path, "{command}{:.1},{:.1} L{:.1},{:.1} ", x(*time), y(*replicas), x(next), y(*replicas));
        let _ = write!(
            levels,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#d9480f">{replicas}</text>"##,
            x(*time) + 3.0,
            y(*replicas) - 4.0
        );
    }
    let mut grid = String::new();
    let mut day = preview.from.with_timezone(&zone).date_naive();
    while let Some(at) = midnight(day).filter(|at| *at < preview.until) {
        if at >= preview.from {
            let _ = write!(
                grid,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{axis_y:.1}" stroke="#ddd"/><text x="{1:.1}" y="{2:.1}" font-size="11" fill="#555">{3}</text>"##,
                x(at),
                x(at) + 4.0,
                axis_y + 16.0,
                day.format("%a %d %b")
            );
        }
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">
<defs><pattern id="excluded" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#adb5bd" stroke-width="2"/></pattern></defs>
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="20" font-size="15" fill="#222">WarmPool {name}: pause pods held ({zone})</text>
{excluded}
{shades}
{grid}
<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y:.1}" stroke="#888"/>
<line x1="{left}" y1="{axis_y:.1}" x2="{right:.1}" y2="{axis_y:.1}" stroke="#888"/>
<path d="{path}" fill="none" stroke="#d9480f" stroke-width="2"/>
{levels}
</svg>
"##,
        name = preview.name,
        right = left + plot_width,
    )
}

/// Runs the command: prints each table and writes the chart(s) when asked.
pub fn run(
    documents: &[Document],
    from: Option<DateTime<Utc>>,
    days: u32,
    svg_out: Option<&Path>,
    workload_replicas: Option<i32>,
    in_schedule_zone: bool,
) -> Result<std::process::ExitCode, CliError> {
    let from = from.unwrap_or_else(Utc::now);
    let previews = previews(documents, from, days, workload_replicas, in_schedule_zone)
        .map_err(|message| CliError::Invalid { path: "the manifests".into(), message })?;
    for preview in &previews {
        println!("{}", table(preview));
    }
    if let Some(out) = svg_out {
        let charts: Vec<String> = previews.iter().map(svg).collect();
        std::fs::write(out, charts.join("\n")).map_err(|source| CliError::Io { path: out.to_owned(), source })?;
        println!("chart written to {}", out.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
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
        super::super::input::parse(Path::new("pool.yaml"), text).unwrap()
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
        let opens: Vec<String> = previews[0].runs.iter().map(|r| r.opens.to_rfc3339()).collect();
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
