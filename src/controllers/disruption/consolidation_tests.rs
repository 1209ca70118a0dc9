//! Consolidation decisions on small clusters: nodes with room and pods, the solver's catalog.

use std::sync::Arc;

use super::*;
use crate::scheduling::{
    pod::PodInfo,
    resources::Resources,
    solver::{
        ExistingNode, ScheduledPod,
        tests::{catalog, pod_with, pool},
    },
};

/// A node of the test cluster: its instance type, capacity type, free room and pods.
struct TestNode {
    name: &'static str,
    instance_type: &'static str,
    capacity_type: &'static str,
    free: (&'static str, &'static str),
    pods: Vec<PodInfo>,
}

fn node(name: &'static str, instance_type: &'static str, free: (&'static str, &'static str), pods: usize) -> TestNode {
    let pods = (0..pods).map(|i| pod_with(&format!("{name}-{i}"), "500m", "1Gi", "")).collect();
    TestNode { name, instance_type, capacity_type: "on-demand", free, pods }
}

/// An m5.2xlarge holding `pods` pods that keep off each other's hosts (required anti-affinity
/// on the hostname): no two of them can share a replacement.
fn kept_apart(name: &'static str, pods: usize) -> TestNode {
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n";
    TestNode {
        pods: (0..pods).map(|i| pod_with(&format!("{name}-{i}"), "500m", "1Gi", anti)).collect(),
        ..node(name, "m5.2xlarge", ("7", "29Gi"), 0)
    }
}

fn resources(cpu: &str, memory: &str) -> Resources {
    let room = [("cpu", cpu), ("memory", memory), ("pods", "110")];
    let quantities: std::collections::BTreeMap<_, _> = room
        .into_iter()
        .map(|(k, v)| (k.to_owned(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_owned())))
        .collect();
    Resources::from_quantities(&quantities).unwrap()
}

/// The candidates (in the given order) and the input builder over the cluster, whose pool
/// launches `capacity_type`.
fn cluster(nodes: &[TestNode], capacity_type: &str) -> (Vec<Candidate>, impl Fn(&HashSet<&str>) -> Input + use<>) {
    cluster_of(nodes, capacity_type, catalog())
}

/// As [`cluster`], over the given instance types.
fn cluster_of(
    nodes: &[TestNode],
    capacity_type: &str,
    types: Vec<crate::scheduling::catalog::InstanceType>,
) -> (Vec<Candidate>, impl Fn(&HashSet<&str>) -> Input + use<>) {
    let candidates = nodes
        .iter()
        .map(|n| {
            let price = types
                .iter()
                .find(|t| t.name == n.instance_type)
                .and_then(|t| t.offerings.iter().find(|o| o.capacity_type == n.capacity_type).map(|o| o.price));
            Candidate {
                claim: format!("claim-{}", n.name),
                node: n.name.into(),
                pool: "default".into(),
                instance_type: n.instance_type.into(),
                capacity_type: n.capacity_type.into(),
                price,
                cost: n.pods.len() as f64,
                pods: n.pods.len(),
            }
        })
        .collect();
    let snapshot: Vec<(String, Resources, Vec<Arc<PodInfo>>)> = nodes
        .iter()
        .map(|n| (n.name.to_owned(), resources(n.free.0, n.free.1), n.pods.iter().cloned().map(Arc::new).collect()))
        .collect();
    let mut template = pool("default", 0, capacity_type);
    template.instance_types = (0..types.len()).collect();
    let types: Arc<[crate::scheduling::catalog::InstanceType]> = types.into();
    let without = move |gone: &HashSet<&str>| Input {
        pods: snapshot.iter().filter(|(n, _, _)| gone.contains(n.as_str())).flat_map(|(_, _, p)| p.clone()).collect(),
        nodes: snapshot
            .iter()
            .filter(|(n, _, _)| !gone.contains(n.as_str()))
            .map(|(name, free, _)| {
                Arc::new(ExistingNode {
                    name: name.clone(),
                    requirements: Arc::default(),
                    registered: true,
                    taints: vec![],
                    free: free.clone(),
                    host_ports: vec![],
                })
            })
            .collect(),
        // The pods staying, for the (anti-)affinity of those that move.
        scheduled: snapshot
            .iter()
            .filter(|(n, _, _)| !gone.contains(n.as_str()))
            .flat_map(|(name, _, pods)| {
                let node: Arc<str> = name.as_str().into();
                pods.iter().map(move |pod| ScheduledPod { pod: pod.clone(), node: node.clone() })
            })
            .collect(),
        pools: vec![template.clone()],
        instance_types: types.clone(),
        ..Default::default()
    };
    (candidates, without)
}

/// The one node a decision replaces its candidates with.
fn only_replacement(decision: &Decision) -> &crate::scheduling::solver::NewNodeClaim {
    match &decision.action {
        Action::Replace(replacements) if replacements.len() == 1 => &replacements[0],
        _ => panic!("not one replacement: {decision:?}"),
    }
}

#[test]
fn a_node_whose_pods_fit_elsewhere_is_deleted() {
    // "a" holds one small pod; "b" has room for it.
    let (candidates, without) =
        cluster(&[node("a", "m5.xlarge", ("3", "14Gi"), 1), node("b", "m5.xlarge", ("2", "6Gi"), 3)], "on-demand");
    let outcome = consolidate(&candidates[..1], false, &without);
    let decision = outcome.decision.expect("a decision");
    assert_eq!(decision.action, Action::Delete);
    assert_eq!(decision.candidates[0].node, "a");
    assert!((decision.savings - 0.192).abs() < 1e-9);
    assert_eq!(decision.destinations, ["b"], "where its pod goes, for emptiness to leave alone");
}

#[test]
fn a_large_node_is_replaced_by_a_cheaper_one_that_fits_its_pods() {
    // Two small pods on an m5.2xlarge and nowhere else to go: a c5.large or m5.large will do.
    let (candidates, without) = cluster(&[node("big", "m5.2xlarge", ("7", "29Gi"), 2)], "on-demand");
    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    assert!(decision.destinations.is_empty(), "its pods go to the replacement only");
    let replacement = only_replacement(&decision);
    assert_eq!(replacement.instance_types[0], "c5.large", "the cheapest type that fits 1 CPU and 2 GiB");
    assert!(replacement.price < 0.384);
    assert!(replacement.instance_types.iter().all(|t| t != "m5.2xlarge"), "never the same price or dearer");
    assert!((decision.savings - (0.384 - replacement.price)).abs() < 1e-9);
}

#[test]
fn a_replacement_is_never_a_type_that_is_poor_value_for_the_pods() {
    // Four full m9.4xlarge nodes, each with 12 pods of 500m. The pods of three fit one
    // x9.6xlarge, cheaper than the three together but 20% dearer per vCPU than the m9 family.
    // Right-sizing replaces two nodes with one m9.4xlarge instead, and the other two alike in the
    // same decision: four nodes become two m9.4xlarge ($1.60), where the x9 would have left $2.24.
    let types = crate::scheduling::solver::sizing_tests::catalog(&[
        ("m9.2xlarge", 8, 32, 0.40),
        ("m9.4xlarge", 16, 64, 0.80),
        ("x9.6xlarge", 24, 96, 1.44),
    ]);
    let full = |name| TestNode { free: ("0", "0"), ..node(name, "m9.4xlarge", ("0", "0"), 12) };
    let (candidates, without) = cluster_of(&[full("a"), full("b"), full("c"), full("d")], "on-demand", types);
    // The two-node merge alone, as Karpenter would take it.
    let merge = evaluate(&[&candidates[0], &candidates[1]], 1, false, &without, &mut Memo::default()).expect("merge");
    assert_eq!(only_replacement(&merge).instance_types, ["m9.4xlarge"]);
    assert!((merge.savings - 0.80).abs() < 1e-9, "{merge:?}");

    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    assert_eq!(decision.candidates.len(), 4, "{decision:?}");
    let Action::Replace(replacements) = &decision.action else { panic!("{decision:?}") };
    assert_eq!(replacements.len(), 2, "{decision:?}");
    assert!(replacements.iter().all(|r| r.instance_types == ["m9.4xlarge"]), "{replacements:?}");
    assert!((decision.savings - 1.60).abs() < 1e-9, "{decision:?}");
}

#[test]
fn three_nodes_are_replaced_by_one() {
    let nodes = [
        node("a", "m5.large", ("1", "5Gi"), 1),
        node("b", "m5.large", ("1", "5Gi"), 1),
        node("c", "m5.large", ("1", "5Gi"), 1),
    ];
    let (candidates, without) = cluster(&nodes, "on-demand");
    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    assert_eq!(decision.candidates.len(), 3, "{decision:?}");
    let replacement = only_replacement(&decision);
    assert!(replacement.price < 3.0 * 0.096);
    assert_eq!(replacement.pods.len(), 3);
}

#[test]
fn three_nodes_go_together_when_no_two_of_them_would_save() {
    // A family priced by the vCPU: two 2.5-CPU pods need the 8-vCPU size, as dear as the two
    // 4-vCPU nodes they would leave; only all three on it save. Bisection alone asks about two,
    // hears no, and never asks about three.
    let types =
        crate::scheduling::solver::sizing_tests::catalog(&[("m9.xlarge", 4, 16, 0.20), ("m9.2xlarge", 8, 32, 0.40)]);
    let grown = |name: &'static str| TestNode {
        pods: vec![pod_with(&format!("{name}-0"), "2500m", "1Gi", "")],
        ..node(name, "m9.xlarge", ("1500m", "15Gi"), 0)
    };
    let (candidates, without) = cluster_of(&[grown("a"), grown("b"), grown("c")], "on-demand", types);
    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    assert_eq!(decision.candidates.len(), 3, "{decision:?}");
    let replacement = only_replacement(&decision);
    assert_eq!(replacement.instance_types, ["m9.2xlarge"]);
    assert!((decision.savings - 0.20).abs() < 1e-9, "{decision:?}");
    let two = evaluate(&candidates.iter().take(2).collect::<Vec<_>>(), 1, false, &without, &mut Memo::default());
    assert!(matches!(two, Err(Refusal::NoCheaperReplacement { .. })), "{two:?}");
}

#[test]
fn refusals_say_why() {
    // Already the cheapest type that fits: nothing cheaper, and nowhere else to go.
    let (candidates, without) = cluster(&[node("small", "c5.large", ("1", "1Gi"), 2)], "on-demand");
    let outcome = consolidate(&candidates, false, &without);
    assert!(outcome.decision.is_none());
    assert!(matches!(outcome.refused[..], [(_, Refusal::NoCheaperReplacement { .. })]), "{:?}", outcome.refused);

    // A spot node is only replaced by spot with the gate, and then with enough types.
    let mut spot = node("spot", "m5.2xlarge", ("7", "29Gi"), 2);
    spot.capacity_type = "spot";
    let (candidates, without) = cluster(&[spot], "spot");
    let outcome = consolidate(&candidates, false, &without);
    assert_eq!(outcome.refused[0].1, Refusal::SpotToSpotOff);
    let outcome = consolidate(&candidates, true, &without);
    assert!(matches!(outcome.refused[0].1, Refusal::TooFewSpotTypes(n) if n < MIN_SPOT_TYPES), "{:?}", outcome.refused);

    // A pod bigger than any type fits nowhere.
    let mut huge = node("huge", "m5.2xlarge", ("0", "0"), 0);
    huge.pods = vec![pod_with("huge-0", "64", "1Gi", "")];
    let (candidates, without) = cluster(&[huge], "on-demand");
    assert!(matches!(consolidate(&candidates, false, &without).refused[0].1, Refusal::PodsFitNowhere(_)));
}

#[test]
fn empty_nodes_are_left_to_the_emptiness_method() {
    let (candidates, without) = cluster(&[node("empty", "m5.large", ("2", "7Gi"), 0)], "on-demand");
    let outcome = consolidate(&candidates, false, &without);
    assert!(outcome.decision.is_none() && outcome.refused.is_empty());
}

#[test]
fn single_nodes_each_with_a_cheaper_replacement_go_together() {
    // Three m5.2xlarge nodes, each holding one pod that keeps off the others' hosts: no two
    // share a replacement (multi-node consolidation launches one), but each alone is replaced
    // by a c5.large. The three go in one decision instead of three, 15 s re-check apart.
    let (candidates, without) = cluster(&[kept_apart("a", 1), kept_apart("b", 1), kept_apart("c", 1)], "on-demand");
    let all: Vec<&Candidate> = candidates.iter().collect();
    let one_new = evaluate(&all, 1, false, &without, &mut Memo::default());
    assert_eq!(one_new, Err(Refusal::NeedsSeveralNodes(3)));
    // As the re-check asks of such a decision: one new node for each of them at most.
    let three_new = evaluate(&all, 3, false, &without, &mut Memo::default()).expect("holds");
    assert!(matches!(&three_new.action, Action::Replace(r) if r.len() == 3), "{three_new:?}");

    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    assert_eq!(decision.candidates.len(), 3, "{decision:?}");
    let Action::Replace(replacements) = &decision.action else { panic!("{decision:?}") };
    assert_eq!(replacements.len(), 3, "{replacements:?}");
    assert!(replacements.iter().all(|r| r.pods.len() == 1 && r.instance_types[0] == "c5.large"), "{replacements:?}");
    let launched: f64 = replacements.iter().map(|r| r.price).sum();
    assert!((decision.savings - (3.0 * 0.384 - launched)).abs() < 1e-9, "{decision:?}");
    // Whichever of its types each replacement launches as, the three cost less than the
    // candidates: each is held below its share of their price.
    let offers = without(&HashSet::new());
    let dearest: f64 = replacements.iter().map(|r| dearest_offering(r, &offers)).sum();
    assert!(dearest < 3.0 * 0.384, "{dearest}: {replacements:?}");
}

#[test]
fn a_node_whose_pods_keep_apart_is_split_into_cheaper_nodes() {
    // An m5.2xlarge left holding two pods that keep off each other's host: two c5.large cost
    // less than it does. Karpenter keeps such a node ("would need 2 new nodes").
    let apart = kept_apart("big", 2);
    let (candidates, without) = cluster(&[apart], "on-demand");
    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    let Action::Replace(replacements) = &decision.action else { panic!("{decision:?}") };
    assert_eq!(replacements.len(), 2, "{replacements:?}");
    assert!(replacements.iter().all(|r| r.pods.len() == 1 && r.instance_types[0] == "c5.large"), "{replacements:?}");
    let offers = without(&HashSet::new());
    assert!(replacements.iter().map(|r| dearest_offering(r, &offers)).sum::<f64>() < 0.384, "{replacements:?}");
    // As the re-check asks it: the two new nodes it decided on, no more.
    let one = [&candidates[0]];
    assert_eq!(evaluate(&one, 1, false, &without, &mut Memo::default()), Err(Refusal::NeedsSeveralNodes(2)));
    assert!(evaluate(&one, decision.launches(), false, &without, &mut Memo::default()).is_ok());
}

#[test]
fn a_multi_node_decision_and_a_single_node_one_go_together() {
    // Two m5.large holding a small pod each merge onto one node, saving cents; the m5.2xlarge
    // left holding two pods that keep apart splits into two small nodes, saving more. Karpenter
    // would act on the merge and ask about the split a round later; both go in one decision.
    let apart = kept_apart("big", 2);
    let nodes = [node("a", "m5.large", ("1", "5Gi"), 1), node("b", "m5.large", ("1", "5Gi"), 1), apart];
    let (candidates, without) = cluster(&nodes, "on-demand");
    let merge = evaluate(&[&candidates[0], &candidates[1]], 1, false, &without, &mut Memo::default()).expect("merge");
    let split = evaluate(&[&candidates[2]], MAX_SPLIT, false, &without, &mut Memo::default()).expect("split");
    assert!(split.savings > merge.savings, "{split:?} {merge:?}");

    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    let mut nodes: Vec<&str> = decision.candidates.iter().map(|c| c.node.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["a", "b", "big"], "{decision:?}");
    assert!(decision.savings >= split.savings, "{decision:?}");
    assert!(decision.launches() <= merge.launches() + split.launches(), "{decision:?}");
    // The re-check asks the same of it: as many new nodes as decided, no more.
    let all: Vec<&Candidate> = candidates.iter().collect();
    assert!(evaluate(&all, decision.launches(), false, &without, &mut Memo::default()).is_ok());
}

#[test]
fn the_single_nodes_that_save_most_go_first_whatever_their_disruption_cost() {
    // A batch's worth of m5.xlarge nodes, cheapest to disrupt, each saving $0.107 as a c5.large;
    // then an m5.2xlarge whose two pods split onto two c5.large, saving $0.214. Every pod keeps
    // off the others' hosts, so no two nodes merge. Asked in disruption-cost order, the small
    // nodes fill the batch and the large one waits for a later round.
    let small =
        |name: &'static str| TestNode { instance_type: "m5.xlarge", free: ("3", "13Gi"), ..kept_apart(name, 1) };
    let mut nodes: Vec<TestNode> = (0..MAX_NODES).map(|i| small(numbered("small", i))).collect();
    nodes.push(kept_apart("big", 2));
    let (candidates, without) = cluster(&nodes, "on-demand");

    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    let taken: Vec<&str> = decision.candidates.iter().map(|c| c.node.as_str()).collect();
    // The largest saving, and the small nodes first in disruption-cost order.
    let expected: Vec<&str> = std::iter::once("big").chain((0..MAX_NODES - 1).map(|i| numbered("small", i))).collect();
    assert_eq!(taken, expected);
    let small_saving = 0.192 - 0.085;
    let big_saving = 0.384 - 2.0 * 0.085;
    let saved = (MAX_NODES - 1) as f64 * small_saving + big_saving;
    assert!((decision.savings - saved).abs() < 1e-9, "{decision:?}");
}

#[test]
fn when_the_single_nodes_cannot_all_go_together_those_that_save_most_do() {
    // Spot nodes without the spot-to-spot gate, so nothing can replace them. "a" and "b" each
    // hold a small pod that fits on "d1" or "d2"; "c" holds a pod only "a" has room for. Each
    // goes alone, and so do "a" and "b" together, but not all three: "c"'s pod would have
    // nowhere to go. No run of the cheapest to disrupt ("c" first) goes either.
    let spot = |node: TestNode| TestNode { capacity_type: "spot", ..node };
    let mut c = spot(node("c", "m5.large", ("0", "0"), 0));
    c.pods = vec![pod_with("c-0", "1500m", "1Gi", "")];
    let nodes = [
        c,
        spot(node("a", "m5.2xlarge", ("2", "8Gi"), 1)),
        spot(node("b", "m5.xlarge", ("0", "0"), 1)),
        node("d1", "m5.large", ("600m", "2Gi"), 0),
        node("d2", "m5.large", ("600m", "2Gi"), 0),
    ];
    let (candidates, without) = cluster(&nodes, "spot");
    let all: Vec<&Candidate> = candidates.iter().take(3).collect();
    assert_eq!(evaluate(&all, 1, false, &without, &mut Memo::default()), Err(Refusal::SpotToSpotOff));
    assert_eq!(evaluate(&all[..2], 1, false, &without, &mut Memo::default()), Err(Refusal::SpotToSpotOff));

    let decision = consolidate(&candidates, false, &without).decision.expect("a decision");
    let mut taken: Vec<&str> = decision.candidates.iter().map(|c| c.node.as_str()).collect();
    taken.sort();
    assert_eq!(taken, ["a", "b"], "{decision:?}");
    assert_eq!(decision.action, Action::Delete);
    assert!((decision.savings - 0.3 * (0.384 + 0.192)).abs() < 1e-9, "{decision:?}");
}

/// A node name with a number, for clusters built in a loop.
fn numbered(prefix: &str, i: usize) -> &'static str {
    Box::leak(format!("{prefix}-{i:03}").into_boxed_str())
}

/// The price of the dearest instance type a replacement may launch as, among those `input`
/// offers it.
fn dearest_offering(replacement: &NewNodeClaim, input: &Input) -> f64 {
    offered(replacement, input, &mut Memo::default()).last().map_or(0.0, |(_, price)| *price)
}
