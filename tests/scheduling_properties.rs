//! Invariants of the scheduling simulation over random pods, NodePools and catalogs.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::api::core::v1::{Pod, Taint};
use proptest::prelude::*;
use serde_json::json;
use stoker::{
    apis::labels,
    cloudprovider::aws::allocatable::{self, InstanceFacts},
    scheduling::{
        catalog::{InstanceType, Offering, offering_allowed},
        pod::{PodInfo, SoftTaints},
        requirements::{Requirement, Requirements},
        resources::Resources,
        solver::{
            BoundTally, CountedBound, ExistingNode, Input, Memo, MinValuesPolicy, NODES, NodePoolTemplate, Plan,
            Policies, PreferencePolicy, ScheduledPod, solve, solve_without_repack,
        },
    },
};

const ZONES: [&str; 3] = ["z1", "z2", "z3"];

fn catalog_strategy() -> impl Strategy<Value = Vec<InstanceType>> {
    prop::collection::vec((1i64..17, 1i64..5, prop::bool::ANY, 1u32..100), 2..8).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (vcpus, gib_per_cpu, arm, cents))| {
                let facts = InstanceFacts {
                    name: format!("t{i}.x{vcpus}"),
                    vcpus,
                    memory_mib: vcpus * gib_per_cpu * 1024,
                    arch: if arm { "arm64" } else { "amd64" }.into(),
                    gpus: 0,
                    max_network_interfaces: 4,
                    ipv4_per_interface: 10,
                    ..Default::default()
                };
                let mut offerings = Vec::new();
                for (z, zone) in ZONES.iter().enumerate() {
                    for capacity_type in ["spot", "on-demand"] {
                        let price = f64::from(cents) / 100.0 * if capacity_type == "spot" { 0.4 } else { 1.0 }
                            + z as f64 * 0.001;
                        offerings.push(Offering {
                            zone: (*zone).into(),
                            zone_id: String::new(),
                            capacity_type: capacity_type.into(),
                            price,
                            available: (i + z) % 5 != 0,
                            reservation_id: None,
                            capacity_block: false,
                        });
                    }
                }
                // Every third type has a capacity reservation in the first zone, every other one
                // of them full.
                if i % 3 == 0 {
                    offerings.push(Offering {
                        zone: ZONES[0].into(),
                        zone_id: String::new(),
                        capacity_type: "reserved".into(),
                        price: f64::from(cents) / 100.0 * 1e-7,
                        available: i % 2 == 0,
                        reservation_id: Some(format!("cr-{i}")),
                        capacity_block: false,
                    });
                }
                allocatable::instance_type(
                    &facts,
                    offerings,
                    &stoker::cloudprovider::aws::allocatable::NodeSettings::default(),
                )
                .unwrap()
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
struct PoolSpec {
    capacity_type: Option<&'static str>,
    /// A pool kept to one zone, so the nodes' zones are domains no pool offers.
    zone: Option<&'static str>,
    weight: i32,
    tainted: bool,
    node_limit: Option<i64>,
}

fn pools_strategy() -> impl Strategy<Value = Vec<PoolSpec>> {
    prop::collection::vec(
        (
            prop::option::of(prop::sample::select(vec!["spot", "on-demand", "reserved"])),
            prop::option::weighted(0.3, prop::sample::select(ZONES.to_vec())),
            0i32..3,
            prop::bool::weighted(0.3),
            prop::option::of(1i64..6),
        ),
        1..4,
    )
    .prop_map(|pools| {
        pools
            .into_iter()
            .map(|(capacity_type, zone, weight, tainted, node_limit)| PoolSpec {
                capacity_type,
                zone,
                weight,
                tainted,
                node_limit,
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
struct PodSpec {
    millicpu: u32,
    mebibytes: u32,
    zone: Option<&'static str>,
    arch: Option<&'static str>,
    tolerates: bool,
    spread: bool,
    /// Hostname anti-affinity to its own group: one pod of the group per node.
    one_per_node: bool,
    /// Hostname anti-affinity to the group before it: no node holds pods of both.
    avoids_previous: bool,
    replicas: usize,
}

fn pods_strategy() -> impl Strategy<Value = Vec<PodSpec>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![100u32, 250, 500, 1000, 2000, 4000]),
            prop::sample::select(vec![128u32, 512, 1024, 4096]),
            prop::option::weighted(0.2, prop::sample::select(ZONES.to_vec())),
            prop::option::weighted(0.2, prop::sample::select(vec!["amd64", "arm64"])),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            1usize..6,
        ),
        1..6,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .map(|(millicpu, mebibytes, zone, arch, tolerates, spread, one_per_node, avoids_previous, replicas)| {
                PodSpec { millicpu, mebibytes, zone, arch, tolerates, spread, one_per_node, avoids_previous, replicas }
            })
            .collect()
    })
}

fn taint() -> Taint {
    Taint { key: "dedicated".into(), value: Some("batch".into()), effect: "NoSchedule".into(), time_added: None }
}

fn build(catalog: Vec<InstanceType>, pools: &[PoolSpec], pods: &[PodSpec]) -> Input {
    let pools = pools
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let name = format!("pool-{i}");
            let mut requirements = Requirements::new();
            requirements.add(labels::NODEPOOL, Requirement::one_of([name.clone()]));
            if let Some(capacity_type) = spec.capacity_type {
                requirements.add(labels::CAPACITY_TYPE, Requirement::one_of([capacity_type]));
            }
            if let Some(zone) = spec.zone {
                requirements.add(labels::ZONE, Requirement::one_of([zone]));
            }
            NodePoolTemplate {
                name,
                weight: spec.weight,
                requirements,
                taints: if spec.tainted { vec![taint()] } else { vec![] },
                instance_types: (0..catalog.len()).collect(),
                daemon_overhead: Resources::new(),
                remaining: spec.node_limit.map(|n| [(NODES.to_string(), n)].into_iter().collect()),
            }
        })
        .collect();
    let mut infos = Vec::new();
    for (group, spec) in pods.iter().enumerate() {
        for replica in 0..spec.replicas {
            let mut selector = serde_json::Map::new();
            if let Some(zone) = spec.zone {
                selector.insert(labels::ZONE.into(), json!(zone));
            }
            if let Some(arch) = spec.arch {
                selector.insert(labels::ARCH.into(), json!(arch));
            }
            let mut pod_spec = json!({
                "containers": [{"name": "c", "resources": {"requests": {"cpu": format!("{}m", spec.millicpu), "memory": format!("{}Mi", spec.mebibytes)}}}],
                "nodeSelector": selector,
            });
            if spec.tolerates {
                pod_spec["tolerations"] =
                    json!([{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}]);
            }
            if spec.spread {
                pod_spec["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": labels::ZONE,
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"group": group.to_string()}}}]);
            }
            let apart_from = |group: usize| json!({"topologyKey": labels::HOSTNAME, "labelSelector": {"matchLabels": {"group": group.to_string()}}});
            let mut apart = Vec::new();
            if spec.one_per_node {
                apart.push(apart_from(group));
            }
            if spec.avoids_previous && group > 0 {
                apart.push(apart_from(group - 1));
            }
            if !apart.is_empty() {
                pod_spec["affinity"] =
                    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": apart}});
            }
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("g{group}-r{replica}"), "namespace": "default", "labels": {"group": group.to_string()}},
                "spec": pod_spec,
            }))
            .unwrap();
            infos.push(Arc::new(PodInfo::from_pod(&pod).unwrap()));
        }
    }
    Input { pods: infos, pools, instance_types: catalog.into(), ..Default::default() }
}

fn check_invariants(input: &Input, plan: &Plan) -> Result<(), TestCaseError> {
    let pods: BTreeMap<&str, &PodInfo> = input.pods.iter().map(|p| (p.key.as_str(), &**p)).collect();
    let placed = plan.new_claims.iter().map(|c| c.pods.len()).sum::<usize>() + plan.existing.len();
    prop_assert_eq!(placed + plan.unschedulable.len(), input.pods.len(), "every pod is decided exactly once");
    let mut nodes_per_pool: BTreeMap<&str, i64> = BTreeMap::new();
    for claim in &plan.new_claims {
        let pool = input.pools.iter().find(|p| p.name == claim.nodepool).unwrap();
        *nodes_per_pool.entry(&pool.name).or_default() += 1;
        prop_assert!(!claim.instance_types.is_empty() && claim.instance_types.len() <= 60);
        let mut requests = Resources::new();
        for key in &claim.pods {
            requests.add(&pods[key.as_str()].requests);
        }
        for name in &claim.instance_types {
            let instance = input.instance_types.iter().find(|t| &t.name == name).unwrap();
            prop_assert!(requests.fits_in(&instance.allocatable), "{} overfilled: {:?}", name, requests);
            // Whatever offering the launch picks, the node satisfies the pool and every pod on it.
            let offerings: Vec<&Offering> =
                instance.offerings.iter().filter(|o| o.available && offering_allowed(o, &claim.requirements)).collect();
            prop_assert!(!offerings.is_empty(), "{} has no offering the claim allows", name);
            for offering in offerings {
                let mut node = (*instance.labels).clone();
                node.insert(labels::ZONE.into(), offering.zone.clone());
                node.insert(labels::CAPACITY_TYPE.into(), offering.capacity_type.clone());
                if let Some(reservation) = &offering.reservation_id {
                    node.insert(labels::CAPACITY_RESERVATION_ID.into(), reservation.clone());
                }
                node.insert(labels::NODEPOOL.into(), pool.name.clone());
                prop_assert!(pool.requirements.admit_labels(&node), "{} outside pool {}", name, pool.name);
                for key in &claim.pods {
                    let pod = pods[key.as_str()];
                    prop_assert!(
                        pod.requirements.iter().any(|alternative| alternative.admit_labels(&node)),
                        "{} placed against its requirements on {:?}",
                        key,
                        node
                    );
                    prop_assert!(
                        pod.untolerated_taint(&pool.taints, SoftTaints::Tolerated).is_none(),
                        "{} does not tolerate {}",
                        key,
                        pool.name
                    );
                }
            }
        }
    }
    for pool in &input.pools {
        if let Some(limit) = pool.remaining.as_ref().map(|r| r.get(NODES)) {
            prop_assert!(
                nodes_per_pool.get(pool.name.as_str()).copied().unwrap_or(0) <= limit,
                "{} over its node limit",
                pool.name
            );
        }
    }
    // Hostname anti-affinity: no new node holds a pod and another its terms keep apart (one per
    // node for a group apart from itself), before and after re-packing.
    for claim in &plan.new_claims {
        let on_node: Vec<&PodInfo> = claim.pods.iter().map(|key| pods[key.as_str()]).collect();
        for pod in &on_node {
            for term in pod.topology.iter().filter(|term| term.key == labels::HOSTNAME) {
                let apart = on_node.iter().find(|other| {
                    other.key != pod.key && term.counts(&other.namespace, &other.labels, &input.namespaces)
                });
                prop_assert!(apart.is_none(), "{} shares a node with {:?}", pod.key, apart.map(|p| &p.key));
            }
        }
    }
    // Zone spread (DoNotSchedule, maxSkew 1) among the zones a group uses.
    let mut per_group_zone: BTreeMap<(String, String), i64> = BTreeMap::new();
    for claim in &plan.new_claims {
        let zone = claim
            .requirements
            .get(labels::ZONE)
            .and_then(|r| r.finite_values())
            .filter(|v| v.len() == 1)
            .map(|v| v.iter().next().unwrap().clone());
        for key in &claim.pods {
            let pod = pods[key.as_str()];
            if pod.topology.iter().any(|term| term.key == labels::ZONE) {
                let zone = zone.clone();
                prop_assert!(zone.is_some(), "spread pod {} on a node without a single zone", key);
                *per_group_zone.entry((pod.labels["group"].clone(), zone.unwrap())).or_default() += 1;
            }
        }
    }
    // Zones a group's pods could reach count too, with 0 pods when the plan used none: a group
    // bunched into one zone while others were open is skewed. Exact only when every pod of the
    // group was placed and no pool has a node limit (limits may close zones).
    let limited = input.pools.iter().any(|p| p.remaining.is_some());
    let unschedulable: Vec<&str> = plan.unschedulable.iter().map(|(pod, _)| pod.as_str()).collect();
    let mut groups: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for ((group, zone), count) in &per_group_zone {
        groups.entry(group.clone()).or_default().insert(zone.clone(), *count);
    }
    for (group, mut counts) in groups {
        let members: Vec<&PodInfo> = input.pods.iter().filter(|p| p.labels["group"] == group).map(|p| &**p).collect();
        if !limited && members.iter().all(|p| !unschedulable.contains(&p.key.as_str())) {
            for zone in reachable_zones(input, members[0]) {
                counts.entry(zone).or_insert(0);
            }
        }
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        prop_assert!(max - min <= 1, "group {} skewed across zones: {:?}", group, counts);
    }
    Ok(())
}

/// Zones where some pool could launch some instance type that takes the pod.
fn reachable_zones(input: &Input, pod: &PodInfo) -> BTreeSet<String> {
    let mut zones = BTreeSet::new();
    for pool in input.pools.iter().filter(|p| pod.untolerated_taint(&p.taints, SoftTaints::Tolerated).is_none()) {
        for instance in pool.instance_types.iter().map(|&i| &input.instance_types[i]) {
            if !pod.requests.fits_in(&instance.allocatable) {
                continue;
            }
            for offering in instance.offerings.iter().filter(|o| o.available) {
                let mut node = (*instance.labels).clone();
                node.insert(labels::ZONE.into(), offering.zone.clone());
                node.insert(labels::CAPACITY_TYPE.into(), offering.capacity_type.clone());
                node.insert(labels::NODEPOOL.into(), pool.name.clone());
                if pool.requirements.admit_labels(&node) && pod.requirements.iter().any(|alt| alt.admit_labels(&node)) {
                    zones.insert(offering.zone.clone());
                }
            }
        }
    }
    zones
}

/// Registered nodes with some room left: (zone, arch, tainted, free millicores, free pods).
fn nodes_strategy() -> impl Strategy<Value = Vec<std::sync::Arc<ExistingNode>>> {
    prop::collection::vec(
        (
            prop::sample::select(ZONES.to_vec()),
            prop::sample::select(vec!["amd64", "arm64"]),
            prop::bool::weighted(0.3),
            0i64..8000,
            0i64..30,
        ),
        0..4,
    )
    .prop_map(|nodes| {
        nodes
            .into_iter()
            .enumerate()
            .map(|(i, (zone, arch, tainted, millicpu, pods))| {
                let name = format!("node-{i}");
                let node_labels: BTreeMap<String, String> = [
                    (labels::HOSTNAME, name.as_str()),
                    (labels::ZONE, zone),
                    (labels::ARCH, arch),
                    (labels::CAPACITY_TYPE, "on-demand"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
                std::sync::Arc::new(ExistingNode {
                    requirements: std::sync::Arc::new(Requirements::from_labels(&node_labels)),
                    registered: true,
                    taints: if tainted { vec![taint()] } else { vec![] },
                    free: [
                        ("cpu".to_owned(), millicpu),
                        ("memory".to_owned(), millicpu << 21),
                        ("pods".to_owned(), pods),
                    ]
                    .into_iter()
                    .collect(),
                    host_ports: vec![],
                    name,
                })
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// First fit places a run of identical replicas at once where it can; a label of its own
    /// gives each replica its own signature, so each is placed alone. Both must give one plan.
    /// (Re-packing, which splits claims by signature, comes after and is checked below.)
    #[test]
    fn replicas_placed_together_land_where_they_would_one_by_one(
        catalog in catalog_strategy(),
        pools in pools_strategy(),
        pods in pods_strategy(),
        nodes in nodes_strategy(),
        scale in 1usize..40,
    ) {
        let pods: Vec<PodSpec> = pods.into_iter().map(|p| PodSpec { replicas: p.replicas * scale, ..p }).collect();
        let input = Input { nodes, ..build(catalog, &pools, &pods) };
        let mut alone = input.clone();
        for pod in &mut alone.pods {
            let key = pod.key.clone();
            Arc::make_mut(pod).labels.insert("replica".into(), key);
        }
        let first_fit = |input: &Input| solve_without_repack(input, &mut Memo::default());
        prop_assert_eq!(first_fit(&input), first_fit(&alone));
        // Re-packing places the same pods and never costs more than first fit.
        let cost = |plan: &Plan| plan.new_claims.iter().map(|c| c.price).sum::<f64>();
        let placed = |plan: &Plan| {
            let mut pods: Vec<String> = plan.new_claims.iter().flat_map(|c| c.pods.clone()).collect();
            pods.extend(plan.existing.iter().map(|(pod, _)| pod.clone()));
            pods.sort();
            pods
        };
        for input in [&input, &alone] {
            let (packed, split) = (first_fit(input), solve(input));
            prop_assert_eq!(placed(&packed), placed(&split));
            prop_assert!(cost(&split) <= cost(&packed) + 1e-9, "{} > {}", cost(&split), cost(&packed));
        }
    }

    /// Consolidation asks its questions with the bound pods' topology counts taken from a tally
    /// of the whole cluster less the nodes a question leaves out: each must give the plan that
    /// counting the pods left gives.
    #[test]
    fn a_question_counted_from_the_tally_gives_the_plan_of_the_pods_left(
        catalog in catalog_strategy(),
        pools in pools_strategy(),
        pods in pods_strategy(),
        nodes in nodes_strategy(),
        placement in prop::collection::vec(0usize..5, 16),
        gone in 0u8..16,
    ) {
        let built = build(catalog, &pools, &pods);
        // Each pod bound to a node or (placement past the last node) pending.
        let node_of = |i: usize| nodes.get(placement[i % placement.len()]);
        let mut whole = Input { nodes: nodes.clone(), pods: vec![], ..built.clone() };
        for (i, pod) in built.pods.iter().enumerate() {
            match node_of(i) {
                Some(node) => whole.scheduled.push(ScheduledPod { pod: pod.clone(), node: node.name.as_str().into() }),
                None => whole.pods.push(pod.clone()),
            }
        }
        let is_gone = |node: &str| nodes.iter().position(|n| n.name == node).is_some_and(|i| gone & (1 << i) != 0);
        let (moving, staying): (Vec<ScheduledPod>, Vec<ScheduledPod>) =
            whole.scheduled.iter().cloned().partition(|s| is_gone(&s.node));
        let question = Input {
            pods: moving.into_iter().map(|s| s.pod).chain(whole.pods.iter().cloned()).collect(),
            nodes: whole.nodes.iter().filter(|n| !is_gone(&n.name)).cloned().collect(),
            scheduled: staying,
            ..whole.clone()
        };
        let gone: Vec<String> = nodes.iter().map(|n| n.name.clone()).filter(|n| is_gone(n)).collect();
        // A tally of the whole input covers every term a question holds; one of its bound pods
        // alone misses the terms only pending pods hold, and the run counts from its pods instead.
        let bound_only = Input { pods: vec![], ..whole.clone() };
        for tally in [BoundTally::of(&whole), BoundTally::of(&bound_only)] {
            let counted = Input {
                scheduled: vec![],
                counted: Some(CountedBound { whole: Arc::new(tally), gone: gone.clone() }),
                ..question.clone()
            };
            prop_assert_eq!(
                solve_without_repack(&question, &mut Memo::default()),
                solve_without_repack(&counted, &mut Memo::default())
            );
            prop_assert_eq!(solve(&question), solve(&counted));
        }
    }

    #[test]
    fn plans_respect_requirements_taints_resources_limits_and_spread(
        catalog in catalog_strategy(),
        pools in pools_strategy(),
        pods in pods_strategy(),
    ) {
        let input = build(catalog, &pools, &pods);
        let plan = solve(&input);
        check_invariants(&input, &plan)?;
        prop_assert_eq!(&plan, &solve(&input), "the same input gives the same plan");
        // The permissive policies change which preferences and minValues hold, never a rule.
        let policies = Policies { preferences: PreferencePolicy::Ignore, min_values: MinValuesPolicy::BestEffort };
        let relaxed = Input { policies, ..input };
        check_invariants(&relaxed, &solve(&relaxed))?;
    }
}
