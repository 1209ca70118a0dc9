//! The provisioner's pure middle: which pods are provisionable, how the cluster's state becomes
//! the solver's input (pending pods; registered nodes and in-flight NodeClaims as existing
//! capacity; NodePools with their daemonset overhead and remaining limits), and how a planned
//! NodeClaim becomes a NodeClaim object.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::{
    api::{apps::v1::DaemonSet, core::v1::Node},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::ResourceExt;

use crate::{
    apis::{
        NodeClaim, NodePool,
        labels::{self, EPHEMERAL_TAINTS, UNREGISTERED_TAINT},
        nodeclaim::{NodeClaimSpec, ResourceRequests},
    },
    scheduling::{
        catalog::InstanceType,
        inputs::nodepool_template,
        requirements::Requirements,
        resources::Resources,
        solver::{ExistingNode, Input, NODES, NewNodeClaim, ScheduledPod},
    },
    state::cache::CachedPod,
};

/// A pod the provisioner should find capacity for (DESIGN.md): the scheduler marked it
/// unschedulable, it is not bound or nominated, not a DaemonSet pod, not terminating.
pub fn is_provisionable(pod: &CachedPod) -> bool {
    let unschedulable =
        pod.condition("PodScheduled", "False").is_some_and(|c| c.reason.as_deref() == Some("Unschedulable"));
    let daemon = pod.owner_references().iter().any(|owner| owner.kind == "DaemonSet");
    unschedulable
        && pod.node_name.is_none()
        && pod.nominated_node_name.is_none()
        && !daemon
        && pod.metadata.deletion_timestamp.is_none()
}

/// Seconds from a pod's creation until kube-scheduler bound it; `None` while it is not bound.
pub fn scheduling_wait(pod: &CachedPod) -> Option<f64> {
    pod.node_name.as_ref()?;
    let scheduled = pod.condition("PodScheduled", "True")?;
    let created = pod.metadata.creation_timestamp.as_ref()?;
    Some(scheduled.last_transition_time.as_ref()?.0.duration_since(created.0).as_secs_f64().max(0.0))
}

/// Whether a pod holds resources on its node (bound and not finished).
fn occupies_node(pod: &CachedPod) -> Option<&str> {
    if matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    pod.node_name.as_deref()
}

/// Everything the provisioner reads, from the shared reflectors.
pub struct Snapshot<'a> {
    pub pods: &'a [Arc<CachedPod>],
    pub nodes: &'a [Arc<Node>],
    pub claims: &'a [Arc<NodeClaim>],
    pub pools: &'a [Arc<NodePool>],
    pub daemonsets: &'a [DaemonSet],
    /// Instance types per EC2NodeClass name; a class missing here is not ready.
    pub instance_types: &'a BTreeMap<String, Arc<[InstanceType]>>,
}

/// The solver's input, and what could not be used (with why).
pub struct Prepared {
    pub input: Input,
    pub skipped: Vec<String>,
}

pub fn solver_input(state: &Snapshot) -> Prepared {
    let mut skipped = Vec::new();
    let mut input = Input::default();

    // Instance types, one slice per node class: the cached slice itself when there is one class,
    // a concatenation otherwise.
    let mut ranges: HashMap<&str, std::ops::Range<usize>> = HashMap::new();
    if state.instance_types.len() == 1
        && let Some((class, types)) = state.instance_types.first_key_value()
    {
        input.instance_types = types.clone();
        ranges.insert(class.as_str(), 0..types.len());
    } else {
        let mut all = Vec::new();
        for (class, types) in state.instance_types {
            let start = all.len();
            all.extend(types.iter().cloned());
            ranges.insert(class.as_str(), start..all.len());
        }
        input.instance_types = all.into();
    }

    // What each pool's NodeClaims already count against its limits.
    let mut in_use: HashMap<String, Resources> = HashMap::new();
    for claim in state.claims {
        let Some(pool) = claim.labels().get(labels::NODEPOOL) else { continue };
        let counted = claim
            .status
            .as_ref()
            .filter(|s| !s.capacity.is_empty())
            .map(|s| Resources::from_quantities(&s.capacity))
            .unwrap_or_else(|| Resources::from_quantities(&claim.spec.resources.requests))
            .unwrap_or_default();
        let usage = in_use.entry(pool.clone()).or_default();
        usage.add(&counted);
        usage.set(NODES, usage.get(NODES) + 1);
    }
    let mut overhead: HashMap<String, Resources> = HashMap::new();
    for pool in state.pools {
        let name = pool.name_any();
        if pool.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let class = &pool.spec.template.spec.node_class_ref.name;
        let Some(range) = ranges.get(class.as_str()) else {
            skipped.push(format!("NodePool {name}: EC2NodeClass {class} is not ready"));
            continue;
        };
        let used = in_use.get(&name).cloned().unwrap_or_default();
        match nodepool_template(pool, range.clone().collect(), state.daemonsets, &used) {
            Ok(template) => {
                overhead.insert(name, template.daemon_overhead.clone());
                input.pools.push(template);
            }
            Err(error) => skipped.push(format!("NodePool {name}: {error}")),
        }
    }

    // Bound pods: room taken on their nodes, and topology counts.
    let mut taken: HashMap<&str, Resources> = HashMap::new();
    let mut ports: HashMap<&str, Vec<(String, i32, String)>> = HashMap::new();
    for pod in state.pods {
        let Some(node) = occupies_node(pod) else { continue };
        if let Ok(info) = &pod.scheduling {
            taken.entry(node).or_default().add(&info.requests);
            if !info.host_ports.is_empty() {
                ports.entry(node).or_default().extend(info.host_ports.iter().cloned());
            }
            input.scheduled.push(ScheduledPod { pod: info.clone(), node: node.to_owned() });
        }
    }

    // Startup taints of nodes not yet initialized are expected to go: they do not keep pods off.
    let mut startup: HashMap<&str, &[k8s_openapi::api::core::v1::Taint]> = HashMap::new();
    for claim in state.claims {
        let initialized =
            claim.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == "Initialized" && c.status == "True");
        if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_deref())
            && !initialized
        {
            startup.insert(node, &claim.spec.startup_taints);
        }
    }

    // Registered nodes.
    let mut registered_ids: Vec<&str> = Vec::new();
    for node in state.nodes {
        if node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = node.name_any();
        if let Some(id) = node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) {
            registered_ids.push(id);
        }
        let spec = node.spec.as_ref();
        if spec.and_then(|s| s.unschedulable) == Some(true) {
            continue;
        }
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let Some(Ok(mut free)) = allocatable.map(Resources::from_quantities) else { continue };
        if let Some(used) = taken.get(name.as_str()) {
            free.subtract(used);
        }
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
        input.nodes.push(ExistingNode {
            requirements: Requirements::from_labels(node.labels()),
            registered: true,
            taints,
            free,
            host_ports: ports.remove(name.as_str()).unwrap_or_default(),
            name,
        });
    }

    // In-flight NodeClaims: launched or launching, no node yet.
    for claim in state.claims {
        let registered =
            claim.status.as_ref().and_then(|s| s.provider_id.as_deref()).is_some_and(|id| registered_ids.contains(&id));
        if registered || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let requirements =
            Requirements::from_api(&claim.spec.requirements).intersect(&Requirements::from_labels(claim.labels()));
        let mut free = expected_allocatable(claim, &input.instance_types);
        if let Some(daemons) = claim.labels().get(labels::NODEPOOL).and_then(|pool| overhead.get(pool)) {
            free.subtract(daemons);
        }
        input.nodes.push(ExistingNode {
            name: claim.name_any(),
            requirements,
            registered: false,
            taints: claim.spec.taints.clone(),
            free,
            host_ports: Vec::new(),
        });
    }

    for pod in state.pods.iter().filter(|pod| is_provisionable(pod)) {
        match &pod.scheduling {
            Ok(info) => input.pods.push(info.clone()),
            Err(error) => {
                skipped.push(format!("pod {}/{}: {error}", pod.namespace().unwrap_or_default(), pod.name_any()))
            }
        }
    }
    Prepared { input, skipped }
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

/// The NodeClaim object for a planned node: the pool's [`nodeclaim_template`] named
/// `<pool>-<suffix>`, with the planned requirements and requests.
pub fn nodeclaim_for(planned: &NewNodeClaim, pool: &NodePool, suffix: &str) -> NodeClaim {
    let mut claim = nodeclaim_template(pool);
    claim.metadata.name = Some(format!("{}-{suffix}", pool.name_any()));
    // The pool's own label (`stoker.dev/nodepool`) is on the claim's metadata; stoker's label
    // domain is not allowed in requirements.
    claim.spec.requirements =
        planned.requirements.to_api().into_iter().filter(|r| !r.key.starts_with(labels::RESERVED_DOMAIN)).collect();
    claim.spec.resources = ResourceRequests { requests: planned.requests.to_quantities() };
    claim
}

/// What every NodeClaim of a pool shares, unnamed and without requirements: owned by the
/// NodePool, labelled with it, carrying its template labels, annotations, taints and lifetimes.
pub fn nodeclaim_template(pool: &NodePool) -> NodeClaim {
    let pool_name = pool.name_any();
    let template = &pool.spec.template;
    let mut claim_labels = template.metadata.labels.clone();
    claim_labels.insert(labels::NODEPOOL.to_owned(), pool_name.clone());
    let owner = OwnerReference {
        api_version: format!("{}/{}", labels::GROUP, labels::VERSION),
        kind: "NodePool".into(),
        name: pool_name.clone(),
        uid: pool.uid().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: None,
    };
    NodeClaim {
        metadata: ObjectMeta {
            labels: Some(claim_labels),
            annotations: (!template.metadata.annotations.is_empty()).then(|| template.metadata.annotations.clone()),
            owner_references: Some(vec![owner]),
            // Held from the start, so the NodeClaim controller can launch on its first look.
            finalizers: Some(vec![crate::controllers::nodeclaim::FINALIZER.to_owned()]),
            ..Default::default()
        },
        spec: NodeClaimSpec {
            requirements: Vec::new(),
            resources: ResourceRequests::default(),
            taints: template.spec.taints.clone(),
            startup_taints: template.spec.startup_taints.clone(),
            node_class_ref: template.spec.node_class_ref.clone(),
            expire_after: Some(template.spec.expire_after),
            termination_grace_period: template.spec.termination_grace_period,
        },
        status: None,
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
