//! `stoker disrupt`: the offline consolidation preview. Reads the cluster's objects as
//! `kubectl get nodes,pods,nodeclaims,nodepools,ec2nodeclasses,daemonsets,pdb,namespaces,pvc,pv,storageclasses,nodeoverlays.stoker.dev -A -o yaml` prints
//! them (a `List`, or separate documents), makes the decision the disruption loop would make now
//! with the same code, and prints it: the nodes it would remove, their replacement, the $/h it
//! saves, and why each other candidate is kept. Nothing is touched.
//!
//! Offline, every node whose pool consolidates counts as quiet (its `consolidateAfter` elapsed),
//! and prices come from the catalog snapshot (spot at on-demand), as in `stoker plan`.

use std::{process::ExitCode, sync::Arc};

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
    state::{cache::CachedPod, facts::NodeFactsIndex, gathered::Gathered, nodes::Nodes, pods::PodIndex},
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
    let now = chrono::Utc::now();
    let (decision, kept) = decide_consolidation(&cluster, &snapshot, now, spot_to_spot, |_, _| true, None);
    Preview { decision, kept, warnings, pending: index.any_provisionable() }
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
            if let Action::Replace(replacement) = &decision.action {
                let types = replacement.instance_types.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
                out.push_str(&format!("  replacement: one node of {types} from ${:.4}/h\n", replacement.price));
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

    /// Every document of `text` added, as `run` adds what it reads.
    fn parse(label: &str, text: &str, into: &mut ClusterObjects) -> Result<(), String> {
        let documents = super::super::input::parse(std::path::Path::new(label), text).map_err(|e| e.to_string())?;
        documents.iter().try_for_each(|document| add(document, into))
    }

    /// Two m5.2xlarge nodes, each with one 500m pod: one node is enough, and smaller would do.
    fn cluster(extra_pod_annotations: &str) -> String {
        let node = |name: &str, zone: &str| {
            format!(
                "- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {name}\n    labels: {{kubernetes.io/hostname: {name}, kubernetes.io/os: linux, kubernetes.io/arch: amd64, topology.kubernetes.io/zone: {zone}, node.kubernetes.io/instance-type: m5.2xlarge, karpenter.sh/capacity-type: on-demand, stoker.dev/nodepool: general}}\n  spec: {{providerID: 'aws:///{zone}/i-{name}'}}\n  status: {{allocatable: {{cpu: 7910m, memory: 30Gi, pods: '58'}}, conditions: [{{type: Ready, status: 'True'}}]}}\n- apiVersion: stoker.dev/v1alpha1\n  kind: NodeClaim\n  metadata: {{name: claim-{name}, labels: {{stoker.dev/nodepool: general}}}}\n  spec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}, resources: {{requests: {{cpu: '1'}}}}}}\n  status: {{providerID: 'aws:///{zone}/i-{name}', nodeName: {name}, conditions: [{{type: Initialized, status: 'True', reason: Initialized, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}}]}}\n"
            )
        };
        let pod = |name: &str, node: &str, annotations: &str| {
            format!(
                "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: {name}, namespace: shop, annotations: {{{annotations}}}, ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: u}}]}}\n  spec: {{nodeName: {node}, containers: [{{name: c, image: i, resources: {{requests: {{cpu: 500m, memory: 512Mi}}}}}}]}}\n  status: {{phase: Running}}\n"
            )
        };
        format!(
            "apiVersion: v1\nkind: List\nitems:\n{}{}{}{}- apiVersion: stoker.dev/v1alpha1\n  kind: NodePool\n  metadata: {{name: general}}\n  spec:\n    template: {{spec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}, requirements: [{{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}]}}}}\n    disruption: {{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 1m, budgets: [{{nodes: '100%'}}]}}\n",
            node("a", "us-east-1a"),
            node("b", "us-east-1b"),
            pod("web-1", "a", extra_pod_annotations),
            pod("web-2", "b", ""),
        )
    }

    fn previewed(extra_pod_annotations: &str) -> Preview {
        let mut objects = ClusterObjects::default();
        parse("cluster.yaml", &cluster(extra_pod_annotations), &mut objects).expect("parses");
        assert_eq!((objects.cluster.nodes.len(), objects.cluster.claims.len(), objects.cluster.pods.len()), (2, 2, 2));
        let catalog = Catalog::snapshot();
        let mut prices = PriceBook::snapshot("us-east-1");
        prices.learn_vcpus(&catalog.types);
        preview(&objects, &catalog, &prices, false)
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
    fn a_malformed_object_names_where() {
        let mut objects = ClusterObjects::default();
        let error =
            parse("c.yaml", "kind: Node\nmetadata: {name: node-a}\nspec: {taints: 1}\n", &mut objects).unwrap_err();
        assert!(error.starts_with("c.yaml#1: spec.taints"), "{error}");
    }
}
