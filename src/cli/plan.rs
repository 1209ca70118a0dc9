//! `stoker plan`: the offline what-if. Reads NodePools, EC2NodeClasses, DaemonSets and workloads
//! (Pods, Deployments, ReplicaSets, StatefulSets, Jobs) from files, runs the same scheduling
//! simulation the controller runs against the instance catalog snapshot (or a given one), and
//! prints the NodeClaims it would open, their cost, and the pods nothing can host.
//!
//! Offline there are no subnets and no live spot prices: every zone of the catalog is
//! available, and spot is priced at on-demand (the documented rule before spot prices load).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    process::ExitCode,
    sync::Arc,
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim},
    storage::v1::StorageClass,
};
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    CliError,
    input::{self, Document},
    validate,
};
use crate::{
    apis::{EC2NodeClass, NodeOverlay, NodePool},
    cloudprovider::aws::{
        catalog::Catalog, launchtemplate::node_settings, pricing::PriceBook, unavailable::UnavailableOfferings,
    },
    scheduling::{
        catalog::InstanceType,
        inputs::{Workload, pool_templates},
        lower_bound::plan_lower_bound,
        overlays,
        pod::{NamespaceLabels, PodInfo},
        solver::{Input, Plan, Policies, Sizing, solve},
    },
    state::volumes::VolumeTopology,
};

/// What the files hold.
#[derive(Debug, Default)]
pub struct Manifests {
    pub pools: Vec<NodePool>,
    pub classes: Vec<EC2NodeClass>,
    pub daemonsets: Vec<DaemonSet>,
    pub workloads: Vec<Workload>,
    /// Kinds the planner ignores, for the summary line.
    pub ignored: Vec<String>,
    /// The scheduling policies the plan follows (flags, as the controller's settings).
    pub policies: Policies,
    /// Labels of the Namespaces given, for affinity terms that select namespaces.
    pub namespaces: NamespaceLabels,
    /// Claims, volumes and classes given, which place pods with volumes.
    pub volume_claims: Vec<PersistentVolumeClaim>,
    pub volumes: Vec<PersistentVolume>,
    pub storage_classes: Vec<StorageClass>,
    /// The user's prices and resources for instance types.
    pub overlays: Vec<NodeOverlay>,
}

/// Adds one document; an error names the document, field path and problem.
pub fn add(document: &Document, into: &mut Manifests) -> Result<(), String> {
    let value = &document.value;
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
    let at = format!("{} ({})", document.label, document.describe());
    if let validate::Verdict::Invalid(problems) = validate::check_document(value) {
        return Err(format!("{at}: {}", problems.join("; ")));
    }
    fn typed<T: DeserializeOwned>(at: &str, value: &Value) -> Result<T, String> {
        serde_path_to_error::deserialize(value).map_err(|e| format!("{at}: {}: {}", e.path(), e.inner()))
    }
    match kind {
        "NodePool" => into.pools.push(typed(&at, value)?),
        "EC2NodeClass" => into.classes.push(typed(&at, value)?),
        "NodeOverlay" => into.overlays.push(typed(&at, value)?),
        "DaemonSet" => into.daemonsets.push(typed(&at, value)?),
        "Pod" => into.workloads.push(Workload::Pod(Box::new(typed(&at, value)?))),
        "Deployment" => into.workloads.push(Workload::Deployment(Box::new(typed(&at, value)?))),
        "ReplicaSet" => into.workloads.push(Workload::ReplicaSet(Box::new(typed(&at, value)?))),
        "StatefulSet" => into.workloads.push(Workload::StatefulSet(Box::new(typed(&at, value)?))),
        "Job" => into.workloads.push(Workload::Job(Box::new(typed(&at, value)?))),
        "Namespace" => {
            let namespace: Namespace = typed(&at, value)?;
            into.namespaces.insert(namespace.name_any(), namespace.labels().clone());
        }
        "PersistentVolumeClaim" => into.volume_claims.push(typed(&at, value)?),
        "PersistentVolume" => into.volumes.push(typed(&at, value)?),
        "StorageClass" => into.storage_classes.push(typed(&at, value)?),
        "" => return Err(format!("{at}: kind: missing")),
        _ => into.ignored.push(document.describe()),
    }
    Ok(())
}

/// The claims, volumes and classes given, with the claims the StatefulSets given would create
/// (a claim given by name replaces the one its StatefulSet would create).
fn volume_topology(manifests: &Manifests) -> VolumeTopology {
    let given: HashSet<(Option<&str>, Option<&str>)> =
        manifests.volume_claims.iter().map(|c| (c.metadata.namespace.as_deref(), c.metadata.name.as_deref())).collect();
    let created = manifests
        .workloads
        .iter()
        .flat_map(Workload::claims)
        .filter(|c| !given.contains(&(c.metadata.namespace.as_deref(), c.metadata.name.as_deref())));
    let claims: Vec<Arc<PersistentVolumeClaim>> =
        manifests.volume_claims.iter().cloned().chain(created).map(Arc::new).collect();
    VolumeTopology::new(
        claims,
        manifests.volumes.iter().cloned().map(Arc::new),
        manifests.storage_classes.iter().cloned().map(Arc::new),
    )
}

/// One NodeClaim of the plan, as reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNode {
    pub nodepool: String,
    pub instance_types: Vec<String>,
    pub capacity_type: String,
    pub zone: String,
    pub price_per_hour: f64,
    pub pods: Vec<String>,
    /// How widely its instance types were chosen (exotic types only when nothing else fits).
    pub sizing: Sizing,
}

/// The plan with what a reader needs to judge it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub nodes: Vec<PlannedNode>,
    pub unschedulable: Vec<(String, String)>,
    pub pods: usize,
    pub price_per_hour: f64,
    /// No plan can cost less than this (see `scheduling::lower_bound`).
    pub lower_bound_per_hour: f64,
    pub warnings: Vec<String>,
}

/// Plans the manifests against a catalog.
pub fn plan(manifests: &Manifests, catalog: &Catalog, prices: &PriceBook) -> Result<Report, String> {
    if manifests.pools.is_empty() {
        return Err("no NodePool in the input: a plan needs at least one".into());
    }
    let (types_by_class, mut warnings) =
        instance_types_by_class(&manifests.pools, &manifests.classes, &manifests.overlays, catalog, prices);
    let pools = pool_templates(&manifests.pools, &types_by_class, &manifests.daemonsets, &HashMap::new());
    if !pools.skipped.is_empty() {
        return Err(pools.skipped.join("; "));
    }
    let volumes = volume_topology(manifests);
    let mut pods = Vec::new();
    for workload in &manifests.workloads {
        for pod in workload.pods() {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let info = Arc::new(PodInfo::from_pod(&pod).map_err(|e| format!("pod {name}: {e}"))?);
            pods.push(volumes.constrain(&info).unwrap_or_else(|error| {
                warnings.push(format!("pod {name}: {error}; planned without its volumes' zones"));
                info
            }));
        }
    }
    let pod_count = pods.len();
    let input = Input {
        pods,
        pools: pools.templates,
        instance_types: pools.instance_types,
        policies: manifests.policies,
        namespaces: Arc::new(manifests.namespaces.clone()),
        ..Default::default()
    };
    let result = solve(&input);
    let nodes = planned_nodes(&result, &input.instance_types);
    let price_per_hour = nodes.iter().map(|n| n.price_per_hour).sum();
    let lower_bound_per_hour = plan_lower_bound(&input, &result);
    Ok(Report {
        nodes,
        unschedulable: result.unschedulable,
        pods: pod_count,
        price_per_hour,
        lower_bound_per_hour,
        warnings,
    })
}

/// The instance types of each node class the pools use, offline: every zone of the catalog,
/// both architectures, the class's kubelet settings shaping allocatable, the overlays laid over
/// them (an invalid overlay is left out, as the controller leaves it out). With a warning for
/// each class not in the input (default kubelet settings assumed).
pub fn instance_types_by_class<'a>(
    pools: impl IntoIterator<Item = &'a NodePool>,
    classes: &[EC2NodeClass],
    overlays: &[NodeOverlay],
    catalog: &Catalog,
    prices: &PriceBook,
) -> (BTreeMap<String, std::sync::Arc<[InstanceType]>>, Vec<String>) {
    let overlays = overlays::in_effect(overlays);
    // Offline there are no subnets to tell zone IDs: every zone the catalog knows, IDs unknown.
    let zones: BTreeMap<String, String> =
        catalog.zones.values().flatten().map(|zone| (zone.clone(), String::new())).collect();
    let arches: BTreeSet<String> = ["amd64", "arm64"].map(String::from).into();
    let unavailable = UnavailableOfferings::new(std::time::Duration::ZERO);
    let now = std::time::Instant::now();
    let mut warnings = Vec::new();
    let mut types_by_class: BTreeMap<String, std::sync::Arc<[InstanceType]>> = BTreeMap::new();
    for pool in pools {
        let class_name = &pool.spec.template.spec.node_class_ref.name;
        if types_by_class.contains_key(class_name) {
            continue;
        }
        let class = classes.iter().find(|c| c.metadata.name.as_deref() == Some(class_name.as_str()));
        if class.is_none() {
            warnings.push(format!(
                "NodePool {} uses EC2NodeClass {class_name}, which is not in the input: default kubelet settings assumed",
                pool.metadata.name.as_deref().unwrap_or_default()
            ));
        }
        let node = class.map(node_settings).unwrap_or_default();
        let mut types: Vec<_> = catalog.instance_types(&zones, &arches, prices, &unavailable, now, &node).collect();
        overlays::apply(&mut types, &overlays);
        types_by_class.insert(class_name.clone(), types.into());
    }
    (types_by_class, warnings)
}

fn planned_nodes(plan: &Plan, instance_types: &[InstanceType]) -> Vec<PlannedNode> {
    let by_name: BTreeMap<&str, &InstanceType> = instance_types.iter().map(|t| (t.name.as_str(), t)).collect();
    plan.new_claims
        .iter()
        .map(|claim| {
            let cheapest = claim
                .instance_types
                .iter()
                .filter_map(|name| by_name.get(name.as_str()))
                .filter_map(|t| t.cheapest_offering(&claim.requirements))
                .min_by(|a, b| a.price.total_cmp(&b.price));
            PlannedNode {
                nodepool: claim.nodepool.clone(),
                instance_types: claim.instance_types.clone(),
                capacity_type: cheapest.map(|o| o.capacity_type.clone()).unwrap_or_default(),
                zone: cheapest.map(|o| o.zone.clone()).unwrap_or_default(),
                price_per_hour: claim.price,
                pods: claim.pods.clone(),
                sizing: claim.sizing,
            }
        })
        .collect()
}

/// The plan as a table with totals, then the unschedulable pods with reasons.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    for warning in &report.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out.push_str(&format!(
        "{:<6} {:<14} {:<40} {:<10} {:<12} {:>9} {:>5}  {}\n",
        "NODE", "NODEPOOL", "INSTANCE TYPES (cheapest first)", "CAPACITY", "ZONE", "$/HOUR", "PODS", "SIZING"
    ));
    for (index, node) in report.nodes.iter().enumerate() {
        let mut types = node.instance_types.iter().take(3).cloned().collect::<Vec<_>>().join(",");
        if node.instance_types.len() > 3 {
            types.push_str(&format!(" +{}", node.instance_types.len() - 3));
        }
        out.push_str(&format!(
            "{:<6} {:<14} {:<40} {:<10} {:<12} {:>9.4} {:>5}  {}\n",
            index + 1,
            node.nodepool,
            types,
            node.capacity_type,
            node.zone,
            node.price_per_hour,
            node.pods.len(),
            node.sizing.label()
        ));
    }
    for (index, node) in report.nodes.iter().enumerate().filter(|(_, node)| node.sizing != Sizing::BestValue) {
        out.push_str(&format!("node {}: {}\n", index + 1, node.sizing.describe()));
    }
    let placed: usize = report.nodes.iter().map(|n| n.pods.len()).sum();
    let ratio =
        if report.lower_bound_per_hour > 0.0 { report.price_per_hour / report.lower_bound_per_hour } else { 1.0 };
    out.push_str(&format!(
        "\n{} nodes, {placed} of {} pods placed, ${:.4}/hour (lower bound ${:.4}/hour, ratio {ratio:.2})\n",
        report.nodes.len(),
        report.pods,
        report.price_per_hour,
        report.lower_bound_per_hour
    ));
    if !report.unschedulable.is_empty() {
        out.push_str(&format!("\n{} pods cannot be scheduled:\n", report.unschedulable.len()));
        for (pod, reason) in &report.unschedulable {
            out.push_str(&format!("  {pod}: {reason}\n"));
        }
    }
    out
}

/// The output formats of `stoker plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn run(
    documents: &[Document],
    catalog: Option<&std::path::Path>,
    output: Output,
    policies: Policies,
) -> Result<ExitCode, CliError> {
    let mut manifests = Manifests { policies, ..Manifests::default() };
    for document in documents {
        add(document, &mut manifests)
            .map_err(|message| CliError::Invalid { path: document.label.clone().into(), message })?;
    }
    let catalog = match catalog {
        Some(path) => {
            let text = input::read(path)?;
            crate::cloudprovider::aws::catalog::parse_snapshot(&text)
                .map_err(|e| CliError::Invalid { path: path.to_owned(), message: e.to_string() })?
        }
        None => Catalog::snapshot(),
    };
    let mut prices = PriceBook::snapshot("us-east-1");
    prices.learn_vcpus(&catalog.types);
    let report = plan(&manifests, &catalog, &prices)
        .map_err(|message| CliError::Invalid { path: "the manifests".into(), message })?;
    match output {
        Output::Table => print!("{}", table(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&json_report(&report))?),
    }
    Ok(if report.unschedulable.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(super::exit::UNSCHEDULABLE) })
}

fn json_report(report: &Report) -> Value {
    json!({
        "nodeClaims": report.nodes,
        "unschedulable": report.unschedulable.iter().map(|(pod, reason)| json!({"pod": pod, "reason": reason})).collect::<Vec<_>>(),
        "totals": {
            "nodes": report.nodes.len(),
            "pods": report.pods,
            "pricePerHour": report.price_per_hour,
            "lowerBoundPerHour": report.lower_bound_per_hour,
        },
        "warnings": report.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOLS: &str = r#"
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: spot}
spec:
  weight: 50
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}
---
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: on-demand}
spec:
  weight: 10
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
"#;

    const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, resources: {requests: {cpu: "1", memory: 2Gi}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: huge, namespace: shop}
spec:
  containers: [{name: c, image: x, resources: {requests: {cpu: "1000"}}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
"#;

    /// Every document of `text` added, as `run` adds what it reads.
    fn parse(label: &str, text: &str, into: &mut Manifests) -> Result<(), String> {
        let documents = input::parse(std::path::Path::new(label), text).map_err(|e| e.to_string())?;
        documents.iter().try_for_each(|document| add(document, into))
    }

    /// The committed catalog with its us-east-1 prices, as `run` prices it.
    fn priced_snapshot() -> (Catalog, PriceBook) {
        let catalog = Catalog::snapshot();
        let mut prices = PriceBook::snapshot("us-east-1");
        prices.learn_vcpus(&catalog.types);
        (catalog, prices)
    }

    fn report() -> Report {
        let mut manifests = Manifests::default();
        parse("pools.yaml", POOLS, &mut manifests).expect("pools parse");
        parse("workloads.yaml", WORKLOADS, &mut manifests).expect("workloads parse");
        assert_eq!(manifests.ignored, ["ConfigMap/settings"]);
        let (catalog, prices) = priced_snapshot();
        plan(&manifests, &catalog, &prices).expect("a plan")
    }

    #[test]
    fn plans_the_deployment_on_the_heavier_pool_and_explains_the_rest() {
        let report = report();
        assert_eq!(report.pods, 11);
        assert!(!report.nodes.is_empty());
        assert!(report.nodes.iter().all(|n| n.nodepool == "spot" && n.capacity_type == "spot"));
        let placed: usize = report.nodes.iter().map(|n| n.pods.len()).sum();
        assert_eq!(placed, 10);
        assert!(report.nodes.iter().all(|n| n.instance_types.len() <= 60 && !n.zone.is_empty()));
        assert_eq!(report.unschedulable.len(), 1);
        let (pod, reason) = &report.unschedulable[0];
        assert_eq!(pod, "shop/huge");
        assert!(reason.contains("spot") && reason.contains("on-demand"), "names the pools tried: {reason}");
        assert!(report.price_per_hour >= report.lower_bound_per_hour && report.lower_bound_per_hour > 0.0);
        let text = table(&report);
        assert!(text.contains("10 of 11 pods placed"), "{text}");
        assert!(text.contains("shop/huge:"), "{text}");
        let json = json_report(&report);
        assert_eq!(json["totals"]["pods"], 11);
        assert_eq!(json["unschedulable"][0]["pod"], "shop/huge");
    }

    #[test]
    fn namespaces_and_policies_given_to_the_plan_count() {
        let pods = r#"
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: storage, labels: {app: cache}}
spec:
  containers: [{name: c, image: x, resources: {requests: {cpu: "2"}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  containers: [{name: c, image: x, resources: {requests: {cpu: "1"}}}]
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: cache}}, namespaceSelector: {matchLabels: {team: storage}}}
"#;
        let storage = "apiVersion: v1\nkind: Namespace\nmetadata: {name: storage, labels: {team: storage}}\n";
        let (catalog, prices) = priced_snapshot();
        let planned = |with_namespace: bool, policies: Policies| {
            let mut manifests = Manifests { policies, ..Manifests::default() };
            parse("pools.yaml", POOLS, &mut manifests).expect("pools parse");
            parse("pods.yaml", pods, &mut manifests).expect("pods parse");
            if with_namespace {
                parse("ns.yaml", storage, &mut manifests).expect("namespace parses");
            }
            plan(&manifests, &catalog, &prices).expect("a plan")
        };
        // The web pod's affinity selects the storage namespace only by its labels.
        assert_eq!(planned(false, Policies::default()).unschedulable.len(), 1);
        let together = planned(true, Policies::default());
        assert!(together.unschedulable.is_empty(), "{:?}", together.unschedulable);
        assert_eq!(together.nodes.len(), 1);
        // Ignoring preferences changes nothing required.
        let ignoring =
            Policies { preferences: crate::scheduling::solver::PreferencePolicy::Ignore, ..Policies::default() };
        assert_eq!(planned(true, ignoring).nodes.len(), 1);
    }

    #[test]
    fn a_statefulset_is_planned_where_its_storage_class_provisions() {
        let manifests_text = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: zonal}
provisioner: ebs.csi.aws.com
volumeBindingMode: WaitForFirstConsumer
allowedTopologies: [{matchLabelExpressions: [{key: topology.ebs.csi.aws.com/zone, values: [us-east-1b]}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: data}
spec:
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres, resources: {requests: {cpu: "1"}}}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], storageClassName: zonal, resources: {requests: {storage: 1Gi}}}
"#;
        let mut manifests = Manifests::default();
        parse("pools.yaml", POOLS, &mut manifests).expect("pools parse");
        parse("db.yaml", manifests_text, &mut manifests).expect("parses");
        let (catalog, prices) = priced_snapshot();
        let report = plan(&manifests, &catalog, &prices).expect("a plan");
        assert!(report.unschedulable.is_empty(), "{:?}", report.unschedulable);
        assert!(report.nodes.iter().all(|n| n.zone == "us-east-1b"), "{:?}", report.nodes);
        // Without the class, the claims' class is unknown: planned anyway, with a warning.
        manifests.storage_classes.clear();
        let report = plan(&manifests, &catalog, &prices).expect("a plan");
        assert!(report.warnings.iter().any(|w| w.contains("StorageClass zonal")), "{:?}", report.warnings);
    }

    #[test]
    fn an_overlay_price_flips_the_chosen_type() {
        let pool = r#"
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: node.kubernetes.io/instance-type, operator: In, values: [c5.large, m5.large]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  containers: [{name: c, image: x, resources: {requests: {cpu: "1", memory: 1Gi}}}]
"#;
        let overlay = r#"
apiVersion: stoker.dev/v1alpha1
kind: NodeOverlay
metadata: {name: savings-plan}
spec:
  requirements: [{key: node.kubernetes.io/instance-type, operator: In, values: [m5.large]}]
  price: "0.05"
"#;
        let (catalog, prices) = priced_snapshot();
        let chosen = |overlays: &[&str]| {
            let mut manifests = Manifests::default();
            parse("pool.yaml", pool, &mut manifests).expect("parses");
            for (i, text) in overlays.iter().enumerate() {
                parse(&format!("overlay-{i}.yaml"), text, &mut manifests).expect("parses");
            }
            let report = plan(&manifests, &catalog, &prices).expect("a plan");
            let node = &report.nodes[0];
            (node.instance_types[0].clone(), (node.price_per_hour * 1000.0).round() / 1000.0)
        };
        // c5.large is EC2's cheaper type; the user's m5.large is cheaper still.
        assert_eq!(chosen(&[]), ("c5.large".to_owned(), 0.085));
        assert_eq!(chosen(&[overlay]), ("m5.large".to_owned(), 0.05));
        // An invalid overlay is refused with its field named.
        let mut manifests = Manifests::default();
        let bad = overlay.replace("price: \"0.05\"", "capacity: {cpu: '4'}");
        let error = parse("bad.yaml", &bad, &mut manifests).unwrap_err();
        assert!(error.contains("spec.capacity"), "{error}");
    }

    #[test]
    fn ebs_volumes_a_type_cannot_attach_take_another_node() {
        // Three pods of ten EBS volumes each: CPU for one m5.large, attachments (26) for two pods.
        let mut text = String::from(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {name: general}\nspec:\n  template:\n    spec:\n      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}\n      requirements: [{key: node.kubernetes.io/instance-type, operator: In, values: [m5.large]}, {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}]\n---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: gp3}\nprovisioner: ebs.csi.aws.com\n",
        );
        for pod in 0..3 {
            let mut mounts = Vec::new();
            for volume in 0..10 {
                text.push_str(&format!("---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: d{pod}-{volume}, namespace: db}}\nspec: {{storageClassName: gp3, accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"));
                mounts.push(format!("{{name: v{volume}, persistentVolumeClaim: {{claimName: d{pod}-{volume}}}}}"));
            }
            text.push_str(&format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: db-{pod}, namespace: db}}\nspec:\n  containers: [{{name: c, image: x, resources: {{requests: {{cpu: 100m}}}}}}]\n  volumes: [{}]\n", mounts.join(", ")));
        }
        let mut manifests = Manifests::default();
        parse("db.yaml", &text, &mut manifests).expect("parses");
        let (catalog, prices) = priced_snapshot();
        let report = plan(&manifests, &catalog, &prices).expect("a plan");
        assert!(report.unschedulable.is_empty(), "{:?}", report.unschedulable);
        let pods: Vec<usize> = report.nodes.iter().map(|n| n.pods.len()).collect();
        assert_eq!(pods.len(), 2, "{pods:?}");
    }

    #[test]
    fn malformed_files_name_file_document_and_field() {
        let mut manifests = Manifests::default();
        let bad_pool = "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {name: x}\nspec:\n  weight: 500\n  template: {spec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: d}}}\n";
        let error = parse("pools.yaml", bad_pool, &mut manifests).unwrap_err();
        assert!(error.starts_with("pools.yaml#1 (NodePool/x): "), "{error}");
        assert!(error.contains("spec.weight"), "{error}");
        let bad_pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: many}]}]}\n";
        let error = parse("pods.yaml", bad_pod, &mut manifests).unwrap_err();
        assert!(error.contains("pods.yaml#1 (Pod/p): spec.containers[0].ports[0].containerPort"), "{error}");
        assert!(parse("x.yaml", "a: [", &mut manifests).unwrap_err().contains("not valid YAML"));
        assert!(plan(&Manifests::default(), &Catalog::snapshot(), &PriceBook::default()).is_err());
    }
}
