//! `stoker nodepool preview`: the settings a NodePool's schedules put in force over the coming
//! days, as a table of changes (limits, weight, consolidation, the windows open) and optionally
//! an SVG chart of the CPU limit (every level labelled, each window's runs shaded with its name,
//! excluded days marked), in UTC or the schedule's own time zone.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use chrono::{DateTime, Utc};

use super::{
    CliError, PreviewRange,
    input::Document,
    timeline::{self, Backdrop, Timeline},
};
use crate::{
    apis::{NodePool, validation::nodepool_errors},
    calendar::excluded_days,
    scheduling::quantity::parse_resource,
    state::schedules::{effective, runs, transitions},
};

/// One NodePool's preview.
pub struct Preview {
    pub name: String,
    /// From each instant: the pool as its open schedules make it, and their names.
    pub steps: Vec<(DateTime<Utc>, Arc<NodePool>, Vec<String>)>,
    /// The excluded days are those of every window.
    pub backdrop: Backdrop,
}

/// Previews every NodePool with schedules among `documents` (other kinds, and pools without
/// schedules, are ignored), in UTC or (`in_schedule_zone`) each pool's own time zone.
pub fn previews(
    documents: &[Document],
    from: DateTime<Utc>,
    days: u32,
    in_schedule_zone: bool,
) -> Result<Vec<Preview>, String> {
    let until = timeline::until(from, days)?;
    let mut out = Vec::new();
    for pool in timeline::of_kind::<NodePool>(documents, "NodePool")? {
        let name = pool.metadata.name.clone().unwrap_or_default();
        if pool.spec.schedules.is_empty() {
            continue;
        }
        let errors = nodepool_errors(&pool);
        if !errors.is_empty() {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(format!("NodePool {name}: {}", errors.join("; ")));
        }
        let (runs, zone) = runs(&pool, from, until);
        let all: Vec<_> = pool.spec.schedules.iter().flat_map(|s| s.exclusions.iter().cloned()).collect();
        let backdrop = Backdrop::new((from, until), runs, &excluded_days(&all), zone, in_schedule_zone);
        let pool = Arc::new(pool);
        let steps =
            transitions(&pool, from, until).into_iter().map(|(at, open)| (at, effective(&pool, at), open)).collect();
        out.push(Preview { name, steps, backdrop });
    }
    if out.is_empty() {
        return Err("no NodePool with schedules in the input".into());
    }
    Ok(out)
}

/// A limit in force, or `-` for none.
fn limit(pool: &NodePool, resource: &str) -> String {
    pool.spec.limits.as_ref().and_then(|l| l.get(resource)).map_or_else(|| "-".to_owned(), |q| q.0.clone())
}

/// The changes as a table: the settings in force after each, and the windows open.
pub fn table(preview: &Preview) -> String {
    let backdrop = &preview.backdrop;
    let mut out = backdrop.heading(&format!("NodePool {}", preview.name));
    let _ = writeln!(
        out,
        "{:<26} {:>6} {:>8} {:>6} {:>6}  {:<34} SCHEDULES",
        format!("TIME ({})", backdrop.zone),
        "CPU",
        "MEMORY",
        "NODES",
        "WEIGHT",
        "CONSOLIDATION"
    );
    for (time, pool, open) in &preview.steps {
        let local = backdrop.local(*time);
        let disruption = &pool.spec.disruption;
        let consolidation = format!("{:?} after {}", disruption.consolidation_policy, disruption.consolidate_after);
        let open = if open.is_empty() { "-".to_owned() } else { open.join(", ") };
        let _ = writeln!(
            out,
            "{local:<26} {:>6} {:>8} {:>6} {:>6}  {consolidation:<34} {open}",
            limit(pool, "cpu"),
            limit(pool, "memory"),
            limit(pool, "nodes"),
            pool.weight(),
        );
    }
    out
}

/// The CPU limit in force over time (see [`timeline::svg`]); where none is set the line runs at
/// the top of the chart, labelled so.
pub fn svg(preview: &Preview) -> String {
    let cores = |pool: &NodePool| {
        let cpu = pool.spec.limits.as_ref()?.get("cpu")?;
        parse_resource("cpu", &cpu.0).ok().map(|millis| millis as f64 / 1000.0)
    };
    let top = preview.steps.iter().filter_map(|(_, pool, _)| cores(pool)).fold(1.0, f64::max);
    let steps = preview
        .steps
        .iter()
        .map(|(at, pool, _)| match cores(pool) {
            Some(level) => (*at, level, format!("cpu {}", limit(pool, "cpu"))),
            None => (*at, top, "no cpu limit".to_owned()),
        })
        .collect();
    timeline::svg(&Timeline {
        title: format!("NodePool {}: CPU limit in force", preview.name),
        steps,
        backdrop: &preview.backdrop,
    })
}

/// Runs the command: prints each table and writes the charts when asked.
pub fn run(documents: &[Document], range: &PreviewRange) -> Result<ExitCode, CliError> {
    timeline::show(range, |from, days| previews(documents, from, days, range.schedule_timezone), table, svg)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn documents(text: &str) -> Vec<Document> {
        super::super::input::parse(std::path::Path::new("pool.yaml"), text).unwrap()
    }

    fn example() -> Vec<Document> {
        documents(&std::fs::read_to_string("examples/nodepool-batch.yaml").unwrap())
    }

    #[test]
    fn the_batch_example_over_a_week() {
        // Monday 2026-12-07 00:00 in Berlin.
        let monday = Utc.with_ymd_and_hms(2026, 12, 6, 23, 0, 0).unwrap();
        let previews = previews(&example(), monday, 7, true).unwrap();
        let preview = &previews[0];
        let table = table(preview);
        // The nightly run from 00:50 (lead time) to 05:00 each weekday, then the weekend off.
        assert!(
            table.contains("Mon 2026-12-07 00:50 CET      800        -      -      0  WhenEmpty after 5m          ")
                && table.contains("nightly-run"),
            "{table}"
        );
        assert!(
            table.contains(
                "Mon 2026-12-07 05:00 CET      200        -      -      0  WhenEmptyOrUnderutilized after 5m  -"
            ),
            "{table}"
        );
        assert!(table.contains("Sat 2026-12-12 00:00 CET        0"), "{table}");
        assert_eq!(preview.steps.len(), 1 + 5 * 2 + 1, "{table}");
        let chart = svg(preview);
        assert!(chart.contains("NodePool batch: CPU limit in force (Europe/Berlin)"), "{chart}");
        assert_eq!(chart.matches(r##"fill="#d9480f">cpu 800<"##).count(), 5, "{chart}");
        assert!(chart.contains(r##"fill="#d9480f">cpu 0<"##));
        assert!(chart.contains(">weekends-off</text>") && chart.contains(">nightly-run</text>"));
    }

    #[test]
    fn excluded_days_are_marked_and_the_pool_stays_up() {
        // The week of the year-end close: the weekend of 26–27 December is excluded.
        let monday = Utc.with_ymd_and_hms(2026, 12, 20, 23, 0, 0).unwrap();
        let preview = &previews(&example(), monday, 7, true).unwrap()[0];
        assert_eq!(preview.backdrop.excluded.len(), 1);
        assert!(!table(preview).contains("Sat 2026-12-26 00:00"), "{}", table(preview));
        assert!(svg(preview).contains("<title>excluded 2026-12-26 – 2026-12-27</title>"));
    }

    #[test]
    fn pools_without_schedules_are_skipped_and_bad_ones_named() {
        let plain = "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {name: p}\nspec:\n  template: {spec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}}}\n";
        assert!(previews(&documents(plain), Utc::now(), 1, false).is_err());
        let text = std::fs::read_to_string("examples/nodepool-batch.yaml").unwrap().replace("0 0 * * sat", "0 0 * *");
        let error = previews(&documents(&text), Utc::now(), 1, false).err().unwrap();
        assert!(error.contains("spec.schedules[0].start"), "{error}");
    }
}
