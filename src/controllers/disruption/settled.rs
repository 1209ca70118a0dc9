//! Whether a consolidation pass may be skipped. Asking costs a solver run per candidate set it
//! tries, every 5 seconds, and on a settled cluster the answer is "nothing" every time (a
//! thousand refused nodes cost a quarter of a second a pass). As Karpenter does, a pass that
//! decided nothing is not repeated while nothing it reads has changed, and is asked again at
//! least every [`ASK_AGAIN_AFTER`] for what no watch shows (a spot price moving within the
//! provider's cache, a capacity error expiring).
//!
//! What it reads is summed up in a digest: every watched object by name and resourceVersion
//! (pods, NodeClaims, PodDisruptionBudgets, DaemonSets, namespaces, volumes, CapacityBuffers and
//! what they reference), the Nodes by what the decision reads of them (a kubelet's status
//! heartbeat changes a Node's resourceVersion every few minutes and nothing else), the NodePools
//! as their schedules make them now, the catalogs' offerings, and the candidates as this pass
//! finds them, with what blocks each (which changes with time alone: a claim's pods becoming
//! quiet for `consolidateAfter`, a budget's schedule).

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::{Resource, ResourceExt, runtime::reflector::Store};

use super::candidates::Candidate;
use crate::{apis::NodePool, scheduling::catalog::InstanceType, state::ClusterState};

/// How long an unchanged digest stands for the answer it was found with.
pub const ASK_AGAIN_AFTER: TimeDelta = TimeDelta::minutes(5);

/// The last pass that decided nothing: what it read, when, and why it kept each candidate.
#[derive(Debug, Clone)]
pub struct Settled {
    pub digest: u64,
    pub at: DateTime<Utc>,
    pub kept: Vec<(String, String)>,
}

impl Settled {
    /// Whether a pass reading `digest` at `now` would decide nothing again.
    pub fn holds(&self, digest: u64, now: DateTime<Utc>) -> bool {
        self.digest == digest && now - self.at < ASK_AGAIN_AFTER
    }
}

/// The digest of the cluster as consolidation reads it, but for the candidates (see
/// [`with_candidates`]).
pub fn cluster_digest(
    state: &ClusterState,
    pools: &[Arc<NodePool>],
    instance_types: &BTreeMap<String, Arc<[InstanceType]>>,
) -> u64 {
    let mut digest = DefaultHasher::new();
    store_digest(&state.pods).hash(&mut digest);
    store_digest(&state.claims).hash(&mut digest);
    store_digest(&state.classes).hash(&mut digest);
    store_digest(&state.budgets).hash(&mut digest);
    store_digest(&state.daemonsets).hash(&mut digest);
    store_digest(&state.namespaces).hash(&mut digest);
    store_digest(&state.volume_claims).hash(&mut digest);
    store_digest(&state.volumes).hash(&mut digest);
    store_digest(&state.storage_classes).hash(&mut digest);
    if let Some(buffers) = &state.buffers {
        store_digest(&buffers.buffers).hash(&mut digest);
        store_digest(&buffers.pod_templates).hash(&mut digest);
        store_digest(&buffers.deployments).hash(&mut digest);
        store_digest(&buffers.stateful_sets).hash(&mut digest);
        store_digest(&buffers.replica_sets).hash(&mut digest);
    }
    unordered(state.nodes.state().iter().map(|node| node_digest(node))).hash(&mut digest);
    for pool in pools {
        pool.name_any().hash(&mut digest);
        serde_json::to_vec(&pool.spec).unwrap_or_default().hash(&mut digest);
    }
    for (class, types) in instance_types {
        class.hash(&mut digest);
        for instance in types.iter() {
            instance.name.hash(&mut digest);
            for offering in &instance.offerings {
                (&offering.zone, &offering.capacity_type, offering.price.to_bits(), offering.available)
                    .hash(&mut digest);
                offering.reservation_id.hash(&mut digest);
            }
        }
    }
    digest.finish()
}

/// `cluster` with the candidates a pass found and why each blocked one is blocked.
pub fn with_candidates(cluster: u64, eligible: &[Candidate], blocked: &[(Candidate, String)]) -> u64 {
    let mut digest = DefaultHasher::new();
    cluster.hash(&mut digest);
    for candidate in eligible {
        (&candidate.claim, &candidate.node, candidate.pods).hash(&mut digest);
    }
    for (candidate, why) in blocked {
        (&candidate.claim, why).hash(&mut digest);
    }
    digest.finish()
}

/// What a Node is to consolidation: its labels, annotations, taints, whether it is cordoned or
/// going, what it offers and its conditions' states, but not when its kubelet last reported.
pub fn node_digest(node: &Node) -> u64 {
    let mut digest = DefaultHasher::new();
    node.name_any().hash(&mut digest);
    node.labels().hash(&mut digest);
    node.annotations().hash(&mut digest);
    node.metadata.deletion_timestamp.as_ref().map(|t| t.0).hash(&mut digest);
    if let Some(spec) = &node.spec {
        spec.unschedulable.hash(&mut digest);
        spec.provider_id.hash(&mut digest);
        for taint in spec.taints.iter().flatten() {
            (&taint.key, &taint.value, &taint.effect).hash(&mut digest);
        }
    }
    if let Some(status) = &node.status {
        for (name, quantity) in status.allocatable.iter().flatten() {
            (name, &quantity.0).hash(&mut digest);
        }
        for condition in status.conditions.iter().flatten() {
            (&condition.type_, &condition.status).hash(&mut digest);
        }
    }
    digest.finish()
}

/// Every object of a store by namespace, name and resourceVersion, in no order.
fn store_digest<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> u64 {
    unordered(store.state().iter().map(|object| {
        let mut digest = DefaultHasher::new();
        let meta = object.meta();
        (&meta.namespace, &meta.name, &meta.resource_version).hash(&mut digest);
        digest.finish()
    }))
}

/// Digests combined so that their order does not matter (a store lists in no fixed order).
fn unordered(digests: impl Iterator<Item = u64>) -> u64 {
    digests.fold(0, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(extra_metadata: &str, status: &str) -> Node {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: n1, labels: {{topology.kubernetes.io/zone: a}}{extra_metadata}}}\nspec: {{providerID: 'aws:///a/i-1'}}\nstatus: {status}"
        ))
        .unwrap()
    }

    const READY_AT_10: &str = "{allocatable: {cpu: '4'}, conditions: [{type: Ready, status: 'True', lastHeartbeatTime: '2026-12-06T10:00:00Z'}]}";

    #[test]
    fn a_status_heartbeat_leaves_a_node_as_it_was() {
        let heartbeat = READY_AT_10.replace("10:00:00", "10:05:00");
        assert_eq!(node_digest(&node("", READY_AT_10)), node_digest(&node("", &heartbeat)));
    }

    #[test]
    fn what_consolidation_reads_of_a_node_changes_it() {
        let before = node_digest(&node("", READY_AT_10));
        let changes = [
            node(", annotations: {karpenter.sh/do-not-disrupt: 'true'}", READY_AT_10),
            node(", deletionTimestamp: '2026-12-06T10:01:00Z'", READY_AT_10),
            node("", &READY_AT_10.replace("cpu: '4'", "cpu: '8'")),
            node("", &READY_AT_10.replace("status: 'True'", "status: 'False'")),
        ];
        for changed in changes {
            assert_ne!(node_digest(&changed), before, "{:?}", changed.metadata);
        }
        let mut moved = node("", READY_AT_10);
        moved.labels_mut().insert("topology.kubernetes.io/zone".into(), "b".into());
        assert_ne!(node_digest(&moved), before);
        let mut tainted = node("", READY_AT_10);
        let taint =
            k8s_openapi::api::core::v1::Taint { key: "k".into(), effect: "NoSchedule".into(), ..Default::default() };
        tainted.spec.get_or_insert_default().taints = Some(vec![taint]);
        assert_ne!(node_digest(&tainted), before);
        let mut cordoned = node("", READY_AT_10);
        cordoned.spec.get_or_insert_default().unschedulable = Some(true);
        assert_ne!(node_digest(&cordoned), before);
    }

    #[test]
    fn a_settled_answer_stands_until_the_digest_changes_or_five_minutes_pass() {
        let at = Utc::now();
        let settled = Settled { digest: 7, at, kept: Vec::new() };
        assert!(settled.holds(7, at + TimeDelta::minutes(4)));
        assert!(!settled.holds(8, at + TimeDelta::seconds(5)), "anything read changed");
        assert!(!settled.holds(7, at + ASK_AGAIN_AFTER), "asked again for what no watch shows");
    }

    #[test]
    fn candidates_found_or_blocked_anew_change_the_digest() {
        let candidate = |claim: &str| Candidate {
            claim: claim.into(),
            node: format!("node-{claim}"),
            pool: "default".into(),
            instance_type: "m5.large".into(),
            capacity_type: "on-demand".into(),
            price: Some(0.096),
            cost: 1.0,
            pods: 3,
        };
        let base = with_candidates(1, &[candidate("a")], &[]);
        assert_eq!(base, with_candidates(1, &[candidate("a")], &[]));
        assert_ne!(base, with_candidates(2, &[candidate("a")], &[]), "the cluster changed");
        assert_ne!(base, with_candidates(1, &[candidate("a"), candidate("b")], &[]), "b became quiet");
        let blocked = [(candidate("b"), "the NodePool's disruption budget allows no more nodes now".to_owned())];
        assert_ne!(base, with_candidates(1, &[candidate("a")], &blocked));
    }
}
