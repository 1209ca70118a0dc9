//! CapacityBuffers resolved against the cached PodTemplates and workloads: the shape of one chunk,
//! how many chunks to keep, and the virtual pods that hold their room in every simulation (the
//! provisioner's, consolidation's, drift's). Virtual pods are never Pods: each is a
//! [`PodInfo`] marked `placeholder`, with a key no real pod can have, so a plan's answer for one
//! can be traced back to its buffer.
//!
//! [`BufferSources`] holds the caches (watched only where the cluster serves the
//! `autoscaling.x-k8s.io/v1beta1` API); [`resolve`] is the pure part.

use std::{collections::HashSet, sync::Arc};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet, StatefulSet},
    core::v1::{Pod, PodTemplate, PodTemplateSpec},
};
use kube::{
    ResourceExt,
    api::ObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    apis::capacitybuffer::{ACTIVE_CAPACITY, CapacityBuffer, LocalObjectRef, ScalableRef, percent_of_replicas},
    scheduling::{
        pod::PodInfo,
        resources::Resources,
        solver::{Input, solve},
    },
};

/// The most chunks one buffer keeps: `limits` over a tiny pod could otherwise ask for millions of
/// virtual pods (the WarmPool's ceiling too).
pub const MAX_CHUNKS: i32 = 10_000;

/// What a buffer's reference names: one chunk's pod template, and the workload's replicas (for
/// `percentage`) or the PodTemplate's name and generation.
#[derive(Debug, Clone)]
pub struct Referenced {
    pub template: PodTemplateSpec,
    pub workload_replicas: Option<i32>,
    pub pod_template: Option<(String, Option<i64>)>,
}

/// Why a buffer keeps no room, as its `ReadyForProvisioning` condition says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("neither podTemplateRef nor scalableRef is set")]
    NoReference,
    #[error("PodTemplate {0} not found in the buffer's namespace")]
    PodTemplateNotFound(String),
    #[error("{kind} {name} not found in the buffer's namespace")]
    ScalableRefNotFound { kind: String, name: String },
    #[error(
        "scalableRef {0} is not supported: stoker reads Deployments, StatefulSets and ReplicaSets of the apps group"
    )]
    UnsupportedKind(String),
    #[error("the pod template has no spec")]
    NoPodSpec,
    #[error("cannot read the pod template's requests: {0}")]
    Requests(String),
    #[error("cannot read spec.limits: {0}")]
    Limits(String),
}

impl Unresolved {
    /// The condition reason, as Cluster Autoscaler and Karpenter name them.
    pub fn reason(&self) -> &'static str {
        match self {
            Unresolved::PodTemplateNotFound(_) => "PodTemplateNotFound",
            Unresolved::ScalableRefNotFound { .. } => "ScalableRefNotFound",
            _ => "ResolutionFailed",
        }
    }
}

/// A buffer whose chunks are known.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Chunks to keep.
    pub replicas: i32,
    /// Whether more were asked for than [`MAX_CHUNKS`].
    pub capped: bool,
    /// One chunk, as the simulation sees it.
    pub chunk: Arc<PodInfo>,
    /// The PodTemplate (name, generation) the chunks are shaped by, when the buffer names one.
    pub pod_template: Option<(String, Option<i64>)>,
}

/// A buffer's chunk shape and count, from what its reference names.
pub fn resolve(buffer: &CapacityBuffer, referenced: Result<Referenced, Unresolved>) -> Result<Resolved, Unresolved> {
    let referenced = referenced?;
    let namespace = buffer.namespace().unwrap_or_default();
    let name = buffer.name_any();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(virtual_name(&name, 0)),
            namespace: Some(namespace),
            labels: referenced.template.metadata.as_ref().and_then(|m| m.labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(referenced.template.spec.ok_or(Unresolved::NoPodSpec)?),
        status: None,
    };
    let mut chunk = PodInfo::from_pod(&pod).map_err(|error| Unresolved::Requests(error.to_string()))?;
    // The template's volumes belong to the workload's pods; the room is what a chunk requests.
    chunk.volume_claims.clear();
    chunk.placeholder = true;

    let spec = &buffer.spec;
    let percentage = match (spec.percentage, referenced.workload_replicas) {
        (Some(percentage), Some(replicas)) if replicas > 0 && percentage > 0 => {
            Some(percent_of_replicas(replicas, percentage))
        }
        _ => None,
    };
    let asked = [spec.replicas.map(i64::from), percentage].into_iter().flatten().max();
    let limited = match &spec.limits {
        Some(limits) => {
            let limits = Resources::from_quantities(limits).map_err(|error| Unresolved::Limits(error.to_string()))?;
            chunks_within(&limits, &chunk.requests)
        }
        None => None,
    };
    let wanted = match (asked, limited) {
        (Some(asked), Some(limited)) => asked.min(limited),
        (asked, limited) => asked.or(limited).unwrap_or(0),
    }
    .max(0);
    let replicas = wanted.min(i64::from(MAX_CHUNKS)) as i32;
    Ok(Resolved {
        replicas,
        capped: wanted > i64::from(MAX_CHUNKS),
        chunk: Arc::new(chunk),
        pod_template: referenced.pod_template,
    })
}

/// How many chunks of `requests` fit in `limits`: the least over the resources both name (and
/// the chunk requests some of); `None` when they name none in common.
fn chunks_within(limits: &Resources, requests: &Resources) -> Option<i64> {
    limits
        .iter()
        .filter_map(|(name, limit)| {
            let request = requests.get(name);
            (request > 0).then(|| limit.max(0) / request)
        })
        .min()
}

/// The virtual pods of a resolved buffer, sharing one shape.
pub fn virtual_pods(namespace: &str, name: &str, resolved: &Resolved) -> impl Iterator<Item = Arc<PodInfo>> {
    (0..resolved.replicas).map(move |chunk| {
        Arc::new(PodInfo { key: format!("{namespace}/{}", virtual_name(name, chunk)), ..(*resolved.chunk).clone() })
    })
}

/// A virtual pod's name: the `:` no Pod name may hold keeps it apart from real pods.
fn virtual_name(buffer: &str, chunk: i32) -> String {
    format!("{PREFIX}{buffer}:{chunk}")
}

const PREFIX: &str = "capacitybuffer:";

/// The buffer (namespace, name) a virtual pod's key belongs to; `None` for a real pod's key.
pub fn buffer_of(key: &str) -> Option<(&str, &str)> {
    let (namespace, name) = key.split_once('/')?;
    let (buffer, _chunk) = name.strip_prefix(PREFIX)?.rsplit_once(':')?;
    Some((namespace, buffer))
}

/// The virtual pods a cluster holds room for, and where.
#[derive(Debug, Default)]
pub struct Held {
    /// Keys of the virtual pods placed on existing or in-flight capacity.
    pub pods: HashSet<String>,
    /// Names of the nodes (and in-flight NodeClaims) they are placed on.
    pub hosts: HashSet<String>,
}

/// Which of `input`'s virtual pods the cluster holds room for now: those a solve places on
/// existing or in-flight capacity (after every real pod), not on new NodeClaims.
pub fn held(input: &Input) -> Held {
    let mut held = Held::default();
    if !input.pods.iter().any(|pod| pod.placeholder) {
        return held;
    }
    for (pod, node) in solve(input).existing {
        if buffer_of(&pod).is_some() {
            held.pods.insert(pod);
            held.hosts.insert(node);
        }
    }
    held
}

/// The caches a buffer resolves against.
#[derive(Clone)]
pub struct BufferSources {
    pub buffers: Store<CapacityBuffer>,
    pub pod_templates: Store<PodTemplate>,
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    pub replica_sets: Store<ReplicaSet>,
}

impl BufferSources {
    /// Every buffer stoker acts on (the active-capacity strategy), with its resolution.
    pub fn resolved(&self) -> Vec<(Arc<CapacityBuffer>, Result<Resolved, Unresolved>)> {
        let mut buffers = self.buffers.state();
        buffers.retain(|buffer| buffer.strategy() == ACTIVE_CAPACITY);
        buffers.sort_by_key(|buffer| (buffer.namespace(), buffer.name_any()));
        buffers
            .into_iter()
            .map(|buffer| {
                let resolution = resolve(&buffer, self.referenced(&buffer));
                (buffer, resolution)
            })
            .collect()
    }

    /// The virtual pods of every resolved buffer.
    pub fn virtual_pods(&self) -> Vec<Arc<PodInfo>> {
        self.resolved()
            .iter()
            .filter_map(|(buffer, resolution)| Some((buffer, resolution.as_ref().ok()?)))
            .flat_map(|(buffer, resolved)| {
                virtual_pods(&buffer.namespace().unwrap_or_default(), &buffer.name_any(), resolved).collect::<Vec<_>>()
            })
            .collect()
    }

    /// What the buffer's reference names, from the caches.
    fn referenced(&self, buffer: &CapacityBuffer) -> Result<Referenced, Unresolved> {
        let namespace = buffer.namespace().unwrap_or_default();
        self.referenced_by(&namespace, buffer.spec.pod_template_ref.as_ref(), buffer.spec.scalable_ref.as_ref())
    }

    /// What a PodTemplate reference (first) or a scalable workload reference in `namespace`
    /// names, from the caches: a buffer's chunk, a WarmPool's pause pod shape.
    pub fn referenced_by(
        &self,
        namespace: &str,
        pod_template_ref: Option<&LocalObjectRef>,
        scalable_ref: Option<&ScalableRef>,
    ) -> Result<Referenced, Unresolved> {
        if let Some(reference) = pod_template_ref {
            let found = self.pod_templates.get(&ObjectRef::new(&reference.name).within(namespace));
            let template = found.ok_or_else(|| Unresolved::PodTemplateNotFound(reference.name.clone()))?;
            return Ok(Referenced {
                template: template.template.clone().unwrap_or_default(),
                workload_replicas: None,
                pod_template: Some((reference.name.clone(), template.metadata.generation)),
            });
        }
        let reference = scalable_ref.ok_or(Unresolved::NoReference)?;
        let not_found =
            || Unresolved::ScalableRefNotFound { kind: reference.kind.clone(), name: reference.name.clone() };
        let workload = |template: Option<PodTemplateSpec>, replicas: Option<i32>| Referenced {
            template: template.unwrap_or_default(),
            // The apps controllers' default.
            workload_replicas: Some(replicas.unwrap_or(1)),
            pod_template: None,
        };
        if !matches!(reference.api_group.as_str(), "" | "apps") {
            return Err(Unresolved::UnsupportedKind(format!("{}.{}", reference.kind, reference.api_group)));
        }
        match reference.kind.as_str() {
            "Deployment" => {
                let found =
                    self.deployments.get(&ObjectRef::new(&reference.name).within(namespace)).ok_or_else(not_found)?;
                let spec = found.spec.clone();
                Ok(workload(Some(spec.template), spec.replicas))
            }
            "StatefulSet" => {
                let found =
                    self.stateful_sets.get(&ObjectRef::new(&reference.name).within(namespace)).ok_or_else(not_found)?;
                let spec = found.spec.clone();
                Ok(workload(Some(spec.template), spec.replicas))
            }
            "ReplicaSet" => {
                let found =
                    self.replica_sets.get(&ObjectRef::new(&reference.name).within(namespace)).ok_or_else(not_found)?;
                let spec = found.spec.clone();
                Ok(workload(spec.template, spec.replicas))
            }
            other => Err(Unresolved::UnsupportedKind(other.to_owned())),
        }
    }
}

#[cfg(test)]
#[path = "buffers_tests.rs"]
mod tests;
