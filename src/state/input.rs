//! The cluster turned into the solver's input: the provisionable pods and CapacityBuffers'
//! virtual pods; registered nodes and
//! in-flight NodeClaims as existing capacity, with what their pods hold (nodes on their way out
//! are neither room nor topology domains); the NodePools with their daemonset overhead and
//! remaining limits. Pure, over a [`Snapshot`] of the state.
//!
//! The same input answers "the cluster without these nodes" (what consolidation asks): the nodes
//! named are left out, and the pods a drain would move from them are pods to place.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Node, Taint},
};
use kube::ResourceExt;

use super::{facts::NodeFactsIndex, pods::PodIndex, usage::usage_by_pool, volumes::VolumeTopology};
use crate::apis::condition;
use crate::{
    apis::{
        NodeClaim, NodePool,
        labels::{self, EPHEMERAL_TAINTS, UNREGISTERED_TAINT},
    },
    scheduling::{
        catalog::InstanceType,
        inputs::pool_templates,
        pod::{NamespaceLabels, PodInfo},
        requirements::Requirements,
        resources::Resources,
        solver::{BoundTally, CountedBound, ExistingNode, Input, Policies, ScheduledPod},
    },
};

/// What the solver's input is made from: the caches' contents at one moment.
pub struct Snapshot<'a> {
    pub pods: &'a PodIndex,
    pub nodes: &'a [Arc<Node>],
    /// The nodes' parsed facts (a node missing here is parsed on the spot).
    pub facts: &'a NodeFactsIndex,
    pub claims: &'a [Arc<NodeClaim>],
    pub pools: &'a [Arc<NodePool>],
    pub daemonsets: &'a [DaemonSet],
    /// Instance types per EC2NodeClass name; a class missing here is not ready.
    pub instance_types: &'a BTreeMap<String, Arc<[InstanceType]>>,
    /// The cluster's scheduling policies (settings).
    pub policies: Policies,
    /// Namespace labels, for pod affinity terms that select namespaces.
    pub namespaces: Arc<NamespaceLabels>,
    /// What pods' volumes require of their node.
    pub volumes: &'a VolumeTopology,
    /// Copies of the replicas pending pods' ReplicaSets have not had tried yet, planned for with
    /// the pending pods.
    pub expected_pods: &'a [Arc<PodInfo>],
    /// CapacityBuffers' virtual pods: placed after the real pods, never bound.
    pub virtual_pods: &'a [Arc<PodInfo>],
}

/// The solver's input, and what could not be used (with why).
pub struct Prepared {
    pub input: Input,
    pub skipped: Vec<String>,
}

/// The input for the cluster as it is.
pub fn solver_input(state: &Snapshot) -> Prepared {
    let usage = usage_by_pool(state.claims);
    let pools = pool_templates(state.pools.iter().map(|p| &**p), state.instance_types, state.daemonsets, &usage);
    let mut skipped = pools.skipped;
    let overhead: HashMap<&str, &Resources> =
        pools.templates.iter().map(|t| (t.name.as_str(), &t.daemon_overhead)).collect();
    let mut input = Input {
        instance_types: pools.instance_types.clone(),
        policies: state.policies,
        namespaces: state.namespaces.clone(),
        ..Input::default()
    };

    // Bound pods with volumes keep their volumes' zones wherever consolidation would move them.
    input.scheduled = state
        .pods
        .scheduled()
        .iter()
        .map(|scheduled| match state.volumes.constrain(&scheduled.pod) {
            Ok(pod) => ScheduledPod { pod, node: scheduled.node.clone() },
            Err(_) => scheduled.clone(),
        })
        .collect();
    for pod in state.pods.provisionable() {
        let info = pod.scheduling.as_ref().map_err(ToString::to_string).and_then(|i| state.volumes.constrain(i));
        match info {
            Ok(info) => input.pods.push(info),
            Err(error) => {
                skipped.push(format!("pod {}/{}: {error}", pod.namespace().unwrap_or_default(), pod.name_any()))
            }
        }
    }
    input.pods.extend(state.expected_pods.iter().cloned());
    input.pods.extend(state.virtual_pods.iter().cloned());
    let volume_room = VolumeRoom::of(state, &input);

    // Startup taints of nodes not yet initialized are expected to go: they do not keep pods off.
    let mut startup: HashMap<&str, &[Taint]> = HashMap::new();
    for claim in state.claims {
        let initialized = claim
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == condition::INITIALIZED && c.status == condition::TRUE);
        if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_deref())
            && !initialized
        {
            startup.insert(node, &claim.spec.startup_taints);
        }
    }

    // Registered nodes, with what their bound pods leave. A node still carrying stoker's
    // unregistered taint with no NodeClaim naming it is nobody's to finish registering: no room.
    let claimed: HashSet<&str> =
        state.claims.iter().filter_map(|c| c.status.as_ref()?.provider_id.as_deref()).collect();
    // A node on its way out (its Node or its NodeClaim being deleted: emptiness, a consolidation,
    // expiry) is gone in seconds, so it is neither room nor a topology domain. Counting its room
    // let a consolidation decision move pods onto empty nodes emptiness was deleting at the same
    // time (the pods went pending, and the provisioner launched for them), and let a batch place
    // pending pods on a node about to go. Karpenter's provisioner leaves such nodes out too.
    let going: HashSet<&str> = state
        .claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_some())
        .filter_map(|c| c.status.as_ref()?.provider_id.as_deref())
        .collect();
    let mut registered_ids: HashSet<&str> = HashSet::new();
    for node in state.nodes {
        let spec = node.spec.as_ref();
        let id = spec.and_then(|s| s.provider_id.as_deref());
        if node.metadata.deletion_timestamp.is_some() || id.is_some_and(|id| going.contains(id)) {
            continue;
        }
        if let Some(id) = id {
            registered_ids.insert(id);
        }
        let name = node.name_any();
        let unregistered =
            spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == UNREGISTERED_TAINT));
        let orphaned = unregistered && id.is_none_or(|id| !claimed.contains(id));
        if spec.and_then(|s| s.unschedulable) == Some(true) || orphaned {
            continue;
        }
        let facts = state.facts.of_node(node);
        let Some(mut free) = facts.allocatable.clone() else { continue };
        let used = state.pods.node(&name);
        if let Some(used) = used {
            free.subtract(&used.requests);
        }
        volume_room.set(&mut free, node.labels().get(labels::INSTANCE_TYPE), &name);
        let expected_to_go = startup.get(name.as_str()).copied().unwrap_or_default();
        let taints = spec
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|t| {
                t.key != UNREGISTERED_TAINT
                    && !EPHEMERAL_TAINTS.contains(&t.key.as_str())
                    && !expected_to_go.iter().any(|s| s.key == t.key && s.effect == t.effect)
            })
            .cloned()
            .collect();
        input.nodes.push(Arc::new(ExistingNode {
            requirements: facts.requirements.clone(),
            registered: true,
            taints,
            free,
            host_ports: used.map(|u| u.host_ports.clone()).unwrap_or_default(),
            name,
        }));
    }

    // In-flight NodeClaims: launched or launching, no node yet.
    for claim in state.claims {
        let registered =
            claim.status.as_ref().and_then(|s| s.provider_id.as_deref()).is_some_and(|id| registered_ids.contains(id));
        let name = claim.name_any();
        if registered || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let requirements = Arc::new(
            Requirements::from_api(&claim.spec.requirements).intersect(&Requirements::from_labels(claim.labels())),
        );
        let mut free = expected_allocatable(claim, &input.instance_types);
        if let Some(daemons) = claim.labels().get(labels::NODEPOOL).and_then(|pool| overhead.get(pool.as_str())) {
            free.subtract(daemons);
        }
        volume_room.set(&mut free, claim.labels().get(labels::INSTANCE_TYPE), &name);
        input.nodes.push(Arc::new(ExistingNode {
            name,
            requirements,
            registered: false,
            taints: claim.spec.taints.clone(),
            free,
            host_ports: Vec::new(),
        }));
    }

    input.pools = pools.templates;
    Prepared { input, skipped }
}

/// The input for the cluster as it is, indexed to answer "the cluster without these nodes"
/// (registered node names, or NodeClaim names for claims without a node) many times: their
/// capacity is gone, and the pods a drain would evict from them are to be placed, before the
/// provisionable pods. Consolidation asks this of many sets of nodes in one pass; each answer
/// shares the nodes and costs only what the nodes left out hold.
pub struct WholeInput {
    pub input: Input,
    /// Positions in `input.scheduled` of the pods bound to each node.
    bound: HashMap<Arc<str>, Vec<usize>>,
    /// The bound pods counted into topology once for every answer, when any pod takes part in
    /// topology; when none does, bound pods change no decision and are left out of the answers.
    tally: Option<Arc<BoundTally>>,
}

impl WholeInput {
    pub fn of(input: Input) -> Self {
        let mut bound: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (position, scheduled) in input.scheduled.iter().enumerate() {
            bound.entry(scheduled.node.clone()).or_default().push(position);
        }
        let topology =
            input.pods.iter().chain(input.scheduled.iter().map(|s| &s.pod)).any(|p| p.takes_part_in_topology());
        let tally = topology.then(|| Arc::new(BoundTally::of(&input)));
        Self { input, bound, tally }
    }

    /// The input without the nodes in `gone`; `pods` says which of their pods a drain evicts.
    pub fn without(&self, pods: &PodIndex, gone: &HashSet<&str>) -> Input {
        self.build(pods, gone, true)
    }

    /// As [`without`](Self::without), but only the pods a drain of `gone` evicts are to be
    /// placed, not the provisionable ones: what must replace nodes about to go, while the pods
    /// already pending stay the provisioner's to place.
    pub fn evicted_from(&self, pods: &PodIndex, gone: &HashSet<&str>) -> Input {
        self.build(pods, gone, false)
    }

    fn build(&self, pods: &PodIndex, gone: &HashSet<&str>, with_provisionable: bool) -> Input {
        let whole = &self.input;
        let mut moving: Vec<Arc<PodInfo>> = gone
            .iter()
            .filter_map(|node| self.bound.get(*node))
            .flatten()
            .map(|position| &whole.scheduled[*position].pod)
            .filter(|pod| pods.evictable(&pod.key))
            .cloned()
            .collect();
        // In key order: the same answer whatever order `gone` iterates in.
        moving.sort_by(|a, b| a.key.cmp(&b.key));
        if with_provisionable {
            moving.extend(whole.pods.iter().cloned());
        }
        Input {
            pods: moving,
            nodes: whole.nodes.iter().filter(|node| !gone.contains(node.name.as_str())).cloned().collect(),
            // Bound pods count only through the tally (see `CountedBound`).
            scheduled: Vec::new(),
            pools: whole.pools.clone(),
            instance_types: whole.instance_types.clone(),
            policies: whole.policies,
            namespaces: whole.namespaces.clone(),
            counted: self.tally.as_ref().map(|tally| CountedBound {
                whole: tally.clone(),
                gone: gone.iter().map(|node| (*node).to_owned()).collect(),
            }),
        }
    }
}

/// How many more EBS volumes each node can attach. Kubelets do not report it (the EBS CSI driver
/// tells kube-scheduler through CSINode), so it is the instance type's limit from the catalog
/// less the EBS volumes of the pods bound there. A node of a type outside the catalog is taken
/// to have room, as is every node while no pod in the input mounts an EBS volume (the room then
/// changes no decision, and the catalog is not read).
struct VolumeRoom<'a> {
    /// Each catalog type's limit; empty when no pod needs one.
    limits: HashMap<&'a str, i64>,
    /// EBS volumes attached per node name.
    attached: HashMap<Arc<str>, i64>,
}

/// What a node of an unknown type is taken to attach: more than any pod asks.
const UNCOUNTED_VOLUMES: i64 = 1 << 16;

impl<'a> VolumeRoom<'a> {
    fn of(state: &Snapshot<'a>, input: &Input) -> Self {
        let volumes = |pod: &PodInfo| pod.requests.get(labels::EBS_VOLUMES);
        let mut attached: HashMap<Arc<str>, i64> = HashMap::new();
        for scheduled in input.scheduled.iter().filter(|s| volumes(&s.pod) > 0) {
            *attached.entry(scheduled.node.clone()).or_default() += volumes(&scheduled.pod);
        }
        let limits = if attached.is_empty() && !input.pods.iter().any(|p| volumes(p) > 0) {
            HashMap::new()
        } else {
            let types = state.instance_types.values().flat_map(|types| types.iter());
            types.map(|t| (t.name.as_str(), t.allocatable.get(labels::EBS_VOLUMES))).collect()
        };
        Self { limits, attached }
    }

    /// Sets a node's room in what it has free. An in-flight claim of no single type keeps the
    /// least its candidate types offer.
    fn set(&self, free: &mut Resources, instance_type: Option<&String>, node: &str) {
        let limit = instance_type.and_then(|t| self.limits.get(t.as_str()).copied());
        let limit = limit.or_else(|| free.iter().find(|(name, _)| *name == labels::EBS_VOLUMES).map(|(_, room)| room));
        let attached = self.attached.get(node).copied().unwrap_or(0);
        free.set(labels::EBS_VOLUMES, limit.unwrap_or(UNCOUNTED_VOLUMES).saturating_sub(attached));
    }
}

/// What an in-flight NodeClaim will offer: its launched type's allocatable when known, else the
/// least of what its candidate instance types offer (resource by resource).
fn expected_allocatable(claim: &NodeClaim, instance_types: &[InstanceType]) -> Resources {
    if let Some(status) = &claim.status
        && !status.allocatable.is_empty()
        && let Ok(allocatable) = Resources::from_quantities(&status.allocatable)
    {
        return allocatable;
    }
    let candidates: Vec<&String> =
        claim.spec.requirements.iter().filter(|r| r.key == labels::INSTANCE_TYPE).flat_map(|r| &r.values).collect();
    let mut least: Option<Resources> = None;
    for instance in instance_types.iter().filter(|t| candidates.contains(&&t.name)) {
        least = Some(match least {
            None => instance.allocatable.clone(),
            Some(mut least) => {
                least.min_with(&instance.allocatable);
                least
            }
        });
    }
    least.unwrap_or_else(|| Resources::from_quantities(&claim.spec.resources.requests).unwrap_or_default())
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
