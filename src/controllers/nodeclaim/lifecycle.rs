//! What a NodeClaim needs next, decided from the claim, its Node (if one registered) and the
//! clock. Pure.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::apis::condition;
use crate::apis::{NodeClaim, labels, time::utc};

/// A NodeClaim not registered this long after launch is given up.
pub const REGISTRATION_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// A NodeClaim not launched this long after its creation is given up, as Karpenter does: its
/// pods are better planned again, perhaps elsewhere, than waiting on retries.
pub const LAUNCH_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Its `expireAfter` has elapsed since its creation: delete it, whatever its state and the
    /// budgets say (as Karpenter v1: expiry is forceful; the drain is bounded by
    /// `terminationGracePeriod`).
    Expire,
    Launch,
    /// Not launched within `LAUNCH_TTL` of its creation: delete the claim.
    LaunchTimeout,
    /// Launched; waiting for the Node to register.
    AwaitNode,
    /// Not registered within `REGISTRATION_TTL`: delete the claim (its instance goes with it).
    GiveUp,
    /// The Node registered: sync labels and taints, lift the unregistered taint.
    Register,
    /// Registered; waiting for the Node to be Ready and its startup taints to go.
    AwaitInitialization,
    Initialize,
    Done,
    /// Its node has been NotReady (or Unknown) longer than the repair threshold: delete it
    /// without draining (its kubelet is gone), if few enough of its pool are unhealthy.
    Repair,
}

pub fn condition_true(claim: &NodeClaim, type_: &str) -> bool {
    claim.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == type_ && c.status == "True")
}

fn launched_at(claim: &NodeClaim) -> Option<DateTime<Utc>> {
    let condition = claim
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == condition::LAUNCHED && c.status == condition::TRUE)?;
    utc(&condition.last_transition_time)
}

pub fn node_ready(node: &Node) -> bool {
    node.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == "Ready" && c.status == "True")
}

fn has_taint(node: &Node, taint: &Taint) -> bool {
    node.spec.iter().flat_map(|s| s.taints.iter().flatten()).any(|t| t.key == taint.key && t.effect == taint.effect)
}

/// When the claim expires: its creation plus `expireAfter`; `None` for `Never`, without a
/// creation time, or past the last instant the clock represents.
pub fn expires_at(claim: &NodeClaim) -> Option<DateTime<Utc>> {
    let lifetime = claim.spec.expire_after?.duration()?;
    let created = claim.metadata.creation_timestamp.as_ref()?;
    utc(created)?.checked_add_signed(lifetime.delta())
}

/// Since when the node has not been Ready (its Ready condition False or Unknown, or missing);
/// `None` while it is Ready.
pub fn unhealthy_since(node: &Node) -> Option<DateTime<Utc>> {
    let conditions = node.status.iter().flat_map(|s| s.conditions.iter().flatten());
    match conditions.into_iter().find(|c| c.type_ == "Ready") {
        Some(ready) if ready.status == "True" => None,
        Some(ready) => ready.last_transition_time.as_ref().and_then(utc),
        None => node.metadata.creation_timestamp.as_ref().and_then(utc),
    }
}

/// When the claim's node is due for repair: unhealthy since then plus `repair_after`.
pub fn repair_due(node: &Node, repair_after: TimeDelta) -> Option<DateTime<Utc>> {
    unhealthy_since(node)?.checked_add_signed(repair_after)
}

/// What the claim needs next. `repair_after` is how long an initialized claim's node may stay
/// unhealthy.
pub fn next_step(claim: &NodeClaim, node: Option<&Node>, now: DateTime<Utc>, repair_after: TimeDelta) -> Step {
    if expires_at(claim).is_some_and(|at| at <= now) {
        return Step::Expire;
    }
    let launched = claim.status.as_ref().and_then(|s| s.provider_id.as_ref()).is_some();
    if !launched {
        let created = claim.metadata.creation_timestamp.as_ref().and_then(utc);
        return match created {
            Some(created) if now - created > LAUNCH_TTL => Step::LaunchTimeout,
            _ => Step::Launch,
        };
    }
    let Some(node) = node else {
        return match launched_at(claim) {
            Some(at) if now - at > REGISTRATION_TTL => Step::GiveUp,
            _ => Step::AwaitNode,
        };
    };
    if !condition_true(claim, condition::REGISTERED) {
        return Step::Register;
    }
    if condition_true(claim, condition::INITIALIZED) {
        return match repair_due(node, repair_after) {
            Some(due) if due <= now => Step::Repair,
            _ => Step::Done,
        };
    }
    let startup_left = claim.spec.startup_taints.iter().any(|taint| has_taint(node, taint));
    let unregistered =
        Taint { key: labels::UNREGISTERED_TAINT.into(), effect: "NoExecute".into(), ..Default::default() };
    if node_ready(node) && !startup_left && !has_taint(node, &unregistered) {
        Step::Initialize
    } else {
        Step::AwaitInitialization
    }
}

/// The Node's taints after registration: stoker's unregistered taint lifted, the claim's taints
/// (and startup taints, the first time) added when missing, the rest kept.
pub fn registered_taints(node: &Node, claim: &NodeClaim) -> Vec<Taint> {
    let mut taints: Vec<Taint> = node
        .spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.key != labels::UNREGISTERED_TAINT)
        .cloned()
        .collect();
    for taint in claim.spec.taints.iter().chain(&claim.spec.startup_taints) {
        if !taints.iter().any(|t| t.key == taint.key && t.effect == taint.effect) {
            taints.push(taint.clone());
        }
    }
    taints
}

/// A pod's phase, from its status.
pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;

    const REPAIR: TimeDelta = TimeDelta::minutes(30);

    fn claim(status: &str) -> NodeClaim {
        let yaml = format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: general-abcde}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n  taints: [{{key: dedicated, value: web, effect: NoSchedule}}]\n  startupTaints: [{{key: cni, effect: NoSchedule}}]\n{status}"
        );
        serde_saphyr::from_str(&yaml).expect("a NodeClaim")
    }

    fn node(taints: &str, ready: bool) -> Node {
        let status = if ready { "True" } else { "False" };
        serde_saphyr::from_str(&format!(
            "metadata: {{name: n}}\nspec: {{providerID: 'aws:///a/i-1', taints: [{taints}]}}\nstatus: {{conditions: [{{type: Ready, status: '{status}'}}]}}"
        ))
        .expect("a Node")
    }

    fn with_condition(mut claim: NodeClaim, type_: &str, at: DateTime<Utc>) -> NodeClaim {
        let status = claim.status.get_or_insert_with(Default::default);
        status.provider_id = Some("aws:///a/i-1".into());
        status.conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: type_.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::from_second(at.timestamp()).expect("a time")),
        });
        claim
    }

    #[test]
    fn the_lifecycle_goes_launch_register_initialize() {
        let now = Utc::now();
        assert_eq!(next_step(&claim(""), None, now, REPAIR), Step::Launch);
        let launched = with_condition(claim(""), "Launched", now - chrono::TimeDelta::minutes(1));
        assert_eq!(next_step(&launched, None, now, REPAIR), Step::AwaitNode);
        assert_eq!(next_step(&launched, None, now + REGISTRATION_TTL, REPAIR), Step::GiveUp);
        let fresh = node("{key: stoker.dev/unregistered, effect: NoExecute}, {key: cni, effect: NoSchedule}", false);
        assert_eq!(next_step(&launched, Some(&fresh), now, REPAIR), Step::Register);
        let registered = with_condition(launched, "Registered", now);
        assert_eq!(
            next_step(&registered, Some(&node("{key: cni, effect: NoSchedule}", true)), now, REPAIR),
            Step::AwaitInitialization
        );
        assert_eq!(next_step(&registered, Some(&node("", false)), now, REPAIR), Step::AwaitInitialization);
        assert_eq!(next_step(&registered, Some(&node("", true)), now, REPAIR), Step::Initialize);
        let initialized = with_condition(registered, "Initialized", now);
        assert_eq!(next_step(&initialized, Some(&node("", true)), now, REPAIR), Step::Done);
    }

    #[test]
    fn a_claim_not_launched_within_the_launch_ttl_is_given_up() {
        let now = Utc::now();
        let mut waiting = claim("");
        let created = |minutes: i64| {
            let at = (now - chrono::TimeDelta::minutes(minutes)).to_rfc3339();
            Some(serde_json::from_value(serde_json::json!(at)).expect("a time"))
        };
        waiting.metadata.creation_timestamp = created(4);
        assert_eq!(next_step(&waiting, None, now, REPAIR), Step::Launch);
        waiting.metadata.creation_timestamp = created(6);
        assert_eq!(next_step(&waiting, None, now, REPAIR), Step::LaunchTimeout);
    }

    #[test]
    fn a_claim_expires_after_its_lifetime_whatever_its_state() {
        let now = Utc::now();
        let mut old = with_condition(claim(""), "Initialized", now);
        let at = (now - chrono::TimeDelta::hours(2)).to_rfc3339();
        old.metadata.creation_timestamp = Some(serde_json::from_value(serde_json::json!(at)).expect("a time"));
        old.spec.expire_after = Some(crate::apis::NillableDuration::after(crate::apis::Duration::from_secs(3600)));
        assert_eq!(next_step(&old, None, now, REPAIR), Step::Expire);
        assert_eq!(expires_at(&old), Some(now - chrono::TimeDelta::hours(1)).map(|t| t.with_nanosecond(0).unwrap()));
        old.spec.expire_after = Some(crate::apis::NillableDuration::after(crate::apis::Duration::from_secs(3 * 3600)));
        assert_eq!(next_step(&old, None, now, REPAIR), Step::AwaitNode);
        old.spec.expire_after = Some(crate::apis::NillableDuration::NEVER);
        assert_eq!(expires_at(&old), None);
        // A lifetime past what the clock represents never expires, and never panics.
        old.spec.expire_after = Some(crate::apis::NillableDuration::after(crate::apis::Duration::from_secs(u64::MAX)));
        assert_eq!(expires_at(&old), None);
        assert_eq!(next_step(&old, None, now, REPAIR), Step::AwaitNode);
    }

    #[test]
    fn a_node_not_ready_past_the_threshold_is_repaired() {
        let now = Utc::now();
        let initialized = with_condition(with_condition(claim(""), "Registered", now), "Initialized", now);
        let since = |minutes: i64| (now - TimeDelta::minutes(minutes)).to_rfc3339();
        let down = |status: &str, minutes: i64| -> Node {
            serde_saphyr::from_str(&format!(
                "metadata: {{name: n}}\nstatus: {{conditions: [{{type: Ready, status: '{status}', lastTransitionTime: '{}'}}]}}",
                since(minutes)
            ))
            .expect("a Node")
        };
        assert_eq!(next_step(&initialized, Some(&down("False", 10)), now, REPAIR), Step::Done);
        assert_eq!(next_step(&initialized, Some(&down("False", 31)), now, REPAIR), Step::Repair);
        assert_eq!(next_step(&initialized, Some(&down("Unknown", 31)), now, REPAIR), Step::Repair);
        assert_eq!(next_step(&initialized, Some(&down("True", 31)), now, REPAIR), Step::Done);
        // Never panics, whatever the threshold.
        assert_eq!(next_step(&initialized, Some(&down("False", 31)), now, TimeDelta::MAX), Step::Done);
    }

    #[test]
    fn registration_lifts_the_unregistered_taint_and_adds_the_claims() {
        let node = node("{key: stoker.dev/unregistered, effect: NoExecute}, {key: other, effect: NoSchedule}", false);
        let keys: Vec<String> = registered_taints(&node, &claim("")).into_iter().map(|t| t.key).collect();
        assert_eq!(keys, ["other", "dedicated", "cni"]);
    }
}
