//! One provisioning decision as the controller makes it when a batch closes: the cluster snapshot
//! turned into the solver's input (`solver_input`, reading the pod index the controller keeps
//! up to date as pod events arrive), then `solve`, on the example NodePools and
//! the real us-east-1 catalog. Shapes: a 1,000-pod burst landing on a cluster that already runs
//! 1,000 pods (the end of `hack/bench-provisioning.sh`), and 500 pending pods on 1,000 nodes with
//! 10,000 bound pods (`hack/bench-memory.sh`). The figures are the batch side of "batch close →
//! first CreateFleet" (target: < 50 ms p99).
//!
//! And one consolidation decision as the disruption loop makes it: candidates, budgets, then the
//! solver run on the cluster without them (several nodes at once by bisection, else one by one),
//! on 100 and 1,000 underutilized nodes running 10,000 pods between them (target: < 500 ms at
//! 1,000 nodes), and on 1,000 full nodes where every candidate is tried and refused.

#[path = "support/real_catalog.rs"]
mod real_catalog;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use stoker::{
    apis::{
        NillableDuration, NodeClaim, NodePool,
        nodepool::{Budget, ConsolidationPolicy},
    },
    controllers::disruption::{candidates::Cluster, decide_consolidation},
    scheduling::{catalog::InstanceType, shapes::Shapes, solver::solve},
    state::{
        cache::CachedPod,
        facts::NodeFactsIndex,
        input::{Snapshot, solver_input},
        nodes::Nodes,
        pods::PodIndex,
    },
};

/// The default EC2NodeClass's types: the real catalog.
fn instance_types() -> BTreeMap<String, Arc<[InstanceType]>> {
    BTreeMap::from([("default".to_owned(), real_catalog::instance_types().into())])
}

fn example_pools() -> Vec<Arc<NodePool>> {
    ["nodepool-spot.yaml", "nodepool-on-demand.yaml"]
        .map(|file| {
            let path = Path::new("examples").join(file);
            let text = std::fs::read_to_string(path).expect("an example NodePool");
            Arc::new(serde_saphyr::from_str(&text).expect("a NodePool"))
        })
        .into()
}

fn node(index: usize) -> Arc<Node> {
    let name = format!("node-{index:04}");
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": format!("us-east-1{}", ["a", "b", "c"][index % 3]),
                "node.kubernetes.io/instance-type": "m5.4xlarge", "karpenter.sh/capacity-type": "spot",
                "stoker.dev/nodepool": "spot"}},
            // Tainted as in hack/bench-memory.sh: the pending pods need new capacity.
            "spec": {"providerID": format!("aws:///us-east-1a/i-{index:017x}"),
                     "taints": [{"key": "scale", "value": "only", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("a Node"),
    )
}

/// A pod of `app` requesting `(cpu, memory)`, bound to `node` or pending (unschedulable), its
/// app spread over zones when `zonal`; its shape shared through `shapes`, as the pod cache does.
fn pod(
    index: usize,
    app: usize,
    node: Option<String>,
    (cpu, memory): (&str, &str),
    zonal: bool,
    shapes: &mut Shapes,
) -> Arc<CachedPod> {
    let status = match &node {
        Some(_) => json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]}),
        None => json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}),
    };
    Arc::new(CachedPod::new(
        serde_json::from_value::<Pod>(json!({
            "metadata": {"name": format!("pod-{index:05}"), "namespace": "default", "uid": format!("uid-{index}"),
                         "resourceVersion": "1", "labels": {"app": format!("app-{app}")}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                     "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                     "topologySpreadConstraints": if zonal { json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": format!("app-{app}")}}}]) }
                        else { json!(null) }},
            "status": status
        }))
        .expect("a Pod"),
        shapes,
    ))
}

/// Small pods: 100m and 128Mi.
const SMALL: (&str, &str) = ("100m", "128Mi");

/// `nodes` nodes running `bound` pods of `requests` between them, and `pending` small
/// unschedulable pods.
fn cluster(
    nodes: usize,
    bound: usize,
    pending: usize,
    requests: (&str, &str),
    zonal: bool,
) -> (Vec<Arc<Node>>, Vec<Arc<CachedPod>>) {
    let node_list: Vec<Arc<Node>> = (0..nodes).map(node).collect();
    let mut shapes = Shapes::default();
    let mut pods: Vec<Arc<CachedPod>> = (0..bound)
        .map(|i| pod(i, i % 50, Some(format!("node-{:04}", i % nodes)), requests, zonal, &mut shapes))
        .collect();
    pods.extend((bound..bound + pending).map(|i| pod(i, 999, None, SMALL, false, &mut shapes)));
    (node_list, pods)
}

fn batch(c: &mut Criterion) {
    let instance_types = instance_types();
    let pools = example_pools();
    let mut group = c.benchmark_group("batch");
    group.sample_size(20);
    for (nodes, bound, pending) in [(10, 1_000, 1_000), (1_000, 10_000, 500)] {
        let (node_list, pods) = cluster(nodes, bound, pending, SMALL, false);
        // The controller keeps the index as pod events arrive; built here once, outside the
        // timing, and reported for scale.
        let indexed = Instant::now();
        let index = PodIndex::of(&pods);
        let facts = NodeFactsIndex::of(&node_list);
        println!("index of {} pods built in {:.1} ms", pods.len(), indexed.elapsed().as_secs_f64() * 1e3);
        let state = Snapshot {
            pods: &index,
            facts: &facts,
            nodes: &node_list,
            claims: &[],
            pools: &pools,
            daemonsets: &[],
            instance_types: &instance_types,
            policies: Default::default(),
            namespaces: Default::default(),
            volumes: &Default::default(),
            expected_pods: &[],
            virtual_pods: &[],
        };
        // One timed run outside criterion, for the figures at a glance.
        let started = Instant::now();
        let prepared = solver_input(&state);
        let prepared_at = Instant::now();
        let plan = solve(&prepared.input);
        println!(
            "batch nodes={nodes} bound={bound} pending={pending}: solver_input_ms={:.1} solve_ms={:.1} new_claims={} skipped={}",
            (prepared_at - started).as_secs_f64() * 1e3,
            prepared_at.elapsed().as_secs_f64() * 1e3,
            plan.new_claims.len(),
            prepared.skipped.len(),
        );
        let id = format!("{nodes}n-{bound}b-{pending}p");
        group
            .bench_with_input(BenchmarkId::new("solver_input", &id), &state, |b, state| b.iter(|| solver_input(state)));
        group.bench_with_input(BenchmarkId::new("solver_input+solve", &id), &state, |b, state| {
            b.iter(|| solve(&solver_input(state).input))
        });
    }
    group.finish();
}

/// The NodeClaim behind `node`, initialized long ago.
fn claim_of(node: &Node) -> Arc<NodeClaim> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let id = node.spec.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default();
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": format!("claim-{name}"), "labels": {"stoker.dev/nodepool": "spot"}},
            "spec": {"nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"},
                     "resources": {"requests": {"cpu": "1"}}},
            "status": {"providerID": id, "nodeName": name, "conditions": [{"type": "Initialized", "status": "True",
                       "reason": "Initialized", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .expect("a NodeClaim"),
    )
}

fn consolidation(c: &mut Criterion) {
    let instance_types = instance_types();
    let pools: Vec<Arc<NodePool>> = example_pools()
        .into_iter()
        .map(|pool| {
            let mut pool = (*pool).clone();
            pool.spec.disruption.consolidation_policy = ConsolidationPolicy::WhenEmptyOrUnderutilized;
            pool.spec.disruption.consolidate_after = NillableDuration::after(stoker::apis::Duration::from_secs(0));
            // Every node may go: the work measured is the decision's, not a budget's refusal.
            pool.spec.disruption.budgets =
                vec![Budget { nodes: "100%".into(), schedule: None, duration: None, reasons: vec![] }];
            Arc::new(pool)
        })
        .collect();
    let mut group = c.benchmark_group("consolidation");
    group.sample_size(10);
    // Underutilized: 10,000 small pods, so nodes go together or one replaces many. Full: ten pods
    // of 1.5 CPU and 6 GiB fill each node and spot-to-spot is off, so every multi-node attempt
    // and then every node alone is tried and refused (the single-node worst case); full-zonal is
    // the same with every app spread over zones, so each question counts the bound pods.
    for (nodes, requests, spot_to_spot, shape) in [
        (100, SMALL, true, "underutilized"),
        (1_000, SMALL, true, "underutilized"),
        (1_000, ("1500m", "6Gi"), false, "full"),
        (1_000, ("1500m", "6Gi"), false, "full-zonal"),
    ] {
        // Untainted nodes: any of them can take the others' pods.
        let (node_list, pods) = cluster(nodes, 10_000, 0, requests, shape == "full-zonal");
        let node_list: Vec<Arc<Node>> = node_list
            .into_iter()
            .map(|node| {
                let mut node = (*node).clone();
                node.spec.as_mut().expect("a spec").taints = None;
                Arc::new(node)
            })
            .collect();
        let claims: Vec<Arc<NodeClaim>> = node_list.iter().map(|n| claim_of(n)).collect();
        let index = PodIndex::of(&pods);
        let facts = NodeFactsIndex::of(&node_list);
        let joined = Nodes::join(&node_list, &claims, &index);
        let mut by_node: std::collections::HashMap<&str, Vec<&CachedPod>> = std::collections::HashMap::new();
        for pod in &pods {
            by_node.entry(pod.node_name.as_deref().expect("bound")).or_default().push(pod);
        }
        let cluster =
            Cluster { nodes: &joined, pools: &pools, pods: &by_node, budgets: &[], instance_types: &instance_types };
        let snapshot = Snapshot {
            pods: &index,
            facts: &facts,
            nodes: &node_list,
            claims: &claims,
            pools: &pools,
            daemonsets: &[],
            instance_types: &instance_types,
            policies: Default::default(),
            namespaces: Default::default(),
            volumes: &Default::default(),
            expected_pods: &[],
            virtual_pods: &[],
        };
        let now = chrono::Utc::now();
        let decide = || decide_consolidation(&cluster, &snapshot, now, spot_to_spot, |_, _| true);
        let started = Instant::now();
        let (decision, kept) = decide();
        println!(
            "consolidation {shape} nodes={nodes} pods=10000: decision_ms={:.1} action={} candidates={} savings_per_hour={:.3} kept={} (first: {:?})",
            started.elapsed().as_secs_f64() * 1e3,
            decision.as_ref().map_or("none", |d| d.kind()),
            decision.as_ref().map_or(0, |d| d.candidates.len()),
            decision.as_ref().map_or(0.0, |d| d.savings),
            kept.len(),
            kept.first(),
        );
        group.bench_function(BenchmarkId::new(format!("decision-{shape}"), format!("{nodes}n-10000p")), |b| {
            b.iter(decide)
        });
    }
    group.finish();
}

criterion_group!(benches, batch, consolidation);
criterion_main!(benches);
