//! `stoker warmpool preview`: a WarmPool's size over the coming days, as a table of transitions
//! and optionally an SVG step chart, so an edit can be checked before it reaches a cluster.

use std::{fmt::Write as _, path::Path};

use chrono::{DateTime, Duration, Utc};

use super::{CliError, input::Document};
use crate::{apis::WarmPool, controllers::warmpool::windows::Windows};

/// One WarmPool's preview.
pub struct Preview {
    pub name: String,
    pub transitions: Vec<(DateTime<Utc>, i32)>,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Previews every WarmPool among `documents` (other kinds are ignored).
pub fn previews(documents: &[Document], from: DateTime<Utc>, days: u32) -> Result<Vec<Preview>, String> {
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
        let windows = Windows::new(&pool.spec).map_err(|errors| {
            format!("WarmPool {name}: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        out.push(Preview { name, transitions: windows.transitions(from, until), from, until });
    }
    if out.is_empty() {
        return Err("no WarmPool in the input".into());
    }
    Ok(out)
}

/// The transitions as a table.
pub fn table(preview: &Preview) -> String {
    let mut out = format!(
        "WarmPool {} from {} for {} days\n",
        preview.name,
        preview.from.format("%Y-%m-%d %H:%M UTC"),
        (preview.until - preview.from).num_days()
    );
    out.push_str("TIME (UTC)             PAUSE PODS\n");
    for (time, replicas) in &preview.transitions {
        let _ = writeln!(out, "{:<22} {replicas:>10}", time.format("%a %Y-%m-%d %H:%M"));
    }
    out
}

/// The size over time as an SVG step chart with a grid line per day.
pub fn svg(preview: &Preview) -> String {
    let (width, height, left, top, bottom) = (960.0, 320.0, 56.0, 40.0, 40.0);
    let plot_width = width - left - 16.0;
    let plot_height = height - top - bottom;
    let span = (preview.until - preview.from).num_seconds().max(1) as f64;
    let max = preview.transitions.iter().map(|(_, r)| *r).max().unwrap_or(0).max(1) as f64;
    let x = |t: DateTime<Utc>| left + (t - preview.from).num_seconds() as f64 / span * plot_width;
    let y = |r: i32| top + plot_height - f64::from(r) / max * plot_height;
    let mut path = String::new();
    for (index, (time, replicas)) in preview.transitions.iter().enumerate() {
        let next = preview.transitions.get(index + 1).map_or(preview.until, |(t, _)| *t);
        let command = if index == 0 { 'M' } else { 'L' };
        let _ = write!(path, "{command}{:.1},{:.1} L{:.1},{:.1} ", x(*time), y(*replicas), x(next), y(*replicas));
    }
    let mut grid = String::new();
    // One grid line at each UTC midnight in the range.
    let midnight = preview.from.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let mut day = if midnight < preview.from { midnight + Duration::days(1) } else { midnight };
    while day < preview.until {
        let _ = write!(
            grid,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" font-size="11" fill="#555">{4}</text>"##,
            x(day),
            top + plot_height,
            x(day) + 4.0,
            top + plot_height + 16.0,
            day.format("%a %d %b")
        );
        day += Duration::days(1);
    }
    let max_label = max as i32;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="24" font-size="15" fill="#222">WarmPool {name}: pause pods held (UTC)</text>
{grid}
<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y:.1}" stroke="#888"/>
<line x1="{left}" y1="{axis_y:.1}" x2="{right:.1}" y2="{axis_y:.1}" stroke="#888"/>
<text x="{label_x:.1}" y="{top_label:.1}" font-size="11" text-anchor="end" fill="#555">{max_label}</text>
<text x="{label_x:.1}" y="{axis_y:.1}" font-size="11" text-anchor="end" fill="#555">0</text>
<path d="{path}" fill="none" stroke="#d9480f" stroke-width="2"/>
</svg>
"##,
        name = preview.name,
        axis_y = top + plot_height,
        right = left + plot_width,
        label_x = left - 6.0,
        top_label = top + 4.0,
    )
}

/// Runs the command: prints each table and writes the chart(s) when asked.
pub fn run(
    documents: &[Document],
    from: Option<DateTime<Utc>>,
    days: u32,
    svg_out: Option<&Path>,
) -> Result<std::process::ExitCode, CliError> {
    let from = from.unwrap_or_else(Utc::now);
    let previews = previews(documents, from, days)
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
        let previews = previews(&documents(POOL), monday, 2).unwrap();
        assert_eq!(previews.len(), 1);
        let sizes: Vec<i32> = previews[0].transitions.iter().map(|(_, r)| *r).collect();
        assert_eq!(sizes, [0, 20, 0, 20, 0]);
        let table = table(&previews[0]);
        assert!(table.contains("Mon 2026-11-23 08:00"), "{table}");
        let chart = svg(&previews[0]);
        assert!(chart.starts_with("<svg") && chart.contains("<path d=\"M56.0,"), "{chart}");
        assert_eq!(chart.matches("<line").count(), 2 + 2, "two day lines and two axes");
    }

    #[test]
    fn invalid_pools_are_reported_with_the_field() {
        let error = previews(&documents(&POOL.replace("0 8 * * mon-fri", "0 8 * *")), Utc::now(), 1).err().unwrap();
        assert!(error.contains("spec.schedules[0].start"), "{error}");
        assert!(previews(&documents("kind: Deployment"), Utc::now(), 1).is_err());
    }
}
