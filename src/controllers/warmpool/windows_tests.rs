//! Window evaluation: one behaviour per test, times written in the schedule's own zone.

use chrono::{NaiveDate, TimeZone};
use proptest::prelude::*;

use super::*;
use crate::apis::WarmPool;

fn spec(yaml: &str) -> WarmPoolSpec {
    let pool: WarmPool = serde_yaml::from_str(&format!(
        "apiVersion: stoker.dev/v1alpha1\nkind: WarmPool\nmetadata: {{name: w, namespace: default}}\nspec:\n  resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}\n{yaml}"
    ))
    .unwrap();
    pool.spec
}

fn windows(yaml: &str) -> Windows {
    Windows::new(&spec(yaml)).unwrap()
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
    let errors = Windows::new(&bad).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.schedules[0].start", "spec.schedules[0].timezone", "spec.schedules[1].end"]);
}

#[test]
fn the_example_warm_pool_holds_30_on_weekday_mornings_and_5_at_night() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/warmpool.yaml")).unwrap();
    let pool: WarmPool = serde_yaml::from_str(&text).unwrap();
    let windows = Windows::new(&pool.spec).unwrap();
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 9, 0)).replicas, 30);
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 6, 55)).replicas, 30, "10 minutes lead");
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 23, 0)).replicas, 5);
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 11, 24, 15, 0)).replicas, 0);
    assert_eq!(windows.evaluate(at("Europe/Berlin", 2026, 12, 25, 9, 0)).replicas, 0, "Christmas is excluded");
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
