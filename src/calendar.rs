//! Recurring windows on the wall clock of a time zone, each carrying a value (a WarmPool's size,
//! a NodePool's overrides): which are open at an instant and where the set of open windows, or
//! what the caller makes of it, changes next. A pure function of the windows and an instant, so
//! a restart at any moment recomputes exactly the same answer.
//!
//! Cron expressions ([`crate::crontab`]) are evaluated on the wall clock of the window's time
//! zone, then each wall time is mapped to an instant by the IANA rules: a wall time skipped by a
//! spring-forward change happens at the end of the gap (once), and a wall time repeated by a
//! fall-back change happens at its first occurrence (once). The mapping never goes backwards, so
//! later starts never open or close earlier.
//!
//! An occurrence opens its window's lead time before its start and closes at `start + duration`
//! or at the `end` expression's first time after the start. Exclusions drop occurrences that
//! start on an excluded local date.
//!
//! The next change is computed exactly: each window's occurrences are merged into runs (an
//! occurrence opening before the one before it closes extends the run), and what is open can
//! only change where a run opens or closes. So a window firing every five minutes for ten
//! minutes is one run from its first opening to its last closing, not a change every five
//! minutes. Excluded date ranges are jumped over in one step. What one evaluation may spend is
//! bounded ([`STEP_BUDGET`] cron look-ups): a run that has not closed by then (a window firing
//! every minute, every day) ends the search with a time to evaluate again, never a guess.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::{
    apis::window::{Exclusion, ScheduleWindow},
    crontab::Schedule,
};

/// How far ahead the next change is looked for; the windows are evaluated again then.
const HORIZON_DAYS: i64 = 400;
/// Cron look-ups one evaluation may make before it stops where it got to.
pub const STEP_BUDGET: usize = 10_000;
/// How many times a run is extended in one go before the search looks at the other windows.
const RUN_STEPS: usize = 64;
/// More than any daylight-saving shift: how far past an instant's wall time a start can lie and
/// still happen no later than the instant (inside a repeated fall-back hour).
const LARGEST_SHIFT: Duration = Duration::hours(2);

/// What follows an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<K> {
    /// What the caller reads off the open windows changes then, to this.
    Change(DateTime<Utc>, K),
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

/// One window, ready to evaluate, carrying `value`.
#[derive(Debug, Clone)]
pub struct Window<T> {
    pub name: String,
    start: Schedule,
    end: End,
    zone: Tz,
    lead: Duration,
    /// Inclusive date ranges on which occurrences do not start: sorted, merged, disjoint.
    exclusions: Vec<(NaiveDate, NaiveDate)>,
    pub value: T,
}

/// A problem in one window: the field below it (empty for the window itself) and what is wrong.
pub type WindowError = (String, String);

impl Window<()> {
    /// Parses a window of the API, opening `lead` before each start and not on `exclusions`
    /// (those that are not dates are left to validation to report).
    pub fn parse(spec: &ScheduleWindow, lead: Duration, exclusions: &[Exclusion]) -> Result<Self, WindowError> {
        let parse =
            |field: &str, expression: &str| Schedule::parse(expression).map_err(|e| (field.to_owned(), e.to_string()));
        let end = match (&spec.duration, &spec.end) {
            (Some(duration), _) => End::After(duration.delta()),
            (None, Some(end)) => End::At(Box::new(parse(".end", end)?)),
            (None, None) => return Err((String::new(), "needs 'duration' or 'end'".into())),
        };
        Ok(Window {
            name: spec.name.clone(),
            start: parse(".start", &spec.start)?,
            end,
            zone: spec
                .timezone
                .parse()
                .map_err(|_| (".timezone".to_owned(), format!("unknown time zone {:?}", spec.timezone)))?,
            lead,
            exclusions: excluded_days(exclusions),
            value: (),
        })
    }

    /// The same window carrying `value`.
    pub fn with<T>(self, value: T) -> Window<T> {
        let Window { name, start, end, zone, lead, exclusions, value: () } = self;
        Window { name, start, end, zone, lead, exclusions, value }
    }
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

/// Windows evaluated together.
#[derive(Debug, Clone)]
pub struct Calendar<T> {
    windows: Vec<Window<T>>,
}

impl<T> Calendar<T> {
    pub fn new(windows: Vec<Window<T>>) -> Self {
        Self { windows }
    }

    /// The windows open at `now`, in their order.
    pub fn open_at(&self, now: DateTime<Utc>) -> Vec<&Window<T>> {
        // Only a repeated fall-back hour makes this step through more than one firing.
        let mut budget = Budget(usize::MAX);
        self.windows.iter().filter(|w| matches!(w.open_until(now, &mut budget), Ok(Some(_)))).collect()
    }

    /// The first instant after `now` at which `read` of the open windows differs from what it
    /// is at `now`. It can only change where some window's run opens or closes; each window's
    /// next such instant is kept until the search passes it.
    pub fn next_change<K: PartialEq>(&self, now: DateTime<Utc>, read: impl Fn(&[&Window<T>]) -> K) -> Next<K> {
        let current = read(&self.open_at(now));
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
                    *boundary = Some(window.boundary_after(at, &mut budget));
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
            let then = read(&self.open_at(when));
            if then != current {
                return Next::Change(when, then);
            }
            if stopped {
                return Next::Recheck(when);
            }
            at = when;
        }
    }

    /// Every change of `read` in `[from, until)`, with its value at `from` first.
    pub fn transitions<K: PartialEq + Clone>(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        read: impl Fn(&[&Window<T>]) -> K,
    ) -> Vec<(DateTime<Utc>, K)> {
        let mut out = vec![(from, read(&self.open_at(from)))];
        let mut at = from;
        loop {
            match self.next_change(at, &read) {
                Next::Change(when, next) if when < until => {
                    out.push((when, next));
                    at = when;
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
            let mut opened = matches!(window.open_until(from, &mut budget), Ok(Some(_))).then_some(from);
            let mut at = from;
            while at < until {
                let Ok(Some(boundary)) = window.boundary_after(at, &mut budget) else { break };
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

    /// The time zone of the first window: the schedule's own, for showing it.
    pub fn zone(&self) -> Option<Tz> {
        self.windows.first().map(|w| w.zone)
    }
}

impl<T> Window<T> {
    /// The next instant after `now` worth evaluating at for this window: where its run closes
    /// (it is open now) or its next run opens; `None` when it never does again. A run that
    /// outlasts [`RUN_STEPS`] extensions returns how far it is known to last, and is followed
    /// further only if the search gets there.
    fn boundary_after(&self, now: DateTime<Utc>, budget: &mut Budget) -> Result<Option<DateTime<Utc>>, Exhausted> {
        let latest = self.latest_opened_start(now, budget)?;
        let Some(mut end) = latest.map(|start| self.closes(start)).filter(|end| *end > now) else {
            // Closed: the first start after the latest one opened is the next to open.
            let after = latest.unwrap_or_else(|| wall(self.zone, later(now, self.lead)));
            let next = self.next_start(after, budget, now)?;
            return Ok(next.map(|start| self.opens(start)));
        };
        // Open: the occurrence opened last by the time the run closes decides whether it goes
        // on. It covers everything from there to its own end, so the run extends to that end.
        for _ in 0..RUN_STEPS {
            let last = self.latest_opened_start(end, budget)?;
            match last.map(|start| self.closes(start)).filter(|further| *further > end) {
                Some(further) => end = further,
                None => return Ok(Some(end)),
            }
        }
        Ok(Some(end))
    }

    /// When the window closes, if it is open at `now`.
    fn open_until(&self, now: DateTime<Utc>, budget: &mut Budget) -> Result<Option<DateTime<Utc>>, Exhausted> {
        let latest = self.latest_opened_start(now, budget)?;
        Ok(latest.map(|start| self.closes(start)).filter(|end| *end > now))
    }

    /// The latest non-excluded start whose occurrence has opened by `now`: it decides whether
    /// the window is open, because ends never come earlier for later starts.
    fn latest_opened_start(&self, now: DateTime<Utc>, budget: &mut Budget) -> Result<Option<NaiveDateTime>, Exhausted> {
        let target = later(now, self.lead);
        let target_wall = wall(self.zone, target);
        // Every start at or before the target's wall time happens no later than the target.
        let mut latest = self.last_start(target_wall, budget, now)?;
        // In a repeated hour, later wall times can still be earlier instants.
        let mut cursor = latest.unwrap_or(target_wall);
        while let Some(next) = self.next_start(cursor, budget, now)? {
            if next > target_wall + LARGEST_SHIFT || instant(self.zone, next) > target {
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
        after: NaiveDateTime,
        budget: &mut Budget,
        open_until: DateTime<Utc>,
    ) -> Result<Option<NaiveDateTime>, Exhausted> {
        let mut after = after;
        loop {
            budget.spend(open_until)?;
            let Some(fire) = self.start.next_after(after) else { return Ok(None) };
            let Some((_, to)) = self.excluded(fire.date()) else { return Ok(Some(fire)) };
            // From the last second of the range's last day: its next day's midnight counts.
            let Some(next_day) = to.succ_opt() else { return Ok(None) };
            after = next_day.and_time(chrono::NaiveTime::MIN) - Duration::seconds(1);
        }
    }

    /// The last non-excluded start at or before `at` (wall time), jumping over excluded ranges.
    fn last_start(
        &self,
        at: NaiveDateTime,
        budget: &mut Budget,
        open_until: DateTime<Utc>,
    ) -> Result<Option<NaiveDateTime>, Exhausted> {
        let mut at = at;
        loop {
            budget.spend(open_until)?;
            let Some(fire) = self.start.last_at_or_before(at) else { return Ok(None) };
            let Some((from, _)) = self.excluded(fire.date()) else { return Ok(Some(fire)) };
            at = from.and_time(chrono::NaiveTime::MIN) - Duration::seconds(1);
        }
    }

    /// The excluded range holding `day`, if any.
    fn excluded(&self, day: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        let after = self.exclusions.partition_point(|(from, _)| *from <= day);
        after.checked_sub(1).map(|index| self.exclusions[index]).filter(|(_, to)| day <= *to)
    }

    fn opens(&self, start: NaiveDateTime) -> DateTime<Utc> {
        earlier(instant(self.zone, start), self.lead)
    }

    fn closes(&self, start: NaiveDateTime) -> DateTime<Utc> {
        match &self.end {
            End::After(duration) => later(instant(self.zone, start), *duration),
            End::At(schedule) => {
                schedule.next_after(start).map_or(DateTime::<Utc>::MAX_UTC, |end| instant(self.zone, end))
            }
        }
    }
}

/// The days of `exclusions` as inclusive date ranges, sorted and merged so each day is in at
/// most one and adjacent ones are one. Entries that are not dates are left out (validation
/// names them).
pub fn excluded_days(exclusions: &[Exclusion]) -> Vec<(NaiveDate, NaiveDate)> {
    let date = |text: &Option<String>| text.as_deref().and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok());
    let mut ranges: Vec<(NaiveDate, NaiveDate)> = exclusions
        .iter()
        .filter_map(|e| match (date(&e.date), date(&e.from), date(&e.to)) {
            (Some(day), _, _) => Some((day, day)),
            (None, Some(from), Some(to)) if from <= to => Some((from, to)),
            _ => None,
        })
        .collect();
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
