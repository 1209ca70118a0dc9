//! The emptiness method: initialized nodes of a pool that run nothing but DaemonSet and mirror
//! pods, have no pod nominated to them, have been initialized long enough for pods in the
//! scheduler's back-off to have found them, hold no CapacityBuffer's room, are not where the
//! provisioner expects pending pods to go (see `controllers::nominations`), and are not
//! annotated do-not-disrupt (node or claim).

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use kube::ResourceExt;

use super::candidates::initialized_before;
use crate::{apis::labels, state::nodes::Nodes};

/// How long a node stays off the candidates after it initializes: kube-scheduler retries an
/// unschedulable pod after at most 10 s of back-off, so a fresh node can look empty for that
/// long while its pods are on their way, whatever `consolidateAfter` says.
pub const SETTLE: TimeDelta = TimeDelta::seconds(15);

/// An empty node and its NodeClaim, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyNode {
    pub claim: String,
    pub node: String,
}

/// Initialized NodeClaims of the pool whose nodes run nothing but DaemonSet or mirror pods and
/// are not `kept` (node names: holding CapacityBuffer room, or nominated for pending pods).
pub fn empty_nodes(pool: &str, nodes: &Nodes, kept: &HashSet<String>, now: DateTime<Utc>) -> Vec<EmptyNode> {
    nodes
        .iter()
        .filter_map(|view| Some((view.claim?, view.node?, view)))
        .filter(|(claim, _, _)| claim.labels().get(labels::NODEPOOL).is_some_and(|p| p == pool))
        .filter(|(claim, _, _)| claim.metadata.deletion_timestamp.is_none())
        .filter(|(claim, _, _)| initialized_before(claim, now - SETTLE))
        .filter(|(claim, node, view)| {
            !labels::do_not_disrupt(claim.annotations())
                && !labels::do_not_disrupt(node.annotations())
                && !view.has_evictable_pods()
                && !kept.contains(&node.name_any())
                && view.used.is_none_or(|used| used.nominated == 0)
        })
        .map(|(claim, node, _)| EmptyNode { claim: claim.name_any(), node: node.name_any() })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};

    use super::*;
    use crate::{
        apis::NodeClaim,
        state::{cache::CachedPod, pods::PodIndex},
    };

    fn claim(name: &str, initialized_seconds_ago: i64) -> Arc<NodeClaim> {
        let at = (Utc::now() - TimeDelta::seconds(initialized_seconds_ago)).to_rfc3339();
        Arc::new(
            serde_saphyr::from_str(&format!(
                "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}, labels: {{stoker.dev/nodepool: p}}}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n  resources: {{requests: {{cpu: '1'}}}}\nstatus:\n  providerID: 'aws:///a/{name}'\n  conditions: [{{type: Initialized, status: 'True', reason: Initialized, message: '', lastTransitionTime: '{at}'}}]"
            ))
            .expect("a NodeClaim"),
        )
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_saphyr::from_str(&format!("metadata: {{name: {name}}}\nspec: {{providerID: 'aws:///a/{name}'}}"))
                .expect("a Node"),
        )
    }

    fn pod(name: &str, status: &str) -> Arc<CachedPod> {
        let pod: Pod = serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, namespace: ns}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {status}"
        ))
        .expect("a Pod");
        Arc::new(CachedPod::from(pod))
    }

    #[test]
    fn nominated_pods_and_fresh_nodes_are_not_empty() {
        let claims = [claim("old", 60), claim("fresh", 3), claim("awaited", 60)];
        let nodes = [node("old"), node("fresh"), node("awaited")];
        // A preemption made room on "awaited" for a pod not bound yet.
        let pods = PodIndex::of(&[pod(
            "coming",
            "{phase: Pending, nominatedNodeName: awaited, conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable}]}",
        )]);
        let joined = Nodes::join(&nodes, &claims, &pods);
        let empty: Vec<String> =
            empty_nodes("p", &joined, &HashSet::new(), Utc::now()).into_iter().map(|e| e.claim).collect();
        assert_eq!(empty, ["old"]);
        // A node holding a CapacityBuffer's room, or nominated for pending pods, is kept.
        let kept = HashSet::from(["old".to_owned()]);
        assert!(empty_nodes("p", &joined, &kept, Utc::now()).is_empty());
    }
}
