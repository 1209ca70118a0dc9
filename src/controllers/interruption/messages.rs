//! What an interruption-queue message says, and what to do about it. Pure: a message body (the
//! EventBridge event as JSON, as EventBridge delivers it to SQS) becomes a [`Notice`]; a notice
//! and the NodeClaims that own instances become an [`Action`]. Everything a queue can carry is an
//! answer here, never an error that stops the loop: a body that is not an event, an event of
//! another kind, an instance no claim owns.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The events stoker handles, as EventBridge names them (`source`, `detail-type`).
const SPOT_INTERRUPTION: (&str, &str) = ("aws.ec2", "EC2 Spot Instance Interruption Warning");
const REBALANCE: (&str, &str) = ("aws.ec2", "EC2 Instance Rebalance Recommendation");
const STATE_CHANGE: (&str, &str) = ("aws.ec2", "EC2 Instance State-change Notification");
const HEALTH: (&str, &str) = ("aws.health", "AWS Health Event");

/// What a message says happens to instances.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// EC2 reclaims a spot instance in two minutes.
    SpotInterruption { instance: String },
    /// EC2 recommends moving off a spot instance at elevated risk of interruption.
    Rebalance { instance: String },
    /// The instance is stopping, stopped, shutting down or terminated.
    StateChange { instance: String, state: String },
    /// AWS Health scheduled maintenance (a reboot or retirement) of these instances.
    ScheduledChange { instances: Vec<String> },
    /// Not an event stoker acts on: why, for the log and the metric.
    Ignored(Ignored),
}

/// Why a message is ignored (deleted without action).
#[derive(Debug, Clone, PartialEq)]
pub enum Ignored {
    /// The body is not an EventBridge event.
    Malformed(String),
    /// An event of another kind (or a known kind without an instance ID).
    Unknown { source: String, detail_type: String },
}

impl Notice {
    /// The metric label of the kind of message.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::SpotInterruption { .. } => "spot_interruption",
            Notice::Rebalance { .. } => "rebalance_recommendation",
            Notice::StateChange { .. } => "state_change",
            Notice::ScheduledChange { .. } => "scheduled_change",
            Notice::Ignored(Ignored::Malformed(_)) => "malformed",
            Notice::Ignored(Ignored::Unknown { .. }) => "unknown",
        }
    }

    /// The instances it is about.
    pub fn instances(&self) -> Vec<&str> {
        match self {
            Notice::SpotInterruption { instance }
            | Notice::Rebalance { instance }
            | Notice::StateChange { instance, .. } => vec![instance],
            Notice::ScheduledChange { instances } => instances.iter().map(String::as_str).collect(),
            Notice::Ignored(_) => Vec::new(),
        }
    }
}

/// An EventBridge event: the envelope fields stoker reads.
#[derive(Deserialize)]
struct Envelope {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    time: Option<DateTime<Utc>>,
    #[serde(default)]
    detail: serde_json::Value,
}

/// A parsed message: what it says and when the event happened (for the message's age).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub notice: Notice,
    pub time: Option<DateTime<Utc>>,
}

/// Reads a message body. Never fails: what cannot be read is [`Ignored`].
pub fn parse(body: &str) -> Parsed {
    let envelope: Envelope = match serde_json::from_str(body) {
        Ok(envelope) => envelope,
        Err(error) => return Parsed { notice: Notice::Ignored(Ignored::Malformed(error.to_string())), time: None },
    };
    let detail = &envelope.detail;
    let field = |name: &str| detail.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
    let kind = (envelope.source.as_str(), envelope.detail_type.as_str());
    let notice = match kind {
        SPOT_INTERRUPTION => field("instance-id").map(|instance| Notice::SpotInterruption { instance }),
        REBALANCE => field("instance-id").map(|instance| Notice::Rebalance { instance }),
        STATE_CHANGE => {
            field("instance-id").zip(field("state")).map(|(instance, state)| Notice::StateChange { instance, state })
        }
        HEALTH
            if field("service").as_deref() == Some("EC2")
                && field("eventTypeCategory").as_deref() == Some("scheduledChange") =>
        {
            let instances: Vec<String> = detail
                .get("affectedEntities")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|entity| entity.get("entityValue")?.as_str())
                .filter(|value| value.starts_with("i-"))
                .map(str::to_owned)
                .collect();
            (!instances.is_empty()).then_some(Notice::ScheduledChange { instances })
        }
        _ => None,
    };
    let notice = notice.unwrap_or_else(|| {
        Notice::Ignored(Ignored::Unknown { source: envelope.source.clone(), detail_type: envelope.detail_type.clone() })
    });
    Parsed { notice, time: envelope.time }
}

/// What to do about one instance a notice names.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The instance is going: mark its offering unavailable (for spot), and delete its claim,
    /// which cordons and drains the node before the instance goes.
    Interrupt { claim: String, mark_unavailable: bool },
    /// The instance is gone: delete its claim at once.
    Remove { claim: String },
    /// Worth an Event and a metric, not an action (rebalance recommendations by default).
    Record { claim: String },
    /// No NodeClaim of this cluster owns the instance, or nothing needs doing.
    Nothing,
}

impl Action {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Interrupt { .. } => "interrupt",
            Action::Remove { .. } => "remove",
            Action::Record { .. } => "record",
            Action::Nothing => "none",
        }
    }
}

/// The action for each instance a notice names. `claims` maps instance IDs to the NodeClaims of
/// this cluster that own them: an instance it lacks gets nothing, whatever the message says.
/// `act_on_rebalance` turns rebalance recommendations into interruptions.
pub fn actions(notice: &Notice, claims: &HashMap<String, String>, act_on_rebalance: bool) -> Vec<(String, Action)> {
    notice
        .instances()
        .into_iter()
        .map(|instance| {
            let Some(claim) = claims.get(instance).cloned() else { return (instance.to_owned(), Action::Nothing) };
            let action = match notice {
                Notice::SpotInterruption { .. } => Action::Interrupt { claim, mark_unavailable: true },
                Notice::ScheduledChange { .. } => Action::Interrupt { claim, mark_unavailable: false },
                Notice::Rebalance { .. } if act_on_rebalance => Action::Interrupt { claim, mark_unavailable: false },
                Notice::Rebalance { .. } => Action::Record { claim },
                Notice::StateChange { state, .. } => match state.as_str() {
                    "stopping" | "stopped" | "shutting-down" => Action::Interrupt { claim, mark_unavailable: false },
                    "terminated" => Action::Remove { claim },
                    _ => Action::Nothing,
                },
                Notice::Ignored(_) => Action::Nothing,
            };
            (instance.to_owned(), action)
        })
        .collect()
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
