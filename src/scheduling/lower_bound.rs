//! What no plan can beat, to judge plans by: `stoker plan`, the NodePool's Events and the
//! benchmarks report a plan's cost as a ratio to this bound. The largest of three bounds wins:
//! buying the pods' CPU and memory at the best price per unit as if instances came in fractions;
//! the same for the larger pods alone from the types large enough to hold them; and a node of
//! its own for each pod of a hostname anti-affinity group.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    catalog::{InstanceType, offering_allowed},
    pod::{PodInfo, TopologyKind},
    resources::{CPU, MEMORY, Resources},
    solver::{Input, NodePoolTemplate, Plan},
};
use crate::apis::labels;

/// The bound for the pods a plan puts on new NodeClaims, over the instance types and offerings
/// the input's NodePools allow.
pub fn plan_lower_bound(input: &Input, plan: &Plan) -> f64 {
    bound_for_claims(input, plan, |_| true)
}

/// The bound for the pods a plan puts on one NodePool's new NodeClaims, over what that pool
/// allows.
pub fn nodepool_lower_bound(input: &Input, plan: &Plan, nodepool: &str) -> f64 {
    bound_for_claims(input, plan, |name| name == nodepool)
}

fn bound_for_claims(input: &Input, plan: &Plan, pool: impl Fn(&str) -> bool) -> f64 {
    let on_new: BTreeSet<&str> = plan
        .new_claims
        .iter()
        .filter(|claim| pool(&claim.nodepool))
        .flat_map(|claim| claim.pods.iter().map(String::as_str))
        .collect();
    let pods: Vec<&PodInfo> = input.pods.iter().map(|p| &**p).filter(|p| on_new.contains(p.key.as_str())).collect();
    let pools: Vec<&NodePoolTemplate> = input.pools.iter().filter(|p| pool(&p.name)).collect();
    let overhead = pools.iter().map(|pool| pool.daemon_overhead.clone()).reduce(|mut least, other| {
        least.min_with(&other);
        least
    });
    lower_bound(&pods, &admissible(&pools, &input.instance_types), &overhead.unwrap_or_default())
}

/// The largest of the three bounds for `pods` (see the module), each node carrying `overhead`.
pub fn lower_bound(pods: &[&PodInfo], types: &[Admissible], overhead: &Resources) -> f64 {
    let mut requested = Resources::new();
    for pod in pods {
        requested.add(&pod.requests);
    }
    let usable = usable_types(types, overhead);
    let whole = fractional(requested.get(CPU) as f64, requested.get(MEMORY) as f64, &usable);
    whole.max(granular_bound(pods, &usable)).max(separate_nodes_bound(pods, types, overhead))
}

/// Pods that repel one another by hostname (replicas whose required anti-affinity selects
/// themselves) need a node each. Pods of different groups may share a node, so only the
/// largest group counts; each of its pods costs at least the cheapest type that holds it.
fn separate_nodes_bound(pods: &[&PodInfo], types: &[Admissible], overhead: &Resources) -> f64 {
    let mut groups: BTreeMap<usize, f64> = BTreeMap::new();
    let mut terms = Vec::new();
    for pod in pods {
        let repels_itself = pod.topology.iter().find(|term| {
            term.kind == TopologyKind::AntiAffinity
                && term.key == labels::HOSTNAME
                // Named namespaces only: one a selector picks is left out, which keeps the
                // bound a bound.
                && term.namespaces.names.contains(&pod.namespace)
                && term.selector.matches(&pod.labels)
        });
        let Some(term) = repels_itself else { continue };
        let group = terms.iter().position(|seen| *seen == term).unwrap_or_else(|| {
            terms.push(term);
            terms.len() - 1
        });
        let mut needs = pod.requests.clone();
        needs.add(overhead);
        let cheapest =
            types.iter().filter(|instance| needs.fits_in(instance.allocatable)).map(|t| t.price).reduce(f64::min);
        *groups.entry(group).or_default() += cheapest.unwrap_or(0.0);
    }
    groups.into_values().fold(0.0, f64::max)
}

/// An instance type as the bounds see it: the cheapest available offering some NodePool allows,
/// and its allocatable (borrowed: the provisioner computes a bound on every batch).
#[derive(Debug, Clone, Copy)]
pub struct Admissible<'a> {
    pub price: f64,
    pub allocatable: &'a Resources,
}

/// The instance types that some of the NodePools could launch, each at its cheapest available
/// offering those pools allow.
pub fn admissible<'a>(pools: &[&NodePoolTemplate], instance_types: &'a [InstanceType]) -> Vec<Admissible<'a>> {
    let mut out: BTreeMap<&str, Admissible> = BTreeMap::new();
    for pool in pools {
        for instance in pool.instance_types.iter().filter_map(|index| instance_types.get(*index)) {
            // The type's requirements are the labels its nodes carry: a key the pool leaves out
            // does not exclude it, whatever the key.
            if pool.requirements.conflict_with(&instance.requirements, |_| true).is_some() {
                continue;
            }
            let allowed = instance.offerings.iter().filter(|o| o.available && offering_allowed(o, &pool.requirements));
            let Some(price) = allowed.map(|o| o.price).reduce(f64::min) else { continue };
            out.entry(&instance.name)
                .and_modify(|known| known.price = known.price.min(price))
                .or_insert(Admissible { price, allocatable: &instance.allocatable });
        }
    }
    out.into_values().collect()
}

/// A type as the fractional bound sees it: its cheapest available price and what is left of it
/// for pods.
#[derive(Debug, Clone, Copy)]
struct Usable {
    price: f64,
    cpu: f64,
    memory: f64,
}

fn usable_types(types: &[Admissible], overhead: &Resources) -> Vec<Usable> {
    types
        .iter()
        .filter_map(|t| {
            let usable = |name: &str| (t.allocatable.get(name) - overhead.get(name)) as f64;
            let (cpu, memory) = (usable(CPU), usable(MEMORY));
            (cpu > 0.0 && memory > 0.0 && t.price > 0.0).then_some(Usable { price: t.price, cpu, memory })
        })
        .collect()
}

/// The cheapest way to buy `cpu` and `memory` if instances could be bought in fractions (the
/// linear relaxation over the two resources); no set of whole nodes can cost less. An optimum
/// with two constraints uses at most two types, both on the
/// frontier of CPU per dollar against memory per dollar, so only frontier types and their pairs
/// are tried.
fn fractional(cpu: f64, memory: f64, types: &[Usable]) -> f64 {
    if cpu <= 0.0 && memory <= 0.0 {
        return 0.0;
    }
    let mut by_cpu_value: Vec<Usable> = types.to_vec();
    by_cpu_value.sort_by(|a, b| (b.cpu / b.price).total_cmp(&(a.cpu / a.price)));
    let mut frontier: Vec<Usable> = Vec::new();
    for t in by_cpu_value {
        if frontier.last().is_none_or(|last| t.memory / t.price > last.memory / last.price) {
            frontier.push(t);
        }
    }
    let mut best = f64::INFINITY;
    for (i, a) in frontier.iter().enumerate() {
        best = best.min(a.price * (cpu / a.cpu).max(memory / a.memory));
        for b in &frontier[i + 1..] {
            let determinant = a.cpu * b.memory - b.cpu * a.memory;
            if determinant.abs() < f64::EPSILON {
                continue;
            }
            let x = (cpu * b.memory - b.cpu * memory) / determinant;
            let y = (a.cpu * memory - cpu * a.memory) / determinant;
            if x >= 0.0 && y >= 0.0 {
                best = best.min(x * a.price + y * b.price);
            }
        }
    }
    if best.is_finite() { best } else { 0.0 }
}

/// Large pods cannot use the cheap CPU of small types. For a threshold on CPU (or memory), the
/// pods at or above it must sit on types with at least that much CPU (and the memory of the
/// least of them): the fractional purchase of their requests from those types alone is also a
/// bound. The best over the pods' distinct CPU and memory requests.
fn granular_bound(pods: &[&PodInfo], types: &[Usable]) -> f64 {
    const MAX_THRESHOLDS: usize = 16;
    let shapes: Vec<(f64, f64)> =
        pods.iter().map(|p| (p.requests.get(CPU) as f64, p.requests.get(MEMORY) as f64)).collect();
    let mut best = 0.0_f64;
    for by_cpu in [true, false] {
        let key = |shape: &(f64, f64)| if by_cpu { shape.0 } else { shape.1 };
        let mut thresholds: Vec<f64> = shapes.iter().map(key).collect();
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        // Each threshold is a pass over the pods: at most MAX_THRESHOLDS, spread over the range.
        if thresholds.len() > MAX_THRESHOLDS {
            let step = thresholds.len() as f64 / MAX_THRESHOLDS as f64;
            thresholds = (0..MAX_THRESHOLDS).map(|i| thresholds[(i as f64 * step) as usize]).collect();
        }
        for threshold in thresholds {
            let (mut cpu, mut memory) = (0.0, 0.0);
            let (mut least_cpu, mut least_memory) = (f64::INFINITY, f64::INFINITY);
            for shape in shapes.iter().filter(|shape| key(shape) >= threshold) {
                (cpu, memory) = (cpu + shape.0, memory + shape.1);
                (least_cpu, least_memory) = (least_cpu.min(shape.0), least_memory.min(shape.1));
            }
            let eligible: Vec<Usable> =
                types.iter().copied().filter(|t| t.cpu >= least_cpu && t.memory >= least_memory).collect();
            best = best.max(fractional(cpu, memory, &eligible));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;
    use crate::scheduling::catalog::Offering;

    fn priced(name: &str, millis: i64, gib: i64, offerings: Vec<Offering>) -> InstanceType {
        let mut resources: Resources = [(CPU.to_owned(), millis), (MEMORY.to_owned(), gib << 30)].into_iter().collect();
        resources.set(crate::scheduling::resources::PODS, 110);
        let labels = [(labels::INSTANCE_TYPE.to_owned(), name.to_owned())].into();
        InstanceType::new(name.into(), labels, resources.clone(), resources, offerings)
    }

    /// Each type at its cheapest available offering, as `admissible` gives them.
    fn admitted(types: &[InstanceType]) -> Vec<Admissible<'_>> {
        types
            .iter()
            .filter_map(|t| {
                let price = t.offerings.iter().filter(|o| o.available).map(|o| o.price).reduce(f64::min)?;
                Some(Admissible { price, allocatable: &t.allocatable })
            })
            .collect()
    }

    fn offering(price: f64) -> Offering {
        Offering {
            zone: "a".into(),
            zone_id: String::new(),
            capacity_type: "on-demand".into(),
            price,
            available: true,
            reservation_id: None,
            capacity_block: false,
        }
    }

    #[test]
    fn the_fractional_bound_buys_cpu_and_memory_at_the_best_mix() {
        let compute = priced("c.large", 1930, 3, vec![offering(0.08)]);
        let memory = priced("r.large", 1930, 14, vec![offering(0.12)]);
        let types = [compute.clone(), memory.clone()];
        let (c_cpu, c_mem) = (compute.allocatable.get(CPU), compute.allocatable.get(MEMORY));
        let (r_cpu, r_mem) = (memory.allocatable.get(CPU), memory.allocatable.get(MEMORY));
        let mut requests = Resources::new();
        requests.set(CPU, c_cpu * 10);
        assert!(
            (fractional(
                requests.get(CPU) as f64,
                requests.get(MEMORY) as f64,
                &usable_types(&admitted(&types), &Resources::new())
            ) - 0.8)
                .abs()
                < 1e-9,
            "CPU only: ten compute nodes"
        );
        requests.set(MEMORY, r_mem * 10);
        assert!(
            (fractional(
                requests.get(CPU) as f64,
                requests.get(MEMORY) as f64,
                &usable_types(&admitted(&types), &Resources::new())
            ) - 1.2)
                .abs()
                < 1e-9,
            "ten memory nodes carry the CPU too"
        );
        // Exactly one node of each: both constraints tight with one of each type.
        requests.set(CPU, c_cpu + r_cpu);
        requests.set(MEMORY, c_mem + r_mem);
        assert!(
            (fractional(
                requests.get(CPU) as f64,
                requests.get(MEMORY) as f64,
                &usable_types(&admitted(&types), &Resources::new())
            ) - 0.2)
                .abs()
                < 1e-9
        );
        assert_eq!(fractional(1.0, 1.0, &[]), 0.0);
    }

    fn pod(name: &str, app: &str, anti_affinity: bool) -> PodInfo {
        sized(name, app, anti_affinity, "100m")
    }

    fn sized(name: &str, app: &str, anti_affinity: bool, cpu: &str) -> PodInfo {
        let mut spec =
            json!({"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}}}]});
        if anti_affinity {
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": labels::HOSTNAME, "labelSelector": {"matchLabels": {"app": app}}}]}});
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}}, "spec": spec}))
        .expect("a pod");
        PodInfo::from_pod(&pod).expect("valid requests")
    }

    #[test]
    fn pods_that_repel_themselves_by_hostname_need_a_node_each() {
        let types = [priced("small", 1000, 2, vec![offering(0.02)]), priced("big", 8000, 32, vec![offering(0.32)])];
        let spread: Vec<PodInfo> = (0..10).map(|i| pod(&format!("web-{i}"), "web", true)).collect();
        let together: Vec<PodInfo> = (0..10).map(|i| pod(&format!("batch-{i}"), "batch", false)).collect();
        fn refs(pods: &[PodInfo]) -> Vec<&PodInfo> {
            pods.iter().collect()
        }
        let overhead = Resources::new();
        // One CPU of requests: a tenth of the big type, or one small node.
        let fractional = lower_bound(&refs(&together), &admitted(&types), &overhead);
        assert!((fractional - 0.02).abs() < 1e-9, "{fractional}");
        // The same requests, ten pods that may not share a node: ten small nodes.
        let separate = lower_bound(&refs(&spread), &admitted(&types), &overhead);
        assert!((separate - 0.2).abs() < 1e-9, "{separate}");
        // Two groups may share nodes: the larger group decides.
        let mut both = refs(&spread);
        let other: Vec<PodInfo> = (0..4).map(|i| pod(&format!("api-{i}"), "api", true)).collect();
        both.extend(other.iter());
        assert!((lower_bound(&both, &admitted(&types), &overhead) - 0.2).abs() < 1e-9);
        // The overhead every node carries can push a pod onto a larger type.
        let mut heavy = Resources::new();
        heavy.set(CPU, 950);
        assert!((lower_bound(&refs(&spread), &admitted(&types), &heavy) - 3.2).abs() < 1e-9);
    }

    #[test]
    fn large_pods_cannot_use_the_cheap_cpu_of_small_types() {
        // One vCPU for a cent, or four for twenty cents: the small type is far cheaper per vCPU
        // but cannot hold a pod of two.
        let types = [priced("small", 1000, 2, vec![offering(0.01)]), priced("big", 4000, 8, vec![offering(0.20)])];
        let large: Vec<PodInfo> = (0..10).map(|i| sized(&format!("l-{i}"), "large", false, "2")).collect();
        let refs: Vec<&PodInfo> = large.iter().collect();
        let overhead = Resources::new();
        // Twenty vCPU on the big type: five of them.
        assert!((lower_bound(&refs, &admitted(&types), &overhead) - 1.0).abs() < 1e-9);
        // Small pods alongside may use the small type; the large ones still cost the same.
        let small: Vec<PodInfo> = (0..10).map(|i| sized(&format!("s-{i}"), "small", false, "500m")).collect();
        let both: Vec<&PodInfo> = large.iter().chain(&small).collect();
        let bound = lower_bound(&both, &admitted(&types), &overhead);
        assert!((1.0..1.3).contains(&bound), "{bound}");
    }

    #[test]
    fn a_type_with_labels_no_pool_mentions_is_admissible() {
        // Karpenter's fake types carry labels stoker does not know (`size`); only a pool that
        // asks for another value of one excludes the type.
        let mut small = priced("fake-it-0", 1000, 2, vec![offering(0.3)]);
        std::sync::Arc::make_mut(&mut small.requirements)
            .add("size", crate::scheduling::requirements::Requirement::one_of(["small"]));
        let types = [small];
        let pool = |requirements: crate::scheduling::requirements::Requirements| NodePoolTemplate {
            name: "default".into(),
            weight: 0,
            requirements,
            taints: vec![],
            instance_types: vec![0],
            daemon_overhead: Resources::new(),
            remaining: None,
        };
        let open = pool(Default::default());
        assert_eq!(admissible(&[&open], &types).len(), 1);
        let mut large_only = crate::scheduling::requirements::Requirements::new();
        large_only.add("size", crate::scheduling::requirements::Requirement::one_of(["large"]));
        assert!(admissible(&[&pool(large_only)], &types).is_empty());
    }
}
