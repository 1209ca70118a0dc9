//! How many pause pods a WarmPool holds at an instant and when that changes: its windows
//! ([`crate::calendar`]) each carry a size, the size at an instant is the largest among the
//! windows open then, else `baseline`. Every window opens the pool's `leadTime` early and not on
//! its exclusions.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

pub use crate::calendar::Run;
use crate::{
    apis::{
        capacitybuffer::percent_of_replicas,
        validation::{FieldError, warmpool_errors},
        warmpool::{WarmPoolSchedule, WarmPoolSpec},
    },
    calendar::{Calendar, Next, Window, WindowError, excluded_days},
    scheduling::quantity::parse_resource,
};

/// The evaluation of a WarmPool at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Pause pods to hold now.
    pub replicas: i32,
    /// Names of the windows open now (lead time included).
    pub active: Vec<String>,
    /// The next change of size: when, and the size from then on.
    pub next: Option<(DateTime<Utc>, i32)>,
    /// Without a known next change: when to evaluate again, because the search stopped there
    /// (its step budget or horizon) with the size unchanged so far. `None` when nothing will
    /// ever change.
    pub recheck: Option<DateTime<Utc>>,
}

/// A WarmPool's windows, parsed once, each carrying its size.
#[derive(Debug, Clone)]
pub struct Windows {
    calendar: Calendar<i32>,
    baseline: i32,
    /// The pool's excluded days, for showing them.
    exclusions: Vec<(NaiveDate, NaiveDate)>,
}

/// The replicas of a WarmPool's `scalableRef` workload, or why they are not known: what its
/// percentages are taken of.
pub type Workload = Result<i32, String>;

impl Windows {
    /// Parses a WarmPool spec, its percentages taken of `workload`; every invalid field is
    /// reported, naming it.
    pub fn new(spec: &WarmPoolSpec, workload: &Workload) -> Result<Self, Vec<FieldError>> {
        let errors = warmpool_errors(spec);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut windows = Vec::new();
        let mut problems = Vec::new();
        let lead = spec.lead_time.delta();
        for (index, schedule) in spec.schedules.iter().enumerate() {
            let window = Window::parse(&schedule.window, lead, &spec.exclusions)
                .and_then(|window| Ok(window.with(replicas_of(spec, schedule, workload)?)));
            match window {
                Ok(window) => windows.push(window),
                Err((field, message)) => {
                    problems.push(FieldError { field: format!("spec.schedules[{index}]{field}"), message })
                }
            }
        }
        let baseline = match spec.baseline_percentage {
            None => spec.baseline,
            Some(percentage) => match workload {
                Ok(replicas) => clamp(percent_of_replicas(*replicas, percentage)).max(spec.baseline),
                Err(why) => {
                    problems.push(FieldError { field: "spec.baselinePercentage".into(), message: why.clone() });
                    spec.baseline
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self { calendar: Calendar::new(windows), baseline, exclusions: excluded_days(&spec.exclusions) })
    }

    /// The size at `now`, the windows open then, and the next change.
    pub fn evaluate(&self, now: DateTime<Utc>) -> Evaluation {
        let open = self.calendar.open_at(now);
        let replicas = self.size(&open);
        let active = open.iter().map(|w| w.name.clone()).collect();
        let (next, recheck) = match self.calendar.next_change(now, |open| self.size(open)) {
            Next::Change(at, size) => (Some((at, size)), None),
            Next::Recheck(at) => (None, Some(at)),
            Next::Never => (None, None),
        };
        Evaluation { replicas, active, next, recheck }
    }

    /// Every change of size in `[from, until)`, with the size at `from` first.
    pub fn transitions(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, i32)> {
        self.calendar.transitions(from, until, |open| self.size(open))
    }

    /// Each window's runs that overlap `[from, until)`, clipped to it (see [`Calendar::runs`]).
    pub fn runs(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<Run> {
        self.calendar.runs(from, until)
    }

    /// The excluded date ranges (inclusive), sorted and disjoint.
    pub fn exclusions(&self) -> &[(NaiveDate, NaiveDate)] {
        &self.exclusions
    }

    /// The time zone of the first window: the pool's own, for showing its schedule.
    pub fn zone(&self) -> Option<Tz> {
        self.calendar.zone()
    }

    /// The size while `open` are open: the largest of theirs, else the baseline.
    fn size(&self, open: &[&Window<i32>]) -> i32 {
        open.iter().map(|w| w.value).max().unwrap_or(self.baseline)
    }
}

/// A window's size in pause pods: `replicas`; `percentage` of the workload's replicas; or
/// `capacity` divided by one pod's requests and rounded up (the larger of the CPU and memory
/// counts when both are given).
fn replicas_of(spec: &WarmPoolSpec, schedule: &WarmPoolSchedule, workload: &Workload) -> Result<i32, WindowError> {
    if let Some(replicas) = schedule.replicas {
        return Ok(replicas);
    }
    if let Some(percentage) = schedule.percentage {
        let replicas = workload.as_ref().map_err(|why| (".percentage".to_owned(), why.clone()))?;
        return Ok(clamp(percent_of_replicas(*replicas, percentage)));
    }
    let Some(capacity) = &schedule.capacity else {
        return Err((String::new(), "needs 'replicas' or 'capacity'".into()));
    };
    let requests = spec.resources.requests.clone().unwrap_or_default();
    let mut replicas = 0i64;
    for (resource, wanted) in [("cpu", &capacity.cpu), ("memory", &capacity.memory)] {
        let Some(wanted) = wanted else { continue };
        let field = format!(".capacity.{resource}");
        let wanted = parse_resource(resource, &wanted.0).map_err(|e| (field.clone(), e.to_string()))?;
        let per_pod = requests
            .get(resource)
            .and_then(|q| parse_resource(resource, &q.0).ok())
            .filter(|amount| *amount > 0)
            .ok_or_else(|| {
                (field.clone(), format!("capacity in {resource} needs a positive spec.resources.requests.{resource}"))
            })?;
        // Rounded up without `wanted + per_pod - 1`, which overflows for a huge capacity.
        replicas = replicas.max(wanted / per_pod + i64::from(wanted % per_pod != 0));
    }
    i32::try_from(replicas)
        .map_err(|_| (".capacity".to_owned(), "capacity needs more pause pods than fit in an int32".into()))
}

/// The most pods a percentage sizes a WarmPool to: the schema's ceiling for `replicas`, so a
/// percentage of a huge workload cannot ask for more than a count could.
pub const MAX_PODS: i32 = 10_000;

/// A count of pods as a percentage sizes a WarmPool: at most [`MAX_PODS`].
fn clamp(pods: i64) -> i32 {
    pods.min(i64::from(MAX_PODS)) as i32
}

#[cfg(test)]
#[path = "windows_tests.rs"]
mod tests;
