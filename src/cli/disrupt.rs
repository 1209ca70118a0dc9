//! `stoker disrupt`: the offline consolidation preview. Reads the cluster's objects as
//! `kubectl get nodes,pods,nodeclaims,nodepools,ec2nodeclasses,daemonsets,pdb,namespaces,pvc,pv,storageclasses,nodeoverlays.stoker.dev -A -o yaml` prints
//! them (a `List`, or separate documents), makes the decision the disruption loop would make now
//! with the same code, and prints it: the nodes it would remove, their replacement, the $/h it
//! saves, and why each other candidate is kept. Nothing is touched.
//!
//! Offline, every node whose pool consolidates counts as quiet (its `consolidateAfter` elapsed),
//! and prices come from the catalog snapshot (spot at on-demand), as in `stoker plan`.

use std::{process::ExitCode, sync::Arc};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{CliError, input::Document, plan::instance_types_by_class};
use crate::{
    apis::{EC2NodeClass, NodeOverlay, NodePool},
    cloudprovider::aws::{catalog::Catalog, pricing::PriceBook},
    controllers::disruption::{
        candidates::Cluster,
        consolidation::{Action, Decision},
        decide_consolidation,
    },
    scheduling::solver::Policies,
    state::{
        cache::CachedPod, facts::NodeFactsIndex, gathered::Gathered, input::Snapshot, nodes::Nodes, pods::PodIndex,
    },
};

/// The cluster's objects, as read: what the controller's caches would hold, and the pools and
/// classes.
#[derive(Debug, Default)]
pub struct ClusterObjects {
    pub cluster: Gathered,
    pub pools: Vec<Arc<NodePool>>,
    pub classes: Vec<EC2NodeClass>,
    pub overlays: Vec<NodeOverlay>,
    /// The scheduling policies the decision follows (flags, as the controller's settings).
    pub policies: Policies,
}

/// Adds one object; other kinds are skipped. An error names the document and field.
pub fn add(document: &Document, into: &mut ClusterObjects) -> Result<(), String> {
    let (at, value) = (&document.label, &document.value);
    fn typed<T: DeserializeOwned>(at: &str, value: &Value) -> Result<T, String> {
        serde_path_to_error::deserialize(value).map_err(|e| format!("{at}: {}: {}", e.path(), e.inner()))
    }
    match value.get("kind").and_then(Value::as_str).unwrap_or_default() {
        "Node" => into.cluster.nodes.push(Arc::new(typed(at, value)?)),
        "Pod" => into.cluster.pods.push(Arc::new(CachedPod::from(typed::<Pod>(at, value)?))),
        "NodeClaim" => into.cluster.claims.push(Arc::new(typed(at, value)?)),
        "NodePool" => into.pools.push(Arc::new(typed(at, value)?)),
        "EC2NodeClass" => into.classes.push(typed(at, value)?),
        "NodeOverlay" => into.overlays.push(typed(at, value)?),
        "DaemonSet" => into.cluster.daemonsets.push(typed(at, value)?),
        "PodDisruptionBudget" => into.cluster.budgets.push(Arc::new(typed(at, value)?)),
        "PersistentVolumeClaim" => into.cluster.volumes.add_claim(Arc::new(typed(at, value)?)),
        "PersistentVolume" => into.cluster.volumes.add_volume(Arc::new(typed(at, value)?)),
        "StorageClass" => into.cluster.volumes.add_class(Arc::new(typed(at, value)?)),
        "Namespace" => {
            let namespace: Namespace = typed(at, value)?;
            Arc::make_mut(&mut into.cluster.namespaces).insert(namespace.name_any(), namespace.labels().clone());
        }
        _ => {}
    }
    Ok(())
}

/// The decision, and why each kept candidate is kept (by node).
pub fn preview(objects: &ClusterObjects, catalog: &Catalog, prices: &PriceBook, spot_to_spot: bool) -> Preview {
    let ((decision, kept), warnings, pending) = ask(objects, catalog, prices, |cluster, snapshot, now| {
        decide_consolidation(cluster, snapshot, now, spot_to_spot, |_, _| true)
    });
    Preview { decision, kept, warnings, pending }
}

/// Asks `question` of the objects as the disruption loop would of its caches: the candidates'
/// cluster, the solver's snapshot and the time. Returns the answer, the catalog's warnings and
/// whether pods are pending.
fn ask<R>(
    objects: &ClusterObjects,
    catalog: &Catalog,
    prices: &PriceBook,
    question: impl FnOnce(&Cluster, &Snapshot, DateTime<Utc>) -> R,
) -> (R, Vec<String>, bool) {
    let (instance_types, warnings) = instance_types_by_class(
        objects.pools.iter().map(|p| &**p),
        &objects.classes,
        &objects.overlays,
        catalog,
        prices,
    );
    let gathered = &objects.cluster;
    let index = PodIndex::of(&gathered.pods);
    let facts = NodeFactsIndex::of(&gathered.nodes);
    let joined = Nodes::join(&gathered.nodes, &gathered.claims, &index);
    let by_node = gathered.pods_by_node();
    let cluster = Cluster {
        nodes: &joined,
        pools: &objects.pools,
        pods: &by_node,
        budgets: &gathered.budgets,
        instance_types: &instance_types,
    };
    let snapshot = gathered.snapshot(&index, &facts, &objects.pools, &instance_types, objects.policies);
    (question(&cluster, &snapshot, Utc::now()), warnings, index.any_provisionable())
}

/// What `stoker disrupt` found.
#[derive(Debug)]
pub struct Preview {
    pub decision: Option<Decision>,
    pub kept: Vec<(String, String)>,
    pub warnings: Vec<String>,
    /// Pods are pending: the controller would not consolidate now.
    pub pending: bool,
}

/// The preview as text.
pub fn report(preview: &Preview) -> String {
    let mut out = String::new();
    for warning in &preview.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    if preview.pending {
        out.push_str("note: pods are pending; the controller waits for them before consolidating\n");
    }
    match &preview.decision {
        None => out.push_str("consolidation: nothing to do now\n"),
        Some(decision) => {
            let nodes: Vec<String> = decision
                .candidates
                .iter()
                .map(|c| {
                    format!("{} ({} {}, ${:.4}/h)", c.node, c.instance_type, c.capacity_type, c.price.unwrap_or(0.0))
                })
                .collect();
            out.push_str(&format!("consolidation: {} {}\n", decision.kind(), nodes.join(", ")));
            if let Action::Replace(replacements) = &decision.action {
                for replacement in replacements {
                    let types = replacement.instance_types.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
                    out.push_str(&format!("  replacement: one node of {types} from ${:.4}/h\n", replacement.price));
                }
            }
            out.push_str(&format!("  saves ${:.4}/h\n", decision.savings));
        }
    }
    for (node, why) in &preview.kept {
        out.push_str(&format!("kept {node}: {why}\n"));
    }
    out
}

pub fn run(documents: &[Document], spot_to_spot: bool, policies: Policies) -> Result<ExitCode, CliError> {
    let mut objects = ClusterObjects { policies, ..ClusterObjects::default() };
    for document in documents {
        add(document, &mut objects)
            .map_err(|message| CliError::Invalid { path: document.label.clone().into(), message })?;
    }
    let catalog = Catalog::snapshot();
    let mut prices = PriceBook::snapshot("us-east-1");
    prices.learn_vcpus(&catalog.types);
    print!("{}", report(&preview(&objects, &catalog, &prices, spot_to_spot)));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::disruption::confirm_consolidation;

    /// Every document of `text` added, as `run` adds what it reads.
    fn parse(label: &str, text: &str, into: &mut ClusterObjects) -> Result<(), String> {
        let documents = super::super::input::parse(std::path::Path::new(label), text).map_err(|e| e.to_string())?;
        documents.iter().try_for_each(|document| add(document, into))
    }

    /// m5.2xlarge nodes of pool `general` (name, zone, whether its NodeClaim is being deleted) and
    /// ReplicaSet pods (name, node, CPU, annotations), as a `List`.
    fn listed(nodes: &[(&str, &str, bool)], pods: &[(&str, &str, &str, &str)]) -> String {
        let node = |(name, zone, going): &(&str, &str, bool)| {
            let deleting = if *going {
                ", deletionTimestamp: '2026-01-01T00:10:00Z', finalizers: [stoker.dev/termination]"
            } else {
                ""
            };
            format!(
                "- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {name}\n    labels: {{kubernetes.io/hostname: {name}, kubernetes.io/os: linux, kubernetes.io/arch: amd64, topology.kubernetes.io/zone: {zone}, node.kubernetes.io/instance-type: m5.2xlarge, karpenter.sh/capacity-type: on-demand, stoker.dev/nodepool: general}}\n  spec: {{providerID: 'aws:///{zone}/i-{name}'}}\n  status: {{allocatable: {{cpu: 7910m, memory: 30Gi, pods: '58'}}, conditions: [{{type: Ready, status: 'True'}}]}}\n- apiVersion: stoker.dev/v1alpha1\n  kind: NodeClaim\n  metadata: {{name: claim-{name}, labels: {{stoker.dev/nodepool: general}}{deleting}}}\n  spec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}, resources: {{requests: {{cpu: '1'}}}}}}\n  status: {{providerID: 'aws:///{zone}/i-{name}', nodeName: {name}, conditions: [{{type: Initialized, status: 'True', reason: Initialized, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}}]}}\n"
            )
        };
        let pod = |(name, node, cpu, annotations): &(&str, &str, &str, &str)| {
            format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: {name}, namespace: shop, annotations: {{{annotations}}}, ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: u}}]}}\n  spec: {{nodeName: {node}, containers: [{{name: c, image: i, resources: {{requests: {{cpu: {cpu}, memory: 512Mi}}}}}}]}}\n  status: {{phase: Running}}\n"
            )
        };
        let items: String = nodes.iter().map(node).chain(pods.iter().map(pod)).collect();
        format!(
            "apiVersion: v1\nkind: List\nitems:\n{items}- apiVersion: stoker.dev/v1alpha1\n  kind: NodePool\n  metadata: {{name: general}}\n  spec:\n    template: {{spec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}, requirements: [{{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}]}}}}\n    disruption: {{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 1m, budgets: [{{nodes: '100%'}}]}}\n"
        )
    }

    /// Two m5.2xlarge nodes, each with one 500m pod: one node is enough, and smaller would do.
    fn cluster(extra_pod_annotations: &str) -> String {
        listed(
            &[("a", "us-east-1a", false), ("b", "us-east-1b", false)],
            &[("web-1", "a", "500m", extra_pod_annotations), ("web-2", "b", "500m", "")],
        )
    }

    fn previewed_text(text: &str) -> Preview {
        let mut objects = ClusterObjects::default();
        parse("cluster.yaml", text, &mut objects).expect("parses");
        let catalog = Catalog::snapshot();
        let mut prices = PriceBook::snapshot("us-east-1");
        prices.learn_vcpus(&catalog.types);
        preview(&objects, &catalog, &prices, false)
    }

    fn previewed(extra_pod_annotations: &str) -> Preview {
        previewed_text(&cluster(extra_pod_annotations))
    }

    #[test]
    fn previews_the_consolidation_and_its_saving() {
        let preview = previewed("");
        let decision = preview.decision.as_ref().expect("a decision");
        assert_eq!(decision.candidates.len(), 2, "both nodes go together: {decision:?}");
        assert!(matches!(decision.action, Action::Replace(_)));
        assert!(decision.savings > 0.0);
        let text = report(&preview);
        assert!(text.contains("consolidation: replace"), "{text}");
        assert!(text.contains("saves $"), "{text}");
    }

    #[test]
    fn says_why_a_node_is_kept() {
        let preview = previewed("karpenter.sh/do-not-disrupt: 'true'");
        let text = report(&preview);
        assert!(text.contains("kept a: pod shop/web-1 is annotated do-not-disrupt"), "{text}");
        let decision = preview.decision.as_ref().expect("b alone can still go");
        assert!(decision.candidates.iter().all(|c| c.node == "b"), "{decision:?}");
    }

    #[test]
    fn the_pods_of_a_node_being_drained_are_placed_with_the_candidates() {
        // Node c is going and its 7400m pod is moving: with it staying put, a and b would go
        // for a small node holding their two 500m pods (one fits in the 510m c has left).
        // Counted as moving, it takes the room the decision may count on: a and b are replaced
        // by one node sized for all three pods, and c, already going, is no candidate.
        let text = listed(
            &[("a", "us-east-1a", false), ("b", "us-east-1b", false), ("c", "us-east-1c", true)],
            &[("web-1", "a", "500m", ""), ("web-2", "b", "500m", ""), ("big", "c", "7400m", "")],
        );
        let preview = previewed_text(&text);
        let decision = preview.decision.as_ref().expect("a decision");
        let nodes: Vec<&str> = decision.candidates.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(nodes, ["a", "b"], "{decision:?}");
        let Action::Replace(replacements) = &decision.action else { panic!("{decision:?}") };
        let [replacement] = &replacements[..] else { panic!("{replacements:?}") };
        assert_eq!(replacement.pods, ["shop/big", "shop/web-1", "shop/web-2"], "{replacement:?}");
        assert_eq!(replacement.requests.get("cpu"), 8400);
    }

    #[test]
    fn a_decision_no_longer_holding_says_why() {
        let objects = |text: &str| {
            let mut objects = ClusterObjects::default();
            parse("cluster.yaml", text, &mut objects).expect("parses");
            objects
        };
        let catalog = Catalog::snapshot();
        let mut prices = PriceBook::snapshot("us-east-1");
        prices.learn_vcpus(&catalog.types);
        let confirm = |text: &str, decision: &Decision| {
            ask(&objects(text), &catalog, &prices, |cluster, snapshot, now| {
                confirm_consolidation(cluster, snapshot, now, false, |_, _| true, decision)
            })
            .0
        };
        let decision = previewed("").decision.expect("a and b replaced by one small node");
        let confirmed = confirm(&cluster(""), &decision).expect("nothing changed: it holds");
        assert_eq!(confirmed.candidates, decision.candidates);
        let why = confirm(&cluster("karpenter.sh/do-not-disrupt: 'true'"), &decision).unwrap_err();
        assert_eq!(why, "node a: pod shop/web-1 is annotated do-not-disrupt");
        // A node with room joined: their pods now fit there, a different decision.
        let joined = listed(
            &[("a", "us-east-1a", false), ("b", "us-east-1b", false), ("c", "us-east-1c", false)],
            &[("web-1", "a", "500m", ""), ("web-2", "b", "500m", "")],
        );
        let why = confirm(&joined, &decision).unwrap_err();
        assert_eq!(why, "its nodes now call for a delete instead");
        let going = listed(&[("a", "us-east-1a", true), ("b", "us-east-1b", false)], &[("web-2", "b", "500m", "")]);
        let why = confirm(&going, &decision).unwrap_err();
        assert_eq!(why, "node a is no longer a candidate: its pods changed, or it is going");
    }

    #[test]
    fn a_malformed_object_names_where() {
        let mut objects = ClusterObjects::default();
        let error =
            parse("c.yaml", "kind: Node\nmetadata: {name: node-a}\nspec: {taints: 1}\n", &mut objects).unwrap_err();
        assert!(error.starts_with("c.yaml#1: spec.taints"), "{error}");
    }
}
