//! The emptiness method: initialized nodes of a pool that run nothing but DaemonSet and mirror
//! pods, and are not annotated do-not-disrupt (node or claim).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use crate::{
    apis::{NodeClaim, labels},
    controllers::nodeclaim::lifecycle::{condition_true, evictable},
    state::cache::CachedPod,
};

fn do_not_disrupt(annotations: &BTreeMap<String, String>) -> bool {
    [labels::DO_NOT_DISRUPT, labels::KARPENTER_DO_NOT_DISRUPT]
        .iter()
        .any(|key| annotations.get(*key).is_some_and(|v| v == "true"))
}

/// Initialized NodeClaims of the pool whose nodes run nothing but DaemonSet or mirror pods, by
/// claim name with their node name.
pub fn empty_nodes(
    pool: &str,
    claims: &[Arc<NodeClaim>],
    nodes: &[Arc<Node>],
    pods: &[Arc<CachedPod>],
) -> Vec<(String, String)> {
    let mut busy: HashMap<&str, bool> = HashMap::new();
    for pod in pods {
        if let Some(node) = pod.node_name.as_deref()
            && evictable(&pod.metadata, pod.phase.as_deref())
        {
            busy.insert(node, true);
        }
    }
    claims
        .iter()
        .filter(|c| c.labels().get(labels::NODEPOOL).is_some_and(|p| p == pool))
        .filter(|c| c.metadata.deletion_timestamp.is_none() && condition_true(c, "Initialized"))
        .filter(|c| !do_not_disrupt(c.annotations()))
        .filter_map(|c| {
            let node_name = c.status.as_ref()?.node_name.clone()?;
            let node = nodes.iter().find(|n| n.name_any() == node_name)?;
            (!do_not_disrupt(node.annotations()) && !busy.contains_key(node_name.as_str()))
                .then(|| (c.name_any(), node_name))
        })
        .collect()
}

