//! Right-sizing and re-packing rules, one scenario each, on small catalogs built for the rule.

use super::{
    tests::{instance, pod_with, pool},
    *,
};
use crate::scheduling::{catalog::Offering, requirements::Requirement};

/// (name, vCPU, GiB, on-demand $/h), on demand in one zone.
pub(crate) fn catalog(types: &[(&str, i64, i64, f64)]) -> Vec<InstanceType> {
    types
        .iter()
        .map(|(name, vcpus, gib, price)| {
            let offering = Offering {
                zone: "a".into(),
                zone_id: String::new(),
                capacity_type: "on-demand".into(),
                price: *price,
                available: true,
                reservation_id: None,
                capacity_block: false,
            };
            instance(name, *vcpus, *gib, vec![offering])
        })
        .collect()
}

fn input(types: Vec<InstanceType>, pods: Vec<PodInfo>, requirements: &[(&str, Requirement)]) -> Input {
    let mut pool = pool("general", 0, "on-demand");
    pool.instance_types = (0..types.len()).collect();
    for (key, requirement) in requirements {
        pool.requirements.add(key, requirement.clone());
    }
    Input {
        pods: pods.into_iter().map(Arc::new).collect(),
        pools: vec![pool],
        instance_types: types.into(),
        ..Default::default()
    }
}

fn pods(count: usize, cpu: &str, memory: &str) -> Vec<PodInfo> {
    (0..count).map(|i| pod_with(&format!("p{i:03}"), cpu, memory, "")).collect()
}

/// A family priced 5 cents per vCPU at every size, and a larger type of another family that costs
/// twice as much per vCPU.
fn linear_and_a_dear_giant() -> Vec<InstanceType> {
    catalog(&[
        ("m9.large", 2, 8, 0.10),
        ("m9.2xlarge", 8, 32, 0.40),
        ("m9.8xlarge", 32, 128, 1.60),
        ("x9.48xlarge", 192, 768, 19.20),
    ])
}

#[test]
fn a_claim_stops_growing_before_only_dearer_giants_fit() {
    let plan = solve(&input(linear_and_a_dear_giant(), pods(100, "1", "1Gi"), &[]));
    assert!(plan.unschedulable.is_empty());
    // First fit alone would put all 100 pods on the giant for $19.20.
    let total: f64 = plan.new_claims.iter().map(|claim| claim.price).sum();
    assert!(total <= 6.4 + 1e-9, "four 32-vCPU nodes at most: ${total}");
    assert!(plan.new_claims.len() <= 4, "equal-value sizes grow freely: {} claims", plan.new_claims.len());
    for claim in &plan.new_claims {
        assert_eq!(claim.sizing, Sizing::BestValue);
        assert!(!claim.instance_types.contains(&"x9.48xlarge".to_owned()), "{:?}", claim.instance_types);
    }
}

#[test]
fn a_pod_only_a_dear_type_holds_still_gets_one() {
    let plan = solve(&input(linear_and_a_dear_giant(), pods(1, "100", "1Gi"), &[]));
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(plan.new_claims[0].instance_types, ["x9.48xlarge"]);
    // Value is measured over the types that hold a copy: the only one is the best there is.
    assert_eq!(plan.new_claims[0].sizing, Sizing::BestValue);
}

#[test]
fn exotic_types_only_when_nothing_else_fits() {
    // The metal type costs per vCPU exactly what its family's virtual sizes do.
    let types = catalog(&[("m9.large", 2, 8, 0.10), ("m9.8xlarge", 32, 128, 1.60), ("m9.metal", 96, 384, 4.80)]);
    let plan = solve(&input(types.clone(), pods(1, "8", "1Gi"), &[]));
    assert_eq!(plan.new_claims[0].instance_types, ["m9.8xlarge"], "never metal when a virtual size fits");
    assert_eq!(plan.new_claims[0].sizing, Sizing::BestValue);
    let plan = solve(&input(types.clone(), pods(1, "64", "1Gi"), &[]));
    assert_eq!(plan.new_claims[0].instance_types, ["m9.metal"]);
    assert_eq!(plan.new_claims[0].sizing, Sizing::Exotic);
    // Asking for the exotic type by name is asking for it.
    let metal = [(labels::INSTANCE_TYPE, Requirement::one_of(["m9.metal"]))];
    let plan = solve(&input(types, pods(1, "1", "1Gi"), &metal));
    assert_eq!(plan.new_claims[0].instance_types, ["m9.metal"]);
    assert_eq!(plan.new_claims[0].sizing, Sizing::Exotic);
}

#[test]
fn min_values_widens_the_best_value_class() {
    // Family a is the best value; b and c cost 40% more per vCPU, beyond the slack.
    let types = catalog(&[("a9.8xlarge", 32, 128, 1.60), ("b9.8xlarge", 32, 128, 2.24), ("c9.8xlarge", 32, 128, 2.24)]);
    let plan = solve(&input(types.clone(), pods(20, "1", "1Gi"), &[]));
    assert_eq!(plan.new_claims[0].instance_types, ["a9.8xlarge"]);
    let three_families = [(labels::INSTANCE_FAMILY, Requirement::exists().with_min_values(Some(3)))];
    let plan = solve(&input(types, pods(20, "1", "1Gi"), &three_families));
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(plan.new_claims[0].instance_types, ["a9.8xlarge", "b9.8xlarge", "c9.8xlarge"]);
    assert_eq!(plan.new_claims[0].sizing, Sizing::BestValue, "widened to three families, not any size");
}

#[test]
fn the_launch_may_use_a_cheaper_type_outside_the_class_when_the_claim_stayed_small() {
    // The medium size is dearer per vCPU, so it is not best value for a 1-vCPU pod, but the
    // claim ends up holding one such pod and the medium is the cheapest type that holds it.
    let types = catalog(&[("m9.medium", 2, 4, 0.09), ("m9.8xlarge", 32, 128, 1.60), ("m9.24xlarge", 96, 384, 9.6)]);
    let plan = solve(&input(types, pods(1, "1", "1Gi"), &[]));
    // The 24xlarge costs 2x per vCPU: neither in the class nor cheaper than it, so not offered.
    assert_eq!(plan.new_claims[0].instance_types, ["m9.medium", "m9.8xlarge"]);
    assert!((plan.new_claims[0].price - 0.09).abs() < 1e-9);
}

#[test]
fn under_limits_the_launch_never_offers_a_type_larger_than_the_one_charged() {
    // The class is the m9.8xlarge (best per vCPU). The z9.xlarge holds the three pods for less,
    // so it is offered too, unless the pool has limits: they were charged with the m9.8xlarge,
    // and the z9 has more memory than that.
    let types = catalog(&[("m9.8xlarge", 32, 128, 1.60), ("z9.xlarge", 4, 256, 1.00)]);
    let plan = solve(&input(types.clone(), pods(3, "1", "1Gi"), &[]));
    assert_eq!(plan.new_claims[0].instance_types, ["z9.xlarge", "m9.8xlarge"]);
    let mut limited = input(types, pods(3, "1", "1Gi"), &[]);
    let mut limits = Resources::new();
    limits.set(crate::scheduling::resources::CPU, 1_000_000);
    limited.pools[0].remaining = Some(limits);
    let plan = solve(&limited);
    assert_eq!(plan.new_claims[0].instance_types, ["m9.8xlarge"]);
}

/// A compute family, a memory family, and a general type dearer than both.
fn compute_and_memory() -> Vec<InstanceType> {
    catalog(&[
        ("c9.2xlarge", 8, 16, 0.34),
        ("c9.4xlarge", 16, 32, 0.68),
        ("r9.large", 2, 16, 0.13),
        ("r9.xlarge", 4, 32, 0.20),
        ("m9.4xlarge", 16, 64, 0.80),
    ])
}

/// One compute-heavy pod and four memory-heavy ones with `extra` in their spec.
fn compute_pod_and_memory_pods(extra: &str) -> Vec<PodInfo> {
    let mut pods = vec![pod_with("compute", "6", "1Gi", "")];
    pods.extend((0..4).map(|i| pod_with(&format!("memory{i}"), "500m", "3Gi", extra)));
    pods
}

#[test]
fn a_claim_that_mixed_kinds_into_a_dear_size_is_split() {
    let input = input(compute_and_memory(), compute_pod_and_memory_pods(""), &[]);
    // First fit fills the compute pod's claim with the memory pods until it needs the 16-vCPU
    // type: $0.68 for what an 8-vCPU and a 4-vCPU memory type hold for $0.54.
    let packed = solve_without_repack(&input, &mut Memo::default());
    assert_eq!(packed.new_claims.len(), 1);
    assert!((packed.new_claims[0].price - 0.68).abs() < 1e-9, "{:?}", packed.new_claims);
    let plan = solve(&input);
    assert!(plan.unschedulable.is_empty());
    let mut split: Vec<(&str, usize)> =
        plan.new_claims.iter().map(|c| (c.instance_types[0].as_str(), c.pods.len())).collect();
    split.sort();
    assert_eq!(split, [("c9.2xlarge", 1), ("r9.xlarge", 4)], "{:?}", plan.new_claims);
    let placed: BTreeSet<&String> = plan.new_claims.iter().flat_map(|c| &c.pods).collect();
    assert_eq!(placed.len(), 5, "every pod exactly once");
}

#[test]
fn pods_spread_over_zones_are_split_within_the_claims_zone() {
    // Every pod is counted by the spread (all are `app: web`); the claim was narrowed to the
    // zone it chose, and the split's claims keep that requirement, so no zone's count moves.
    let spread = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}\n";
    let plan = solve(&input(compute_and_memory(), compute_pod_and_memory_pods(spread), &[]));
    assert!(plan.unschedulable.is_empty());
    let mut split: Vec<(&str, usize)> =
        plan.new_claims.iter().map(|c| (c.instance_types[0].as_str(), c.pods.len())).collect();
    split.sort();
    assert_eq!(split, [("c9.2xlarge", 1), ("r9.xlarge", 4)], "{:?}", plan.new_claims);
    for claim in &plan.new_claims {
        assert_eq!(claim.requirements.get(labels::ZONE).and_then(domains::single_value), Some("a"));
    }
}

#[test]
fn pods_in_hostname_terms_are_never_moved_by_a_split() {
    // The memory pods must share a node with a web pod: splitting them from the compute pod
    // would break that, however much it saved.
    let affinity = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n";
    let plan = solve(&input(compute_and_memory(), compute_pod_and_memory_pods(affinity), &[]));
    assert!(plan.unschedulable.is_empty());
    assert_eq!(plan.new_claims.len(), 1, "{:?}", plan.new_claims);
    assert!((plan.new_claims[0].price - 0.68).abs() < 1e-9, "{:?}", plan.new_claims);
}

#[test]
fn a_pool_with_limits_keeps_its_packing() {
    let mut input = input(compute_and_memory(), compute_pod_and_memory_pods(""), &[]);
    let mut remaining = Resources::new();
    remaining.set(CPU, 1_000_000);
    input.pools[0].remaining = Some(remaining);
    assert_eq!(solve(&input).new_claims.len(), 1);
}
