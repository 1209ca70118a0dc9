//! The cluster's nodes joined: each Node with its NodeClaim (by provider ID) and what its pods
//! hold (from the pod index), plus each NodeClaim whose Node has not registered. Indexed by
//! provider ID and by name, built on demand from the caches: what disruption decides from.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::pods::{NodeUse, PodIndex};
use crate::{
    apis::{NodeClaim, time::utc},
    scheduling::resources::Resources,
};

/// One node, registered or on its way.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub node: Option<&'a Arc<Node>>,
    pub claim: Option<&'a Arc<NodeClaim>>,
    /// What its pods hold; `None` when no pod holds room there.
    pub used: Option<&'a NodeUse>,
}

impl<'a> NodeView<'a> {
    /// The Node's name, or the NodeClaim's while no Node registered.
    pub fn name(&self) -> String {
        match (self.node, self.claim) {
            (Some(node), _) => node.name_any(),
            (None, Some(claim)) => claim.name_any(),
            (None, None) => String::new(),
        }
    }

    pub fn provider_id(&self) -> Option<&'a str> {
        let from_node = self.node.and_then(|n| n.spec.as_ref()?.provider_id.as_deref());
        from_node.or_else(|| self.claim.and_then(|c| c.status.as_ref()?.provider_id.as_deref()))
    }

    /// What the Node offers pods, when it reports it.
    pub fn allocatable(&self) -> Option<Resources> {
        let allocatable = self.node?.status.as_ref()?.allocatable.as_ref()?;
        Resources::from_quantities(allocatable).ok()
    }

    /// What is left once its pods' requests are taken.
    pub fn free(&self) -> Option<Resources> {
        let mut free = self.allocatable()?;
        if let Some(used) = self.used {
            free.subtract(&used.requests);
        }
        Some(free)
    }

    /// Whether it is on its way out: its NodeClaim or its Node is being deleted, so the pods a
    /// drain evicts from it are moving elsewhere.
    pub fn going(&self) -> bool {
        self.going_since().is_some()
    }

    /// Since when it is going: the earlier of its NodeClaim's and its Node's deletion.
    pub fn going_since(&self) -> Option<DateTime<Utc>> {
        let claim = self.claim.and_then(|c| c.metadata.deletion_timestamp.as_ref());
        let node = self.node.and_then(|n| n.metadata.deletion_timestamp.as_ref());
        claim.into_iter().chain(node).filter_map(utc).min()
    }

    /// Whether a drain would evict something from it.
    pub fn has_evictable_pods(&self) -> bool {
        self.used.is_some_and(|used| used.evictable > 0)
    }
}

/// The joined nodes.
pub struct Nodes<'a> {
    views: Vec<NodeView<'a>>,
    by_provider_id: HashMap<&'a str, usize>,
    by_name: HashMap<String, usize>,
}

impl<'a> Nodes<'a> {
    /// Joins Nodes and NodeClaims by provider ID, with the pod index's use of each Node.
    pub fn join(nodes: &'a [Arc<Node>], claims: &'a [Arc<NodeClaim>], pods: &'a PodIndex) -> Self {
        let claim_by_id: HashMap<&str, &Arc<NodeClaim>> =
            claims.iter().filter_map(|claim| Some((claim.status.as_ref()?.provider_id.as_deref()?, claim))).collect();
        let mut views = Vec::with_capacity(nodes.len() + claims.len());
        let mut joined_claims: Vec<&str> = Vec::new();
        for node in nodes {
            let id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
            let claim = id.and_then(|id| claim_by_id.get(id).copied());
            if let Some(id) = id.filter(|_| claim.is_some()) {
                joined_claims.push(id);
            }
            views.push(NodeView { node: Some(node), claim, used: pods.node(&node.name_any()) });
        }
        for claim in claims {
            let id = claim.status.as_ref().and_then(|s| s.provider_id.as_deref());
            if id.is_none_or(|id| !joined_claims.contains(&id)) {
                views.push(NodeView { node: None, claim: Some(claim), used: None });
            }
        }
        let by_provider_id = views.iter().enumerate().filter_map(|(i, v)| Some((v.provider_id()?, i))).collect();
        let by_name = views.iter().enumerate().map(|(i, v)| (v.name(), i)).collect();
        Self { views, by_provider_id, by_name }
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeView<'a>> {
        self.views.iter()
    }

    pub fn by_provider_id(&self, provider_id: &str) -> Option<&NodeView<'a>> {
        self.by_provider_id.get(provider_id).map(|i| &self.views[*i])
    }

    pub fn by_name(&self, name: &str) -> Option<&NodeView<'a>> {
        self.by_name.get(name).map(|i| &self.views[*i])
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::*;
    use crate::state::cache::CachedPod;

    fn node(name: &str, id: &str) -> Arc<Node> {
        Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: {name}}}\nspec: {{providerID: '{id}'}}\nstatus: {{allocatable: {{cpu: '4', memory: 8Gi}}}}"
            ))
            .expect("a Node"),
        )
    }

    fn claim(name: &str, id: Option<&str>) -> Arc<NodeClaim> {
        let status = id.map_or(String::new(), |id| format!("\nstatus: {{providerID: '{id}'}}"));
        Arc::new(
            serde_saphyr::from_str(&format!(
                "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n  resources: {{requests: {{cpu: '1'}}}}{status}"
            ))
            .expect("a NodeClaim"),
        )
    }

    #[test]
    fn nodes_and_claims_meet_by_provider_id() {
        let nodes = [node("n1", "aws:///a/i-1"), node("stray", "aws:///a/i-9")];
        let claims = [claim("c1", Some("aws:///a/i-1")), claim("launching", Some("aws:///a/i-2")), claim("new", None)];
        let pod: Pod = serde_saphyr::from_str(
            "metadata: {name: p, namespace: ns}\nspec: {nodeName: n1, containers: [{name: c, resources: {requests: {cpu: '1500m'}}}]}\nstatus: {phase: Running}",
        )
        .expect("a Pod");
        let pods = PodIndex::of(&[Arc::new(CachedPod::from(pod))]);
        let joined = Nodes::join(&nodes, &claims, &pods);
        assert_eq!(joined.iter().count(), 4);
        let n1 = joined.by_provider_id("aws:///a/i-1").expect("joined");
        assert_eq!((n1.name(), n1.claim.map(|c| c.name_any())), ("n1".to_owned(), Some("c1".to_owned())));
        assert_eq!(n1.free().map(|f| f.get("cpu")), Some(2500));
        assert!(n1.has_evictable_pods());
        assert!(joined.by_name("stray").is_some_and(|v| v.claim.is_none()));
        assert!(joined.by_name("launching").is_some_and(|v| v.node.is_none() && v.free().is_none()));
        assert!(joined.by_name("new").is_some_and(|v| v.provider_id().is_none()));
    }
}
