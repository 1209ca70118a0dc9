use std::{collections::BTreeMap, sync::Arc, time::Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;
// What the provisioner makes of a plan: the in-flight claims these tests feed back.
use crate::controllers::provisioner::snapshot::nodeclaim_for;
use crate::state::{
    cache::CachedPod,
    pods::{is_provisionable, scheduling_wait},
};
use crate::{
    cloudprovider::aws::{catalog::Catalog, pricing::PriceBook, unavailable::UnavailableOfferings},
    scheduling::solver::solve,
};

fn catalog() -> BTreeMap<String, Arc<[InstanceType]>> {
    let catalog = Catalog::snapshot();
    let mut prices = PriceBook::snapshot("us-east-1");
    prices.learn_vcpus(&catalog.types);
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"].map(|zone| (zone.to_owned(), String::new())).into();
    let arches = ["amd64".to_owned()].into();
    let unavailable = UnavailableOfferings::new(std::time::Duration::ZERO);
    let types: Vec<_> =
        catalog.instance_types(&zones, &arches, &prices, &unavailable, Instant::now(), &Default::default()).collect();
    BTreeMap::from([("default".to_owned(), types.into())])
}

fn pool(extra: &str) -> Arc<NodePool> {
    let yaml = format!(
        "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {{name: general, uid: pool-uid}}\nspec:\n{extra}  template:\n    metadata: {{labels: {{team: web}}}}\n    spec:\n      nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n      requirements: [{{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}]\n      startupTaints: [{{key: cni, effect: NoSchedule}}]\n"
    );
    Arc::new(serde_saphyr::from_str(&yaml).expect("a NodePool"))
}

fn pod(name: &str, cpu: &str, status: &str) -> Arc<CachedPod> {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\nspec:\n  containers: [{{name: c, resources: {{requests: {{cpu: '{cpu}', memory: 1Gi}}}}}}]\n{status}"
    );
    Arc::new(serde_saphyr::from_str::<Pod>(&yaml).expect("a Pod").into())
}

const PENDING: &str = "status: {conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable}]}";

fn pending(name: &str, cpu: &str) -> Arc<CachedPod> {
    pod(name, cpu, PENDING)
}

/// Pending and bound pods and pools, with no nodes, NodeClaims or DaemonSets; tests add those
/// with struct update syntax.
/// No kept node facts: every node is parsed on the spot, as a node the watch has not indexed yet.
static NO_FACTS: std::sync::LazyLock<NodeFactsIndex> = std::sync::LazyLock::new(NodeFactsIndex::default);
static NO_VOLUMES: std::sync::LazyLock<VolumeTopology> = std::sync::LazyLock::new(VolumeTopology::default);

fn cluster<'a>(
    pods: &'a PodIndex,
    pools: &'a [Arc<NodePool>],
    instance_types: &'a BTreeMap<String, Arc<[InstanceType]>>,
) -> Snapshot<'a> {
    Snapshot {
        pods,
        nodes: &[],
        facts: &NO_FACTS,
        claims: &[],
        pools,
        daemonsets: &[],
        instance_types,
        policies: Default::default(),
        namespaces: Default::default(),
        volumes: &NO_VOLUMES,
        expected_pods: &[],
        virtual_pods: &[],
    }
}

fn planned(state: &Snapshot) -> crate::scheduling::solver::Plan {
    let prepared = solver_input(state);
    assert!(prepared.skipped.is_empty(), "{:?}", prepared.skipped);
    solve(&prepared.input)
}

#[test]
fn provisionable_pods_are_unschedulable_unbound_unnominated_and_not_daemons() {
    assert!(is_provisionable(&pending("a", "1")));
    assert!(!is_provisionable(&pod("b", "1", "status: {phase: Pending}")), "not yet looked at by the scheduler");
    assert!(!is_provisionable(&pod(
        "c",
        "1",
        "status: {nominatedNodeName: node-1, conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable}]}"
    )));
    let mut daemon = (*pending("d", "1")).clone();
    daemon.metadata.owner_references =
        Some(vec![OwnerReference { kind: "DaemonSet".into(), name: "ds".into(), ..Default::default() }]);
    assert!(!is_provisionable(&daemon));
    let mut bound = (*pending("e", "1")).clone();
    bound.node_name = Some("node-1".into());
    assert!(!is_provisionable(&bound));
}

#[test]
fn pods_covered_by_an_in_flight_nodeclaim_do_not_launch_again() {
    let types = catalog();
    let pools = [pool("")];
    let pods = [pending("a", "1"), pending("b", "1")];
    let index = PodIndex::of(&pods);
    let first = planned(&cluster(&index, &pools, &types));
    let claims: Vec<_> = first
        .new_claims
        .iter()
        .enumerate()
        .map(|(i, planned)| Arc::new(nodeclaim_for(planned, &pools[0], None, &format!("claim{i}"))))
        .collect();
    let state = Snapshot { claims: &claims, ..cluster(&index, &pools, &types) };
    let again = planned(&state);
    assert!(again.new_claims.is_empty(), "{:?}", again.new_claims);
    assert_eq!(again.existing.len(), 2);
    assert!(again.existing.iter().all(|(_, node)| node.starts_with("general-claim")));
}

#[test]
fn a_pod_whose_claim_waits_for_it_gets_a_node_where_its_class_provisions() {
    let types = catalog();
    let pools = [pool("")];
    let with_claim = |name: &str, claim: &str| {
        let yaml = format!(
            "metadata: {{name: {name}, namespace: default}}\nspec:\n  containers: [{{name: c, resources: {{requests: {{cpu: '1'}}}}}}]\n  volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]\n{PENDING}"
        );
        Arc::new(CachedPod::from(serde_saphyr::from_str::<Pod>(&yaml).expect("a Pod")))
    };
    let pods = [with_claim("db-0", "data-db-0"), with_claim("db-1", "missing")];
    let index = PodIndex::of(&pods);
    let claim =
        serde_saphyr::from_str("metadata: {name: data-db-0, namespace: default}\nspec: {storageClassName: zonal}")
            .expect("a claim");
    let class = serde_saphyr::from_str(
        "metadata: {name: zonal}\nprovisioner: ebs.csi.aws.com\nvolumeBindingMode: WaitForFirstConsumer\nallowedTopologies: [{matchLabelExpressions: [{key: topology.ebs.csi.aws.com/zone, values: [us-east-1c]}]}]",
    )
    .expect("a class");
    let volumes = VolumeTopology::new([Arc::new(claim)], [], [Arc::new(class)]);
    let state = Snapshot { volumes: &volumes, ..cluster(&index, &pools, &types) };
    let prepared = solver_input(&state);
    assert_eq!(prepared.skipped, ["pod default/db-1: PersistentVolumeClaim default/missing not found"]);
    let plan = solve(&prepared.input);
    let zone = plan.new_claims[0].requirements.get(labels::ZONE).and_then(|r| r.finite_values());
    assert_eq!(zone, Some(&["us-east-1c".to_owned()][..]));
}

#[test]
fn registered_nodes_offer_what_their_bound_pods_leave() {
    let types = catalog();
    let pools = [pool("")];
    let node: Node = serde_saphyr::from_str(
        "metadata: {name: node-1, labels: {stoker.dev/nodepool: general, team: web, karpenter.sh/capacity-type: on-demand, kubernetes.io/arch: amd64, kubernetes.io/os: linux}}\nspec: {providerID: 'aws:///us-east-1a/i-1', taints: [{key: stoker.dev/unregistered, effect: NoExecute}, {key: node.kubernetes.io/not-ready, effect: NoSchedule}]}\nstatus: {allocatable: {cpu: '4', memory: 16Gi, pods: '58'}}",
    )
    .expect("a Node");
    // Neither stoker's registration taint nor a passing not-ready taint keeps pods off the node.
    let nodes = [Arc::new(node)];
    let busy = pod("busy", "3", "status: {phase: Running}");
    let mut busy = (*busy).clone();
    busy.node_name = Some("node-1".into());
    let pods = [Arc::new(busy), pending("small", "500m"), pending("big", "2")];
    let index = PodIndex::of(&pods);
    let claims: [Arc<NodeClaim>; 1] = [Arc::new(
        serde_saphyr::from_str(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {name: general-a, labels: {stoker.dev/nodepool: general}}\nspec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}, resources: {requests: {cpu: '4'}}}\nstatus: {providerID: 'aws:///us-east-1a/i-1', nodeName: node-1}",
        )
        .expect("a NodeClaim"),
    )];
    let state = Snapshot { nodes: &nodes, claims: &claims, ..cluster(&index, &pools, &types) };
    let plan = planned(&state);
    assert_eq!(plan.existing, [("default/small".to_owned(), "node-1".to_owned())]);
    assert_eq!(plan.new_claims.len(), 1, "the 2-CPU pod does not fit the 1 CPU left");
    assert_eq!(plan.new_claims[0].pods, ["default/big"]);

    // The same node without a NodeClaim naming it: nothing will finish its registration.
    let state = Snapshot { nodes: &nodes, ..cluster(&index, &pools, &types) };
    let plan = planned(&state);
    assert!(plan.existing.is_empty(), "an orphaned unregistered node is no room: {:?}", plan.existing);
}

/// A pod of `name` mounting `volumes` EBS volumes (claims `<name>-<i>`, each bound to a CSI
/// volume), with the topology that knows them.
fn with_ebs_volumes(name: &str, volumes: usize, status: &str, into: &mut VolumeTopology) -> CachedPod {
    let mut mounts = Vec::new();
    for i in 0..volumes {
        let claim = format!("{name}-{i}");
        into.add_claim(Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: {claim}, namespace: default}}\nspec: {{volumeName: pv-{claim}}}"
            ))
            .expect("a claim"),
        ));
        into.add_volume(Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: pv-{claim}}}\nspec: {{csi: {{driver: ebs.csi.aws.com, volumeHandle: vol-{i}}}}}"
            ))
            .expect("a volume"),
        ));
        mounts.push(format!("{{name: v{i}, persistentVolumeClaim: {{claimName: {claim}}}}}"));
    }
    let yaml = format!(
        "metadata: {{name: {name}, namespace: default}}\nspec:\n  nodeSelector: {{node.kubernetes.io/instance-type: m5.large}}\n  containers: [{{name: c, resources: {{requests: {{cpu: 10m}}}}}}]\n  volumes: [{}]\n{status}",
        mounts.join(", ")
    );
    serde_saphyr::from_str::<Pod>(&yaml).expect("a Pod").into()
}

#[test]
fn ebs_attachments_bound_what_registered_and_new_nodes_take() {
    let types = catalog();
    let pools = [pool("")];
    let mut volumes = VolumeTopology::default();
    // An m5.large attaches 26 volumes besides its root; its node reports none of that.
    let node: Node = serde_saphyr::from_str(
        "metadata: {name: node-1, labels: {stoker.dev/nodepool: general, team: web, karpenter.sh/capacity-type: on-demand, kubernetes.io/arch: amd64, kubernetes.io/os: linux, node.kubernetes.io/instance-type: m5.large}}\nspec: {providerID: 'aws:///us-east-1a/i-1'}\nstatus: {allocatable: {cpu: '2', memory: 8Gi, pods: '29'}}",
    )
    .expect("a Node");
    let nodes = [Arc::new(node)];
    let mut busy = with_ebs_volumes("busy", 22, "status: {phase: Running}", &mut volumes);
    busy.node_name = Some("node-1".into());
    let pods: Vec<Arc<CachedPod>> = [
        busy,
        with_ebs_volumes("three", 3, PENDING, &mut volumes),
        with_ebs_volumes("eight", 8, PENDING, &mut volumes),
        with_ebs_volumes("ten-a", 10, PENDING, &mut volumes),
        with_ebs_volumes("ten-b", 10, PENDING, &mut volumes),
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    let index = PodIndex::of(&pods);
    let claims: [Arc<NodeClaim>; 1] = [Arc::new(
        serde_saphyr::from_str(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {name: general-a, labels: {stoker.dev/nodepool: general}}\nspec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}, resources: {requests: {cpu: '1'}}}\nstatus: {providerID: 'aws:///us-east-1a/i-1', nodeName: node-1}",
        )
        .expect("a NodeClaim"),
    )];
    let state = Snapshot { nodes: &nodes, claims: &claims, volumes: &volumes, ..cluster(&index, &pools, &types) };
    let plan = planned(&state);
    // 26 - 22 leaves room for three volumes, not eight; 8 + 10 + 10 > 26 needs two new nodes,
    // though their CPU would fit one.
    assert_eq!(plan.existing, [("default/three".to_owned(), "node-1".to_owned())]);
    let mut placed: Vec<Vec<String>> = plan.new_claims.iter().map(|c| c.pods.clone()).collect();
    placed.sort();
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert!(placed.iter().all(|pods| pods.len() < 3), "{placed:?}");

    // Without their volumes the pending pods fit the node's CPU.
    let mut none = VolumeTopology::default();
    let light: Vec<Arc<CachedPod>> =
        ["eight", "ten-a", "ten-b"].map(|name| Arc::new(with_ebs_volumes(name, 0, PENDING, &mut none))).into();
    let index = PodIndex::of(&light);
    let state = Snapshot { nodes: &nodes, claims: &claims, volumes: &none, ..cluster(&index, &pools, &types) };
    let plan = planned(&state);
    assert_eq!((plan.existing.len(), plan.new_claims.len()), (3, 0));
}

#[test]
fn limits_count_in_flight_nodeclaims() {
    let types = catalog();
    let pools = [pool("  limits: {nodes: '1'}\n")];
    let pods = [pending("a", "1")];
    let index = PodIndex::of(&pods);
    let first = planned(&cluster(&index, &pools, &types));
    let claims = [Arc::new(nodeclaim_for(&first.new_claims[0], &pools[0], None, "abcde"))];
    let more = [pending("a", "1"), pending("huge", "60")];
    let more = PodIndex::of(&more);
    let state = Snapshot { claims: &claims, ..cluster(&more, &pools, &types) };
    let plan = planned(&state);
    assert!(plan.new_claims.is_empty());
    let (pod, reason) = &plan.unschedulable[0];
    assert_eq!(pod, "default/huge");
    assert!(reason.contains("limit"), "{reason}");
}

#[test]
fn pools_whose_node_class_is_not_ready_are_skipped_with_a_reason() {
    let pools = [pool("")];
    let pods = [pending("a", "1")];
    let index = PodIndex::of(&pods);
    let none = BTreeMap::new();
    let state = cluster(&index, &pools, &none);
    let prepared = solver_input(&state);
    assert_eq!(prepared.skipped, ["NodePool general: EC2NodeClass default is not ready"]);
    assert!(prepared.input.pools.is_empty());
}

#[test]
fn the_scheduling_wait_runs_from_creation_to_binding() {
    let mut bound = (*pod(
        "a",
        "1",
        "status: {conditions: [{type: PodScheduled, status: 'True', lastTransitionTime: '2026-11-23T10:00:42Z'}]}",
    ))
    .clone();
    bound.metadata.creation_timestamp = Some(serde_json::from_str("\"2026-11-23T10:00:00Z\"").unwrap());
    assert_eq!(scheduling_wait(&bound), None, "not bound to a node yet");
    bound.node_name = Some("node-1".into());
    assert_eq!(scheduling_wait(&bound), Some(42.0));
    assert_eq!(scheduling_wait(&pending("b", "1")), None);
}

/// A registered node of pool `general` in us-east-1a, 4 CPU and 16 GiB, whose provider ID ends
/// in its name.
fn node(name: &str) -> Arc<Node> {
    Arc::new(
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, labels: {{stoker.dev/nodepool: general, team: web, karpenter.sh/capacity-type: on-demand, kubernetes.io/arch: amd64, kubernetes.io/os: linux, kubernetes.io/hostname: {name}}}}}\nspec: {{providerID: 'aws:///us-east-1a/{name}'}}\nstatus: {{allocatable: {{cpu: '4', memory: 16Gi, pods: '58'}}}}"
        ))
        .expect("a Node"),
    )
}

#[test]
fn without_a_node_its_room_goes_and_the_pods_a_drain_evicts_are_placed_first() {
    let types = catalog();
    let pools = [pool("")];
    let nodes = [node("node-1"), node("node-2")];
    let bound = |name: &str, node: &str, daemon: bool| {
        let mut pod = (*pod(name, "1", "status: {phase: Running}")).clone();
        pod.node_name = Some(node.into());
        if daemon {
            pod.metadata.owner_references =
                Some(vec![OwnerReference { kind: "DaemonSet".into(), name: "ds".into(), ..Default::default() }]);
        }
        Arc::new(pod)
    };
    let pods = [
        bound("busy", "node-1", false),
        bound("agent", "node-1", true),
        bound("other", "node-2", false),
        pending("new", "1"),
    ];
    let index = PodIndex::of(&pods);
    let state = Snapshot { nodes: &nodes, ..cluster(&index, &pools, &types) };
    let whole = WholeInput::of(solver_input(&state).input);
    assert_eq!(whole.input.nodes.len(), 2);

    let without = whole.without(&index, &HashSet::from(["node-1"]));
    let names: Vec<&str> = without.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-2"]);
    let keys: Vec<&str> = without.pods.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["default/busy", "default/new"], "the DaemonSet pod is not evicted, and moved pods go first");
    assert!(without.scheduled.is_empty(), "no pod takes part in topology: bound pods change nothing");
    assert_eq!(whole.without(&index, &HashSet::new()).pods.len(), whole.input.pods.len());
    let evicted = whole.evicted_from(&index, &HashSet::from(["node-1"]));
    let keys: Vec<&str> = evicted.pods.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["default/busy"], "only what the drain evicts: the pending pod is the provisioner's");
    assert_eq!(evicted.nodes.len(), 1);

    // With a spread term in play, the pods that stay count where they are: through the tally of
    // the whole cluster, less the node gone.
    let spread = "  topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}]\n";
    let spreading = pod("spreading", "1", &format!("{spread}{PENDING}"));
    let pods = [pods[0].clone(), pods[1].clone(), pods[2].clone(), spreading];
    let index = PodIndex::of(&pods);
    let state = Snapshot { nodes: &nodes, ..cluster(&index, &pools, &types) };
    let without = WholeInput::of(solver_input(&state).input).without(&index, &HashSet::from(["node-1"]));
    let counted = without.counted.expect("bound pods counted once for every question");
    assert_eq!(counted.gone, ["node-1"]);
    assert!(without.scheduled.is_empty(), "counted through the tally alone");
}

#[test]
fn a_node_on_its_way_out_is_no_room_for_pending_pods() {
    let types = catalog();
    let pools = [pool("")];
    let claim = |name: &str, deleting: bool| -> Arc<NodeClaim> {
        let deletion = if deleting { ", deletionTimestamp: '2026-12-05T07:00:00Z', finalizers: [f]" } else { "" };
        Arc::new(
            serde_saphyr::from_str(&format!(
                "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}, labels: {{stoker.dev/nodepool: general}}{deletion}}}\nspec: {{nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}, resources: {{requests: {{cpu: '1'}}}}}}\nstatus: {{providerID: 'aws:///us-east-1a/{name}', nodeName: {name}}}"
            ))
            .expect("a NodeClaim"),
        )
    };
    // One replica per host: the pending one fits only a node holding none.
    let spread = |name: &str, node: Option<&str>| -> Arc<CachedPod> {
        let status = if node.is_some() { "status: {phase: Running}" } else { PENDING };
        let yaml = format!(
            "metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\nspec:\n  topologySpreadConstraints: [{{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}]\n  containers: [{{name: c, resources: {{requests: {{cpu: '1', memory: 1Gi}}}}}}]\n{status}"
        );
        let mut pod: CachedPod = serde_saphyr::from_str::<Pod>(&yaml).expect("a Pod").into();
        pod.node_name = node.map(Into::into);
        Arc::new(pod)
    };
    let nodes = [node("node-1"), node("node-2"), node("node-3")];
    let pods = [spread("a", Some("node-1")), spread("b", Some("node-2")), spread("c", None)];
    let index = PodIndex::of(&pods);

    // node-3 stays and holds no replica: the pending one goes there.
    let claims = [claim("node-1", false), claim("node-2", false), claim("node-3", false)];
    let state = Snapshot { nodes: &nodes, claims: &claims, ..cluster(&index, &pools, &types) };
    let plan = planned(&state);
    assert_eq!(plan.existing, [("default/c".to_owned(), "node-3".to_owned())]);
    assert!(plan.new_claims.is_empty());

    // node-3's NodeClaim is being deleted (emptiness chose it, say): it is gone in seconds, so
    // neither the provisioner nor a consolidation decision may count on its room.
    let claims = [claim("node-1", false), claim("node-2", false), claim("node-3", true)];
    let state = Snapshot { nodes: &nodes, claims: &claims, ..cluster(&index, &pools, &types) };
    let whole = WholeInput::of(solver_input(&state).input);
    let names: Vec<&str> = whole.input.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2"]);
    let plan = planned(&state);
    assert!(plan.existing.is_empty(), "{:?}", plan.existing);
    assert_eq!(plan.new_claims.len(), 1);
}
