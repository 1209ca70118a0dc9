//! Window evaluation: one behaviour per test, times written in the schedule's own zone.

use chrono::{Duration, NaiveDate, TimeZone};
use proptest::prelude::*;

use super::*;
use crate::{apis::WarmPool, crontab::Schedule};

fn spec(yaml: &str) -> WarmPoolSpec {
    let pool: WarmPool = serde_saphyr::from_str(&format!(
        "apiVersion: stoker.dev/v1alpha1\nkind: WarmPool\nmetadata: {{name: w, namespace: default}}\nspec:\n  resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}\n{yaml}"
    ))
    .unwrap();
    pool.spec
}

fn windows(yaml: &str) -> Windows {
    Windows::new(&spec(yaml), &Err(String::new())).unwrap()
}

/// An instant given as wall time in `zone`.
fn at(zone: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    let zone: Tz = zone.parse().unwrap();
    let wall = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, 0).unwrap();
    zone.from_local_datetime(&wall).earliest().unwrap().with_timezone(&Utc)
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    at("UTC", y, mo, d, h, mi)
}

const WEEKDAYS: &str = "  leadTime: 0s
  baseline: 2
  schedules:
  - {name: mornings, start: '0 8 * * mon-fri', end: '0 12 * * mon-fri', replicas: 30}
  - {name: lunch, start: '0 11 * * mon-fri', duration: 3h, replicas: 10}
";

#[test]
fn overlapping_windows_take_the_largest_size() {
    let pool = windows(WEEKDAYS);
    // Monday 2026-11-23.
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 7, 59)).replicas, 2);
    let overlap = pool.evaluate(utc(2026, 11, 23, 11, 30));
    assert_eq!(overlap.replicas, 30);
    assert_eq!(overlap.active, ["mornings", "lunch"]);
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 12, 0)).replicas, 10);
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 14, 0)).replicas, 2);
    // Saturday: nothing.
    assert_eq!(pool.evaluate(utc(2026, 11, 28, 9, 0)).replicas, 2);
}

#[test]
fn next_transition_names_the_time_and_size() {
    let pool = windows(WEEKDAYS);
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 7, 0)).next, Some((utc(2026, 11, 23, 8, 0), 30)));
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 11, 30)).next, Some((utc(2026, 11, 23, 12, 0), 10)));
    // Friday afternoon: the next change is Monday morning.
    assert_eq!(pool.evaluate(utc(2026, 11, 27, 15, 0)).next, Some((utc(2026, 11, 30, 8, 0), 30)));
}

#[test]
fn lead_time_opens_windows_early() {
    let pool = windows("  leadTime: 10m\n  schedules:\n  - {name: m, start: '0 8 * * *', duration: 1h, replicas: 5}\n");
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 7, 49)).replicas, 0);
    let early = pool.evaluate(utc(2026, 11, 23, 7, 50));
    assert_eq!((early.replicas, early.active.as_slice()), (5, ["m".to_string()].as_slice()));
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 8, 59)).replicas, 5);
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 9, 0)).replicas, 0);
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 7, 0)).next, Some((utc(2026, 11, 23, 7, 50), 5)));
}

#[test]
fn exclusions_skip_whole_days_in_the_schedules_zone() {
    let pool = windows(
        "  leadTime: 0s
  schedules:
  - {name: m, start: '0 8 * * *', duration: 2h, timezone: Europe/Berlin, replicas: 5}
  exclusions: [{date: '2026-12-25'}, {from: '2026-12-31', to: '2027-01-01'}]
",
    );
    let berlin = |d: u32, mo: u32, y: i32| at("Europe/Berlin", y, mo, d, 9, 0);
    assert_eq!(pool.evaluate(berlin(24, 12, 2026)).replicas, 5);
    assert_eq!(pool.evaluate(berlin(25, 12, 2026)).replicas, 0);
    assert_eq!(pool.evaluate(berlin(31, 12, 2026)).replicas, 0);
    assert_eq!(pool.evaluate(berlin(1, 1, 2027)).replicas, 0);
    assert_eq!(pool.evaluate(berlin(2, 1, 2027)).replicas, 5);
    // From Christmas Eve's end, the next opening skips the 25th.
    let next = pool.evaluate(at("Europe/Berlin", 2026, 12, 24, 11, 0)).next;
    assert_eq!(next, Some((at("Europe/Berlin", 2026, 12, 26, 8, 0), 5)));
}

#[test]
fn end_expressions_close_at_their_first_time_after_the_start() {
    // Nights from 22:00 to 06:00 the next morning, crossing midnight.
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: nights, start: '0 22 * * *', end: '0 6 * * *', replicas: 5}\n",
    );
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 21, 59)).replicas, 0);
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 23, 0)).replicas, 5);
    assert_eq!(pool.evaluate(utc(2026, 11, 24, 5, 59)).replicas, 5);
    assert_eq!(pool.evaluate(utc(2026, 11, 24, 6, 0)).replicas, 0);
}

#[test]
fn windows_cross_week_boundaries() {
    // Friday 18:00 to Monday 06:00.
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: weekend, start: '0 18 * * fri', end: '0 6 * * mon', replicas: 8}\n",
    );
    assert_eq!(pool.evaluate(utc(2026, 11, 27, 17, 0)).replicas, 0);
    assert_eq!(pool.evaluate(utc(2026, 11, 29, 12, 0)).replicas, 8);
    assert_eq!(pool.evaluate(utc(2026, 11, 30, 5, 59)).replicas, 8);
    assert_eq!(pool.evaluate(utc(2026, 11, 30, 6, 0)).replicas, 0);
    assert_eq!(pool.evaluate(utc(2026, 11, 28, 0, 0)).next, Some((utc(2026, 11, 30, 6, 0), 0)));
}

#[test]
fn spring_forward_still_runs_a_start_in_the_skipped_hour_once() {
    // 2026-03-08: New York clocks jump from 02:00 to 03:00. A window at 02:30 opens at 03:00 EDT.
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: early, start: '30 2 * * *', duration: 1h, timezone: America/New_York, replicas: 4}\n",
    );
    let jump = at("America/New_York", 2026, 3, 8, 3, 0);
    assert_eq!(pool.evaluate(jump - Duration::minutes(1)).replicas, 0);
    assert_eq!(pool.evaluate(jump).replicas, 4);
    assert_eq!(pool.evaluate(at("America/New_York", 2026, 3, 8, 3, 59)).replicas, 4);
    assert_eq!(pool.evaluate(at("America/New_York", 2026, 3, 8, 4, 0)).replicas, 0);
    let day = pool.transitions(at("America/New_York", 2026, 3, 8, 0, 0), at("America/New_York", 2026, 3, 9, 0, 0));
    assert_eq!(day, [(at("America/New_York", 2026, 3, 8, 0, 0), 0), (jump, 4), (jump + Duration::hours(1), 0)]);
    // Berlin springs forward on 2026-03-29, 02:00 to 03:00.
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: early, start: '30 2 * * *', duration: 30m, timezone: Europe/Berlin, replicas: 4}\n",
    );
    let opens: Vec<_> =
        pool.transitions(at("Europe/Berlin", 2026, 3, 29, 0, 0), at("Europe/Berlin", 2026, 3, 30, 0, 0));
    assert_eq!(opens.iter().filter(|(_, size)| *size == 4).count(), 1);
}

#[test]
fn fall_back_does_not_run_a_window_twice() {
    // 2026-11-01: New York repeats 01:00-02:00. A window at 01:30 opens once, at the first 01:30.
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: late, start: '30 1 * * *', duration: 20m, timezone: America/New_York, replicas: 3}\n",
    );
    let day = pool.transitions(at("America/New_York", 2026, 11, 1, 0, 0), at("America/New_York", 2026, 11, 2, 0, 0));
    let first = at("America/New_York", 2026, 11, 1, 1, 30);
    assert_eq!(day, [(at("America/New_York", 2026, 11, 1, 0, 0), 0), (first, 3), (first + Duration::minutes(20), 0)]);
    // An hour later the wall clock reads 01:30 again; nothing opens.
    assert_eq!(pool.evaluate(first + Duration::minutes(60)).replicas, 0);
    // Berlin falls back on 2026-10-25.
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: late, start: '30 2 * * *', duration: 20m, timezone: Europe/Berlin, replicas: 3}\n",
    );
    let day = pool.transitions(at("Europe/Berlin", 2026, 10, 25, 0, 0), at("Europe/Berlin", 2026, 10, 26, 0, 0));
    assert_eq!(day.iter().filter(|(_, size)| *size == 3).count(), 1);
}

#[test]
fn capacity_becomes_pause_pods_rounded_up() {
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: c, start: '0 0 * * *', duration: 24h, capacity: {cpu: '16', memory: 3Gi}}\n",
    );
    // 16 CPU / 500m = 32 pods; 3Gi / 1Gi = 3 pods: the larger wins.
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 12, 0)).replicas, 32);
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: c, start: '0 0 * * *', duration: 24h, capacity: {cpu: 1700m}}\n",
    );
    assert_eq!(pool.evaluate(utc(2026, 11, 23, 12, 0)).replicas, 4);
}

#[test]
fn invalid_cron_or_timezone_is_reported_not_panicked() {
    let bad = spec(
        "  schedules:\n  - {name: a, start: '0 8 * *', duration: 1h, replicas: 1, timezone: Mars/Base}\n  - {name: b, start: '0 8 * * *', end: '99 * * * *', replicas: 1}\n",
    );
    let errors = Windows::new(&bad, &Err(String::new())).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.schedules[0].start", "spec.schedules[0].timezone", "spec.schedules[1].end"]);
}

#[test]
fn the_example_warm_pool_holds_30_on_weekday_mornings_and_5_at_night() {
    let text = std::fs::read_to_string("examples/warmpool.yaml").unwrap();
    let pool: WarmPool = serde_saphyr::from_str(&text).unwrap();
    let windows = Windows::new(&pool.spec, &Err(String::new())).unwrap();
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 9, 0)).replicas, 30);
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 6, 55)).replicas, 30, "10 minutes lead");
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 23, 0)).replicas, 5);
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 15, 0)).replicas, 0);
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 12, 25, 9, 0)).replicas, 0, "Christmas is excluded");
}

#[test]
fn overlapping_occurrences_of_one_window_are_one_run() {
    // Every 5 minutes from 08:00 to 17:55, each open 10 minutes: one run, 08:00 to 18:05.
    let pool = windows(
        "  leadTime: 0s\n  baseline: 1\n  schedules:\n  - {name: dense, start: '*/5 8-17 * * *', duration: 10m, replicas: 6}\n",
    );
    let morning = pool.evaluate(utc(2026, 11, 23, 8, 30));
    assert_eq!((morning.replicas, morning.next), (6, Some((utc(2026, 11, 23, 18, 5), 1))));
    let day = pool.transitions(utc(2026, 11, 23, 0, 0), utc(2026, 11, 24, 0, 0));
    assert_eq!(day, [(utc(2026, 11, 23, 0, 0), 1), (utc(2026, 11, 23, 8, 0), 6), (utc(2026, 11, 23, 18, 5), 1)]);
    // Gaps shorter than a minute still close and reopen: every 5 minutes for 3.
    let pool =
        windows("  leadTime: 0s\n  schedules:\n  - {name: sparse, start: '*/5 8 * * *', duration: 3m, replicas: 2}\n");
    let hour = pool.transitions(utc(2026, 11, 23, 8, 0), utc(2026, 11, 23, 8, 12));
    assert_eq!(
        hour,
        [
            (utc(2026, 11, 23, 8, 0), 2),
            (utc(2026, 11, 23, 8, 3), 0),
            (utc(2026, 11, 23, 8, 5), 2),
            (utc(2026, 11, 23, 8, 8), 0),
            (utc(2026, 11, 23, 8, 10), 2)
        ]
    );
}

#[test]
fn every_minute_beside_a_year_long_exclusion_is_one_jump() {
    let pool = windows(
        "  leadTime: 0s\n  schedules:\n  - {name: minutely, start: '* * * * *', duration: 30s, replicas: 3}\n  exclusions: [{from: '2026-11-01', to: '2027-10-31'}]\n",
    );
    let inside = pool.evaluate(utc(2026, 11, 23, 12, 0));
    assert_eq!((inside.replicas, inside.next), (0, Some((utc(2027, 11, 1, 0, 0), 3))));
    let before = pool.evaluate(utc(2026, 10, 31, 23, 59));
    assert_eq!((before.replicas, before.next), (3, Some((utc(2026, 10, 31, 23, 59) + Duration::seconds(30), 0))));
}

#[test]
fn a_run_that_never_closes_asks_to_be_evaluated_again() {
    // Every minute, each open two minutes: the run never closes, and the search stops where its
    // budget ran out instead of claiming a change or walking a year minute by minute.
    let pool =
        windows("  leadTime: 0s\n  schedules:\n  - {name: always, start: '* * * * *', duration: 2m, replicas: 4}\n");
    let now = utc(2026, 11, 23, 12, 0);
    let evaluation = pool.evaluate(now);
    assert_eq!((evaluation.replicas, evaluation.next), (4, None));
    let recheck = evaluation.recheck.expect("a time to evaluate again");
    assert!(recheck > now + Duration::days(3) && recheck < now + Duration::days(8), "{recheck}");
    // A preview follows the rechecks: a month with no change at all.
    assert_eq!(pool.transitions(now, now + Duration::days(30)), [(now, 4)]);
    // Nothing scheduled: no transition and nothing to recheck.
    let idle = windows("  baseline: 3\n").evaluate(now);
    assert_eq!((idle.replicas, idle.next, idle.recheck), (3, None, None));
}

/// Every boundary the brute force finds minute by minute: occurrences listed one by one, each
/// open `[start - lead, end)`, the size at each minute the largest open one's.
fn brute_force(spec: &WarmPoolSpec, from: DateTime<Utc>, minutes: i64) -> Vec<(DateTime<Utc>, i32)> {
    let lead = spec.lead_time.delta();
    let excluded: Vec<(NaiveDate, NaiveDate)> = spec
        .exclusions
        .iter()
        .map(|e| {
            let day = |t: &Option<String>| t.as_deref().map(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").unwrap());
            day(&e.date).map_or_else(|| (day(&e.from).unwrap(), day(&e.to).unwrap()), |d| (d, d))
        })
        .collect();
    let mut intervals: Vec<(DateTime<Utc>, DateTime<Utc>, i32)> = Vec::new();
    for schedule in &spec.schedules {
        let start = Schedule::parse(&schedule.window.start).unwrap();
        let duration = schedule.window.duration.unwrap().delta();
        let mut at = (from - Duration::days(3)).naive_utc();
        while let Some(fire) = start.next_after(at) {
            if fire > (from + Duration::minutes(minutes)).naive_utc() {
                break;
            }
            at = fire;
            if excluded.iter().any(|(a, b)| *a <= fire.date() && fire.date() <= *b) {
                continue;
            }
            let begins = Utc.from_utc_datetime(&fire);
            intervals.push((begins - lead, begins + duration, schedule.replicas.unwrap()));
        }
    }
    let size = |t: DateTime<Utc>| {
        intervals
            .iter()
            .filter(|(open, close, _)| *open <= t && t < *close)
            .map(|(_, _, r)| *r)
            .max()
            .unwrap_or(spec.baseline)
    };
    let mut out = vec![(from, size(from))];
    for minute in 1..minutes {
        let t = from + Duration::minutes(minute);
        let now = size(t);
        if out.last().is_some_and(|(_, last)| *last != now) {
            out.push((t, now));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Dense, overlapping and excluded schedules: the transitions are exactly where the size
    /// changes, minute by minute.
    #[test]
    fn transitions_match_a_minute_by_minute_brute_force(
        steps in proptest::collection::vec((1u32..30, 0u32..23, 0u32..3, 1i64..240, 1i32..20), 1..4),
        lead in 0i64..45,
        baseline in 0i32..3,
        excluded_day in proptest::option::of(0u32..3),
    ) {
        let mut yaml = format!("  leadTime: {lead}m\n  baseline: {baseline}\n  schedules:\n");
        for (index, (every, hour, hours, duration, replicas)) in steps.iter().enumerate() {
            let last = (hour + hours).min(23);
            yaml += &format!("  - {{name: w{index}, start: '*/{every} {hour}-{last} * * *', duration: {duration}m, replicas: {replicas}}}\n");
        }
        if let Some(day) = excluded_day {
            yaml += &format!("  exclusions: [{{date: '2026-11-{:02}'}}]\n", 23 + day);
        }
        let spec = spec(&yaml);
        let pool = Windows::new(&spec, &Err(String::new())).unwrap();
        let from = utc(2026, 11, 23, 0, 0);
        let minutes = 3 * 24 * 60;
        let expected = brute_force(&spec, from, minutes);
        prop_assert_eq!(pool.transitions(from, from + Duration::minutes(minutes)), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Restarting at any instant gives the size that following every transition from two days
    /// earlier gives.
    #[test]
    fn a_restart_at_any_instant_yields_the_same_size(minutes in 0i64..(7 * 24 * 60)) {
        let pool = windows("  leadTime: 7m\n  baseline: 1\n  schedules:
  - {name: a, start: '0 7 * * mon-fri', end: '0 12 * * mon-fri', timezone: Europe/Berlin, replicas: 30}
  - {name: b, start: '0 22 * * *', duration: 8h, timezone: America/New_York, replicas: 5}
  - {name: c, start: '*/20 9-17 * * *', duration: 5m, replicas: 12}
  exclusions: [{date: '2026-11-26'}]
");
        let now = utc(2026, 11, 22, 0, 0) + Duration::minutes(minutes);
        let from = now - Duration::days(2);
        let history = pool.transitions(from, now + Duration::seconds(1));
        let followed = history.last().unwrap().1;
        prop_assert_eq!(pool.evaluate(now).replicas, followed);
    }
}
