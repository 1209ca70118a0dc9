//! NodePools as they are at an instant: each pool with the settings of its open schedules in
//! place of its own. Every decision (provisioning, disruption, interruption) reads the pools
//! through [`pools_at`], so a window's `limits`, `weight`, `consolidationPolicy` and
//! `consolidateAfter` hold wherever the pool's own would, recomputed from the spec and the clock
//! on every decision; nothing about windows is remembered.
//!
//! Where open windows overlap, each setting comes from the first open one in the pool's list
//! that sets it. A window that cannot be parsed (validation reports it in the pool's
//! `ValidationSucceeded`) never opens.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::{
    apis::{NodePool, nodepool::NodePoolSchedule},
    calendar::{Calendar, Next, Run, Window},
};

/// The pool's schedules as a calendar, each window carrying its schedule.
fn calendar(pool: &NodePool) -> Calendar<&NodePoolSchedule> {
    let windows = pool
        .spec
        .schedules
        .iter()
        .filter_map(|schedule| {
            let lead = schedule.lead_time.map(|lead| lead.delta()).unwrap_or_default();
            Some(Window::parse(&schedule.window, lead, &schedule.exclusions).ok()?.with(schedule))
        })
        .collect();
    Calendar::new(windows)
}

/// Names of the open windows, in order.
fn names(open: &[&Window<&NodePoolSchedule>]) -> Vec<String> {
    open.iter().map(|w| w.name.clone()).collect()
}

/// The pool at `now`: its own, or a copy with its open windows' settings in place.
pub fn effective(pool: &Arc<NodePool>, now: DateTime<Utc>) -> Arc<NodePool> {
    if pool.spec.schedules.is_empty() {
        return pool.clone();
    }
    let calendar = calendar(pool);
    let open: Vec<&NodePoolSchedule> = calendar.open_at(now).into_iter().map(|w| w.value).collect();
    if open.is_empty() {
        return pool.clone();
    }
    let mut pool = (**pool).clone();
    let first = |setting: &dyn Fn(&NodePoolSchedule) -> bool| open.iter().copied().find(|s| setting(s));
    if let Some(schedule) = first(&|s| s.limits.is_some()) {
        pool.spec.limits.clone_from(&schedule.limits);
    }
    if let Some(schedule) = first(&|s| s.weight.is_some()) {
        pool.spec.weight = schedule.weight;
    }
    if let Some(policy) = open.iter().find_map(|s| s.disruption.as_ref()?.consolidation_policy) {
        pool.spec.disruption.consolidation_policy = policy;
    }
    if let Some(after) = open.iter().find_map(|s| s.disruption.as_ref()?.consolidate_after) {
        pool.spec.disruption.consolidate_after = after;
    }
    Arc::new(pool)
}

/// Every pool at `now` (see [`effective`]).
pub fn pools_at(pools: &[Arc<NodePool>], now: DateTime<Utc>) -> Vec<Arc<NodePool>> {
    pools.iter().map(|pool| effective(pool, now)).collect()
}

/// The limits an open window puts on the pool at `now`, if any: the limits whose excess is
/// removed, not only refused to launches.
pub fn scheduled_limits(pool: &NodePool, now: DateTime<Utc>) -> Option<BTreeMap<String, Quantity>> {
    calendar(pool).open_at(now).into_iter().find_map(|w| w.value.limits.clone())
}

/// Which of a pool's schedules are open and what changes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    /// The windows open now, in the pool's order.
    pub active: Vec<String>,
    /// When the open windows next change, and the windows open from then on.
    pub next: Option<(DateTime<Utc>, Vec<String>)>,
    /// Without a known next change: when to look again (the search stopped there).
    pub recheck: Option<DateTime<Utc>>,
}

/// The pool's schedules at `now`.
pub fn schedule_state(pool: &NodePool, now: DateTime<Utc>) -> ScheduleState {
    let calendar = calendar(pool);
    let active = names(&calendar.open_at(now));
    let (next, recheck) = match calendar.next_change(now, names) {
        Next::Change(at, open) => (Some((at, open)), None),
        Next::Recheck(at) => (None, Some(at)),
        Next::Never => (None, None),
    };
    ScheduleState { active, next, recheck }
}

/// Each change of the open windows in `[from, until)`, with those open at `from` first: what a
/// preview shows.
pub fn transitions(pool: &NodePool, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, Vec<String>)> {
    calendar(pool).transitions(from, until, names)
}

/// Each window's runs that overlap `[from, until)`, and the time zone of the first window: what
/// a preview draws.
pub fn runs(pool: &NodePool, from: DateTime<Utc>, until: DateTime<Utc>) -> (Vec<Run>, Option<Tz>) {
    let calendar = calendar(pool);
    (calendar.runs(from, until), calendar.zone())
}

#[cfg(test)]
#[path = "schedules_tests.rs"]
mod tests;
