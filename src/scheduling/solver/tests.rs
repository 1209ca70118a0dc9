//! Solver rules, one small readable scenario each. The catalog, pool and pod fixtures serve the
//! tests of the solver's callers too.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;

use super::{domains::single_value, *};
use crate::{
    cloudprovider::aws::allocatable::{self, InstanceFacts},
    scheduling::{catalog::Offering, pod::TopologyTerm, requirements::Requirement},
};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// An amd64 type with these figures and offerings; the AWS provider's rules decide its
/// allocatable and whether it is exotic.
pub(crate) fn instance(name: &str, vcpus: i64, gib: i64, offerings: Vec<Offering>) -> InstanceType {
    let facts = InstanceFacts {
        name: name.into(),
        vcpus,
        memory_mib: gib * 1024,
        arch: "amd64".into(),
        gpus: 0,
        max_network_interfaces: 4,
        ipv4_per_interface: 15,
        ..Default::default()
    };
    allocatable::instance_type(&facts, offerings, &crate::cloudprovider::aws::allocatable::NodeSettings::default())
        .expect("valid facts")
}

/// A catalog of general-purpose types: (name, vCPU, GiB, on-demand $/h); spot costs 30%.
pub(crate) fn catalog() -> Vec<InstanceType> {
    [
        ("m5.large", 2, 8, 0.096),
        ("m5.xlarge", 4, 16, 0.192),
        ("m5.2xlarge", 8, 32, 0.384),
        ("c5.large", 2, 4, 0.085),
        ("r5.large", 2, 16, 0.126),
    ]
    .iter()
    .map(|(name, vcpus, gib, price)| {
        let mut offerings = Vec::new();
        for zone in ZONES {
            for (capacity_type, factor) in [("on-demand", 1.0), ("spot", 0.3)] {
                offerings.push(Offering {
                    zone: zone.into(),
                    zone_id: String::new(),
                    capacity_type: capacity_type.into(),
                    price: price * factor,
                    available: true,
                    reservation_id: None,
                    capacity_block: false,
                });
            }
        }
        instance(name, *vcpus, *gib, offerings)
    })
    .collect()
}

pub(crate) fn pool(name: &str, weight: i32, capacity_type: &str) -> NodePoolTemplate {
    let mut requirements = Requirements::new();
    requirements.add(labels::CAPACITY_TYPE, Requirement::one_of([capacity_type]));
    requirements.add(labels::NODEPOOL, Requirement::one_of([name]));
    NodePoolTemplate {
        name: name.into(),
        weight,
        requirements,
        taints: vec![],
        instance_types: (0..catalog().len()).collect(),
        daemon_overhead: Resources::new(),
        remaining: None,
    }
}

fn input(pools: Vec<NodePoolTemplate>, pods: Vec<PodInfo>) -> Input {
    Input {
        pods: pods.into_iter().map(Arc::new).collect(),
        pools,
        instance_types: catalog().into(),
        ..Default::default()
    }
}

/// A pod from YAML fragments added to its spec (indented for `spec:`).
pub(crate) fn pod_with(name: &str, cpu: &str, memory: &str, spec_extra: &str) -> PodInfo {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\nspec:\n  containers: [{{name: c, resources: {{requests: {{cpu: '{cpu}', memory: '{memory}'}}}}}}]\n{spec_extra}"
    );
    let pod: Pod = serde_saphyr::from_str(&yaml).unwrap();
    PodInfo::from_pod(&pod).unwrap()
}

fn pods(count: usize, cpu: &str, memory: &str, spec_extra: &str) -> Vec<PodInfo> {
    (0..count).map(|i| pod_with(&format!("p{i:03}"), cpu, memory, spec_extra)).collect()
}

fn zone_of(claim: &NewNodeClaim) -> String {
    claim.requirements.get(labels::ZONE).and_then(single_value).expect("a single zone").to_owned()
}

#[test]
fn packs_small_pods_onto_one_node_and_lists_the_cheapest_types_first() {
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(3, "500m", "512Mi", "")));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(plan.new_claims.len(), 1);
    let claim = &plan.new_claims[0];
    assert_eq!(claim.pods.len(), 3);
    assert_eq!(claim.instance_types[0], "c5.large");
    assert_eq!(claim.price, 0.085);
    let prices: Vec<f64> = claim
        .instance_types
        .iter()
        .map(|t| catalog().iter().find(|c| &c.name == t).unwrap().offerings[0].price)
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    assert_eq!(claim.requests.get(CPU), 1500);
}

#[test]
fn the_highest_weight_pool_is_tried_first_and_ties_go_by_name() {
    let plan =
        solve(&input(vec![pool("on-demand", 10, "on-demand"), pool("spot", 50, "spot")], pods(1, "1", "1Gi", "")));
    assert_eq!(plan.new_claims[0].nodepool, "spot");
    assert!(plan.new_claims[0].price < 0.05);

    let plan = solve(&input(vec![pool("b", 10, "on-demand"), pool("a", 10, "on-demand")], pods(1, "1", "1Gi", "")));
    assert_eq!(plan.new_claims[0].nodepool, "a");
}

#[test]
fn a_pod_that_asks_for_on_demand_falls_through_to_the_pool_that_offers_it() {
    let pods = vec![pod_with("p", "1", "1Gi", "  nodeSelector: {karpenter.sh/capacity-type: on-demand}\n")];
    let plan = solve(&input(vec![pool("spot", 50, "spot"), pool("on-demand", 10, "on-demand")], pods));
    assert_eq!(plan.new_claims[0].nodepool, "on-demand");
}

#[test]
fn existing_capacity_is_used_before_anything_is_launched() {
    let mut input = input(vec![pool("on-demand", 0, "on-demand")], pods(2, "1", "1Gi", ""));
    let mut free = Resources::new();
    free.set(CPU, 1500);
    free.set(MEMORY, 4 << 30);
    free.set("pods", 10);
    let mut requirements = Requirements::new();
    requirements.add(labels::ZONE, Requirement::one_of([ZONES[0]]));
    input.nodes.push(Arc::new(ExistingNode {
        name: "node-1".into(),
        requirements: Arc::new(requirements),
        registered: true,
        taints: vec![],
        free,
        host_ports: vec![],
    }));
    let plan = solve(&input);
    assert_eq!(plan.existing, [("default/p000".to_string(), "node-1".to_string())]);
    assert_eq!(plan.new_claims.len(), 1, "the second pod no longer fits on node-1");
}

#[test]
fn real_pods_take_existing_room_before_placeholders_however_large() {
    // A placeholder larger than the real pod still comes after it: the room is the real pod's.
    let mut placeholder = pod_with("a-buffer", "1200m", "1Gi", "");
    placeholder.placeholder = true;
    let real = pod_with("z-real", "1", "1Gi", "");
    let mut input = input(vec![pool("on-demand", 0, "on-demand")], vec![placeholder, real]);
    let mut free = Resources::new();
    free.set(CPU, 1500);
    free.set(MEMORY, 4 << 30);
    free.set("pods", 10);
    input.nodes.push(Arc::new(ExistingNode {
        name: "node-1".into(),
        requirements: Arc::new(Requirements::new()),
        registered: true,
        taints: vec![],
        free,
        host_ports: vec![],
    }));
    let plan = solve(&input);
    assert_eq!(plan.existing, [("default/z-real".to_string(), "node-1".to_string())]);
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(plan.new_claims[0].pods, ["default/a-buffer"]);
}

#[test]
fn unschedulable_pods_name_every_pool_and_its_reason() {
    let mut tainted = pool("gpu", 50, "on-demand");
    tainted.taints.push(Taint {
        key: "nvidia.com/gpu".into(),
        value: Some("true".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    });
    let pods = vec![pod_with("p", "1", "1Gi", "  nodeSelector: {karpenter.sh/capacity-type: spot}\n")];
    let plan = solve(&input(vec![tainted, pool("on-demand", 10, "on-demand")], pods));
    assert!(plan.new_claims.is_empty());
    let (pod, reason) = &plan.unschedulable[0];
    assert_eq!(pod, "default/p");
    assert!(reason.contains("gpu: taint nvidia.com/gpu=true:NoSchedule not tolerated"), "{reason}");
    assert!(reason.contains("on-demand: karpenter.sh/capacity-type"), "{reason}");
}

#[test]
fn a_pod_too_big_for_any_type_says_what_it_needs() {
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(1, "64", "1Gi", "")));
    let reason = &plan.unschedulable[0].1;
    assert!(reason.contains("no instance type has room for cpu 64"), "{reason}");
}

#[test]
fn custom_labels_need_a_pool_that_sets_them() {
    let pods = vec![pod_with("p", "1", "1Gi", "  nodeSelector: {team: data}\n")];
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods.clone()));
    assert!(plan.unschedulable[0].1.contains("team"), "{:?}", plan.unschedulable);

    let mut labelled = pool("data", 0, "on-demand");
    labelled.requirements.add("team", Requirement::one_of(["data"]));
    let plan = solve(&input(vec![labelled], pods));
    assert_eq!(plan.new_claims.len(), 1);
}

#[test]
fn limits_stop_launches() {
    let mut limited = pool("on-demand", 0, "on-demand");
    let mut remaining = Resources::new();
    remaining.set(NODES, 2);
    limited.remaining = Some(remaining);
    // Anti-affinity forces one node per pod; the limit allows two.
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n";
    let plan = solve(&input(vec![limited], pods(3, "1", "1Gi", anti)));
    assert_eq!(plan.new_claims.len(), 2);
    assert_eq!(plan.unschedulable.len(), 1);
    assert!(plan.unschedulable[0].1.contains("limits"), "{:?}", plan.unschedulable);
}

#[test]
fn zone_spread_puts_one_node_in_each_zone() {
    let spread = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}\n";
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(6, "1", "1Gi", spread)));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let per_zone = pods_per_zone(&plan);
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{per_zone:?}");
}

/// Pods placed per zone, over every claim.
fn pods_per_zone(plan: &Plan) -> BTreeMap<String, usize> {
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for claim in &plan.new_claims {
        *per_zone.entry(zone_of(claim)).or_default() += claim.pods.len();
    }
    per_zone
}

#[test]
fn node_taints_policy_honor_leaves_out_zones_only_tainted_nodes_offer() {
    // us-east-1c is offered only by a pool whose taint the pods do not tolerate.
    let mut tainted = pool("tainted", 0, "on-demand");
    tainted.requirements.add(labels::ZONE, Requirement::one_of(["us-east-1c"]));
    tainted.taints =
        vec![Taint { key: "dedicated".into(), value: None, effect: "NoSchedule".into(), time_added: None }];
    let mut plain = pool("plain", 0, "on-demand");
    plain.requirements.add(labels::ZONE, Requirement::one_of(["us-east-1a", "us-east-1b"]));
    let spread = |policy: &str| {
        format!(
            "  topologySpreadConstraints:\n  - {{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}{policy}}}\n"
        )
    };
    // Ignored (the default), the empty us-east-1c holds the minimum at 0: a third pod cannot go.
    let plan = solve(&input(vec![tainted.clone(), plain.clone()], pods(3, "1", "1Gi", &spread(""))));
    assert_eq!(plan.unschedulable.len(), 1, "{:?}", plan.new_claims);
    let plan = solve(&input(vec![tainted, plain], pods(3, "1", "1Gi", &spread(", nodeTaintsPolicy: Honor"))));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(pods_per_zone(&plan).values().sum::<usize>(), 3);
    assert!(!pods_per_zone(&plan).contains_key("us-east-1c"));
}

#[test]
fn node_affinity_policy_ignore_counts_zones_the_pod_cannot_use() {
    let spread = |policy: &str| {
        format!(
            "  topologySpreadConstraints:\n  - {{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}{policy}}}\n  nodeSelector: {{topology.kubernetes.io/zone: us-east-1a}}\n"
        )
    };
    // Honored (the default), only us-east-1a counts: every pod goes there.
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(3, "1", "1Gi", &spread(""))));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(pods_per_zone(&plan), BTreeMap::from([("us-east-1a".to_owned(), 3)]));
    // Ignored, the other zones count and stay empty: one pod, then the skew is reached.
    let ignoring = spread(", nodeAffinityPolicy: Ignore");
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(3, "1", "1Gi", &ignoring)));
    assert_eq!(plan.unschedulable.len(), 2, "{:?}", plan.new_claims);
}

#[test]
fn hostname_anti_affinity_gives_each_pod_its_own_node() {
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n";
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(4, "100m", "128Mi", anti)));
    assert_eq!(plan.new_claims.len(), 4);
    assert!(plan.new_claims.iter().all(|c| c.pods.len() == 1));
}

#[test]
fn hostname_affinity_keeps_pods_together() {
    let together = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n";
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(5, "1", "1Gi", together)));
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(plan.new_claims[0].pods.len(), 5);
}

#[test]
fn preferences_are_relaxed_when_they_cannot_be_met() {
    // Prefers arm64, which nothing offers: the preference is dropped, not the pod.
    let prefers = "  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 10\n        preference: {matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [arm64]}]}\n";
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(1, "1", "1Gi", prefers)));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    // A preference that can be met is kept: us-east-1b only.
    let prefers_b = "  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 10\n        preference: {matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1b]}]}\n";
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(1, "1", "1Gi", prefers_b)));
    assert_eq!(zone_of(&plan.new_claims[0]), "us-east-1b");
}

#[test]
fn preferences_relax_in_karpenters_order() {
    // Both replicas prefer us-east-1b and spread over zones (ScheduleAnyway). The second cannot
    // have both: like Karpenter, the node preference goes before the spread, so it opens a node
    // in another zone instead of joining the first in us-east-1b.
    let both = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}\n  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 10\n        preference: {matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1b]}]}\n";
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(2, "100m", "128Mi", both)));
    assert_eq!(plan.new_claims.len(), 2, "{:?}", plan.new_claims);
    let zones: BTreeSet<String> = plan.new_claims.iter().map(zone_of).collect();
    assert!(zones.contains("us-east-1b") && zones.len() == 2, "{zones:?}");

    // The order of the kinds, as kept (the last is dropped first).
    let pod = pod_with(
        "p",
        "100m",
        "128Mi",
        "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}\n  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}\n  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - {weight: 1, preference: {matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]}}\n      - {weight: 50, preference: {matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1b]}]}}\n    podAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - {weight: 5, podAffinityTerm: {topologyKey: topology.kubernetes.io/zone, labelSelector: {matchLabels: {app: db}}}}\n    podAntiAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - {weight: 5, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}}\n",
    );
    let described: Vec<String> = pod
        .preferences
        .iter()
        .map(|p| match p {
            Preference::Requirements(r) => format!("node {}", r.iter().next().map(|(k, _)| k.as_str()).unwrap_or("")),
            Preference::Topology(t) => format!("{:?} {}", t.kind, t.key),
        })
        .collect();
    assert_eq!(
        described,
        [
            "Spread { max_skew: 1, min_domains: 1 } kubernetes.io/hostname",
            "Spread { max_skew: 1, min_domains: 1 } topology.kubernetes.io/zone",
            "node topology.kubernetes.io/zone",
            "node kubernetes.io/arch",
            "AntiAffinity kubernetes.io/hostname",
            "Affinity topology.kubernetes.io/zone",
        ]
    );
}

#[test]
fn prefer_no_schedule_taints_are_avoided_then_tolerated() {
    let soft = Taint { key: "spare".into(), value: None, effect: "PreferNoSchedule".into(), time_added: None };
    let mut tainted = pool("tainted", 10, "on-demand");
    tainted.taints = vec![soft];
    let plain = pool("plain", 0, "on-demand");
    let plan = solve(&input(vec![tainted.clone(), plain], pods(1, "1", "1Gi", "")));
    assert_eq!(plan.new_claims[0].nodepool, "plain", "the heavier pool only prefers no pods");
    let plan = solve(&input(vec![tainted], pods(1, "1", "1Gi", "")));
    assert_eq!(plan.new_claims[0].nodepool, "tainted", "tolerated when nothing else can take the pod");
}

#[test]
fn the_ignore_policy_plans_without_preferences() {
    let prefers_b = "  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 10\n        preference: {matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1b]}]}\n";
    let mut ignoring = input(vec![pool("on-demand", 0, "on-demand")], pods(1, "1", "1Gi", prefers_b));
    assert_eq!(zone_of(&solve(&ignoring).new_claims[0]), "us-east-1b");
    ignoring.policies.preferences = PreferencePolicy::Ignore;
    let plan = solve(&ignoring);
    assert_eq!(plan.new_claims.len(), 1);
    let zones = plan.new_claims[0].requirements.get(labels::ZONE).and_then(Requirement::finite_values);
    assert!(zones.as_ref().is_none_or(|z| z.len() == 3), "any zone: {zones:?}");
}

#[test]
fn device_labels_select_the_types_that_have_them_and_no_others() {
    let facts = InstanceFacts {
        name: "g4dn.xlarge".into(),
        vcpus: 4,
        memory_mib: 16384,
        arch: "amd64".into(),
        gpus: 1,
        gpu_name: "T4".into(),
        gpu_manufacturer: "NVIDIA".into(),
        max_network_interfaces: 3,
        ipv4_per_interface: 10,
        ..Default::default()
    };
    let offerings = catalog()[0].offerings.iter().map(|o| Offering { price: 0.526, ..o.clone() }).collect();
    let mut types = catalog();
    types.push(
        allocatable::instance_type(&facts, offerings, &crate::cloudprovider::aws::allocatable::NodeSettings::default())
            .expect("valid"),
    );
    let mut gpu_pool = pool("on-demand", 0, "on-demand");
    gpu_pool.instance_types = (0..types.len()).collect();
    let solve_for = |spec: &str| {
        let input = Input {
            pods: pods(1, "1", "1Gi", spec).into_iter().map(Arc::new).collect(),
            pools: vec![gpu_pool.clone()],
            instance_types: types.clone().into(),
            ..Default::default()
        };
        solve(&input).new_claims[0].instance_types.clone()
    };
    // Asked by label alone: the other types lack the label, so they cannot serve.
    assert_eq!(solve_for("  nodeSelector: {karpenter.k8s.aws/instance-gpu-name: t4}\n"), ["g4dn.xlarge"]);
    // Not asked: the GPU type is exotic, and the ordinary types are cheaper anyway.
    assert!(!solve_for("").contains(&"g4dn.xlarge".to_owned()));
}

#[test]
fn daemonset_overhead_is_part_of_every_new_node() {
    let mut with_daemons = pool("on-demand", 0, "on-demand");
    with_daemons.daemon_overhead.set(CPU, 1000);
    let plan = solve(&input(vec![with_daemons], pods(1, "1", "1Gi", "")));
    let claim = &plan.new_claims[0];
    assert_eq!(claim.requests.get(CPU), 2000);
    // A 2-vCPU type has under 2000m allocatable, so the cheapest that fits has 4 vCPUs.
    assert_eq!(claim.instance_types[0], "m5.xlarge");
}

#[test]
fn min_values_keeps_enough_instance_families() {
    let mut flexible = pool("on-demand", 0, "on-demand");
    flexible.requirements.add(labels::INSTANCE_FAMILY, Requirement::exists().with_min_values(Some(3)));
    let plan = solve(&input(vec![flexible.clone()], pods(1, "1", "1Gi", "")));
    assert_eq!(plan.new_claims.len(), 1);
    // Needs 6 GiB: only the m5 types and r5.large fit, two families: below minValues.
    let mut strict = input(vec![flexible], pods(1, "1", "6Gi", ""));
    let plan = solve(&strict);
    assert!(plan.unschedulable[0].1.contains("minValues"), "{:?}", plan.unschedulable);

    // BestEffort launches with the two families there are, and says so.
    strict.policies.min_values = MinValuesPolicy::BestEffort;
    let plan = solve(&strict);
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let claim = &plan.new_claims[0];
    assert!(claim.min_values_relaxed);
    assert_eq!(claim.requirements.get(labels::INSTANCE_FAMILY).and_then(Requirement::min_values), Some(2));
    assert_eq!(claim.instance_types, ["m5.large", "r5.large", "m5.xlarge", "m5.2xlarge"]);
    assert!(
        !solve(&input(vec![pool("on-demand", 0, "on-demand")], pods(1, "1", "6Gi", ""))).new_claims[0]
            .min_values_relaxed
    );
}

#[test]
fn host_ports_conflict_on_one_node() {
    let port = "  hostNetwork: false\n";
    let mut pods = pods(2, "100m", "128Mi", port);
    for pod in &mut pods {
        pod.host_ports = vec![HostPort { protocol: "TCP".into(), port: 8080, ip: String::new() }];
    }
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], pods));
    assert_eq!(plan.new_claims.len(), 2);
}

#[test]
fn at_most_sixty_instance_types_per_claim() {
    let mut types = Vec::new();
    for i in 0..80 {
        let offering = Offering {
            zone: ZONES[0].into(),
            zone_id: String::new(),
            capacity_type: "on-demand".into(),
            // All within the value slack of the cheapest, so the cap is what limits the list.
            price: 1.0 + f64::from(i) / 10_000.0,
            available: true,
            reservation_id: None,
            capacity_block: false,
        };
        types.push(instance(&format!("t{i}.large"), 4, 8, vec![offering]));
    }
    let mut pool = pool("on-demand", 0, "on-demand");
    pool.instance_types = (0..80).collect();
    let plan = solve(&Input {
        pods: pods(1, "1", "1Gi", "").into_iter().map(Arc::new).collect(),
        pools: vec![pool],
        instance_types: types.into(),
        ..Default::default()
    });
    let claim = &plan.new_claims[0];
    assert_eq!(claim.instance_types.len(), MAX_INSTANCE_TYPES);
    assert_eq!(claim.instance_types[0], "t0.large");
    assert_eq!(claim.requirements.get(labels::INSTANCE_TYPE).and_then(Requirement::finite_values).unwrap().len(), 60);
}

#[test]
fn a_question_takes_the_nodes_domains_from_the_tally_less_the_nodes_gone() {
    let spread = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: web}}}\n";
    let mut input = input(vec![pool("on-demand", 0, "on-demand")], pods(1, "100m", "128Mi", spread));
    let node = |name: &str, zones: &[&str], tainted: bool| {
        let mut requirements = Requirements::new();
        requirements.add(labels::ZONE, Requirement::one_of(zones.iter().copied()));
        let taints = if tainted {
            vec![Taint { key: "dedicated".into(), value: None, effect: "NoSchedule".into(), time_added: None }]
        } else {
            vec![]
        };
        Arc::new(ExistingNode { requirements: Arc::new(requirements), taints, ..(*roomy_node(name)).clone() })
    };
    // Two nodes in z1; one in z2 the spread does not count (its taint is not tolerated, and the
    // term honours taints); one in flight that may still land in z2 or z3.
    input.nodes = vec![
        node("a", &["z1"], false),
        node("b", &["z1"], false),
        node("c", &["z2"], true),
        Arc::new(ExistingNode { registered: false, ..(*node("d", &["z2", "z3"], false)).clone() }),
    ];
    let spread_term = input.pods[0].topology[0].clone();
    let tally = Arc::new(BoundTally::of(&input));
    for gone in 0..1u32 << input.nodes.len() {
        let is_gone = |i: usize| gone & (1 << i) != 0;
        let gone: Vec<String> =
            input.nodes.iter().enumerate().filter(|(i, _)| is_gone(*i)).map(|(_, n)| n.name.clone()).collect();
        let staying = input.nodes.iter().filter(|n| !gone.contains(&n.name));
        let found: BTreeSet<String> = staying.flat_map(|n| domains::node_values(n, &spread_term)).cloned().collect();
        let counted = CountedBound { whole: tally.clone(), gone: gone.clone() };
        assert_eq!(counted.node_domains(&spread_term), Some(found), "without {gone:?}");
    }
    // The hostname has a domain per node: found over the nodes, as is a term the tally lacks.
    let counted = CountedBound { whole: tally, gone: vec![] };
    let by_hostname = TopologyTerm { key: labels::HOSTNAME.into(), ..spread_term.clone() };
    let by_rack = TopologyTerm { key: "rack".into(), ..spread_term };
    assert_eq!(counted.node_domains(&by_hostname), None);
    assert_eq!(counted.node_domains(&by_rack), None);
}

/// A registered node without labels or taints, with 4 CPU, 8 GiB and 10 pods free.
fn roomy_node(name: &str) -> Arc<ExistingNode> {
    let mut free = Resources::new();
    free.set(CPU, 4000);
    free.set(MEMORY, 8 << 30);
    free.set("pods", 10);
    Arc::new(ExistingNode {
        name: name.into(),
        requirements: Arc::default(),
        registered: true,
        taints: vec![],
        free,
        host_ports: vec![],
    })
}

#[test]
fn existing_pods_anti_affinity_repels_new_pods() {
    let mut input = input(vec![pool("on-demand", 0, "on-demand")], pods(1, "100m", "128Mi", ""));
    input.nodes.push(roomy_node("node-1"));
    let guard = pod_with(
        "guard",
        "100m",
        "128Mi",
        "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n",
    );
    let mut guard = guard;
    guard.labels = [("role".to_string(), "guard".to_string())].into();
    input.scheduled.push(ScheduledPod { pod: Arc::new(guard), node: "node-1".into() });
    let plan = solve(&input);
    assert!(plan.existing.is_empty(), "the guard's anti-affinity keeps app=web off node-1");
    assert_eq!(plan.new_claims.len(), 1);
}

#[test]
fn pod_affinity_finds_pods_in_the_namespaces_its_selector_picks() {
    // A web pod must share a node with a cache pod of any namespace labelled team=storage.
    let follows = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: cache}}, namespaceSelector: {matchLabels: {team: storage}}}\n";
    let mut input = input(vec![pool("on-demand", 0, "on-demand")], pods(1, "100m", "128Mi", follows));
    input.nodes.push(roomy_node("node-1"));
    let mut cache = pod_with("cache", "100m", "128Mi", "");
    cache.namespace = "storage-cache".into();
    cache.labels = [("app".to_string(), "cache".to_string())].into();
    input.scheduled.push(ScheduledPod { pod: Arc::new(cache), node: "node-1".into() });
    // Without the namespace's labels nothing is selected: no pod to join, and none of its own.
    assert_eq!(solve(&input).unschedulable.len(), 1);
    input.namespaces =
        Arc::new([("storage-cache".to_owned(), [("team".to_owned(), "storage".to_owned())].into())].into());
    let plan = solve(&input);
    assert_eq!(plan.existing, [("default/p000".to_string(), "node-1".to_string())]);
}

#[test]
fn the_same_input_gives_the_same_plan() {
    let spread = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}\n";
    let mut pods = pods(20, "700m", "1Gi", spread);
    pods.extend(self::pods(5, "3", "2Gi", ""));
    let input = input(vec![pool("spot", 50, "spot"), pool("on-demand", 10, "on-demand")], pods);
    assert_eq!(solve(&input), solve(&input));
}

#[test]
fn a_memo_kept_across_runs_changes_no_decision() {
    let spread = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}\n";
    let pools = vec![pool("spot", 50, "spot"), pool("on-demand", 10, "on-demand")];
    let first = input(pools.clone(), pods(20, "700m", "1Gi", spread));
    // Other pods over the same catalog: what the memo learnt still holds.
    let second = Input { pods: pods(3, "6", "20Gi", "").into_iter().map(Arc::new).collect(), ..first.clone() };
    // Another catalog, in another order, with spot gone: nothing learnt of the first may be used.
    let mut reordered = catalog();
    reordered.reverse();
    reordered
        .iter_mut()
        .flat_map(|t| &mut t.offerings)
        .filter(|o| o.capacity_type == "spot")
        .for_each(|o| o.available = false);
    let third = Input { instance_types: reordered.into(), ..first.clone() };
    let mut memo = Memo::default();
    for input in [&first, &second, &first, &third, &second] {
        assert_eq!(solve_with(input, &mut memo), solve(input));
        assert_eq!(solve_without_repack(input, &mut memo), solve_without_repack(input, &mut Memo::default()));
    }
}

#[test]
fn the_memo_finds_a_type_by_name_as_a_scan_would_and_forgets_it_with_its_catalog() {
    let first: Arc<[InstanceType]> = catalog().into();
    // Two node classes' types side by side repeat names: the first of a name is the one found
    // (the first class's here, in another order and dearer).
    let mut doubled = catalog();
    doubled.reverse();
    doubled.iter_mut().flat_map(|t| &mut t.offerings).for_each(|o| o.price *= 2.0);
    doubled.extend(catalog());
    let doubled: Arc<[InstanceType]> = doubled.into();
    let mut memo = Memo::default();
    for types in [&first, &doubled, &first] {
        for wanted in types.iter().rev() {
            let scanned = types.iter().find(|t| t.name == wanted.name);
            assert_eq!(memo.instance_type(types, &wanted.name), scanned, "{}", wanted.name);
        }
        assert_eq!(memo.instance_type(types, "no.such-type"), None);
    }
}

#[test]
fn the_first_pod_of_a_hostname_affinity_group_finds_room_for_the_whole_group() {
    let together = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n";
    // Two larger plain pods open a node first; the group (4 × 1.5 CPU) must not start there,
    // where only one of its pods would fit.
    let mut all: Vec<PodInfo> = (0..2)
        .map(|i| {
            let mut pod = pod_with(&format!("plain-{i}"), "3", "1Gi", "");
            pod.labels = [("app".to_string(), "other".to_string())].into();
            pod
        })
        .collect();
    all.extend(pods(4, "1500m", "1Gi", together));
    let plan = solve(&input(vec![pool("on-demand", 0, "on-demand")], all));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let group_claims: Vec<&NewNodeClaim> =
        plan.new_claims.iter().filter(|c| c.pods.iter().any(|p| p.contains("p00"))).collect();
    assert_eq!(group_claims.len(), 1);
    assert_eq!(group_claims[0].pods.iter().filter(|p| p.contains("p00")).count(), 4);
}

#[test]
fn a_reserved_offering_is_taken_first_by_pools_that_allow_it_and_can_be_asked_for() {
    let mut catalog = catalog();
    let m5_xlarge = catalog.iter_mut().find(|t| t.name == "m5.xlarge").expect("m5.xlarge");
    m5_xlarge.offerings.push(Offering {
        zone: ZONES[1].into(),
        zone_id: String::new(),
        capacity_type: labels::CAPACITY_TYPE_RESERVED.into(),
        price: 0.192e-7,
        available: true,
        reservation_id: Some("cr-1".into()),
        capacity_block: false,
    });
    let plan_for = |pool: NodePoolTemplate, pod_extra: &str| {
        let input =
            Input { instance_types: catalog.clone().into(), ..input(vec![pool], pods(1, "500m", "512Mi", pod_extra)) };
        solve(&input).new_claims.into_iter().next().expect("a claim")
    };
    let mut every = pool("all", 0, "on-demand");
    every.requirements = Requirements::new();
    every.requirements.add(labels::CAPACITY_TYPE, Requirement::one_of(["reserved", "spot", "on-demand"]));
    every.requirements.add(labels::NODEPOOL, Requirement::one_of(["all"]));
    // The reservation is paid for: a larger reserved type beats the cheapest spot one.
    let claim = plan_for(every.clone(), "");
    assert_eq!((claim.instance_types[0].as_str(), claim.price), ("m5.xlarge", 0.192e-7));
    // A pool that leaves `reserved` out never sees it.
    let claim = plan_for(pool("spot", 0, "spot"), "");
    assert_eq!(claim.instance_types[0], "c5.large");
    // A pod can stay out of reservations by the reservation label.
    let away = "  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: karpenter.k8s.aws/capacity-reservation-id, operator: DoesNotExist}]}]}}}";
    let claim = plan_for(every.clone(), away);
    assert!(claim.price > 0.01, "{claim:?}");
    // A full reservation is not planned on.
    catalog
        .iter_mut()
        .flat_map(|t| &mut t.offerings)
        .filter(|o| o.reservation_id.is_some())
        .for_each(|o| o.available = false);
    let input = Input { instance_types: catalog.clone().into(), ..input(vec![every], pods(1, "500m", "512Mi", "")) };
    assert_eq!(solve(&input).new_claims[0].instance_types[0], "c5.large");
}
