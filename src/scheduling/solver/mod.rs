//! The solver: places a batch of pending pods on existing capacity, on NodeClaims opened earlier
//! in the same pass, or on new NodeClaims from the highest-weight NodePool that admits them.
//!
//! Pods go largest first. Everything the inner loop needs is precomputed or cached: requirement
//! sets are interned, so "do these two sets intersect" is answered once per distinct pair; the
//! instance types a requirement set allows are a bitset computed once per distinct set; resources
//! are dense integer vectors. Replicas of one Deployment share a signature, and a node that
//! refused one of them for a reason that cannot change (requirements, taints, ports, room,
//! anti-affinity) is not asked again for the next.

mod bound;
mod claims;
mod domains;
mod interner;
mod memo;
mod nodes;
mod placement;
mod policies;
mod repack;
mod signature;
mod sizing;
mod vectors;

pub use bound::{BoundTally, CountedBound};
pub use memo::Memo;
pub use policies::{MinValuesPolicy, Policies, PreferencePolicy};
pub use sizing::{Sizing, VALUE_SLACK};

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    rc::Rc,
    sync::Arc,
};

use k8s_openapi::api::core::v1::Taint;

use self::{
    claims::OpenClaim,
    interner::{Interner, ReqId},
    nodes::NodeState,
    placement::{Attempt, Target},
    signature::signature_classes,
    vectors::{Dims, accumulate, plus, times_within},
};
use super::{
    bitset::BitSet,
    catalog::InstanceType,
    pod::{HostPort, NamespaceLabels, NodeFilter, PREFER_NO_SCHEDULE, PodInfo, Preference, TopologyKind},
    requirements::Requirements,
    resources::{CPU, MEMORY, Resources},
    topology::{GroupId, Topology},
};
use crate::apis::labels;

/// The pseudo-resource a NodePool limit on node count uses.
pub const NODES: &str = "nodes";

/// At most this many instance types go into one launch (CreateFleet's override limit).
pub const MAX_INSTANCE_TYPES: usize = 60;

/// A NodePool as the solver sees it.
#[derive(Debug, Clone)]
pub struct NodePoolTemplate {
    pub name: String,
    pub weight: i32,
    /// The pool's requirements with its template labels and `stoker.dev/nodepool` folded in.
    pub requirements: Requirements,
    pub taints: Vec<Taint>,
    /// Indices into [`Input::instance_types`] of the types the pool's node class can launch.
    pub instance_types: Vec<usize>,
    /// Requests of the DaemonSet pods that will run on every node of the pool.
    pub daemon_overhead: Resources,
    /// What the pool's limits still allow (limits minus running and in-flight nodes); `None`
    /// when it has no limits.
    pub remaining: Option<Resources>,
}

/// A node that exists or is being launched, with room left on it.
#[derive(Debug, Clone)]
pub struct ExistingNode {
    pub name: String,
    /// A registered node's labels as single-value requirements, or an in-flight NodeClaim's
    /// requirements.
    pub requirements: Arc<Requirements>,
    /// True when `requirements` are the node's actual labels: a key they lack is absent.
    pub registered: bool,
    pub taints: Vec<Taint>,
    /// Allocatable minus the requests of the pods bound or nominated to it.
    pub free: Resources,
    pub host_ports: Vec<HostPort>,
}

/// A pod already bound to a node, for topology counting: its namespace and labels count it in
/// groups, and its required anti-affinity terms repel new pods.
#[derive(Debug, Clone)]
pub struct ScheduledPod {
    pub pod: Arc<PodInfo>,
    /// Shared by every pod on the node.
    pub node: Arc<str>,
}

/// Everything the solver decides from.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Shared with the pod cache, which parsed each pod once.
    pub pods: Vec<Arc<PodInfo>>,
    /// Shared with the input for the whole cluster when this one leaves nodes out.
    pub nodes: Vec<Arc<ExistingNode>>,
    /// The pods bound to nodes, for topology (none when `counted` counts them).
    pub scheduled: Vec<ScheduledPod>,
    pub pools: Vec<NodePoolTemplate>,
    /// Shared with the cloud provider's priced-types cache when there is one node class, so a
    /// batch does not copy the catalog.
    pub instance_types: Arc<[InstanceType]>,
    pub policies: Policies,
    /// Namespace labels, for pod (anti-)affinity terms with a `namespaceSelector`.
    pub namespaces: Arc<NamespaceLabels>,
    /// The bound pods already counted into topology terms, for consolidation's many questions of
    /// one cluster (the input for the cluster without some nodes): `scheduled` is then left
    /// empty. `None` counts `scheduled` in the run.
    pub counted: Option<CountedBound>,
}

/// A node to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNodeClaim {
    pub nodepool: String,
    /// The pool's requirements narrowed by the pods, with `node.kubernetes.io/instance-type`
    /// limited to `instance_types`.
    pub requirements: Requirements,
    /// Compatible instance types that fit every pod, cheapest first, at most 60.
    pub instance_types: Vec<String>,
    /// The pods' requests plus daemonset overhead.
    pub requests: Resources,
    /// Keys (`namespace/name`) of the pods it is for.
    pub pods: Vec<String>,
    /// Price of the cheapest offering, dollars per hour.
    pub price: f64,
    /// How widely its instance types were chosen.
    pub sizing: Sizing,
    /// Launched with fewer values than a requirement's minValues (the BestEffort policy); the
    /// requirement says how many remain.
    pub min_values_relaxed: bool,
}

/// The solver's decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// (pod, node) for pods that fit on existing or in-flight capacity.
    pub existing: Vec<(String, String)>,
    pub new_claims: Vec<NewNodeClaim>,
    /// (pod, reason) for pods nothing can host, naming each NodePool tried and why it refused.
    pub unschedulable: Vec<(String, String)>,
}

impl Plan {
    /// The existing nodes it puts pods on, each once, in name order.
    pub fn receiving_nodes(&self) -> Vec<String> {
        let nodes: BTreeSet<&String> = self.existing.iter().map(|(_, node)| node).collect();
        nodes.into_iter().cloned().collect()
    }

    /// Its (pod, node) placements on existing or in-flight capacity of real pods, without a
    /// CapacityBuffer's virtual ones.
    pub fn real_placements<'a>(&'a self, input: &'a Input) -> impl Iterator<Item = &'a (String, String)> {
        let virtual_pods: HashSet<&str> =
            input.pods.iter().filter(|pod| pod.placeholder).map(|pod| pod.key.as_str()).collect();
        self.existing.iter().filter(move |(pod, _)| !virtual_pods.contains(pod.as_str()))
    }
}

struct Solver<'a> {
    input: &'a Input,
    dims: Dims,
    interner: Interner,
    type_sets: HashMap<ReqId, BitSet>,
    allocatable: Rc<[Vec<i64>]>,
    capacity: Rc<[Vec<i64>]>,
    pod_requests: Vec<Vec<i64>>,
    pool_types: Vec<BitSet>,
    pool_requirements: Vec<ReqId>,
    pool_overhead: Vec<Vec<i64>>,
    pool_remaining: Vec<Option<Vec<i64>>>,
    pools_by_weight: Vec<usize>,
    nodes: Vec<NodeState>,
    claims: Vec<OpenClaim>,
    topology: Topology,
    /// Targets that refused the current signature for good: nodes, then claims.
    dead_nodes: Vec<bool>,
    dead_claims: Vec<bool>,
    /// Requests of the pods still to place that own each hostname-affinity group.
    affinity_pending: HashMap<GroupId, Vec<i64>>,
    sizing: sizing::SizingCache,
    /// Answers about the catalog, kept across runs.
    memo: Memo,
    /// The pools as the memo's pool domains know them (see [`memo::pools_digest`]).
    pools_digest: u64,
    /// Per topology key and node filter, the domains on the existing nodes.
    node_domains: HashMap<(String, NodeFilter), BTreeSet<String>>,
    /// The catalog's types that are not exotic.
    ordinary_types: BitSet,
    /// Whether a pool or node has a PreferNoSchedule taint, so tolerating them is a relaxation.
    soft_taints_exist: bool,
}

/// Decides where every pod of `input` goes: first fit, then a claim holding several kinds of
/// pods is split when that is cheaper (see `repack`).
pub fn solve(input: &Input) -> Plan {
    solve_with(input, &mut Memo::default())
}

/// [`solve`], keeping what it learns of the catalog in `memo` for the next run over the same
/// catalog (a caller asking many questions of one cluster).
pub fn solve_with(input: &Input, memo: &mut Memo) -> Plan {
    run(input, memo, true)
}

/// First fit alone, without splitting claims: for consolidation, which may replace nodes with at
/// most one new node and wants the cheapest single claim for their pods.
pub fn solve_without_repack(input: &Input, memo: &mut Memo) -> Plan {
    run(input, memo, false)
}

fn run(input: &Input, memo: &mut Memo, repack: bool) -> Plan {
    let mut solver = Solver::new(input, std::mem::take(memo));
    let plan = solver.run(repack);
    *memo = solver.memo;
    plan
}

impl<'a> Solver<'a> {
    fn new(input: &'a Input, mut memo: Memo) -> Self {
        memo.for_catalog(&input.instance_types);
        // Only what is asked for can run out: the resources pods and daemons request and the
        // pools' limits name. A resource nobody requests (the EFA interfaces or Neuron devices of
        // some types, a node's hugepages) fits everywhere, and leaving it out keeps every vector
        // operation of the inner loop short.
        let mut names: BTreeSet<&str> = [CPU, MEMORY].into();
        let all_resources = input
            .pods
            .iter()
            .map(|p| &p.requests)
            .chain(input.pools.iter().map(|p| &p.daemon_overhead))
            .chain(input.pools.iter().filter_map(|p| p.remaining.as_ref()));
        for resources in all_resources {
            names.extend(resources.iter().map(|(name, _)| name));
        }
        let dims = Dims(names.into_iter().map(str::to_owned).collect());
        let vectors = memo.vectors(&dims, &input.instance_types, dims.0.iter().position(|name| name == NODES));
        let type_count = input.instance_types.len();
        let mut interner = Interner::default();
        let nodes = input
            .nodes
            .iter()
            .map(|node| NodeState {
                requirements: None,
                free: dims.vector(&node.free),
                host_ports: node.host_ports.clone(),
            })
            .collect();
        let pool_requirements = input.pools.iter().map(|p| interner.intern_ref(&p.requirements)).collect();
        let mut pools_by_weight: Vec<usize> = (0..input.pools.len()).collect();
        pools_by_weight.sort_by(|a, b| {
            let (a, b) = (&input.pools[*a], &input.pools[*b]);
            b.weight.cmp(&a.weight).then_with(|| a.name.cmp(&b.name))
        });
        Self {
            allocatable: vectors.allocatable,
            capacity: vectors.capacity,
            pod_requests: input.pods.iter().map(|p| dims.vector(&p.requests)).collect(),
            pool_types: input
                .pools
                .iter()
                .map(|p| {
                    let mut set = BitSet::empty(type_count);
                    p.instance_types.iter().filter(|i| **i < type_count).for_each(|i| set.insert(*i));
                    set
                })
                .collect(),
            pool_overhead: input.pools.iter().map(|p| dims.vector(&p.daemon_overhead)).collect(),
            // A resource the limits do not name is unlimited.
            pool_remaining: input
                .pools
                .iter()
                .map(|p| {
                    p.remaining.as_ref().map(|limits| {
                        let named: BTreeSet<&str> = limits.iter().map(|(name, _)| name).collect();
                        dims.0
                            .iter()
                            .map(|n| if named.contains(n.as_str()) { limits.get(n) } else { i64::MAX })
                            .collect()
                    })
                })
                .collect(),
            pool_requirements,
            pools_by_weight,
            dims,
            interner,
            type_sets: HashMap::new(),
            nodes,
            claims: Vec::new(),
            topology: Topology::new(input.namespaces.clone()),
            dead_nodes: Vec::new(),
            dead_claims: Vec::new(),
            affinity_pending: HashMap::new(),
            sizing: sizing::SizingCache::default(),
            memo,
            pools_digest: memo::pools_digest(&input.pools),
            node_domains: HashMap::new(),
            ordinary_types: {
                let mut ordinary = BitSet::empty(type_count);
                input
                    .instance_types
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| !t.exotic)
                    .for_each(|(i, _)| ordinary.insert(i));
                ordinary
            },
            soft_taints_exist: input
                .pools
                .iter()
                .flat_map(|p| &p.taints)
                .chain(input.nodes.iter().flat_map(|n| &n.taints))
                .any(|t| t.effect == PREFER_NO_SCHEDULE),
            input,
        }
    }

    fn run(&mut self, repack: bool) -> Plan {
        let input = self.input;
        // Every term, and the pods already running, before any decision.
        let pod_groups: Vec<Vec<GroupId>> =
            input.pods.iter().map(|p| p.topology.iter().map(|t| self.group_of(t)).collect()).collect();
        for pod in &input.pods {
            for preference in &pod.preferences {
                if let Preference::Topology(term) = preference {
                    self.group_of(term);
                }
            }
        }
        for (pod, groups) in pod_groups.iter().enumerate() {
            for id in groups {
                let term = &self.topology.group(*id).term;
                if term.kind == TopologyKind::Affinity && term.key == labels::HOSTNAME {
                    let pending = self.affinity_pending.entry(*id).or_insert_with(|| vec![0; self.dims.0.len()]);
                    accumulate(pending, &self.pod_requests[pod], 1);
                }
            }
        }
        self.count_bound_pods();

        // Real pods before placeholders, each largest first; replicas with one signature stay
        // together.
        let classes = signature_classes(&input.pods);
        let same_signature = |a: usize, b: usize| classes[a] == classes[b];
        let mut order: Vec<usize> = (0..input.pods.len()).collect();
        let size = |i: usize| {
            let pod = &input.pods[i];
            (pod.placeholder, std::cmp::Reverse(pod.requests.get(CPU)), std::cmp::Reverse(pod.requests.get(MEMORY)))
        };
        order.sort_by(|a, b| {
            size(*a)
                .cmp(&size(*b))
                .then_with(|| classes[*a].cmp(&classes[*b]))
                .then_with(|| input.pods[*a].key.cmp(&input.pods[*b].key))
        });

        let mut plan = Plan::default();
        let mut previous: Option<usize> = None;
        let mut next = 0;
        while next < order.len() {
            let pod = order[next];
            next += 1;
            if previous.is_none_or(|previous| !same_signature(previous, pod)) {
                self.dead_nodes = vec![false; self.nodes.len()];
                self.dead_claims.clear();
                previous = Some(pod);
            }
            let (target, attempt) = match self.place(pod, &pod_groups[pod]) {
                Ok(placed) => placed,
                Err(reason) => {
                    plan.unschedulable.push((input.pods[pod].key.clone(), reason));
                    continue;
                }
            };
            let mut placed = 1;
            if attempt.repeatable(&input.pods[pod]) {
                let replicas = order[next..].iter().take_while(|p| same_signature(**p, pod)).count();
                placed += self.fill(&attempt, target, &order[next..next + replicas]);
            }
            if let Target::Node(node) = target {
                let name = &input.nodes[node].name;
                plan.existing.extend(
                    order[next - 1..next - 1 + placed].iter().map(|p| (input.pods[*p].key.clone(), name.clone())),
                );
            }
            next += placed - 1;
        }
        let finished = (0..self.claims.len()).map(|claim| self.finish(claim)).collect();
        plan.new_claims = if repack { self.repack(finished, &classes) } else { finished };
        plan
    }

    /// Puts as many of `replicas` (pods with the signature of the one `attempt` just placed on
    /// `target`) on the same target as it has room for, and returns how many. This is what
    /// placing them one by one would do: without topology terms, host ports or hostname-affinity
    /// room, every target before `target` refused the signature for good, and `target` takes
    /// replicas until its room or its instance types run out.
    fn fill(&mut self, attempt: &Attempt, target: Target, replicas: &[usize]) -> usize {
        let requests = &self.pod_requests[attempt.pod];
        match target {
            Target::Node(node) => {
                let free = &mut self.nodes[node].free;
                let count = times_within(requests, free).min(replicas.len());
                accumulate(free, requests, -(count as i64));
                count
            }
            Target::Claim(claim) => {
                let open = &self.claims[claim];
                let held = plus(&open.total, &open.reserved);
                let room: Vec<i64> =
                    open.max_allocatable.iter().zip(&held).map(|(max, held)| max.saturating_sub(*held)).collect();
                let fitting = |count: usize| {
                    let total: Vec<i64> = held
                        .iter()
                        .zip(requests)
                        .map(|(h, r)| h.saturating_add(r.saturating_mul(count as i64)))
                        .collect();
                    self.fitting_types(&open.candidates, &total, open.requirements, None).ok()
                };
                // Fewer pods never leave fewer fitting types: the largest count that still leaves
                // some is found by bisection.
                // `best` holds the fitting types for `low`, the largest count known to fit.
                let (mut low, mut high) = (0, times_within(requests, &room).min(replicas.len()));
                let mut best = None;
                while low < high {
                    let middle = (low + high).div_ceil(2);
                    match fitting(middle) {
                        Some(candidates) => (low, best) = (middle, Some(candidates)),
                        None => high = middle - 1,
                    }
                }
                let Some(candidates) = best else { return 0 };
                let max_allocatable = self.largest(&candidates, &self.allocatable);
                let open = &mut self.claims[claim];
                accumulate(&mut open.total, requests, low as i64);
                open.candidates = candidates;
                open.max_allocatable = max_allocatable;
                open.pods.extend(&replicas[..low]);
                low
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod sizing_tests;
#[cfg(test)]
pub(crate) mod tests;
