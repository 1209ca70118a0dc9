//! What the operator lets a WarmPool do. Any namespace user may create one, and stoker creates
//! its pause pods with its own cluster-wide rights, so the pool's choices are checked first:
//!
//! - the pause pods' PriorityClass must have a negative value and `preemptionPolicy: Never`, so
//!   they never evict a real workload and every real workload can evict them
//!   (`system-node-critical` would do the opposite);
//! - their image must be on the operator's list (the chart's `warmPools.images`; by default the
//!   pause image only);
//! - when the operator lists NodePools (`warmPools.nodePools`), the pool must select one of them
//!   with a `stoker.dev/nodepool` node selector.
//!
//! A refused pool's Deployment is left as it was (an earlier, admitted shape keeps running; no
//! new shape is applied), and the refusal is reported in the `Admitted` condition and an Event.

use k8s_openapi::api::scheduling::v1::PriorityClass;

use crate::apis::{labels, validation::FieldError, warmpool::WarmPoolSpec};

/// The operator's limits on WarmPools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Images pause pods may run.
    pub images: Vec<String>,
    /// NodePools WarmPools may hold capacity on; empty for any.
    pub nodepools: Vec<String>,
}

/// What keeps `spec` from being admitted; empty when it is. `priority` is the PriorityClass it
/// names, if that exists.
pub fn refusals(spec: &WarmPoolSpec, policy: &Policy, priority: Option<&PriorityClass>) -> Vec<FieldError> {
    let mut refusals = Vec::new();
    let refuse = |field: &str, message: String| FieldError { field: field.to_owned(), message };
    if !policy.images.contains(&spec.image) {
        refusals.push(refuse(
            "spec.image",
            format!(
                "image {:?} is not one the operator allows for pause pods ({})",
                spec.image,
                policy.images.join(", ")
            ),
        ));
    }
    match priority {
        None => refusals.push(refuse(
            "spec.priorityClassName",
            format!("PriorityClass {:?} does not exist", spec.priority_class_name),
        )),
        Some(class) => {
            let value = class.value.unwrap_or(0);
            let policy = class.preemption_policy.as_deref().unwrap_or("PreemptLowerPriority");
            if value >= 0 || policy != "Never" {
                refusals.push(refuse(
                    "spec.priorityClassName",
                    format!(
                        "PriorityClass {:?} has value {value} and preemptionPolicy {policy}: pause pods need a negative value and preemptionPolicy Never, or they would take room from real workloads",
                        spec.priority_class_name
                    ),
                ));
            }
        }
    }
    if !policy.nodepools.is_empty() {
        let selected = spec.node_selector.get(labels::NODEPOOL);
        if selected.is_none_or(|pool| !policy.nodepools.contains(pool)) {
            refusals.push(refuse(
                "spec.nodeSelector",
                format!(
                    "WarmPools may hold capacity only on NodePools {}: select one with {}",
                    policy.nodepools.join(", "),
                    labels::NODEPOOL
                ),
            ));
        }
    }
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::warmpool::pause::default_priority_class;

    fn spec(extra: &str) -> WarmPoolSpec {
        serde_saphyr::from_str(&format!("resources: {{requests: {{cpu: 100m}}}}\n{extra}")).expect("a spec")
    }

    fn policy(nodepools: &[&str]) -> Policy {
        Policy {
            images: vec![crate::apis::warmpool::DEFAULT_PAUSE_IMAGE.into()],
            nodepools: nodepools.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn fields(refusals: Vec<FieldError>) -> Vec<String> {
        refusals.into_iter().map(|r| r.field).collect()
    }

    #[test]
    fn the_default_pool_is_admitted() {
        assert!(refusals(&spec(""), &policy(&[]), Some(&default_priority_class())).is_empty());
    }

    #[test]
    fn a_critical_priority_another_image_or_another_pool_is_refused() {
        let critical: PriorityClass = serde_saphyr::from_str(
            "metadata: {name: system-node-critical}\nvalue: 2000001000\npreemptionPolicy: PreemptLowerPriority",
        )
        .expect("a PriorityClass");
        let pool = spec(
            "priorityClassName: system-node-critical\nimage: attacker/miner:latest\nnodeSelector: {stoker.dev/nodepool: gpu}",
        );
        let refused = refusals(&pool, &policy(&["spot"]), Some(&critical));
        assert_eq!(fields(refused), ["spec.image", "spec.priorityClassName", "spec.nodeSelector"]);
        // A negative class that may still preempt is refused too; a missing one as well.
        let mut preempting = default_priority_class();
        preempting.preemption_policy = Some("PreemptLowerPriority".into());
        assert_eq!(fields(refusals(&spec(""), &policy(&[]), Some(&preempting))), ["spec.priorityClassName"]);
        assert_eq!(fields(refusals(&spec(""), &policy(&[]), None)), ["spec.priorityClassName"]);
        // A listed pool, selected: admitted.
        let listed = spec("nodeSelector: {stoker.dev/nodepool: spot}");
        assert!(refusals(&listed, &policy(&["spot"]), Some(&default_priority_class())).is_empty());
    }
}
