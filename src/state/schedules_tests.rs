//! NodePool schedules: which settings hold at an instant, and what status says.

use chrono::TimeZone;

use super::*;
use crate::apis::nodepool::ConsolidationPolicy;

fn pool(schedules: &str) -> Arc<NodePool> {
    Arc::new(
        serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {{name: general}}\nspec:
  template: {{spec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}}}}}
  limits: {{cpu: '100'}}
  weight: 10
  disruption: {{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 30s}}
{schedules}"
        ))
        .expect("a NodePool"),
    )
}

fn utc(d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, d, h, mi, 0).unwrap()
}

/// Nights in Berlin (20:00–06:00) scale to zero; weekends (Saturday and Sunday, UTC) keep the
/// limits but only remove empty nodes, late, and rank the pool first.
const NIGHTS_AND_WEEKENDS: &str = "  schedules:
  - {name: nights, start: '0 20 * * *', end: '0 6 * * *', timezone: Europe/Berlin, limits: {cpu: '0'}}
  - name: weekends
    start: '0 0 * * sat'
    duration: 48h
    weight: 90
    disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 1h}
    limits: {cpu: '8'}
";

#[test]
fn a_pool_without_open_windows_is_its_own() {
    let plain = pool("");
    assert!(Arc::ptr_eq(&effective(&plain, utc(2, 12, 0)), &plain));
    let scheduled = pool(NIGHTS_AND_WEEKENDS);
    // Wednesday noon in Berlin: nothing open.
    assert!(Arc::ptr_eq(&effective(&scheduled, utc(2, 11, 0)), &scheduled));
    assert_eq!(scheduled_limits(&scheduled, utc(2, 11, 0)), None);
}

#[test]
fn an_open_window_replaces_the_settings_it_names() {
    let scheduled = pool(NIGHTS_AND_WEEKENDS);
    // Wednesday 22:00 in Berlin is 21:00 UTC: nights are open.
    let night = effective(&scheduled, utc(2, 21, 0));
    assert_eq!(night.spec.limits.as_ref().and_then(|l| l.get("cpu")), Some(&Quantity("0".into())));
    assert_eq!(night.spec.weight, Some(10), "nights leave the weight alone");
    assert_eq!(night.spec.disruption.consolidation_policy, ConsolidationPolicy::WhenEmptyOrUnderutilized);
    assert_eq!(scheduled_limits(&scheduled, utc(2, 21, 0)), night.spec.limits);
    // Saturday 14:00 UTC: only weekends.
    let weekend = effective(&scheduled, utc(5, 14, 0));
    assert_eq!(weekend.spec.limits.as_ref().and_then(|l| l.get("cpu")), Some(&Quantity("8".into())));
    assert_eq!(weekend.spec.weight, Some(90));
    assert_eq!(weekend.spec.disruption.consolidation_policy, ConsolidationPolicy::WhenEmpty);
    assert_eq!(weekend.spec.disruption.consolidate_after.duration().map(|d| d.delta().num_seconds()), Some(3600));
}

#[test]
fn overlapping_windows_take_each_setting_from_the_first_that_sets_it() {
    let scheduled = pool(NIGHTS_AND_WEEKENDS);
    // Saturday 23:00 in Berlin: both open; nights come first, so its limits hold and the
    // weekend's weight and disruption still apply.
    let both = effective(&scheduled, utc(5, 22, 0));
    assert_eq!(both.spec.limits.as_ref().and_then(|l| l.get("cpu")), Some(&Quantity("0".into())));
    assert_eq!(both.spec.weight, Some(90));
    assert_eq!(both.spec.disruption.consolidation_policy, ConsolidationPolicy::WhenEmpty);
    let state = schedule_state(&scheduled, utc(5, 22, 0));
    assert_eq!(state.active, ["nights", "weekends"]);
}

#[test]
fn status_names_the_open_windows_and_the_next_change() {
    let scheduled = pool(NIGHTS_AND_WEEKENDS);
    let noon = schedule_state(&scheduled, utc(2, 11, 0));
    assert!(noon.active.is_empty());
    // 20:00 in Berlin (CET) is 19:00 UTC.
    assert_eq!(noon.next, Some((utc(2, 19, 0), vec!["nights".to_owned()])));
    let night = schedule_state(&scheduled, utc(2, 21, 0));
    assert_eq!(night.next, Some((utc(3, 5, 0), vec![])));
    // Friday night runs into the weekend: the change at midnight UTC adds the weekend.
    let friday = schedule_state(&scheduled, utc(4, 21, 0));
    assert_eq!(friday.next, Some((utc(5, 0, 0), vec!["nights".to_owned(), "weekends".to_owned()])));
}

#[test]
fn lead_time_and_exclusions_apply_per_window() {
    let scheduled = pool(
        "  schedules:
  - {name: peak, start: '0 9 * * *', duration: 2h, leadTime: 15m, limits: {cpu: '500'}, exclusions: [{date: '2026-12-25'}]}
",
    );
    assert_eq!(schedule_state(&scheduled, utc(2, 8, 44)).active, Vec::<String>::new());
    assert_eq!(schedule_state(&scheduled, utc(2, 8, 45)).active, ["peak"]);
    assert_eq!(schedule_state(&scheduled, utc(25, 9, 30)).active, Vec::<String>::new());
    assert_eq!(schedule_state(&scheduled, utc(24, 12, 0)).next, Some((utc(26, 8, 45), vec!["peak".to_owned()])));
}

#[test]
fn a_window_that_cannot_be_parsed_never_opens() {
    let scheduled = pool(
        "  schedules:
  - {name: broken, start: '0 25 * * *', duration: 1h, limits: {cpu: '0'}}
  - {name: always, start: '* * * * *', duration: 1h, weight: 50}
",
    );
    let now = utc(2, 12, 0);
    assert_eq!(schedule_state(&scheduled, now).active, ["always"]);
    assert_eq!(effective(&scheduled, now).spec.limits, scheduled.spec.limits);
    assert_eq!(effective(&scheduled, now).spec.weight, Some(50));
}

#[test]
fn the_solver_sees_the_settings_in_force() {
    use std::collections::{BTreeMap, HashMap};

    use crate::scheduling::{catalog::InstanceType, inputs::pool_templates, resources::Resources};

    let scheduled = pool(NIGHTS_AND_WEEKENDS);
    let types: BTreeMap<String, Arc<[InstanceType]>> = BTreeMap::from([("default".to_owned(), Arc::from(Vec::new()))]);
    let in_use = HashMap::from([("general".to_owned(), Resources::from_iter([("cpu".to_owned(), 2000)]))]);
    let template = |now| {
        let pools = pools_at(std::slice::from_ref(&scheduled), now);
        let mut solver = pool_templates(pools.iter().map(|p| &**p), &types, &[], &in_use);
        solver.templates.remove(0)
    };
    let remaining_cpu = |t: &crate::scheduling::solver::NodePoolTemplate| t.remaining.as_ref().map(|r| r.get("cpu"));
    // Wednesday noon: the pool's own weight, and 100 CPUs less the 2 in use.
    let noon = template(utc(2, 11, 0));
    assert_eq!((noon.weight, remaining_cpu(&noon)), (10, Some(98_000)));
    // Saturday afternoon: the weekend's weight, and 8 CPUs less the 2.
    let weekend = template(utc(5, 14, 0));
    assert_eq!((weekend.weight, remaining_cpu(&weekend)), (90, Some(6_000)));
    // A night: the pool is 2 CPUs over its limit of 0, so nothing fits.
    assert_eq!(remaining_cpu(&template(utc(2, 21, 0))), Some(-2_000));
}
