//! Disruption budgets: which are active now (a cron schedule in UTC plus a duration, or always)
//! and how many more nodes of a pool they let go for a reason. The most restrictive active one
//! wins; a schedule that cannot be parsed counts as active, the restrictive reading.

use chrono::{DateTime, Utc};

use crate::apis::nodepool::{Budget, DisruptionReason};

/// Whether a budget is active now: always without a schedule, else within `duration` of the
/// schedule's last firing. A budget whose schedule cannot be parsed counts as active, the
/// restrictive reading.
pub fn budget_active(budget: &Budget, now: DateTime<Utc>) -> bool {
    let (Some(schedule), Some(duration)) = (&budget.schedule, &budget.duration) else {
        return true;
    };
    let Ok(schedule) = crate::crontab::Schedule::parse(schedule) else { return true };
    // Budgets are in UTC. Active when the last firing up to now is less than `duration` ago; a
    // duration reaching back past the first instant chrono represents covers every firing.
    let Some(fired) = schedule.last_at_or_before(now.naive_utc()) else { return false };
    now.naive_utc().checked_sub_signed(duration.delta()).is_none_or(|opened| fired > opened)
}

/// How many more nodes of a pool may be disrupted for `reason` now: the most restrictive active
/// budget, less those already being disrupted.
pub fn allowed_disruptions(
    budgets: &[Budget],
    reason: DisruptionReason,
    nodes: usize,
    disrupting: usize,
    now: DateTime<Utc>,
) -> usize {
    let limit = budgets
        .iter()
        .filter(|b| b.reasons.is_empty() || b.reasons.contains(&reason))
        .filter(|b| budget_active(b, now))
        .map(|b| budget_nodes(&b.nodes, nodes))
        .min()
        .unwrap_or(usize::MAX);
    limit.saturating_sub(disrupting)
}

/// A budget's `nodes` (a count or a percentage of `nodes`) as a number of nodes. A count too
/// large for a `usize` allows everything; anything that is not a number (an object stored under
/// an older schema) allows nothing, the restrictive reading.
fn budget_nodes(budget: &str, nodes: usize) -> usize {
    let number = |digits: &str| {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return 0;
        }
        digits.parse().unwrap_or(usize::MAX)
    };
    match budget.strip_suffix('%') {
        // Rounded up, as Karpenter does, so 10% of a small pool still allows one.
        Some(percent) => nodes.saturating_mul(number(percent).min(100)).div_ceil(100),
        None => number(budget),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn budget(nodes: &str, schedule: Option<&str>, hours: u64, reasons: Vec<DisruptionReason>) -> Budget {
        Budget {
            nodes: nodes.into(),
            schedule: schedule.map(str::to_owned),
            duration: schedule.map(|_| crate::apis::Duration::from_secs(hours * 3600)),
            reasons,
        }
    }

    #[test]
    fn the_most_restrictive_active_budget_wins() {
        let monday_10 = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let monday_20 = Utc.with_ymd_and_hms(2026, 11, 23, 20, 0, 0).unwrap();
        let business_hours = budget("0", Some("0 8 * * mon-fri"), 10, vec![]);
        let budgets = [budget("10%", None, 0, vec![]), business_hours];
        assert_eq!(allowed_disruptions(&budgets, DisruptionReason::Empty, 25, 0, monday_10), 0);
        assert_eq!(
            allowed_disruptions(&budgets, DisruptionReason::Empty, 25, 0, monday_20),
            3,
            "10% of 25, rounded up"
        );
        assert_eq!(allowed_disruptions(&budgets, DisruptionReason::Empty, 25, 2, monday_20), 1);
        let underutilized_only = [budget("0", Some("0 8 * * mon-fri"), 10, vec![DisruptionReason::Underutilized])];
        assert_eq!(allowed_disruptions(&underutilized_only, DisruptionReason::Empty, 4, 0, monday_10), usize::MAX);
        assert_eq!(allowed_disruptions(&[budget("5", None, 0, vec![])], DisruptionReason::Empty, 100, 7, monday_10), 0);
    }

    #[test]
    fn budget_schedules_read_day_of_month_or_day_of_week() {
        let first_week_or_mondays = budget("0", Some("0 9 1-7 * mon"), 2, vec![]);
        // Monday 2026-12-14: not in days 1-7, but a Monday.
        assert!(budget_active(&first_week_or_mondays, Utc.with_ymd_and_hms(2026, 12, 14, 10, 0, 0).unwrap()));
        // Thursday 2026-12-03: in days 1-7.
        assert!(budget_active(&first_week_or_mondays, Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap()));
        // Tuesday 2026-12-15: neither; and Monday after the two hours.
        assert!(!budget_active(&first_week_or_mondays, Utc.with_ymd_and_hms(2026, 12, 15, 10, 0, 0).unwrap()));
        assert!(!budget_active(&first_week_or_mondays, Utc.with_ymd_and_hms(2026, 12, 14, 11, 0, 0).unwrap()));
    }

    #[test]
    fn budgets_with_absurd_values_do_not_panic() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let ever = Budget {
            nodes: "0".into(),
            schedule: Some("0 8 * * *".into()),
            duration: Some(crate::apis::Duration::from_secs(u64::MAX)),
            reasons: vec![],
        };
        assert!(budget_active(&ever, now));
        assert_eq!(budget_nodes("99999999999999999999999", 3), usize::MAX);
        assert_eq!(budget_nodes("250%", 3), 3);
        assert_eq!(budget_nodes("ten", 3), 0);
        assert_eq!(budget_nodes("", 3), 0);
    }
}
