//! When a WarmPool's windows are open and how many pause pods it holds: a pure function of the
//! spec and an instant, so a restart at any moment recomputes exactly the same answer.
//!
//! Cron expressions are evaluated on the wall clock of the schedule's time zone, then each wall
//! time is mapped to an instant by the IANA rules: a wall time skipped by a spring-forward change
//! happens at the end of the gap (once), and a wall time repeated by a fall-back change happens at
//! its first occurrence (once). (The `cron` crate evaluated directly in a time zone would fire a
//! repeated wall time twice and stop at a skipped one, so it runs on a zone-less clock here.)
//!
//! An occurrence opens `leadTime` before its start and closes at `start + duration` or at the
//! `end` expression's first time after the start. Exclusions drop occurrences that start on an
//! excluded local date. The size at an instant is the largest among open occurrences, else
//! `baseline`.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use cron::Schedule;

use crate::{
    apis::{
        validation::{FieldError, warmpool_errors},
        warmpool::{WarmPoolSchedule, WarmPoolSpec},
    },
    scheduling::quantity::parse_resource,
};

/// Occurrences looked at in one direction before giving up (a minute-level schedule inside a
/// long exclusion is the worst case).
const SEARCH_LIMIT: usize = 200_000;
/// How far ahead the next transition is looked for.
const HORIZON_DAYS: i64 = 400;

/// The evaluation of a WarmPool at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Pause pods to hold now.
    pub replicas: i32,
    /// Names of the windows open now (lead time included).
    pub active: Vec<String>,
    /// The next change of size: when, and the size from then on.
    pub next: Option<(DateTime<Utc>, i32)>,
}

/// How a window ends.
#[derive(Debug, Clone)]
enum End {
    After(Duration),
    At(Box<Schedule>),
}

/// One window, ready to evaluate.
#[derive(Debug, Clone)]
struct Window {
    name: String,
    start: Schedule,
    end: End,
    zone: Tz,
    replicas: i32,
}

/// A WarmPool's windows, parsed once.
#[derive(Debug, Clone)]
pub struct Windows {
    windows: Vec<Window>,
    baseline: i32,
    lead: Duration,
    /// Inclusive date ranges on which occurrences do not start.
    exclusions: Vec<(NaiveDate, NaiveDate)>,
}

impl Windows {
    /// Parses a WarmPool spec; every invalid field is reported, naming it.
    pub fn new(spec: &WarmPoolSpec) -> Result<Self, Vec<FieldError>> {
        let errors = warmpool_errors(spec);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut windows = Vec::new();
        let mut problems = Vec::new();
        for (index, schedule) in spec.schedules.iter().enumerate() {
            match window(spec, schedule) {
                Ok(window) => windows.push(window),
                Err((field, message)) => {
                    problems.push(FieldError { field: format!("spec.schedules[{index}]{field}"), message })
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let date = |text: &Option<String>| text.as_deref().and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok());
        let exclusions = spec
            .exclusions
            .iter()
            .filter_map(|e| match (date(&e.date), date(&e.from), date(&e.to)) {
                (Some(day), _, _) => Some((day, day)),
                (None, Some(from), Some(to)) => Some((from, to)),
                _ => None,
            })
            .collect();
        Ok(Self { windows, baseline: spec.baseline, lead: spec.lead_time.delta(), exclusions })
    }

    /// The size at `now`, the windows open then, and the next change.
    pub fn evaluate(&self, now: DateTime<Utc>) -> Evaluation {
        let (replicas, active) = self.size_at(now);
        Evaluation { replicas, active, next: self.next_transition(now, replicas) }
    }

    /// Every change of size in `[from, until)`, with the size at `from` first.
    pub fn transitions(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, i32)> {
        let (mut size, _) = self.size_at(from);
        let mut out = vec![(from, size)];
        let mut at = from;
        while let Some((when, next)) = self.next_transition(at, size) {
            if when >= until {
                break;
            }
            out.push((when, next));
            (at, size) = (when, next);
        }
        out
    }

    fn size_at(&self, now: DateTime<Utc>) -> (i32, Vec<String>) {
        let active: Vec<&Window> = self.windows.iter().filter(|w| self.open_until(w, now).is_some()).collect();
        let replicas = active.iter().map(|w| w.replicas).max().unwrap_or(self.baseline);
        (replicas, active.iter().map(|w| w.name.clone()).collect())
    }

    fn excluded(&self, start: NaiveDateTime) -> bool {
        let day = start.date();
        self.exclusions.iter().any(|(from, to)| *from <= day && day <= *to)
    }

    /// When `window` closes, if it is open at `now`: the latest non-excluded start no later than
    /// `now + lead` decides, because ends never decrease with the start.
    fn open_until(&self, window: &Window, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let latest_start = later(now, self.lead);
        // A little past the wall time, so starts near a DST change are not missed.
        let wall = later(latest_start, Duration::hours(3)).with_timezone(&window.zone).naive_local();
        let mut fires = window.start.after(&Utc.from_utc_datetime(&wall));
        for _ in 0..SEARCH_LIMIT {
            let naive = fires.next_back()?.naive_utc();
            let start = instant(window.zone, naive);
            if start > latest_start {
                continue;
            }
            let end = self.end_of(window, naive, start);
            if end <= now {
                return None;
            }
            if !self.excluded(naive) {
                return Some(end);
            }
        }
        None
    }

    fn end_of(&self, window: &Window, naive_start: NaiveDateTime, start: DateTime<Utc>) -> DateTime<Utc> {
        match &window.end {
            End::After(duration) => later(start, *duration),
            End::At(schedule) => schedule
                .after(&Utc.from_utc_datetime(&naive_start))
                .next()
                .map_or(DateTime::<Utc>::MAX_UTC, |end| instant(window.zone, end.naive_utc())),
        }
    }

    /// The first instant after `now` at which the size differs from `current`. Sizes change only
    /// where an occurrence opens (start minus lead time) or closes.
    fn next_transition(&self, now: DateTime<Utc>, current: i32) -> Option<(DateTime<Utc>, i32)> {
        let horizon = later(now, Duration::days(HORIZON_DAYS));
        let mut candidates = BTreeSet::new();
        for window in &self.windows {
            candidates.extend(self.open_until(window, now));
            let after = later(now, self.lead);
            let wall = earlier(after, Duration::hours(3)).with_timezone(&window.zone).naive_local();
            let mut fires = window.start.after(&Utc.from_utc_datetime(&wall));
            let mut found = 0;
            for _ in 0..SEARCH_LIMIT {
                let Some(fire) = fires.next() else { break };
                let naive = fire.naive_utc();
                let start = instant(window.zone, naive);
                if earlier(start, self.lead) > horizon || found >= 64 {
                    break;
                }
                if start <= after || self.excluded(naive) {
                    continue;
                }
                candidates.insert(earlier(start, self.lead));
                candidates.insert(self.end_of(window, naive, start));
                found += 1;
            }
        }
        candidates
            .into_iter()
            .filter(|at| *at > now && *at <= horizon)
            .map(|at| (at, self.size_at(at).0))
            .find(|(_, size)| *size != current)
    }
}

/// `at + delta`, or the last representable instant: arithmetic on user-given durations must not
/// panic, and "later than chrono can say" means "never" everywhere here.
fn later(at: DateTime<Utc>, delta: Duration) -> DateTime<Utc> {
    at.checked_add_signed(delta).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at - delta`, or the first representable instant.
fn earlier(at: DateTime<Utc>, delta: Duration) -> DateTime<Utc> {
    at.checked_sub_signed(delta).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The instant a wall-clock time in `zone` names: the first of a repeated time, the end of the gap
/// for a skipped one.
fn instant(zone: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&wall) {
        chrono::LocalResult::Single(at) => at.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(earliest, _) => earliest.with_timezone(&Utc),
        chrono::LocalResult::None => {
            // Inside a spring-forward gap: walk to the first wall minute that exists.
            let mut later = wall;
            for _ in 0..24 * 60 {
                let Some(next) = later.checked_add_signed(Duration::minutes(1)) else { break };
                later = next;
                if let Some(at) = zone.from_local_datetime(&later).earliest() {
                    return at.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&wall)
        }
    }
}

/// A problem in one schedule: the field below `spec.schedules[i]` (empty for the schedule
/// itself) and what is wrong with it.
type ScheduleError = (String, String);

fn window(spec: &WarmPoolSpec, schedule: &WarmPoolSchedule) -> Result<Window, ScheduleError> {
    let parse = |field: &str, expression: &str| {
        crate::crontab::parse(expression).map_err(|e| (field.to_owned(), e.to_string()))
    };
    let end = match (&schedule.duration, &schedule.end) {
        (Some(duration), _) => End::After(duration.delta()),
        (None, Some(end)) => End::At(Box::new(parse(".end", end)?)),
        (None, None) => return Err((String::new(), "needs 'duration' or 'end'".into())),
    };
    Ok(Window {
        name: schedule.name.clone(),
        start: parse(".start", &schedule.start)?,
        end,
        zone: schedule
            .timezone
            .parse()
            .map_err(|_| (".timezone".to_owned(), format!("unknown time zone {:?}", schedule.timezone)))?,
        replicas: replicas_of(spec, schedule)?,
    })
}

/// A window's size in pause pods: `replicas`, or `capacity` divided by one pod's requests and
/// rounded up (the larger of the CPU and memory counts when both are given).
fn replicas_of(spec: &WarmPoolSpec, schedule: &WarmPoolSchedule) -> Result<i32, ScheduleError> {
    if let Some(replicas) = schedule.replicas {
        return Ok(replicas);
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

#[cfg(test)]
#[path = "windows_tests.rs"]
mod tests;
