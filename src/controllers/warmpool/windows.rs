//! When a WarmPool's windows are open and how many pause pods it holds: a pure function of the
//! spec and an instant, so a restart at any moment recomputes exactly the same answer.
//!
//! Cron expressions ([`crate::crontab`]) are evaluated on the wall clock of the schedule's time
//! zone, then each wall time is mapped to an instant by the IANA rules: a wall time skipped by a
//! spring-forward change happens at the end of the gap (once), and a wall time repeated by a
//! fall-back change happens at its first occurrence (once). The mapping never goes backwards, so
//! later starts never open or close earlier.
//!
//! An occurrence opens `leadTime` before its start and closes at `start + duration` or at the
//! `end` expression's first time after the start. Exclusions drop occurrences that start on an
//! excluded local date. The size at an instant is the largest among windows with an open
//! occurrence, else `baseline`.
//!
//! The next change of size is computed exactly: each window's occurrences are merged into runs
//! (an occurrence opening before the one before it closes extends the run), and the size can
//! only change where a run opens or closes. So a window firing every five minutes for ten
//! minutes is one run from its first opening to its last closing, not a change every five
//! minutes. Excluded date ranges are jumped over in one step. What one evaluation may spend is
//! bounded ([`STEP_BUDGET`] cron look-ups): a run that has not closed by then (a window firing
//! every minute, every day) ends the search with a time to evaluate again, never a guess.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::{
    apis::{
        capacitybuffer::percent_of_replicas,
        validation::{FieldError, warmpool_errors},
        warmpool::{WarmPoolSchedule, WarmPoolSpec},
    },
    crontab::Schedule,
    scheduling::quantity::parse_resource,
};

/// How far ahead the next transition is looked for; the pool is evaluated again then.
const HORIZON_DAYS: i64 = 400;
/// Cron look-ups one evaluation may make before it stops where it got to.
pub const STEP_BUDGET: usize = 10_000;
/// How many times a run is extended in one go before the search looks at the other windows.
const RUN_STEPS: usize = 64;
/// More than any daylight-saving shift: how far past an instant's wall time a start can lie and
/// still happen no later than the instant (inside a repeated fall-back hour).
const LARGEST_SHIFT: Duration = Duration::hours(2);

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

/// What follows an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The size changes then, to this.
    Change(DateTime<Utc>, i32),
    /// No change before then; the search stopped there.
    Recheck(DateTime<Utc>),
    /// No change ever.
    Never,
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

/// One stretch of time a window is open (its lead time included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub name: String,
    pub opens: DateTime<Utc>,
    pub closes: DateTime<Utc>,
}

/// Cron look-ups left to one evaluation.
struct Budget(usize);

/// The budget ran out; the window in question was open, without a gap, up to `open_until`.
struct Exhausted {
    open_until: DateTime<Utc>,
}

impl Budget {
    fn spend(&mut self, open_until: DateTime<Utc>) -> Result<(), Exhausted> {
        self.0 = self.0.checked_sub(1).ok_or(Exhausted { open_until })?;
        Ok(())
    }
}

/// A WarmPool's windows, parsed once.
#[derive(Debug, Clone)]
pub struct Windows {
    windows: Vec<Window>,
    baseline: i32,
    lead: Duration,
    /// Inclusive date ranges on which occurrences do not start: sorted, merged, disjoint.
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
        for (index, schedule) in spec.schedules.iter().enumerate() {
            match window(spec, schedule, workload) {
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
        let date = |text: &Option<String>| text.as_deref().and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok());
        let ranges = spec.exclusions.iter().filter_map(|e| match (date(&e.date), date(&e.from), date(&e.to)) {
            (Some(day), _, _) => Some((day, day)),
            (None, Some(from), Some(to)) if from <= to => Some((from, to)),
            _ => None,
        });
        Ok(Self { windows, baseline, lead: spec.lead_time.delta(), exclusions: merged(ranges) })
    }

    /// The size at `now`, the windows open then, and the next change.
    pub fn evaluate(&self, now: DateTime<Utc>) -> Evaluation {
        let (replicas, active) = self.size_at(now);
        let (next, recheck) = match self.next_change(now, replicas) {
            Next::Change(at, size) => (Some((at, size)), None),
            Next::Recheck(at) => (None, Some(at)),
            Next::Never => (None, None),
        };
        Evaluation { replicas, active, next, recheck }
    }

    /// Every change of size in `[from, until)`, with the size at `from` first.
    pub fn transitions(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, i32)> {
        let (mut size, _) = self.size_at(from);
        let mut out = vec![(from, size)];
        let mut at = from;
        loop {
            match self.next_change(at, size) {
                Next::Change(when, next) if when < until => {
                    out.push((when, next));
                    (at, size) = (when, next);
                }
                Next::Recheck(when) if when < until => at = when,
                _ => return out,
            }
        }
    }

    /// Each window's runs that overlap `[from, until)`, clipped to it, in window order: what a
    /// preview shades. A run the cron look-up budget cannot follow to its end is shown to where
    /// it is known to last.
    pub fn runs(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<Run> {
        let mut runs = Vec::new();
        for window in &self.windows {
            let mut budget = Budget(STEP_BUDGET);
            let mut opened = matches!(self.open_until(window, from, &mut budget), Ok(Some(_))).then_some(from);
            let mut at = from;
            while at < until {
                let Ok(Some(boundary)) = self.boundary_after(window, at, &mut budget) else { break };
                // Boundaries alternate: a close while open, the next open while closed.
                match opened.take() {
                    Some(opens) => runs.push(Run { name: window.name.clone(), opens, closes: boundary.min(until) }),
                    None => opened = Some(boundary),
                }
                at = boundary;
            }
            if let Some(opens) = opened.filter(|opens| *opens < until) {
                runs.push(Run { name: window.name.clone(), opens, closes: until });
            }
        }
        runs
    }

    /// The excluded date ranges (inclusive), sorted and disjoint.
    pub fn exclusions(&self) -> &[(NaiveDate, NaiveDate)] {
        &self.exclusions
    }

    /// The time zone of the first window: the pool's own, for showing its schedule.
    pub fn zone(&self) -> Option<Tz> {
        self.windows.first().map(|w| w.zone)
    }

    fn size_at(&self, now: DateTime<Utc>) -> (i32, Vec<String>) {
        // Only a repeated fall-back hour makes this step through more than one firing.
        let mut budget = Budget(usize::MAX);
        let active: Vec<&Window> =
            self.windows.iter().filter(|w| matches!(self.open_until(w, now, &mut budget), Ok(Some(_)))).collect();
        let replicas = active.iter().map(|w| w.replicas).max().unwrap_or(self.baseline);
        (replicas, active.iter().map(|w| w.name.clone()).collect())
    }

    /// The first instant after `now` at which the size differs from `current`. The size changes
    /// only where some window's run opens or closes; each window's next such instant is kept
    /// until the search passes it.
    fn next_change(&self, now: DateTime<Utc>, current: i32) -> Next {
        let horizon = later(now, Duration::days(HORIZON_DAYS));
        let mut budget = Budget(STEP_BUDGET);
        let mut boundaries: Vec<Option<Result<Option<DateTime<Utc>>, Exhausted>>> =
            self.windows.iter().map(|_| None).collect();
        let mut at = now;
        loop {
            let mut earliest: Option<DateTime<Utc>> = None;
            let mut stopped = false;
            for (window, boundary) in self.windows.iter().zip(&mut boundaries) {
                let stale = match boundary {
                    None => true,
                    Some(Ok(Some(when))) => *when <= at,
                    Some(Ok(None)) => false,
                    Some(Err(_)) => false,
                };
                if stale {
                    *boundary = Some(self.boundary_after(window, at, &mut budget));
                }
                let when = match boundary {
                    Some(Ok(Some(when))) => *when,
                    Some(Err(Exhausted { open_until })) => {
                        stopped = true;
                        *open_until
                    }
                    _ => continue,
                };
                earliest = Some(earliest.map_or(when, |e| e.min(when)));
            }
            let Some(when) = earliest else { return Next::Never };
            if when > horizon {
                return Next::Recheck(horizon);
            }
            let (size, _) = self.size_at(when);
            if size != current {
                return Next::Change(when, size);
            }
            if stopped {
                return Next::Recheck(when);
            }
            at = when;
        }
    }

    /// The next instant after `now` worth evaluating the size at for `window`: where its run
    /// closes (it is open now) or its next run opens; `None` when it never does again. A run
    /// that outlasts [`RUN_STEPS`] extensions returns how far it is known to last, and is
    /// followed further only if the search gets there.
    fn boundary_after(
        &self,
        window: &Window,
        now: DateTime<Utc>,
        budget: &mut Budget,
    ) -> Result<Option<DateTime<Utc>>, Exhausted> {
        let latest = self.latest_opened_start(window, now, budget)?;
        let Some(mut end) = latest.map(|start| self.closes(window, start)).filter(|end| *end > now) else {
            // Closed: the first start after the latest one opened is the next to open.
            let after = latest.unwrap_or_else(|| wall(window.zone, later(now, self.lead)));
            let next = self.next_start(window, after, budget, now)?;
            return Ok(next.map(|start| self.opens(window, start)));
        };
        // Open: the occurrence opened last by the time the run closes decides whether it goes
        // on. It covers everything from there to its own end, so the run extends to that end.
        for _ in 0..RUN_STEPS {
            let last = self.latest_opened_start(window, end, budget)?;
            match last.map(|start| self.closes(window, start)).filter(|further| *further > end) {
                Some(further) => end = further,
                None => return Ok(Some(end)),
            }
        }
        Ok(Some(end))
    }

    /// When `window` closes, if it is open at `now`.
    fn open_until(
        &self,
        window: &Window,
        now: DateTime<Utc>,
        budget: &mut Budget,
    ) -> Result<Option<DateTime<Utc>>, Exhausted> {
        let latest = self.latest_opened_start(window, now, budget)?;
        Ok(latest.map(|start| self.closes(window, start)).filter(|end| *end > now))
    }

    /// The latest non-excluded start whose occurrence has opened by `now`: it decides whether
    /// the window is open, because ends never come earlier for later starts.
    fn latest_opened_start(
        &self,
        window: &Window,
        now: DateTime<Utc>,
        budget: &mut Budget,
    ) -> Result<Option<NaiveDateTime>, Exhausted> {
        let target = later(now, self.lead);
        let target_wall = wall(window.zone, target);
        // Every start at or before the target's wall time happens no later than the target.
        let mut latest = self.last_start(window, target_wall, budget, now)?;
        // In a repeated hour, later wall times can still be earlier instants.
        let mut cursor = latest.unwrap_or(target_wall);
        while let Some(next) = self.next_start(window, cursor, budget, now)? {
            if next > target_wall + LARGEST_SHIFT || instant(window.zone, next) > target {
                break;
            }
            latest = Some(next);
            cursor = next;
        }
        Ok(latest)
    }

    /// The first non-excluded start after `after` (wall time), jumping over excluded ranges.
    fn next_start(
        &self,
        window: &Window,
        after: NaiveDateTime,
        budget: &mut Budget,
        open_until: DateTime<Utc>,
    ) -> Result<Option<NaiveDateTime>, Exhausted> {
        let mut after = after;
        loop {
            budget.spend(open_until)?;
            let Some(fire) = window.start.next_after(after) else { return Ok(None) };
            let Some((_, to)) = self.excluded(fire.date()) else { return Ok(Some(fire)) };
            // From the last second of the range's last day: its next day's midnight counts.
            let Some(next_day) = to.succ_opt() else { return Ok(None) };
            after = next_day.and_time(chrono::NaiveTime::MIN) - Duration::seconds(1);
        }
    }

    /// The last non-excluded start at or before `at` (wall time), jumping over excluded ranges.
    fn last_start(
        &self,
        window: &Window,
        at: NaiveDateTime,
        budget: &mut Budget,
        open_until: DateTime<Utc>,
    ) -> Result<Option<NaiveDateTime>, Exhausted> {
        let mut at = at;
        loop {
            budget.spend(open_until)?;
            let Some(fire) = window.start.last_at_or_before(at) else { return Ok(None) };
            let Some((from, _)) = self.excluded(fire.date()) else { return Ok(Some(fire)) };
            at = from.and_time(chrono::NaiveTime::MIN) - Duration::seconds(1);
        }
    }

    /// The excluded range holding `day`, if any.
    fn excluded(&self, day: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        let after = self.exclusions.partition_point(|(from, _)| *from <= day);
        after.checked_sub(1).map(|index| self.exclusions[index]).filter(|(_, to)| day <= *to)
    }

    fn opens(&self, window: &Window, start: NaiveDateTime) -> DateTime<Utc> {
        earlier(instant(window.zone, start), self.lead)
    }

    fn closes(&self, window: &Window, start: NaiveDateTime) -> DateTime<Utc> {
        match &window.end {
            End::After(duration) => later(instant(window.zone, start), *duration),
            End::At(schedule) => {
                schedule.next_after(start).map_or(DateTime::<Utc>::MAX_UTC, |end| instant(window.zone, end))
            }
        }
    }
}

/// Date ranges sorted and merged, so each day is in at most one and adjacent ones are one.
fn merged(ranges: impl Iterator<Item = (NaiveDate, NaiveDate)>) -> Vec<(NaiveDate, NaiveDate)> {
    let mut ranges: Vec<(NaiveDate, NaiveDate)> = ranges.collect();
    ranges.sort();
    let mut out: Vec<(NaiveDate, NaiveDate)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        match out.last_mut() {
            Some((_, last)) if last.succ_opt().is_none_or(|next| from <= next) => *last = (*last).max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

/// The wall time in `zone` at instant `at`.
fn wall(zone: Tz, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&zone).naive_local()
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

fn window(spec: &WarmPoolSpec, schedule: &WarmPoolSchedule, workload: &Workload) -> Result<Window, ScheduleError> {
    let parse =
        |field: &str, expression: &str| Schedule::parse(expression).map_err(|e| (field.to_owned(), e.to_string()));
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
        replicas: replicas_of(spec, schedule, workload)?,
    })
}

/// A window's size in pause pods: `replicas`; `percentage` of the workload's replicas; or
/// `capacity` divided by one pod's requests and rounded up (the larger of the CPU and memory
/// counts when both are given).
fn replicas_of(spec: &WarmPoolSpec, schedule: &WarmPoolSchedule, workload: &Workload) -> Result<i32, ScheduleError> {
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
