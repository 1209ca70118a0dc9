//! A Pod as the pod watch decodes it: only what [`CachedPod`](super::cache::CachedPod) keeps and
//! the simulation's [`PodInfo`](crate::scheduling::pod::PodInfo) reads. Every other field
//! (server-side-apply bookkeeping, container commands, env, probes, mounts, the projected token
//! volume, container statuses) is skipped by the JSON parser instead of being built and then
//! dropped: decoding watched pods was a fifth of the controller's CPU in the race against
//! Karpenter, and the whole pods of a 500-pod list page were its transient memory.
//!
//! The watch's objects become `Pod`s with only these fields set, so every decision reads the same
//! types as before; the cache's tests check that a pod decoded here is cached exactly as the whole
//! pod is. A field a new decision reads must be added here as well as kept in the cache.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Affinity, Container, ContainerPort, EphemeralVolumeSource, PersistentVolumeClaimVolumeSource, Pod,
        PodCondition, PodSpec, PodStatus, ResourceRequirements, Toleration, TopologySpreadConstraint, Volume,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    },
};
use serde::{Deserialize, de::IgnoredAny};

/// The parts of a watched Pod that stoker reads. Read through the API as a Pod.
#[derive(Debug, Clone, Deserialize)]
pub struct WatchedPod {
    #[serde(default, deserialize_with = "without_managed_fields")]
    pub metadata: ObjectMeta,
    pub spec: Option<WatchedSpec>,
    pub status: Option<WatchedStatus>,
}

super::cache::read_as_pod!(WatchedPod);

fn without_managed_fields<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    WatchedMeta::deserialize(deserializer).map(ObjectMeta::from)
}

/// Every metadata field but the server-side-apply bookkeeping (`managedFields`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchedMeta {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
    finalizers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedSpec {
    node_name: Option<String>,
    node_selector: Option<BTreeMap<String, String>>,
    affinity: Option<Affinity>,
    tolerations: Option<Vec<Toleration>>,
    topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default)]
    containers: Vec<WatchedContainer>,
    init_containers: Option<Vec<WatchedContainer>>,
    /// Pod-level requests, which replace the containers' sum.
    resources: Option<ResourceRequirements>,
    overhead: Option<BTreeMap<String, Quantity>>,
    priority: Option<i32>,
    volumes: Option<Vec<WatchedVolume>>,
}

/// What a container adds to its pod's requests and host ports; `restartPolicy` makes an init
/// container a sidecar.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedContainer {
    #[serde(default)]
    name: String,
    resources: Option<ResourceRequirements>,
    ports: Option<Vec<ContainerPort>>,
    restart_policy: Option<String>,
}

/// A volume's name, and the claim it mounts (named, or made for the pod from a template).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedVolume {
    #[serde(default)]
    name: String,
    persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// Only whether there is one: the claim it makes is named after the pod and the volume.
    ephemeral: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedStatus {
    phase: Option<String>,
    nominated_node_name: Option<String>,
    conditions: Option<Vec<PodCondition>>,
}

impl From<WatchedPod> for Pod {
    fn from(pod: WatchedPod) -> Self {
        let WatchedPod { metadata, spec, status } = pod;
        Pod { metadata, spec: spec.map(Into::into), status: status.map(Into::into) }
    }
}

impl From<WatchedMeta> for ObjectMeta {
    fn from(meta: WatchedMeta) -> Self {
        ObjectMeta {
            name: meta.name,
            generate_name: meta.generate_name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            generation: meta.generation,
            creation_timestamp: meta.creation_timestamp,
            deletion_timestamp: meta.deletion_timestamp,
            deletion_grace_period_seconds: meta.deletion_grace_period_seconds,
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: meta.owner_references,
            finalizers: meta.finalizers,
            ..ObjectMeta::default()
        }
    }
}

impl From<WatchedSpec> for PodSpec {
    fn from(spec: WatchedSpec) -> Self {
        let containers = |list: Vec<WatchedContainer>| list.into_iter().map(Container::from).collect::<Vec<_>>();
        PodSpec {
            node_name: spec.node_name,
            node_selector: spec.node_selector,
            affinity: spec.affinity,
            tolerations: spec.tolerations,
            topology_spread_constraints: spec.topology_spread_constraints,
            containers: containers(spec.containers),
            init_containers: spec.init_containers.map(containers),
            resources: spec.resources,
            overhead: spec.overhead,
            priority: spec.priority,
            volumes: spec.volumes.map(|volumes| volumes.into_iter().map(Volume::from).collect()),
            ..PodSpec::default()
        }
    }
}

impl From<WatchedContainer> for Container {
    fn from(container: WatchedContainer) -> Self {
        Container {
            name: container.name,
            resources: container.resources,
            ports: container.ports,
            restart_policy: container.restart_policy,
            ..Container::default()
        }
    }
}

impl From<WatchedVolume> for Volume {
    fn from(volume: WatchedVolume) -> Self {
        Volume {
            name: volume.name,
            persistent_volume_claim: volume.persistent_volume_claim,
            ephemeral: volume.ephemeral.map(|_| EphemeralVolumeSource::default()),
            ..Volume::default()
        }
    }
}

impl From<WatchedStatus> for PodStatus {
    fn from(status: WatchedStatus) -> Self {
        PodStatus {
            phase: status.phase,
            nominated_node_name: status.nominated_node_name,
            conditions: status.conditions,
            ..PodStatus::default()
        }
    }
}
