//! What a NodeClaim counts against its NodePool's limits: the capacity of its instance once
//! launched, its requests before. The one rule behind the provisioner's remaining limits and
//! the NodePool status.

use std::{collections::HashMap, sync::Arc};

use kube::ResourceExt;

use crate::{
    apis::{NodeClaim, labels},
    scheduling::{resources::Resources, solver::NODES},
};

/// What one claim counts: capacity if known, else requests (zero if neither parses).
pub fn claim_usage(claim: &NodeClaim) -> Resources {
    let capacity = claim.status.as_ref().map(|s| &s.capacity).filter(|c| !c.is_empty());
    Resources::from_quantities(capacity.unwrap_or(&claim.spec.resources.requests)).unwrap_or_default()
}

/// Each pool's summed claim usage, with the claims counted as `nodes`.
pub fn usage_by_pool(claims: &[Arc<NodeClaim>]) -> HashMap<String, Resources> {
    let mut by_pool: HashMap<String, Resources> = HashMap::new();
    for claim in claims {
        let Some(pool) = claim.labels().get(labels::NODEPOOL) else { continue };
        let usage = by_pool.entry(pool.clone()).or_default();
        usage.add(&claim_usage(claim));
        usage.set(NODES, usage.get(NODES).saturating_add(1));
    }
    by_pool
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, pool: &str, launched: bool) -> Arc<NodeClaim> {
        let status = if launched { "status: {capacity: {cpu: '2', memory: 8Gi}}" } else { "" };
        Arc::new(
            serde_saphyr::from_str(&format!(
                "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}, labels: {{stoker.dev/nodepool: {pool}}}}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n  resources: {{requests: {{cpu: '1'}}}}\n{status}"
            ))
            .expect("a NodeClaim"),
        )
    }

    #[test]
    fn capacity_once_launched_requests_before() {
        let claims =
            [claim("general-a", "general", true), claim("general-b", "general", false), claim("x", "other", false)];
        let usage = usage_by_pool(&claims);
        let general = &usage["general"];
        assert_eq!((general.get("cpu"), general.get("memory"), general.get(NODES)), (3000, 8 << 30, 2));
        assert_eq!(usage["other"].get(NODES), 1);
    }
}
