//! Status conditions: set one, keeping its transition time while its status does not change;
//! and times as status writes them.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// An instant as the API writes times (whole seconds). Out of the API's range only for
/// instants no schedule reaches, which read as the epoch.
pub fn api_time(at: chrono::DateTime<chrono::Utc>) -> Time {
    Time(Timestamp::from_second(at.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// `conditions` with `type_` set to the given status, reason and message. The transition time
/// moves only when the status changes, as the Kubernetes API conventions ask.
pub fn set(
    conditions: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let status = if ok { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let mut out: Vec<Condition> = conditions.iter().filter(|c| c.type_ != type_).cloned().collect();
    out.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    });
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = set(&[], "Ready", false, "Waiting", "", Some(1));
        let again = set(&first, "Ready", false, "StillWaiting", "more", Some(2));
        assert_eq!(again[0].last_transition_time, first[0].last_transition_time);
        assert_eq!(again[0].reason, "StillWaiting");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let flipped = set(&again, "Ready", true, "Ready", "", Some(2));
        assert_ne!(flipped[0].last_transition_time, first[0].last_transition_time);
        let both = set(&flipped, "ScheduleValid", true, "Valid", "", Some(2));
        assert_eq!(both.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Ready", "ScheduleValid"]);
    }
}
