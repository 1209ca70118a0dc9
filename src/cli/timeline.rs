//! What `stoker warmpool preview` (pause pods held) and `stoker nodepool preview` (the settings
//! in force) share: the range they cover, the manifests of their kind, printing their tables,
//! and a schedule's course drawn as an SVG step chart.

use std::{fmt::Write as _, path::Path, process::ExitCode};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;

use super::{CliError, PreviewRange, input::Document};
use crate::calendar::Run;

/// Where a preview of `days` from `from` ends.
pub fn until(from: DateTime<Utc>, days: u32) -> Result<DateTime<Utc>, String> {
    from.checked_add_signed(Duration::days(i64::from(days)))
        .ok_or_else(|| format!("{from} plus {days} days is past the last date stoker can represent"))
}

/// Every document of `kind` decoded, or where the first that cannot be decoded goes wrong.
pub fn of_kind<T: DeserializeOwned>(documents: &[Document], kind: &str) -> Result<Vec<T>, String> {
    documents
        .iter()
        .filter(|document| document.value.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|document| {
            serde_path_to_error::deserialize(&document.value)
                .map_err(|e| format!("{}: {}: {}", document.label, e.path(), e.inner()))
        })
        .collect()
}

/// Runs a preview command: `previews` from where `range` starts (now when unset) for its days,
/// each one's table printed and, when asked, their charts written. A preview that cannot be made
/// is the manifests' fault.
pub fn show<P>(
    range: &PreviewRange,
    previews: impl FnOnce(DateTime<Utc>, u32) -> Result<Vec<P>, String>,
    table: impl Fn(&P) -> String,
    chart: impl Fn(&P) -> String,
) -> Result<ExitCode, CliError> {
    let previews = previews(range.from.unwrap_or_else(Utc::now), range.days)
        .map_err(|message| CliError::Invalid { path: "the manifests".into(), message })?;
    let svg_out: Option<&Path> = range.svg.as_deref();
    for preview in &previews {
        println!("{}", table(preview));
    }
    if let Some(out) = svg_out {
        let charts: Vec<String> = previews.iter().map(chart).collect();
        std::fs::write(out, charts.join("\n")).map_err(|source| CliError::Io { path: out.to_owned(), source })?;
        println!("chart written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Window shades, one colour per window name in order of appearance.
const SHADES: [&str; 6] = ["#4dabf7", "#69db7c", "#ffa94d", "#b197fc", "#f783ac", "#3bc9db"];

/// What every preview shows behind its own figures: the range, the zone its times are shown in,
/// each window's runs and the excluded days.
pub struct Backdrop {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The zone times are shown in.
    pub zone: Tz,
    /// Each window's runs within the range.
    pub runs: Vec<Run>,
    /// Excluded days (inclusive ranges) that meet the range.
    pub excluded: Vec<(NaiveDate, NaiveDate)>,
}

impl Backdrop {
    /// The backdrop of `[from, until)`, in `schedule_zone` when `in_schedule_zone` and UTC
    /// otherwise, keeping the `excluded` days that meet the range.
    pub fn new(
        (from, until): (DateTime<Utc>, DateTime<Utc>),
        runs: Vec<Run>,
        excluded: &[(NaiveDate, NaiveDate)],
        schedule_zone: Option<Tz>,
        in_schedule_zone: bool,
    ) -> Self {
        let zone = if in_schedule_zone { schedule_zone.unwrap_or(Tz::UTC) } else { Tz::UTC };
        let (first, last) = (from.with_timezone(&zone).date_naive(), until.with_timezone(&zone).date_naive());
        let excluded = excluded.iter().filter(|(a, b)| *b >= first && *a <= last).copied().collect();
        Self { from, until, zone, runs, excluded }
    }

    /// The first line of a table: what is previewed, from when, for how long.
    pub fn heading(&self, what: &str) -> String {
        let from = self.from.with_timezone(&self.zone).format("%Y-%m-%d %H:%M %Z");
        format!("{what} from {from} for {} days\n", (self.until - self.from).num_days())
    }

    /// An instant as a table row shows it.
    pub fn local(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.zone).format("%a %Y-%m-%d %H:%M %Z").to_string()
    }
}

/// A schedule's course over a range of time, as a chart draws it.
pub struct Timeline<'a> {
    pub title: String,
    /// From each instant until the next (or `until`): the level plotted and its label.
    pub steps: Vec<(DateTime<Utc>, f64, String)>,
    pub backdrop: &'a Backdrop,
}

/// The timeline as an SVG step chart: a grid line per day (midnight in its zone), every level
/// labelled, each window's runs shaded and named, excluded days hatched.
pub fn svg(timeline: &Timeline) -> String {
    let (preview, steps, title) = (timeline.backdrop, &timeline.steps, &timeline.title);
    let (width, height, left, top, bottom) = (960.0, 340.0, 56.0, 56.0, 40.0);
    let plot_width = width - left - 16.0;
    let plot_height = height - top - bottom;
    let axis_y = top + plot_height;
    let span = (preview.until - preview.from).num_seconds().max(1) as f64;
    let max = steps.iter().map(|(_, level, _)| *level).fold(1.0, f64::max);
    let x = |t: DateTime<Utc>| {
        left + (t.clamp(preview.from, preview.until) - preview.from).num_seconds() as f64 / span * plot_width
    };
    let y = |level: f64| top + plot_height - level / max * plot_height;
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
    for (index, (time, level, label)) in steps.iter().enumerate() {
        let next = steps.get(index + 1).map_or(preview.until, |(t, _, _)| *t);
        let command = if index == 0 { 'M' } else { 'L' };
        let _ = write!(path, "{command}{:.1},{:.1} L{:.1},{:.1} ", x(*time), y(*level), x(next), y(*level));
        let _ = write!(
            levels,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#d9480f">{label}</text>"##,
            x(*time) + 3.0,
            y(*level) - 4.0
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
<text x="{left}" y="20" font-size="15" fill="#222">{title} ({zone})</text>
{excluded}
{shades}
{grid}
<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y:.1}" stroke="#888"/>
<line x1="{left}" y1="{axis_y:.1}" x2="{right:.1}" y2="{axis_y:.1}" stroke="#888"/>
<path d="{path}" fill="none" stroke="#d9480f" stroke-width="2"/>
{levels}
</svg>
"##,
        right = left + plot_width,
    )
}
