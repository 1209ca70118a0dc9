//! What replaces the nodes an interruption takes, decided before they are drained so the new
//! capacity is on its way while their pods still run. The solver places the pods the drains will
//! evict on the rest of the cluster (registered nodes and NodeClaims in flight); the NodeClaims
//! it adds are the replacements. Nodes already draining (their NodeClaim being deleted) count as
//! going too: their pods need room as well, and their own room is no one's. Pods already pending
//! are left to the provisioner, which counts the replacements in flight when they arrive. Pure.

use std::{collections::HashSet, sync::Arc};

use kube::ResourceExt;

use crate::{
    apis::NodeClaim,
    scheduling::solver::{Plan, solve},
    state::input::{Snapshot, WholeInput, solver_input},
};

/// The nodes whose pods are about to move: those of the `interrupted` claims (by name) and of
/// every claim already being deleted.
pub fn draining<'a>(claims: &'a [Arc<NodeClaim>], interrupted: &HashSet<String>) -> HashSet<&'a str> {
    claims
        .iter()
        .filter(|claim| claim.metadata.deletion_timestamp.is_some() || interrupted.contains(&claim.name_any()))
        .filter_map(|claim| claim.status.as_ref()?.node_name.as_deref())
        .collect()
}

/// Where the pods evicted from `going` go: onto the rest of the cluster, and onto the new
/// NodeClaims of the plan.
pub fn plan(snapshot: &Snapshot, going: &HashSet<&str>) -> Plan {
    let whole = WholeInput::of(solver_input(snapshot).input);
    solve(&whole.evicted_from(snapshot.pods, going))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, node: Option<&str>, deleting: bool) -> Arc<NodeClaim> {
        let deleted = if deleting { ", deletionTimestamp: '2026-12-03T00:00:00Z'" } else { "" };
        let status = node.map(|n| format!("\nstatus: {{nodeName: {n}}}")).unwrap_or_default();
        let yaml = format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}{deleted}}}\nspec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}}}{status}"
        );
        Arc::new(serde_saphyr::from_str(&yaml).expect("a NodeClaim"))
    }

    #[test]
    fn interrupted_and_deleting_claims_with_nodes_are_draining() {
        let claims = [
            claim("interrupted", Some("node-a"), false),
            claim("deleting", Some("node-b"), true),
            claim("calm", Some("node-c"), false),
            claim("interrupted-unregistered", None, false),
        ];
        let interrupted = HashSet::from(["interrupted".to_owned(), "interrupted-unregistered".to_owned()]);
        assert_eq!(draining(&claims, &interrupted), HashSet::from(["node-a", "node-b"]));
        assert!(draining(&claims[2..], &interrupted).is_empty());
    }
}
