//! The solver: places a batch of pending pods on existing capacity, on NodeClaims opened earlier
//! in the same pass, or on new NodeClaims from the highest-weight NodePool that admits them.
//!
//! Pods go largest first. Everything the inner loop needs is precomputed or cached: requirement
//! sets are interned, so "do these two sets intersect" is answered once per distinct pair; the
//! instance types a requirement set allows are a bitset computed once per distinct set; resources
//! are dense integer vectors. Replicas of one Deployment share a signature, and a node that
//! refused one of them for a reason that cannot change (requirements, taints, ports, room,
//! anti-affinity) is not asked again for the next.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash, Hasher},
    sync::Arc,
};

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::{
    bitset::BitSet,
    catalog::{InstanceType, Offering, is_well_known, offering_allowed},
    pod::{HostPort, PodInfo, Preference, TopologyKind, TopologyTerm},
    requirements::{Requirement, Requirements},
    resources::{CPU, MEMORY, Resources},
    topology::{Domain, GroupId, Topology},
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
    pub nodes: Vec<ExistingNode>,
    pub scheduled: Vec<ScheduledPod>,
    pub pools: Vec<NodePoolTemplate>,
    /// Shared with the cloud provider's priced-types cache when there is one node class, so a
    /// batch does not copy the catalog.
    pub instance_types: Arc<[InstanceType]>,
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

type ReqId = usize;

/// Requirement sets interned to small integers.
#[derive(Default)]
struct Interner {
    /// Each set once, shared by its id and its index entry.
    sets: Vec<Arc<Requirements>>,
    index: HashMap<Arc<Requirements>, ReqId>,
}

impl Interner {
    /// Interns a set the caller keeps, cloning it only the first time it is seen.
    fn intern_ref(&mut self, requirements: &Requirements) -> ReqId {
        match self.index.get(requirements) {
            Some(id) => *id,
            None => self.intern(requirements.clone()),
        }
    }

    fn intern(&mut self, requirements: Requirements) -> ReqId {
        if let Some(id) = self.index.get(&requirements) {
            return *id;
        }
        let id = self.sets.len();
        let set = Arc::new(requirements);
        self.index.insert(set.clone(), id);
        self.sets.push(set);
        id
    }
}

/// Resource names mapped to positions in dense vectors.
struct Dims(Vec<String>);

impl Dims {
    fn vector(&self, resources: &Resources) -> Vec<i64> {
        self.0.iter().map(|name| resources.get(name)).collect()
    }
}

fn fits(needed: &[i64], available: &[i64]) -> bool {
    needed.iter().zip(available).all(|(n, a)| n <= a)
}

/// `target += times × amount`, componentwise.
fn accumulate(target: &mut [i64], amount: &[i64], times: i64) {
    for (sum, value) in target.iter_mut().zip(amount) {
        // Saturating: requests are user input, and a wrapped sum would look like room.
        *sum = sum.saturating_add(times.saturating_mul(*value));
    }
}

/// How many times `amount` fits in `room` (unbounded when it asks for nothing).
fn times_within(amount: &[i64], room: &[i64]) -> usize {
    amount
        .iter()
        .zip(room)
        .filter(|(a, _)| **a > 0)
        .map(|(a, r)| usize::try_from(r / a).unwrap_or(0))
        .min()
        .unwrap_or(usize::MAX)
}

fn plus(a: &[i64], b: &[i64]) -> Vec<i64> {
    a.iter().zip(b).map(|(x, y)| x.saturating_add(*y)).collect()
}

/// Why a target refused a pod. Refusals are the inner loop's common case, so their reasons are
/// static unless a person will read them (new NodeClaims, reported for unschedulable pods).
struct Refusal {
    /// The reason cannot change for another pod of the same signature later in this pass.
    permanent: bool,
    reason: Cow<'static, str>,
}

impl Refusal {
    fn permanent(reason: impl Into<Cow<'static, str>>) -> Self {
        Self { permanent: true, reason: reason.into() }
    }
    fn transient(reason: impl Into<Cow<'static, str>>) -> Self {
        Self { permanent: false, reason: reason.into() }
    }
}

/// A NodeClaim opened in this pass.
struct OpenClaim {
    pool: usize,
    hostname: String,
    requirements: ReqId,
    candidates: BitSet,
    /// Componentwise largest allocatable among the candidates: a quick test of room.
    max_allocatable: Vec<i64>,
    total: Vec<i64>,
    /// Room held for the rest of a hostname-affinity group whose first pod landed here.
    reserved: Vec<i64>,
    reservations: Vec<(GroupId, Vec<i64>)>,
    pods: Vec<usize>,
    host_ports: Vec<HostPort>,
}

struct NodeState {
    /// Interned when a pod first gets as far as comparing requirements with the node: most nodes
    /// of a big cluster refuse a batch's pods on taints or room before that.
    requirements: Option<ReqId>,
    free: Vec<i64>,
    host_ports: Vec<HostPort>,
}

/// What one attempt asks of a target: the pod, one alternative of its requirements with some
/// preferences folded in, and its topology groups.
struct Attempt {
    pod: usize,
    requirements: ReqId,
    /// Groups whose terms the pod must satisfy.
    owned: Vec<GroupId>,
    /// Groups that count the pod.
    members: Vec<GroupId>,
    /// The groups to check, by topology key: (group, whether the pod owns the term).
    by_key: Vec<(String, Vec<(GroupId, bool)>)>,
    /// Room the first pod matching a hostname-affinity group must find for the pods that will
    /// have to join it, per group.
    extra: Vec<(GroupId, Vec<i64>)>,
    /// Whether refusals may be remembered for the pod's signature (only for its first attempt).
    remember: bool,
}

impl Attempt {
    /// Whether the next replica of the pod's signature would meet exactly what this one did:
    /// nothing this placement recorded (topology counts, host ports, room held for a
    /// hostname-affinity group) changes the answer of any target, and no target was asked with
    /// relaxed preferences.
    fn repeatable(&self, pod: &PodInfo) -> bool {
        self.remember
            && self.owned.is_empty()
            && self.members.is_empty()
            && self.by_key.is_empty()
            && self.extra.is_empty()
            && pod.host_ports.is_empty()
    }
}

/// Where a pod was placed.
#[derive(Debug, Clone, Copy)]
enum Target {
    Node(usize),
    Claim(usize),
}

/// The domain chosen for each topology key, as (key, domain).
type ChosenDomains = Vec<(String, String)>;

/// A placement that passed every check, ready to be committed.
struct Accepted {
    requirements: ReqId,
    candidates: BitSet,
    total: Vec<i64>,
    domains: ChosenDomains,
}

struct Solver<'a> {
    input: &'a Input,
    dims: Dims,
    interner: Interner,
    merges: HashMap<(ReqId, ReqId, bool), Result<ReqId, String>>,
    type_sets: HashMap<ReqId, BitSet>,
    allocatable: Vec<Vec<i64>>,
    capacity: Vec<Vec<i64>>,
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
}

/// Decides where every pod of `input` goes.
pub fn solve(input: &Input) -> Plan {
    Solver::new(input).run()
}

impl<'a> Solver<'a> {
    fn new(input: &'a Input) -> Self {
        let mut names: BTreeSet<&str> = [CPU, MEMORY].into();
        let all_resources = input
            .pods
            .iter()
            .map(|p| &p.requests)
            .chain(input.instance_types.iter().map(|t| &t.allocatable))
            .chain(input.pools.iter().map(|p| &p.daemon_overhead))
            .chain(input.nodes.iter().map(|n| &n.free))
            .chain(input.pools.iter().filter_map(|p| p.remaining.as_ref()));
        for resources in all_resources {
            names.extend(resources.iter().map(|(name, _)| name));
        }
        let dims = Dims(names.into_iter().map(str::to_owned).collect());
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
            allocatable: input.instance_types.iter().map(|t| dims.vector(&t.allocatable)).collect(),
            // Every node counts once against a `nodes` limit.
            capacity: input
                .instance_types
                .iter()
                .map(|t| {
                    let mut capacity = dims.vector(&t.capacity);
                    if let Some(nodes) = dims.0.iter().position(|name| name == NODES) {
                        capacity[nodes] = 1;
                    }
                    capacity
                })
                .collect(),
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
            merges: HashMap::new(),
            type_sets: HashMap::new(),
            nodes,
            claims: Vec::new(),
            topology: Topology::default(),
            dead_nodes: Vec::new(),
            dead_claims: Vec::new(),
            affinity_pending: HashMap::new(),
            input,
        }
    }

    /// Domains a topology key can take, from the pools' instance-type offerings and labels and
    /// from existing nodes.
    fn known_domains(input: &Input, key: &str) -> BTreeSet<String> {
        let mut domains = BTreeSet::new();
        for node in &input.nodes {
            if let Some(values) = node.requirements.get(key).and_then(Requirement::finite_values) {
                domains.extend(values.iter().cloned());
            }
        }
        if key == labels::HOSTNAME {
            return domains;
        }
        for pool in &input.pools {
            let allowed = |value: &str| pool.requirements.get(key).is_none_or(|r| r.admits(Some(value)));
            for index in &pool.instance_types {
                let Some(instance) = input.instance_types.get(*index) else { continue };
                let values = instance.offerings.iter().map(|o| match key {
                    labels::ZONE => Some(o.zone.as_str()),
                    labels::CAPACITY_TYPE => Some(o.capacity_type.as_str()),
                    _ => instance.labels.get(key).map(String::as_str),
                });
                domains.extend(values.flatten().filter(|v| allowed(v)).map(str::to_owned));
            }
            if let Some(values) = pool.requirements.get(key).and_then(Requirement::finite_values) {
                domains.extend(values.iter().cloned());
            }
        }
        domains
    }

    fn group_of(&mut self, term: &TopologyTerm) -> GroupId {
        let input = self.input;
        self.topology.group_of(term, |key| Self::known_domains(input, key))
    }

    fn run(mut self) -> Plan {
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
        let owned_by_scheduled: Vec<Vec<GroupId>> =
            input.scheduled.iter().map(|s| s.pod.topology.iter().map(|t| self.group_of(t)).collect()).collect();
        // Without a single term, bound pods change nothing (the common case on a big cluster).
        let scheduled = if self.topology.is_unused() { &[][..] } else { &input.scheduled[..] };
        let nodes_by_name: HashMap<&str, &ExistingNode> = input.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        for (ScheduledPod { pod, node }, owned) in scheduled.iter().zip(&owned_by_scheduled) {
            let members = self.topology.memberships(&pod.namespace, &pod.labels);
            let node = nodes_by_name.get(&**node).copied();
            self.topology.record(&members, owned, |key| match node {
                Some(node) if key == labels::HOSTNAME => Some(node.name.clone()),
                Some(node) => node.requirements.get(key).and_then(single_value),
                None => None,
            });
        }

        // Largest first; replicas with one signature stay together.
        let classes = signature_classes(&input.pods);
        let same_signature = |a: usize, b: usize| classes[a] == classes[b];
        let mut order: Vec<usize> = (0..input.pods.len()).collect();
        let size = |i: usize| {
            let r = &input.pods[i].requests;
            (std::cmp::Reverse(r.get(CPU)), std::cmp::Reverse(r.get(MEMORY)))
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
        plan.new_claims = self.claims.iter().map(|claim| self.finish(claim)).collect();
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

    /// Places one pod, relaxing preferences one at a time and trying each alternative of its
    /// node affinity. Returns where it went with the attempt that put it there, or why nothing
    /// could take it.
    fn place(&mut self, pod: usize, required_groups: &[GroupId]) -> Result<(Target, Attempt), String> {
        let info = &self.input.pods[pod];
        let members = self.topology.memberships(&info.namespace, &info.labels);
        let repelled_by = self.topology.repelling(&members);
        let mut last_reason = String::new();
        for kept in (0..=info.preferences.len()).rev() {
            for (alternative, requirements) in info.requirements.iter().enumerate() {
                let mut owned = required_groups.to_vec();
                let mut extra_requirements: Option<Requirements> = None;
                for preference in &info.preferences[..kept] {
                    match preference {
                        Preference::Requirements(extra) => {
                            extra_requirements =
                                Some(extra_requirements.map_or_else(|| extra.clone(), |r| r.intersect(extra)))
                        }
                        Preference::Topology(term) => owned.push(self.group_of(term)),
                    }
                }
                let requirements = match extra_requirements {
                    Some(extra) => self.interner.intern(requirements.intersect(&extra)),
                    None => self.interner.intern_ref(requirements),
                };
                let attempt = self.attempt(
                    pod,
                    requirements,
                    owned,
                    &members,
                    &repelled_by,
                    kept == info.preferences.len() && alternative == 0,
                );
                match self.place_attempt(&attempt) {
                    Ok(target) => {
                        self.consume_affinity(&attempt);
                        return Ok((target, attempt));
                    }
                    Err(reason) => last_reason = reason,
                }
            }
        }
        Err(last_reason)
    }

    fn attempt(
        &self,
        pod: usize,
        requirements: ReqId,
        owned: Vec<GroupId>,
        members: &[GroupId],
        repelled_by: &[GroupId],
        remember: bool,
    ) -> Attempt {
        let mut by_key: Vec<(String, Vec<(GroupId, bool)>)> = Vec::new();
        let tagged = owned.iter().map(|id| (*id, true)).chain(repelled_by.iter().map(|id| (*id, false)));
        for (id, as_owner) in tagged {
            let key = &self.topology.group(id).term.key;
            match by_key.iter_mut().find(|(k, _)| k == key) {
                Some((_, groups)) => groups.push((id, as_owner)),
                None => by_key.push((key.clone(), vec![(id, as_owner)])),
            }
        }
        // The first pod matching a hostname-affinity group decides the node every pod with that
        // affinity must join: it must find room for them there.
        let extra = members
            .iter()
            .chain(&owned)
            .filter(|id| self.topology.is_empty(**id))
            .filter_map(|id| {
                let pending = self.affinity_pending.get(id)?;
                let own = if owned.contains(id) { &self.pod_requests[pod][..] } else { &[] };
                let rest: Vec<i64> =
                    pending.iter().enumerate().map(|(i, p)| (p - own.get(i).copied().unwrap_or(0)).max(0)).collect();
                rest.iter().any(|r| *r > 0).then_some((*id, rest))
            })
            .fold(Vec::<(GroupId, Vec<i64>)>::new(), |mut all, (id, rest)| {
                if all.iter().all(|(seen, _)| *seen != id) {
                    all.push((id, rest));
                }
                all
            });
        Attempt { pod, requirements, owned, members: members.to_vec(), by_key, extra, remember }
    }

    /// A placed pod no longer needs the room its hostname-affinity group reserved for it.
    fn consume_affinity(&mut self, attempt: &Attempt) {
        for id in &attempt.owned {
            if let Some(pending) = self.affinity_pending.get_mut(id) {
                accumulate(pending, &self.pod_requests[attempt.pod], -1);
            }
        }
    }

    fn place_attempt(&mut self, attempt: &Attempt) -> Result<Target, String> {
        for node in 0..self.nodes.len() {
            if attempt.remember && self.dead_nodes[node] {
                continue;
            }
            match self.check_node(attempt, node) {
                Ok(accepted) => {
                    self.commit_node(attempt, node, accepted);
                    return Ok(Target::Node(node));
                }
                Err(refusal) if refusal.permanent && attempt.remember => self.dead_nodes[node] = true,
                Err(_) => {}
            }
        }
        if attempt.remember && self.dead_claims.len() < self.claims.len() {
            self.dead_claims.resize(self.claims.len(), false);
        }
        for claim in 0..self.claims.len() {
            if attempt.remember && self.dead_claims[claim] {
                continue;
            }
            match self.check_claim(attempt, claim) {
                Ok(accepted) => {
                    self.commit_claim(attempt, claim, accepted);
                    return Ok(Target::Claim(claim));
                }
                Err(refusal) if refusal.permanent && attempt.remember => self.dead_claims[claim] = true,
                Err(_) => {}
            }
        }
        let mut reasons = Vec::new();
        for pool in self.pools_by_weight.clone() {
            match self.check_new_claim(attempt, pool) {
                Ok(accepted) => {
                    self.open_claim(attempt, pool, accepted);
                    return Ok(Target::Claim(self.claims.len() - 1));
                }
                Err(refusal) => reasons.push(format!("{}: {}", self.input.pools[pool].name, refusal.reason)),
            }
        }
        if reasons.is_empty() {
            return Err("no NodePool exists".into());
        }
        Err(format!("no NodePool can launch a node for it: {}", reasons.join("; ")))
    }

    /// The intersection of two interned requirement sets, or why they conflict. `launched` says
    /// whether `ours` describes a node with known labels (a key it lacks is absent) rather than a
    /// node still to be launched (well-known keys get their values from the instance type).
    fn merge(&mut self, ours: ReqId, theirs: ReqId, registered: bool) -> Result<ReqId, String> {
        if let Some(result) = self.merges.get(&(ours, theirs, registered)) {
            return result.clone();
        }
        let (a, b) = (&self.interner.sets[ours], &self.interner.sets[theirs]);
        let result = match a.conflict_with(b, |key| !registered && is_well_known(key)) {
            Some(conflict) => Err(conflict),
            None => {
                let merged = a.intersect(b);
                Ok(self.interner.intern(merged))
            }
        };
        self.merges.insert((ours, theirs, registered), result.clone());
        result
    }

    /// Instance types a requirement set allows, with an available offering it allows.
    fn types_for(&mut self, requirements: ReqId) -> &BitSet {
        let input = self.input;
        let set = &self.interner.sets[requirements];
        self.type_sets.entry(requirements).or_insert_with(|| {
            let mut bits = BitSet::empty(input.instance_types.len());
            for (index, instance) in input.instance_types.iter().enumerate() {
                let labels_ok = set.iter().all(|(key, r)| instance.labels.get(key).is_none_or(|v| r.admits(Some(v))));
                if labels_ok && instance.offerings.iter().any(|o| o.available && offering_allowed(o, set)) {
                    bits.insert(index);
                }
            }
            bits
        })
    }

    /// Checks the topology terms for a target whose domain on each key is `domain_of(key)`;
    /// returns the requirements narrowed to the chosen domains (when a key was still open) and
    /// the domain per key.
    fn check_topology(
        &self,
        attempt: &Attempt,
        requirements: ReqId,
        domain_of: impl Fn(&str, &[(GroupId, bool)]) -> Domain,
    ) -> Result<(Option<Requirements>, ChosenDomains), Refusal> {
        let mut narrowed: Option<Requirements> = None;
        let mut chosen = Vec::with_capacity(attempt.by_key.len());
        let pod_requirements = &self.interner.sets[attempt.requirements];
        for (key, groups) in &attempt.by_key {
            let eligible = |domain: &str| pod_requirements.get(key).is_none_or(|r| r.admits(Some(domain)));
            let minimums: Vec<u32> = groups.iter().map(|(id, _)| self.topology.minimum(*id, eligible)).collect();
            let admits = |domain: &str| {
                groups.iter().zip(&minimums).all(|((id, as_owner), minimum)| {
                    self.topology.admits(*id, attempt.members.contains(id), *as_owner, domain, *minimum)
                })
            };
            match domain_of(key, groups) {
                Domain::Fixed(domain) => {
                    if !admits(&domain) {
                        let lasts = groups.iter().all(|(id, as_owner)| self.topology.refusal_lasts(*id, *as_owner));
                        let reason = "a topology constraint is not satisfied here";
                        return Err(if lasts { Refusal::permanent(reason) } else { Refusal::transient(reason) });
                    }
                    chosen.push((key.clone(), domain));
                }
                Domain::Open(domains) => {
                    let allowed: BTreeSet<String> = domains.into_iter().filter(|d| admits(d)).collect();
                    let owned: Vec<GroupId> = groups.iter().filter(|(_, owner)| *owner).map(|(id, _)| *id).collect();
                    let Some(domain) = self.topology.preferred_domain(&owned, &allowed) else {
                        return Err(Refusal::transient(format!("no {key} satisfies the pod's topology constraints")));
                    };
                    narrowed
                        .get_or_insert_with(|| (*self.interner.sets[requirements]).clone())
                        .add(key, Requirement::one_of([domain.clone()]));
                    chosen.push((key.clone(), domain));
                }
            }
        }
        Ok((narrowed, chosen))
    }

    fn ports_conflict(ports: &[HostPort], wanted: &[HostPort]) -> bool {
        wanted.iter().any(|wanted| ports.iter().any(|taken| taken.conflicts_with(wanted)))
    }

    /// The pod's requests plus the room its hostname-affinity group needs, if it is the first.
    fn needed(&self, attempt: &Attempt) -> Cow<'_, [i64]> {
        if attempt.extra.is_empty() {
            return Cow::Borrowed(&self.pod_requests[attempt.pod]);
        }
        Cow::Owned(
            attempt.extra.iter().fold(self.pod_requests[attempt.pod].clone(), |sum, (_, extra)| plus(&sum, extra)),
        )
    }

    fn check_node(&mut self, attempt: &Attempt, node: usize) -> Result<Accepted, Refusal> {
        let input = self.input;
        let info = &input.pods[attempt.pod];
        let existing = &input.nodes[node];
        if info.untolerated_taint(&existing.taints).is_some() {
            return Err(Refusal::permanent("a taint is not tolerated"));
        }
        let state = &self.nodes[node];
        if Self::ports_conflict(&state.host_ports, &info.host_ports) {
            return Err(Refusal::permanent("host port in use"));
        }
        if !fits(&self.needed(attempt), &state.free) {
            return Err(Refusal::permanent("not enough room"));
        }
        let node_requirements = match state.requirements {
            Some(id) => id,
            None => {
                let id = self.interner.intern_ref(&existing.requirements);
                self.nodes[node].requirements = Some(id);
                id
            }
        };
        self.merge(node_requirements, attempt.requirements, existing.registered).map_err(Refusal::permanent)?;
        let (_, domains) = self.check_topology(attempt, node_requirements, |key, _| {
            if key == labels::HOSTNAME {
                return Domain::Fixed(existing.name.clone());
            }
            match existing.requirements.get(key).and_then(single_value) {
                Some(value) => Domain::Fixed(value),
                None => Domain::Open(BTreeSet::new()),
            }
        })?;
        Ok(Accepted { requirements: node_requirements, candidates: BitSet::empty(0), total: Vec::new(), domains })
    }

    fn commit_node(&mut self, attempt: &Attempt, node: usize, accepted: Accepted) {
        let info = &self.input.pods[attempt.pod];
        let state = &mut self.nodes[node];
        accumulate(&mut state.free, &self.pod_requests[attempt.pod], -1);
        state.host_ports.extend(info.host_ports.iter().cloned());
        self.record(attempt, &accepted.domains, None);
    }

    fn record(&mut self, attempt: &Attempt, domains: &[(String, String)], hostname: Option<&str>) {
        self.topology.record(&attempt.members, &attempt.owned, |key| match hostname {
            Some(hostname) if key == labels::HOSTNAME => Some(hostname.to_owned()),
            _ => domains.iter().find(|(k, _)| k == key).map(|(_, d)| d.clone()),
        });
    }

    /// The instance types of `candidates` that fit `total` and keep every minValues requirement.
    fn fitting_types(
        &self,
        candidates: &BitSet,
        total: &[i64],
        requirements: ReqId,
        limit: Option<&[i64]>,
    ) -> Result<BitSet, String> {
        let mut fitting = candidates.clone();
        for index in candidates.iter() {
            let within_limit = limit.is_none_or(|remaining| fits(&self.capacity[index], remaining));
            if !fits(total, &self.allocatable[index]) || !within_limit {
                fitting.remove(index);
            }
        }
        if fitting.is_empty() {
            let needs: Vec<String> = self
                .dims
                .0
                .iter()
                .zip(total)
                .filter(|(_, amount)| **amount > 0)
                .map(|(name, amount)| format!("{name} {}", super::quantity::format_resource(name, *amount)))
                .collect();
            let limited = if limit.is_some() { " within the pool's limits" } else { "" };
            return Err(format!("no instance type{limited} has room for {}", needs.join(", ")));
        }
        for (key, requirement) in self.interner.sets[requirements].iter() {
            let Some(minimum) = requirement.min_values() else { continue };
            // Runs for every placement: stop counting once the minimum is reached.
            let mut distinct: Vec<&String> = Vec::with_capacity(minimum);
            for value in fitting.iter().filter_map(|i| self.input.instance_types[i].labels.get(key)) {
                if !distinct.contains(&value) {
                    distinct.push(value);
                    if distinct.len() >= minimum {
                        break;
                    }
                }
            }
            if distinct.len() < minimum {
                return Err(format!("only {} values of {key} remain, minValues is {minimum}", distinct.len()));
            }
        }
        Ok(fitting)
    }

    fn check_claim(&mut self, attempt: &Attempt, claim: usize) -> Result<Accepted, Refusal> {
        let input = self.input;
        let info = &input.pods[attempt.pod];
        let open = &self.claims[claim];
        if info.untolerated_taint(&input.pools[open.pool].taints).is_some() {
            return Err(Refusal::permanent("a taint is not tolerated"));
        }
        if Self::ports_conflict(&open.host_ports, &info.host_ports) {
            return Err(Refusal::permanent("host port in use"));
        }
        // Room held here for a group this pod belongs to is room for this pod.
        let needed = self.needed(attempt);
        let mut reserved = Cow::Borrowed(&open.reserved[..]);
        for (group, held) in &open.reservations {
            if attempt.owned.contains(group) {
                let own = &self.pod_requests[attempt.pod];
                reserved = Cow::Owned(reserved.iter().zip(held).zip(own).map(|((r, h), o)| r - (*o).min(*h)).collect());
            }
        }
        // Cheap first: not even the largest candidate has room.
        let roomy = (0..needed.len())
            .all(|i| open.total[i].saturating_add(reserved[i]).saturating_add(needed[i]) <= open.max_allocatable[i]);
        if !roomy {
            return Err(Refusal::permanent("not enough room"));
        }
        let total = plus(&plus(&open.total, &reserved), &needed);
        let merged = self.merge(open.requirements, attempt.requirements, false).map_err(Refusal::permanent)?;
        let (narrowed, domains) = self.check_open_topology(attempt, merged, claim)?;
        let mut candidates = self.claims[claim].candidates.clone();
        candidates.intersect_with(self.types_for(narrowed));
        let candidates = self.fitting_types(&candidates, &total, narrowed, None).map_err(|reason| {
            if narrowed == merged { Refusal::permanent(reason) } else { Refusal::transient(reason) }
        })?;
        let total = plus(&self.claims[claim].total, &self.pod_requests[attempt.pod]);
        Ok(Accepted { requirements: narrowed, candidates, total, domains })
    }

    /// Topology for a node still to be launched: its hostname is its own; other keys may still
    /// take any value its requirements allow.
    fn check_open_topology(
        &mut self,
        attempt: &Attempt,
        requirements: ReqId,
        claim: usize,
    ) -> Result<(ReqId, Vec<(String, String)>), Refusal> {
        if attempt.by_key.is_empty() {
            return Ok((requirements, Vec::new()));
        }
        let hostname = match self.claims.get(claim) {
            Some(open) => open.hostname.clone(),
            None => format!("new-node-{claim}"),
        };
        let set = &self.interner.sets[requirements];
        let (narrowed, domains) = self.check_topology(attempt, requirements, |key, groups| {
            if key == labels::HOSTNAME {
                return Domain::Fixed(hostname.clone());
            }
            match set.get(key).and_then(Requirement::finite_values) {
                Some(values) if values.len() == 1 => Domain::Fixed(values.iter().next().cloned().unwrap_or_default()),
                Some(values) => Domain::Open(values.clone()),
                None => Domain::Open(
                    groups
                        .iter()
                        .flat_map(|(id, _)| self.topology.group(*id).domains.iter())
                        .filter(|d| set.get(key).is_none_or(|r| r.admits(Some(d))))
                        .cloned()
                        .collect(),
                ),
            }
        })?;
        let narrowed = match narrowed {
            Some(narrowed) => self.interner.intern(narrowed),
            None => requirements,
        };
        Ok((narrowed, domains))
    }

    /// The componentwise largest of `vectors` over the candidate types.
    fn largest(&self, candidates: &BitSet, vectors: &[Vec<i64>]) -> Vec<i64> {
        let mut largest = vec![0; self.dims.0.len()];
        for index in candidates.iter() {
            for (max, amount) in largest.iter_mut().zip(&vectors[index]) {
                *max = (*max).max(*amount);
            }
        }
        largest
    }

    fn commit_claim(&mut self, attempt: &Attempt, claim: usize, accepted: Accepted) {
        let max_allocatable = self.largest(&accepted.candidates, &self.allocatable);
        let requests = &self.pod_requests[attempt.pod];
        let info = &self.input.pods[attempt.pod];
        let open = &mut self.claims[claim];
        open.requirements = accepted.requirements;
        open.candidates = accepted.candidates;
        open.max_allocatable = max_allocatable;
        open.total = accepted.total;
        open.pods.push(attempt.pod);
        open.host_ports.extend(info.host_ports.iter().cloned());
        // A group member arriving uses its share of the room held for its group.
        for (group, held) in &mut open.reservations {
            if attempt.owned.contains(group) {
                for ((held, reserved), amount) in held.iter_mut().zip(open.reserved.iter_mut()).zip(requests) {
                    let used = (*amount).min(*held);
                    *held -= used;
                    *reserved -= used;
                }
            }
        }
        for (group, extra) in &attempt.extra {
            accumulate(&mut open.reserved, extra, 1);
            open.reservations.push((*group, extra.clone()));
        }
        let hostname = open.hostname.clone();
        self.record(attempt, &accepted.domains, Some(&hostname));
    }

    /// Why no instance type of a pool fits a requirement set, naming the first requirement no
    /// type of the pool satisfies (people read this in the pod's Event).
    fn unmatched_requirement(&self, pool: usize, requirements: ReqId) -> String {
        let input = self.input;
        let requirements = &self.interner.sets[requirements];
        let types: Vec<&InstanceType> = self.pool_types[pool].iter().map(|i| &input.instance_types[i]).collect();
        let describes_type = |key: &str| {
            [labels::INSTANCE_TYPE, labels::ARCH, labels::OS].contains(&key)
                || key.starts_with("karpenter.k8s.aws/instance-")
        };
        let unmatched = requirements.iter().filter(|(key, _)| describes_type(key)).find(|(key, requirement)| {
            types.iter().all(|t| !requirement.admits(t.labels.get(key.as_str()).map(String::as_str)))
        });
        if let Some((key, requirement)) = unmatched {
            return format!("no instance type of the pool has {key} {requirement}");
        }
        let allowed = |o: &&Offering| offering_allowed(o, requirements);
        if types.iter().any(|t| t.offerings.iter().any(|o| allowed(&o))) {
            if types.iter().all(|t| t.offerings.iter().filter(allowed).all(|o| !o.available)) {
                return "every offering the pool allows failed to launch in the last minutes (capacity errors)"
                    .to_owned();
            }
        } else {
            let wanted: Vec<String> = [labels::ZONE, labels::CAPACITY_TYPE]
                .iter()
                .filter_map(|key| requirements.get(key).map(|r| format!("{key} {r}")))
                .collect();
            return format!("no offering of the pool's instance types has {}", wanted.join(" and "));
        }
        "no instance type of the pool matches all the requirements together".to_owned()
    }

    fn check_new_claim(&mut self, attempt: &Attempt, pool: usize) -> Result<Accepted, Refusal> {
        let input = self.input;
        let info = &input.pods[attempt.pod];
        if let Some(taint) = info.untolerated_taint(&input.pools[pool].taints) {
            return Err(Refusal::permanent(format!(
                "taint {}={}:{} not tolerated",
                taint.key,
                taint.value.as_deref().unwrap_or_default(),
                taint.effect
            )));
        }
        let merged =
            self.merge(self.pool_requirements[pool], attempt.requirements, false).map_err(Refusal::permanent)?;
        let (narrowed, domains) = self.check_open_topology(attempt, merged, self.claims.len())?;
        let total = plus(&self.pool_overhead[pool], &self.needed(attempt));
        let mut candidates = self.pool_types[pool].clone();
        candidates.intersect_with(self.types_for(narrowed));
        if candidates.is_empty() {
            return Err(Refusal::permanent(self.unmatched_requirement(pool, narrowed)));
        }
        let remaining = self.pool_remaining[pool].clone();
        let candidates =
            self.fitting_types(&candidates, &total, narrowed, remaining.as_deref()).map_err(Refusal::permanent)?;
        let total = plus(&self.pool_overhead[pool], &self.pod_requests[attempt.pod]);
        Ok(Accepted { requirements: narrowed, candidates, total, domains })
    }

    fn open_claim(&mut self, attempt: &Attempt, pool: usize, accepted: Accepted) {
        // Limits are charged pessimistically, with the largest type the claim may still become.
        let largest = self.largest(&accepted.candidates, &self.capacity);
        if let Some(remaining) = &mut self.pool_remaining[pool] {
            for (left, used) in remaining.iter_mut().zip(&largest) {
                *left = left.saturating_sub(*used);
            }
        }
        let dims = self.dims.0.len();
        self.claims.push(OpenClaim {
            pool,
            hostname: format!("new-node-{}", self.claims.len()),
            requirements: accepted.requirements,
            candidates: BitSet::empty(0),
            max_allocatable: vec![0; dims],
            total: vec![0; dims],
            reserved: vec![0; dims],
            reservations: Vec::new(),
            pods: Vec::new(),
            host_ports: Vec::new(),
        });
        let claim = self.claims.len() - 1;
        self.commit_claim(attempt, claim, accepted);
    }

    fn finish(&self, claim: &OpenClaim) -> NewNodeClaim {
        let requirements = &self.interner.sets[claim.requirements];
        let mut priced: Vec<(f64, &InstanceType)> = claim
            .candidates
            .iter()
            .filter_map(|i| {
                let instance = &self.input.instance_types[i];
                instance.cheapest_offering(requirements).map(|o| (o.price, instance))
            })
            .collect();
        priced.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        priced.truncate(MAX_INSTANCE_TYPES);
        let names: Vec<String> = priced.iter().map(|(_, t)| t.name.clone()).collect();
        let mut requirements = Requirements::clone(requirements);
        requirements.add(labels::INSTANCE_TYPE, Requirement::one_of(names.iter().cloned()));
        let requests: Resources =
            self.dims.0.iter().cloned().zip(claim.total.iter().copied()).filter(|(_, v)| *v != 0).collect();
        NewNodeClaim {
            nodepool: self.input.pools[claim.pool].name.clone(),
            requirements,
            instance_types: names,
            requests,
            pods: claim.pods.iter().map(|p| self.input.pods[*p].key.clone()).collect(),
            price: priced.first().map_or(0.0, |(price, _)| *price),
        }
    }
}

fn single_value(requirement: &Requirement) -> Option<String> {
    requirement.finite_values().filter(|v| v.len() == 1).and_then(|v| v.iter().next().cloned())
}

/// Everything about a pod that decides where it can go but its tolerations (which do not
/// implement `Hash`): requests, requirements, host ports, topology terms, preferences, namespace
/// and labels. Replicas of a Deployment share it.
type Constraints<'a> = (
    &'a Resources,
    &'a [Requirements],
    &'a [HostPort],
    &'a [TopologyTerm],
    &'a [Preference],
    &'a str,
    &'a BTreeMap<String, String>,
);

fn constraints(pod: &PodInfo) -> Constraints<'_> {
    (&pod.requests, &pod.requirements, &pod.host_ports, &pod.topology, &pod.preferences, &pod.namespace, &pod.labels)
}

/// A hash of what decides where a pod can go: equal for pods that are [`alike`].
fn signature(pod: &PodInfo) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    constraints(pod).hash(&mut hasher);
    for toleration in &pod.tolerations {
        let Toleration { key, operator, value, effect, toleration_seconds } = toleration;
        (key, operator, value, effect, toleration_seconds).hash(&mut hasher);
    }
    hasher.finish()
}

/// Whether two pods can go exactly where the other can.
fn alike(a: &PodInfo, b: &PodInfo) -> bool {
    constraints(a) == constraints(b) && a.tolerations == b.tolerations
}

/// Each pod's signature class: pods that are [`alike`] share one. Classes are numbered in the
/// order of their first pod's key, so the packing order never depends on hash values.
fn signature_classes(pods: &[Arc<PodInfo>]) -> Vec<usize> {
    let mut by_key: Vec<usize> = (0..pods.len()).collect();
    by_key.sort_by(|a, b| pods[*a].key.cmp(&pods[*b].key));
    // Per signature hash, its classes with a pod of each.
    let mut known: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    let mut classes = vec![0; pods.len()];
    let mut count = 0;
    for pod in by_key {
        let candidates = known.entry(signature(&pods[pod])).or_default();
        classes[pod] = match candidates.iter().find(|(_, member)| alike(&pods[*member], &pods[pod])) {
            Some((class, _)) => *class,
            None => {
                candidates.push((count, pod));
                count += 1;
                count - 1
            }
        };
    }
    classes
}

#[cfg(test)]
#[path = "solver_tests.rs"]
mod tests;
