//! The emptiness method: initialized nodes of a pool that run nothing but DaemonSet and mirror
//! pods, and are not annotated do-not-disrupt (node or claim).

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::{apis::labels, controllers::nodeclaim::lifecycle::condition_true, state::nodes::Nodes};

fn do_not_disrupt(annotations: &BTreeMap<String, String>) -> bool {
    [labels::DO_NOT_DISRUPT, labels::KARPENTER_DO_NOT_DISRUPT]
        .iter()
        .any(|key| annotations.get(*key).is_some_and(|v| v == "true"))
}

/// Initialized NodeClaims of the pool whose nodes run nothing but DaemonSet or mirror pods, by
/// claim name with their node name.
pub fn empty_nodes(pool: &str, nodes: &Nodes) -> Vec<(String, String)> {
    nodes
        .iter()
        .filter_map(|view| Some((view.claim?, view.node?, view)))
        .filter(|(claim, _, _)| claim.labels().get(labels::NODEPOOL).is_some_and(|p| p == pool))
        .filter(|(claim, _, _)| claim.metadata.deletion_timestamp.is_none() && condition_true(claim, "Initialized"))
        .filter(|(claim, node, view)| {
            !do_not_disrupt(claim.annotations()) && !do_not_disrupt(node.annotations()) && !view.has_evictable_pods()
        })
        .map(|(claim, node, _)| (claim.name_any(), node.name_any()))
        .collect()
}
