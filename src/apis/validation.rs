//! Checks the schema cannot express: cron expressions, time zone names, calendar dates, and
//! fields that only make sense together with another object's. `stoker validate` reports them
//! offline; controllers report them as status conditions and Events.
//!
//! Bounds the schema does express (durations at most a year) are checked here too: an object
//! stored before its CRD had them must be reported, not acted on with absurd values.

use chrono::NaiveDate;

use super::{
    NodePool,
    duration::{Duration, MAX_DURATION, NillableDuration},
    nodepool::Budget,
    warmpool::WarmPoolSpec,
    window::{Exclusion, ScheduleWindow},
};
use crate::crontab;

/// A problem with one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, for example `spec.schedules[0].timezone`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// Checks a cron expression, reporting a problem at `field`.
fn check_cron(errors: &mut Vec<FieldError>, field: String, expression: &str) {
    if let Err(problem) = crontab::Schedule::parse(expression) {
        errors.push(error(field, format!("invalid cron expression {expression:?}: {problem}")));
    }
}

/// Checks that a duration is within the bound the schema sets.
fn check_duration(errors: &mut Vec<FieldError>, field: String, duration: Option<Duration>) {
    if let Some(duration) = duration.filter(|d| !d.within_bound()) {
        errors.push(error(field, format!("{duration} is longer than the maximum of {MAX_DURATION} (a year)")));
    }
}

fn nillable(duration: Option<NillableDuration>) -> Option<Duration> {
    duration.and_then(NillableDuration::duration)
}

/// Checks a window's cron expressions, duration and time zone, under `prefix`.
fn check_window(errors: &mut Vec<FieldError>, prefix: &str, window: &ScheduleWindow) {
    let field = |name: &str| format!("{prefix}.{name}");
    check_cron(errors, field("start"), &window.start);
    check_duration(errors, field("duration"), window.duration);
    if let Some(end) = &window.end {
        check_cron(errors, field("end"), end);
    }
    if window.timezone.parse::<chrono_tz::Tz>().is_err() {
        errors.push(error(
            field("timezone"),
            format!(
                "unknown time zone {:?}: use an IANA name such as Europe/Berlin or America/New_York",
                window.timezone
            ),
        ));
    }
}

/// Checks that every exclusion names calendar dates, under `prefix`.
fn check_exclusions(errors: &mut Vec<FieldError>, prefix: &str, exclusions: &[Exclusion]) {
    for (index, Exclusion { date, from, to }) in exclusions.iter().enumerate() {
        for (name, value) in [("date", date), ("from", from), ("to", to)] {
            if let Some(value) = value
                && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err()
            {
                errors.push(error(
                    format!("{prefix}[{index}].{name}"),
                    format!("{value:?} is not a calendar date (YYYY-MM-DD)"),
                ));
            }
        }
    }
}

/// Problems in a NodePool that its schema lets through.
pub fn nodepool_errors(pool: &NodePool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let disruption = &pool.spec.disruption;
    check_duration(
        &mut errors,
        "spec.disruption.consolidateAfter".into(),
        nillable(Some(disruption.consolidate_after)),
    );
    for (index, Budget { schedule, duration, .. }) in disruption.budgets.iter().enumerate() {
        if let Some(schedule) = schedule {
            check_cron(&mut errors, format!("spec.disruption.budgets[{index}].schedule"), schedule);
        }
        check_duration(&mut errors, format!("spec.disruption.budgets[{index}].duration"), *duration);
    }
    for (index, schedule) in pool.spec.schedules.iter().enumerate() {
        let prefix = format!("spec.schedules[{index}]");
        check_window(&mut errors, &prefix, &schedule.window);
        check_duration(&mut errors, format!("{prefix}.leadTime"), schedule.lead_time);
        check_exclusions(&mut errors, &format!("{prefix}.exclusions"), &schedule.exclusions);
        let after = schedule.disruption.as_ref().and_then(|d| nillable(d.consolidate_after));
        check_duration(&mut errors, format!("{prefix}.disruption.consolidateAfter"), after);
        for (resource, quantity) in schedule.limits.iter().flatten() {
            if let Err(problem) = crate::scheduling::quantity::parse_resource(resource, &quantity.0) {
                errors.push(error(format!("{prefix}.limits.{resource}"), problem.to_string()));
            }
        }
    }
    let template = &pool.spec.template.spec;
    check_duration(&mut errors, "spec.template.spec.expireAfter".into(), nillable(Some(template.expire_after)));
    check_duration(&mut errors, "spec.template.spec.terminationGracePeriod".into(), template.termination_grace_period);
    errors
}

/// Problems in a WarmPool spec that its schema lets through.
pub fn warmpool_errors(spec: &WarmPoolSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let requests = spec.resources.requests.as_ref();
    check_duration(&mut errors, "spec.leadTime".into(), Some(spec.lead_time));
    for (index, schedule) in spec.schedules.iter().enumerate() {
        let field = |name: &str| format!("spec.schedules[{index}].{name}");
        check_window(&mut errors, &format!("spec.schedules[{index}]"), &schedule.window);
        if let Some(capacity) = &schedule.capacity {
            for (resource, wanted) in [("cpu", capacity.cpu.is_some()), ("memory", capacity.memory.is_some())] {
                if wanted && !requests.is_some_and(|r| r.contains_key(resource)) {
                    errors.push(error(
                        field(&format!("capacity.{resource}")),
                        format!("capacity in {resource} needs spec.resources.requests.{resource} to convert it into pause pods"),
                    ));
                }
            }
        }
    }
    check_exclusions(&mut errors, "spec.exclusions", &spec.exclusions);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warmpool(yaml: &str) -> WarmPoolSpec {
        serde_saphyr::from_str::<crate::apis::WarmPool>(yaml).unwrap().spec
    }

    const BASE: &str = "
apiVersion: stoker.dev/v1alpha1
kind: WarmPool
metadata: {name: w, namespace: default}
spec:
  resources: {requests: {cpu: '1'}}
";

    #[test]
    fn accepts_a_valid_warm_pool() {
        let pool = warmpool(&format!(
            "{BASE}  schedules:\n  - {{name: day, start: '0 8 * * mon-fri', end: '0 18 * * mon-fri', timezone: Europe/Berlin, capacity: {{cpu: '8'}}}}\n  exclusions: [{{date: '2026-12-25'}}, {{from: '2026-12-30', to: '2027-01-01'}}]\n"
        ));
        assert_eq!(warmpool_errors(&pool), []);
    }

    #[test]
    fn names_each_bad_field() {
        let pool = warmpool(&format!(
            "{BASE}  schedules:\n  - {{name: day, start: '0 25 * * *', end: 'nope', timezone: Mars/Olympus, capacity: {{memory: 1Gi}}}}\n  exclusions: [{{date: '2026-02-30'}}]\n"
        ));
        let fields: Vec<String> = warmpool_errors(&pool).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.schedules[0].start",
                "spec.schedules[0].end",
                "spec.schedules[0].timezone",
                "spec.schedules[0].capacity.memory",
                "spec.exclusions[0].date"
            ]
        );
    }

    #[test]
    fn checks_budget_schedules() {
        let pool: NodePool = serde_saphyr::from_str(
            "
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: p}
spec:
  template: {spec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}}}
  disruption: {budgets: [{nodes: '0', schedule: '0 9 * * mon-fri', duration: 8h}, {nodes: '1', schedule: '0 9 * *', duration: 1h}]}
",
        )
        .unwrap();
        let errors = nodepool_errors(&pool);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.disruption.budgets[1].schedule");
        assert!(errors[0].message.contains("5 fields"), "{}", errors[0].message);
    }

    #[test]
    fn names_each_bad_field_of_a_nodepool_schedule() {
        let pool: NodePool = serde_saphyr::from_str(
            "
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: p}
spec:
  template: {spec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}}}
  schedules:
  - {name: ok, start: '0 20 * * *', end: '0 6 * * *', timezone: Europe/Berlin, limits: {cpu: '0'}}
  - name: bad
    start: '0 25 * * *'
    duration: 9000h
    timezone: Mars/Olympus
    leadTime: 9000h
    exclusions: [{date: '2026-02-30'}]
    limits: {cpu: lots}
    disruption: {consolidateAfter: 9000h}
",
        )
        .unwrap();
        let fields: Vec<String> = nodepool_errors(&pool).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.schedules[1].start",
                "spec.schedules[1].duration",
                "spec.schedules[1].timezone",
                "spec.schedules[1].leadTime",
                "spec.schedules[1].exclusions[0].date",
                "spec.schedules[1].disruption.consolidateAfter",
                "spec.schedules[1].limits.cpu"
            ]
        );
    }

    #[test]
    fn durations_past_a_year_are_named() {
        // What an object stored under a CRD without the bound can hold.
        let pool: NodePool = serde_saphyr::from_str(
            "
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: p}
spec:
  template: {spec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}, expireAfter: 2300000000h, terminationGracePeriod: 8761h}}
  disruption: {consolidateAfter: 9000h, budgets: [{nodes: '0', schedule: '0 9 * * *', duration: 8760h}, {nodes: '1', schedule: '0 9 * * *', duration: 18446744073709551615s}]}
",
        )
        .unwrap();
        let fields: Vec<String> = nodepool_errors(&pool).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.disruption.consolidateAfter",
                "spec.disruption.budgets[1].duration",
                "spec.template.spec.expireAfter",
                "spec.template.spec.terminationGracePeriod"
            ]
        );
        let pool = warmpool(&format!(
            "{BASE}  leadTime: 2300000000h\n  schedules: [{{name: day, start: '0 8 * * *', duration: 9000h, replicas: 1}}]\n"
        ));
        let errors = warmpool_errors(&pool);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.leadTime", "spec.schedules[0].duration"]);
        assert!(errors[0].message.contains("maximum of 8760h"), "{}", errors[0].message);
    }
}
