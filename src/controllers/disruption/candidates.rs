//! Consolidation's candidates: the initialized nodes of dynamic pools with `WhenEmptyOrUnderutilized`
//! whose pods have not changed for the pool's `consolidateAfter`, each with what it costs per
//! hour, what disrupting it costs its pods, and what (if anything) forbids disrupting it.
//!
//! Pure: built from the joined nodes, the pods on each node, the PodDisruptionBudgets and the
//! catalog, with the caller saying which claims have been quiet long enough.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
};

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::{
    api::{core::v1::Node, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::ResourceExt;

use super::emptiness::SETTLE;
use crate::{
    apis::{
        NodeClaim, NodePool, condition,
        labels::{self},
        nodepool::ConsolidationPolicy,
        time::utc,
    },
    scheduling::{catalog::InstanceType, pod::Selector},
    state::{cache::CachedPod, nodes::Nodes, pods::evictable},
};

/// A node consolidation may remove.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub claim: String,
    pub node: String,
    pub pool: String,
    pub instance_type: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// Dollars per hour of the node's offering; `None` when the catalog does not list it.
    pub price: Option<f64>,
    /// What disrupting it costs its pods (see [`pod_cost`]); lower goes first.
    pub cost: f64,
    /// Pods a drain would evict.
    pub pods: usize,
}

/// Why a node that would otherwise be a candidate may not be disrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The node or its NodeClaim is annotated do-not-disrupt.
    NodeDoNotDisrupt,
    /// This pod is annotated do-not-disrupt.
    PodDoNotDisrupt(String),
    /// A PodDisruptionBudget allows no disruption of this pod now (or several select it, which
    /// the Eviction API refuses).
    PodDisruptionBudget { pod: String, budget: String },
    /// The pool's disruption budgets allow no more nodes for this reason now.
    Budget,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeDoNotDisrupt => write!(f, "the node is annotated {}", labels::DO_NOT_DISRUPT),
            Self::PodDoNotDisrupt(pod) => write!(f, "pod {pod} is annotated do-not-disrupt"),
            Self::PodDisruptionBudget { pod, budget } => {
                write!(f, "PodDisruptionBudget {budget} allows no disruption of pod {pod}")
            }
            Self::Budget => write!(f, "the NodePool's disruption budget allows no more nodes now"),
        }
    }
}

/// What the candidates are chosen from.
pub struct Cluster<'a> {
    pub nodes: &'a Nodes<'a>,
    pub pools: &'a [Arc<NodePool>],
    /// The pods bound to each node.
    pub pods: &'a HashMap<&'a str, Vec<&'a CachedPod>>,
    pub budgets: &'a [Arc<PodDisruptionBudget>],
    /// Instance types per EC2NodeClass name.
    pub instance_types: &'a BTreeMap<String, Arc<[InstanceType]>>,
}

/// The candidates, cheapest to disrupt first, each with what blocks it (if anything). `quiet`
/// says whether a claim's pods have not changed for its pool's `consolidateAfter`.
pub fn candidates(
    cluster: &Cluster,
    now: DateTime<Utc>,
    mut quiet: impl FnMut(&NodeClaim, &NodePool) -> bool,
) -> Vec<(Candidate, Option<Blocker>)> {
    disruptable(cluster, now, |claim, pool| {
        let disruption = &pool.spec.disruption;
        // A static pool's nodes are its replicas, not spare capacity.
        pool.spec.replicas.is_none()
            && disruption.consolidation_policy == ConsolidationPolicy::WhenEmptyOrUnderutilized
            && disruption.consolidate_after.duration().is_some()
            && quiet(claim, pool)
    })
}

/// Every initialized node of a pool, not being deleted, that `wanted` picks, as a candidate
/// with what blocks it, cheapest to disrupt first: what each disruption method chooses from.
pub fn disruptable(
    cluster: &Cluster,
    now: DateTime<Utc>,
    mut wanted: impl FnMut(&NodeClaim, &NodePool) -> bool,
) -> Vec<(Candidate, Option<Blocker>)> {
    let mut found = Vec::new();
    for view in cluster.nodes.iter() {
        let (Some(claim), Some(node)) = (view.claim, view.node) else { continue };
        let Some(pool) =
            claim.labels().get(labels::NODEPOOL).and_then(|p| cluster.pools.iter().find(|x| &x.name_any() == p))
        else {
            continue;
        };
        if claim.metadata.deletion_timestamp.is_some()
            || node.metadata.deletion_timestamp.is_some()
            || !initialized_before(claim, now - SETTLE)
            || !wanted(claim, pool)
        {
            continue;
        }
        found.push(candidate(cluster, claim, node, pool, now));
    }
    // Cheapest to disrupt first; of equal cost, the dearer node (more to save) first.
    found.sort_by(|(a, _), (b, _)| {
        a.cost
            .total_cmp(&b.cost)
            .then_with(|| b.price.unwrap_or(0.0).total_cmp(&a.price.unwrap_or(0.0)))
            .then_with(|| a.claim.cmp(&b.claim))
    });
    found
}

/// How long consolidation waits once a node begins going while its drain is still evicting:
/// the evicted pods are recreated and bound within seconds, and a decision made before then
/// counts on room they are about to take, or weighs candidates they are about to land on. A
/// drain held up for longer (a PodDisruptionBudget, a long grace period) is simulated instead:
/// its pods are placed with the candidates' (see the disruption module's `Simulation`).
pub const DRAIN_SETTLE: TimeDelta = TimeDelta::seconds(30);

/// A node that began going less than [`DRAIN_SETTLE`] ago whose pods are still on their way, if
/// any: consolidation waits for it. On their way means it still has pods to evict, or, once it
/// has none, `replicas_to_come` says some owner has yet to re-create its pods: kube-controller-
/// manager re-creates evicted replicas at 20 a second, and until it does they are nowhere in the
/// picture (in a spot race a decision taken 3 s after a 35-node drain lapsed at its re-check,
/// the re-created pods having taken the room it counted on).
pub fn drain_settling(nodes: &Nodes, now: DateTime<Utc>, replicas_to_come: impl FnOnce() -> bool) -> Option<String> {
    let fresh: Vec<_> =
        nodes.iter().filter(|view| view.going_since().is_some_and(|since| now - since < DRAIN_SETTLE)).collect();
    let evicting = fresh.iter().find(|view| view.has_evictable_pods());
    evicting.or_else(|| fresh.first().filter(|_| replicas_to_come())).map(|view| view.name())
}

/// The node as a candidate, with what blocks disrupting it.
fn candidate(
    cluster: &Cluster,
    claim: &NodeClaim,
    node: &Node,
    pool: &NodePool,
    now: DateTime<Utc>,
) -> (Candidate, Option<Blocker>) {
    let node_name = node.name_any();
    let pods: Vec<&CachedPod> = cluster.pods.get(node_name.as_str()).cloned().unwrap_or_default();
    let evicted: Vec<&CachedPod> = pods.into_iter().filter(|p| evictable(&p.metadata, p.phase.as_deref())).collect();
    let node_labels = node.labels();
    let instance_type = node_labels.get(labels::INSTANCE_TYPE).cloned().unwrap_or_default();
    let capacity_type = node_labels.get(labels::CAPACITY_TYPE).cloned().unwrap_or_default();
    let zone = node_labels.get(labels::ZONE);
    let class = &pool.spec.template.spec.node_class_ref.name;
    let price = cluster.instance_types.get(class).and_then(|types| {
        let offerings = &types.iter().find(|t| t.name == instance_type)?.offerings;
        let offering = offerings.iter().find(|o| o.capacity_type == capacity_type && Some(&o.zone) == zone)?;
        Some(offering.price)
    });
    let cost: f64 = evicted.iter().map(|p| pod_cost(&p.metadata, p.priority)).sum::<f64>() * lifetime_left(claim, now);
    let blocker = blocker(claim, node.annotations(), &evicted, cluster.budgets);
    let candidate = Candidate {
        claim: claim.name_any(),
        node: node_name,
        pool: pool.name_any(),
        instance_type,
        capacity_type,
        price,
        cost,
        pods: evicted.len(),
    };
    (candidate, blocker)
}

/// What evicting one pod costs: 1, raised by its `pod-deletion-cost` annotation (2^27 per unit,
/// so the annotation's whole range moves it by at most ±16) and its priority (2^25 per unit:
/// system-critical pods weigh about 60), bounded to [-10, 10] so no single pod dominates a node.
/// Karpenter weighs pods the same way, so nodes are chosen in the order its users expect.
pub fn pod_cost(metadata: &ObjectMeta, priority: Option<i32>) -> f64 {
    let deletion_cost = metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::POD_DELETION_COST))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let cost = 1.0 + f64::from(deletion_cost) / 2f64.powi(27) + f64::from(priority.unwrap_or(0)) / 2f64.powi(25);
    cost.clamp(-10.0, 10.0)
}

/// The share of the claim's lifetime (`expireAfter`) still ahead, 1 without one: a node about
/// to expire costs little to disrupt, its pods move soon anyway.
fn lifetime_left(claim: &NodeClaim, now: DateTime<Utc>) -> f64 {
    let (Some(lifetime), Some(created)) =
        (claim.spec.expire_after.and_then(|e| e.duration()), claim.metadata.creation_timestamp.as_ref().and_then(utc))
    else {
        return 1.0;
    };
    let total = lifetime.delta().num_seconds().max(1) as f64;
    let lived = (now - created).num_seconds().max(0) as f64;
    ((total - lived) / total).clamp(0.0, 1.0)
}

/// Whether the claim's Initialized condition turned true at or before `before`.
pub fn initialized_before(claim: &NodeClaim, before: DateTime<Utc>) -> bool {
    let initialized = claim
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == condition::INITIALIZED && c.status == condition::TRUE);
    let since = initialized.and_then(|c| utc(&c.last_transition_time));
    since.is_some_and(|since| since <= before)
}

/// What forbids disrupting the node, the first found.
fn blocker(
    claim: &NodeClaim,
    node_annotations: &BTreeMap<String, String>,
    pods: &[&CachedPod],
    budgets: &[Arc<PodDisruptionBudget>],
) -> Option<Blocker> {
    if labels::do_not_disrupt(claim.annotations()) || labels::do_not_disrupt(node_annotations) {
        return Some(Blocker::NodeDoNotDisrupt);
    }
    let key = |pod: &CachedPod| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    for pod in pods {
        if labels::do_not_disrupt(pod.annotations()) {
            return Some(Blocker::PodDoNotDisrupt(key(pod)));
        }
        let namespace = pod.namespace();
        let selecting: Vec<&Arc<PodDisruptionBudget>> = budgets
            .iter()
            .filter(|b| b.namespace() == namespace)
            .filter(|b| {
                // A budget without a selector selects nothing; an empty one, every pod.
                let selector = b.spec.as_ref().and_then(|s| s.selector.as_ref());
                selector.is_some_and(|s| Selector::from_label_selector(s).matches(pod.labels()))
            })
            .collect();
        let exhausted =
            selecting.iter().find(|b| b.status.as_ref().is_none_or(|s| s.disruptions_allowed.unwrap_or(0) < 1));
        if let Some(budget) = exhausted.or(selecting.get(1)) {
            return Some(Blocker::PodDisruptionBudget { pod: key(pod), budget: budget.name_any() });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        }
    }

    /// A node named `name` and its NodeClaim, which began going `going_seconds_ago` if given.
    fn going_node(name: &str, going_seconds_ago: Option<i64>) -> (Arc<Node>, Arc<NodeClaim>) {
        let deleted = going_seconds_ago.map_or(String::new(), |ago| {
            format!(
                ", deletionTimestamp: '{}', finalizers: [stoker.dev/termination]",
                (Utc::now() - TimeDelta::seconds(ago)).to_rfc3339()
            )
        });
        let node =
            serde_saphyr::from_str(&format!("metadata: {{name: {name}}}\nspec: {{providerID: 'aws:///a/{name}'}}"));
        let claim = serde_saphyr::from_str(&format!(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}{deleted}}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n  resources: {{requests: {{cpu: '1'}}}}\nstatus: {{providerID: 'aws:///a/{name}'}}"
        ));
        (Arc::new(node.expect("a Node")), Arc::new(claim.expect("a NodeClaim")))
    }

    fn pod_on(node: &str) -> Arc<CachedPod> {
        let pod: k8s_openapi::api::core::v1::Pod = serde_saphyr::from_str(&format!(
            "metadata: {{name: on-{node}, namespace: ns}}\nspec: {{nodeName: {node}, containers: [{{name: c}}]}}\nstatus: {{phase: Running}}"
        ))
        .expect("a Pod");
        Arc::new(CachedPod::from(pod))
    }

    #[test]
    fn consolidation_waits_for_a_fresh_drain_with_pods_left() {
        let now = Utc::now();
        let settles = |going: &[(&str, Option<i64>, bool)]| {
            let (nodes, claims): (Vec<_>, Vec<_>) = going.iter().map(|(name, ago, _)| going_node(name, *ago)).unzip();
            let pods: Vec<_> =
                going.iter().filter(|(_, _, with_pod)| *with_pod).map(|(name, _, _)| pod_on(name)).collect();
            let index = crate::state::pods::PodIndex::of(&pods);
            drain_settling(&Nodes::join(&nodes, &claims, &index), now, || false)
        };
        assert_eq!(settles(&[("staying", None, true), ("draining", Some(5), true)]), Some("draining".to_owned()));
        // Its pods are gone and re-created: whatever moves is pending or bound, which the picture
        // shows.
        assert_eq!(settles(&[("staying", None, true), ("drained", Some(5), false)]), None);
        // A drain held up past the settling time (a PodDisruptionBudget) is simulated instead.
        assert_eq!(settles(&[("staying", None, true), ("held", Some(45), true)]), None);
        assert_eq!(settles(&[("staying", None, true)]), None);
    }

    #[test]
    fn consolidation_waits_for_a_fresh_drain_whose_pods_are_still_to_be_re_created() {
        let now = Utc::now();
        let (nodes, claims): (Vec<_>, Vec<_>) = [("staying", None), ("drained", Some(5)), ("long-gone", Some(45))]
            .iter()
            .map(|(n, ago)| going_node(n, *ago))
            .unzip();
        let index = crate::state::pods::PodIndex::of(&[pod_on("staying")]);
        let joined = Nodes::join(&nodes, &claims, &index);
        assert_eq!(drain_settling(&joined, now, || true), Some("drained".to_owned()), "owners short of pods");
        assert_eq!(drain_settling(&joined, now, || false), None, "every replica re-created");
        // Without a fresh drain, an owner short of pods (a scale-out under way) holds nothing,
        // and is not even counted.
        let (nodes, claims): (Vec<_>, Vec<_>) =
            [("staying", None), ("long-gone", Some(45))].iter().map(|(n, ago)| going_node(n, *ago)).unzip();
        let counted = std::cell::Cell::new(false);
        let settling = drain_settling(&Nodes::join(&nodes, &claims, &index), now, || {
            counted.set(true);
            true
        });
        assert_eq!((settling, counted.get()), (None, false));
    }

    #[test]
    fn pods_cost_more_with_priority_and_deletion_cost_within_bounds() {
        assert_eq!(pod_cost(&meta(&[]), None), 1.0);
        assert!(pod_cost(&meta(&[(labels::POD_DELETION_COST, "100000000")]), None) > 1.5);
        assert!(pod_cost(&meta(&[(labels::POD_DELETION_COST, "-100000000")]), None) < 0.5);
        assert_eq!(pod_cost(&meta(&[]), Some(2_000_001_000)), 10.0, "system-node-critical, bounded");
        assert_eq!(pod_cost(&meta(&[(labels::POD_DELETION_COST, "lots")]), Some(i32::MIN)), -10.0);
    }
}
