//! What the shared caches keep. The controllers read a small part of a Pod: its scheduling
//! constraints and requests, the node it is bound to, a few conditions, labels, owner references
//! and three annotations. At 10,000 pods the rest (container commands, env and probes, volumes,
//! statuses, other tools' annotations) is most of the cache's memory, and parsing the constraints
//! again in every batch was most of a batch's time. So the pod reflector turns each Pod into a
//! [`CachedPod`] as it arrives: the fields a controller reads, and the simulation's [`PodInfo`]
//! parsed once, its shape shared with the other replicas of its template. Nodes stay Nodes,
//! without their image lists and node info; Namespaces keep only their names and labels, volume
//! claims, volumes and storage classes only what places a pod (see [`volumes`](super::volumes)),
//! StatefulSets and PodTemplates only the replicas and pod template a CapacityBuffer reads,
//! ReplicaSets, Deployments and Jobs only what says how many of their pods are still to come and
//! what they look like (and, where buffers are served, every template); no cached object keeps
//! its server-side-apply bookkeeping.
//!
//! Nothing written back to the API server is built from a cached object's dropped parts: the
//! controllers patch only labels, taints and finalizers of Nodes and NodeClaims, and read pods.
//! A field a new decision reads must be kept here; the tests below check every decision made
//! from a cached pod against the whole pod.

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::{
        Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetCondition,
        ReplicaSetSpec, ReplicaSetStatus, StatefulSet, StatefulSetSpec,
    },
    batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods},
    core::v1::{
        Namespace, Node, NodeStatus, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
        PersistentVolumeSpec, Pod, PodCondition, PodTemplate, PodTemplateSpec,
    },
    storage::v1::StorageClass,
};
use kube::{Resource, api::ObjectMeta};

use crate::{
    apis::labels,
    scheduling::{pod::PodInfo, quantity::QuantityError, shapes::Shapes},
};

/// The annotations a controller reads from a cached Pod or Node.
const READ_ANNOTATIONS: [&str; 4] =
    [labels::DO_NOT_DISRUPT, labels::KARPENTER_DO_NOT_DISRUPT, labels::MIRROR_POD, labels::POD_DELETION_COST];

/// The pod conditions a controller reads: binding (provisionable pods, their wait) and the
/// scheduler's preemption mark (warm-pool preemptions).
const READ_POD_CONDITIONS: [&str; 2] = ["PodScheduled", "DisruptionTarget"];

/// A Pod as the shared cache keeps it.
#[derive(Debug, Clone)]
pub struct CachedPod {
    /// Name, namespace, UID, resourceVersion, labels, owner references, timestamps, and the
    /// annotations a controller reads.
    pub metadata: ObjectMeta,
    pub node_name: Option<String>,
    pub phase: Option<String>,
    /// Where a preemption is making room for the pod; never an empty string.
    pub nominated_node_name: Option<String>,
    /// The pod's priority (from its priority class), which makes it costlier to disrupt.
    pub priority: Option<i32>,
    /// PodScheduled and DisruptionTarget, without their messages.
    pub conditions: Vec<PodCondition>,
    /// What the simulation needs, shared with every batch that reads the pod; an error when a
    /// request cannot be parsed.
    pub scheduling: Result<Arc<PodInfo>, QuantityError>,
}

impl From<Pod> for CachedPod {
    /// The cached form of `pod`, its shape its own.
    fn from(pod: Pod) -> Self {
        Self::new(pod, &mut Shapes::default())
    }
}

impl CachedPod {
    /// The cached form of `pod`, its shape shared with the pods of equal shape in `shapes`.
    pub fn new(pod: Pod, shapes: &mut Shapes) -> Self {
        let scheduling = PodInfo::from_pod(&pod).map(|mut info| {
            info.shape = shapes.intern(info.shape);
            Arc::new(info)
        });
        let Pod { mut metadata, spec, status } = pod;
        prune_annotations(&mut metadata);
        let status = status.unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default().into_iter();
        let (node_name, priority) = spec.map(|spec| (spec.node_name, spec.priority)).unwrap_or_default();
        Self {
            metadata,
            node_name,
            priority,
            phase: status.phase,
            nominated_node_name: status.nominated_node_name.filter(|name| !name.is_empty()),
            conditions: conditions
                .filter(|c| READ_POD_CONDITIONS.contains(&c.type_.as_str()))
                .map(|c| PodCondition { message: None, ..c })
                .collect(),
            scheduling,
        }
    }

    /// The condition of this type with this status, if the pod has it.
    pub fn condition(&self, type_: &str, status: &str) -> Option<&PodCondition> {
        self.conditions.iter().find(|c| c.type_ == type_ && c.status == status)
    }
}

/// Implements `Resource` for a type read through the API as a Pod (`kind: Pod`, core `v1`), so
/// object references and Events name the pod itself.
macro_rules! read_as_pod {
    ($type:ty) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(dynamic: &()) -> std::borrow::Cow<'_, str> {
                k8s_openapi::api::core::v1::Pod::kind(dynamic)
            }

            fn group(dynamic: &()) -> std::borrow::Cow<'_, str> {
                k8s_openapi::api::core::v1::Pod::group(dynamic)
            }

            fn version(dynamic: &()) -> std::borrow::Cow<'_, str> {
                k8s_openapi::api::core::v1::Pod::version(dynamic)
            }

            fn plural(dynamic: &()) -> std::borrow::Cow<'_, str> {
                k8s_openapi::api::core::v1::Pod::plural(dynamic)
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use read_as_pod;

read_as_pod!(CachedPod);

/// Any other cached object: server-side apply bookkeeping is never read.
pub fn without_managed_fields<K: Resource>(mut object: K) -> K {
    object.meta_mut().managed_fields = None;
    object
}

pub fn node(mut node: Node) -> Node {
    prune_annotations(&mut node.metadata);
    if let Some(status) = &mut node.status {
        *status = NodeStatus {
            capacity: status.capacity.take(),
            allocatable: status.allocatable.take(),
            conditions: status.conditions.take(),
            ..NodeStatus::default()
        };
    }
    node
}

/// A Namespace as the cache keeps it: its name and labels, all a `namespaceSelector` reads.
pub fn namespace(namespace: Namespace) -> Namespace {
    let labels = namespace.metadata.labels.clone();
    Namespace { metadata: ObjectMeta { labels, ..identity(namespace.metadata) }, ..Namespace::default() }
}

/// A PersistentVolumeClaim as the cache keeps it: the class it asks for and the volume it is
/// bound to.
pub fn volume_claim(claim: PersistentVolumeClaim) -> PersistentVolumeClaim {
    let spec = claim.spec.map(|spec| PersistentVolumeClaimSpec {
        storage_class_name: spec.storage_class_name,
        volume_name: spec.volume_name,
        ..PersistentVolumeClaimSpec::default()
    });
    PersistentVolumeClaim { metadata: identity(claim.metadata), spec, status: None }
}

/// A PersistentVolume as the cache keeps it: its node affinity, and whether it is node-local.
pub fn volume(volume: PersistentVolume) -> PersistentVolume {
    let spec = volume.spec.map(|spec| PersistentVolumeSpec {
        node_affinity: spec.node_affinity,
        local: spec.local,
        host_path: spec.host_path,
        ..PersistentVolumeSpec::default()
    });
    PersistentVolume { metadata: identity(volume.metadata), spec, status: None }
}

/// A StorageClass as the cache keeps it: where it may provision.
pub fn storage_class(class: StorageClass) -> StorageClass {
    StorageClass {
        metadata: identity(class.metadata),
        allowed_topologies: class.allowed_topologies,
        volume_binding_mode: class.volume_binding_mode,
        provisioner: class.provisioner,
        ..StorageClass::default()
    }
}

/// Whether `deployment`'s controller has yet to act on its spec (a new Deployment, or one scaled
/// or changed since it last did): the only time its ReplicaSets may not yet hold all its
/// replicas, and so the only time a batch reads its template.
pub fn deployment_unobserved(deployment: &Deployment) -> bool {
    deployment.status.as_ref().and_then(|status| status.observed_generation) < deployment.metadata.generation
}

/// The Deployment conditions that say its controller cannot create its pods: `Progressing`
/// false (a ReplicaSet it could not create, a deadline passed) and `ReplicaFailure` true.
pub fn deployment_failing(deployment: &Deployment) -> bool {
    let mut conditions = deployment.status.iter().flat_map(|status| status.conditions.iter().flatten());
    conditions.any(|c| {
        matches!(
            (c.type_.as_deref(), c.status.as_deref()),
            (Some("Progressing"), Some("False")) | (Some("ReplicaFailure"), Some("True"))
        )
    })
}

/// A Deployment as the provisioner keeps it for the replicas still to come (see
/// [`expected`](crate::controllers::provisioner::expected)): its identity, generation and
/// deletion, its replicas and whether it is paused, the generation its controller has acted on and
/// the conditions of [`deployment_failing`] (without their messages), and its pod template only
/// while [`deployment_unobserved`] (a cluster's Deployments are mostly steady).
pub fn deployment_growth(deployment: Deployment) -> Deployment {
    deployment_kept(deployment, false)
}

/// A Deployment as the cache keeps it where CapacityBuffers are served: as
/// [`deployment_growth`], with its pod template always (a buffer may name a steady Deployment),
/// so that one watch serves the buffers and the provisioner.
pub fn deployment_with_template(deployment: Deployment) -> Deployment {
    deployment_kept(deployment, true)
}

fn deployment_kept(deployment: Deployment, every_template: bool) -> Deployment {
    let keep_template = every_template || deployment_unobserved(&deployment);
    let spec = DeploymentSpec {
        replicas: deployment.spec.replicas,
        paused: deployment.spec.paused,
        template: if keep_template { pod_template_spec(deployment.spec.template) } else { PodTemplateSpec::default() },
        ..DeploymentSpec::default()
    };
    let status = deployment.status.map(|status| DeploymentStatus {
        observed_generation: status.observed_generation,
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| matches!(c.type_.as_deref(), Some("Progressing" | "ReplicaFailure")))
                .map(|c| DeploymentCondition { type_: c.type_, status: c.status, ..DeploymentCondition::default() })
                .collect()
        }),
        ..DeploymentStatus::default()
    });
    let (generation, deletion_timestamp) =
        (deployment.metadata.generation, deployment.metadata.deletion_timestamp.clone());
    Deployment {
        metadata: ObjectMeta { generation, deletion_timestamp, ..identity(deployment.metadata) },
        spec,
        status,
    }
}

/// A StatefulSet as the cache keeps it for CapacityBuffers: its replicas and pod template.
pub fn stateful_set(set: StatefulSet) -> StatefulSet {
    let spec = StatefulSetSpec {
        replicas: set.spec.replicas,
        template: pod_template_spec(set.spec.template),
        ..StatefulSetSpec::default()
    };
    StatefulSet { metadata: identity(set.metadata), spec, status: None }
}

/// Whether `set` has fewer pods than replicas: the only time a batch reads its template (once
/// every pod exists, its untried ones are planned when pending, as copies of themselves).
pub fn short_of_pods(set: &ReplicaSet) -> bool {
    // The apps controllers' default is one replica.
    set.status.as_ref().map_or(0, |status| status.replicas) < set.spec.replicas.unwrap_or(1)
}

/// A ReplicaSet as the provisioner keeps it for the replicas still to come
/// (see [`expected`](crate::controllers::provisioner::expected)): its identity and deletion, the
/// reference to its controller (a Deployment's), its replicas, how many pods it has ([`ReplicaSetStatus::replicas`]) and whether it fails to create
/// them (`ReplicaFailure`), and its pod template only while it has fewer pods than replicas, the
/// only time a batch reads it (a cluster's ReplicaSets are mostly old revisions scaled to zero or
/// steady ones).
pub fn replica_set_growth(set: ReplicaSet) -> ReplicaSet {
    replica_set_kept(set, false)
}

/// A ReplicaSet as the cache keeps it where CapacityBuffers are served: as
/// [`replica_set_growth`], with its pod template always (a buffer may name a steady ReplicaSet),
/// so that one watch serves the buffers and the provisioner.
pub fn replica_set_with_template(set: ReplicaSet) -> ReplicaSet {
    replica_set_kept(set, true)
}

fn replica_set_kept(set: ReplicaSet, every_template: bool) -> ReplicaSet {
    let keep_template = every_template || short_of_pods(&set);
    let replicas = set.spec.replicas;
    let status = set.status.map(|status| ReplicaSetStatus {
        replicas: status.replicas,
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_.as_deref() == Some("ReplicaFailure"))
                .map(|c| ReplicaSetCondition { message: None, ..c })
                .collect()
        }),
        ..ReplicaSetStatus::default()
    });
    let spec = ReplicaSetSpec {
        replicas,
        template: set.spec.template.filter(|_| keep_template).map(pod_template_spec),
        ..ReplicaSetSpec::default()
    };
    let deletion_timestamp = set.metadata.deletion_timestamp.clone();
    // Its controller's reference: a Deployment's replicas not yet in its ReplicaSets are the
    // Deployment's less theirs.
    let owner_references = set
        .metadata
        .owner_references
        .clone()
        .map(|owners| owners.into_iter().filter(|owner| owner.controller == Some(true)).collect::<Vec<_>>());
    let metadata = ObjectMeta { deletion_timestamp, owner_references, ..identity(set.metadata) };
    ReplicaSet { metadata, spec, status }
}

/// The Job conditions after which its controller creates no pod: it has finished, or is
/// finishing (its remaining pods are being removed).
const JOB_FINISHING: [&str; 4] = ["Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"];

/// How many pods `job` wants running, as the Job controller counts them: none while it is
/// suspended, finishing, being deleted or left to another controller (`managedBy`, as Kueue's
/// MultiKueue does); else its parallelism (default 1), no more than the completions it still
/// lacks (its succeeded pods counted as the controller does, those its status has yet to count
/// included; an Indexed Job's failed indexes are never retried); a Job without completions (a
/// work queue) starts no pod once one has succeeded. A Job that replaces only failed pods
/// (`podReplacementPolicy: Failed`) waits for its terminating ones.
pub fn job_wants_running(job: &Job) -> usize {
    let Some(spec) = &job.spec else { return 0 };
    let status = job.status.as_ref();
    let finishing = status.and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
        conditions.iter().any(|c| c.status == "True" && JOB_FINISHING.contains(&c.type_.as_str()))
    });
    let managed_elsewhere = spec.managed_by.as_deref().is_some_and(|by| by != "kubernetes.io/job-controller");
    if finishing || managed_elsewhere || spec.suspend == Some(true) || job.metadata.deletion_timestamp.is_some() {
        return 0;
    }
    let parallelism = i64::from(spec.parallelism.unwrap_or(1));
    let uncounted = status.and_then(|s| s.uncounted_terminated_pods.as_ref()).and_then(|u| u.succeeded.as_ref());
    let succeeded = i64::from(status.and_then(|s| s.succeeded).unwrap_or(0))
        .saturating_add(i64::try_from(uncounted.map_or(0, Vec::len)).unwrap_or(i64::MAX));
    let failed_indexes = status.and_then(|s| s.failed_indexes.as_deref()).map_or(0, index_count);
    let wanted = match spec.completions {
        Some(completions) => {
            i64::from(completions).saturating_sub(succeeded).saturating_sub(failed_indexes).min(parallelism)
        }
        None if succeeded > 0 => 0,
        None => parallelism,
    };
    let terminating = match spec.pod_replacement_policy.as_deref() {
        Some("Failed") => i64::from(status.and_then(|s| s.terminating).unwrap_or(0)),
        _ => 0,
    };
    usize::try_from(wanted.saturating_sub(terminating)).unwrap_or(0)
}

/// How many indexes a Job status's index list holds (`1,3-5,7`: five); a part it cannot read
/// counts none.
fn index_count(list: &str) -> i64 {
    let count = |part: &str| -> Option<i64> {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last) = (first.trim().parse::<i64>().ok()?, last.trim().parse::<i64>().ok()?);
        (last >= first).then(|| (last - first).saturating_add(1))
    };
    list.split(',').filter(|part| !part.is_empty()).map(|part| count(part).unwrap_or(0)).fold(0, i64::saturating_add)
}

/// Whether `job` has fewer live pods than it wants running: the only time a batch reads its
/// template, as [`short_of_pods`] for a ReplicaSet.
pub fn job_short_of_pods(job: &Job) -> bool {
    let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
    usize::try_from(active).unwrap_or(0) < job_wants_running(job)
}

/// A Job as the provisioner keeps it for the pods still to come (see
/// [`expected`](crate::controllers::provisioner::expected)): what [`job_wants_running`] reads
/// (identity and deletion, parallelism, completions, suspension, `managedBy`, the replacement
/// policy, succeeded pods counted and not, failed indexes, terminating pods and the finishing
/// conditions without their messages), its live pods, and its pod template only while it is
/// short of pods (a cluster's Jobs are mostly finished ones a CronJob keeps).
pub fn job_growth(job: Job) -> Job {
    let keep_template = job_short_of_pods(&job);
    let spec = job.spec.map(|spec| JobSpec {
        parallelism: spec.parallelism,
        completions: spec.completions,
        suspend: spec.suspend,
        managed_by: spec.managed_by,
        pod_replacement_policy: spec.pod_replacement_policy,
        template: if keep_template { pod_template_spec(spec.template) } else { PodTemplateSpec::default() },
        ..JobSpec::default()
    });
    let status = job.status.map(|status| JobStatus {
        active: status.active,
        succeeded: status.succeeded,
        terminating: status.terminating,
        failed_indexes: status.failed_indexes,
        uncounted_terminated_pods: status
            .uncounted_terminated_pods
            .map(|uncounted| UncountedTerminatedPods { succeeded: uncounted.succeeded, failed: None }),
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| JOB_FINISHING.contains(&c.type_.as_str()))
                .map(|c| JobCondition { type_: c.type_, status: c.status, ..JobCondition::default() })
                .collect()
        }),
        ..JobStatus::default()
    });
    let deletion_timestamp = job.metadata.deletion_timestamp.clone();
    Job { metadata: ObjectMeta { deletion_timestamp, ..identity(job.metadata) }, spec, status }
}

/// A PodTemplate as the cache keeps it for CapacityBuffers: its generation and template.
pub fn pod_template(template: PodTemplate) -> PodTemplate {
    let generation = template.metadata.generation;
    let metadata = ObjectMeta { generation, ..identity(template.metadata) };
    PodTemplate { metadata, template: template.template.map(pod_template_spec) }
}

/// A pod template without its annotations, which no simulation reads.
fn pod_template_spec(template: PodTemplateSpec) -> PodTemplateSpec {
    let metadata = template.metadata.map(|m| ObjectMeta { labels: m.labels, ..ObjectMeta::default() });
    PodTemplateSpec { metadata, spec: template.spec }
}

/// Name, namespace, UID and resourceVersion: what a reflector needs of any object.
fn identity(metadata: ObjectMeta) -> ObjectMeta {
    let ObjectMeta { name, namespace, uid, resource_version, .. } = metadata;
    ObjectMeta { name, namespace, uid, resource_version, ..ObjectMeta::default() }
}

fn prune_annotations(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|key, _| READ_ANNOTATIONS.contains(&key.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::Resource;

    use super::CachedPod;
    use crate::{
        controllers::{disruption::candidates::pod_cost, warmpool::preemption::preempted},
        scheduling::pod::PodInfo,
        state::pods::{evictable, is_provisionable, scheduling_wait},
    };

    /// A pod with everything a real one carries: commands, env, probes, volumes, statuses.
    const POD: &str = r#"
metadata:
  name: web-1
  namespace: shop
  uid: 7f1c
  creationTimestamp: "2026-11-23T10:00:00Z"
  labels: {app: web, stoker.dev/warmpool: rush}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"a": "very long document"}'
    stoker.dev/do-not-disrupt: "true"
    controller.kubernetes.io/pod-deletion-cost: "50000000"
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d, uid: r1}]
spec:
  nodeName: node-a
  nodeSelector: {kubernetes.io/arch: arm64}
  tolerations: [{key: dedicated, operator: Exists}]
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - labelSelector: {matchLabels: {app: web}}
          topologyKey: kubernetes.io/hostname
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
  overhead: {cpu: 10m}
  initContainers:
    - name: proxy
      image: envoy
      restartPolicy: Always
      resources: {requests: {cpu: 100m, memory: 64Mi}}
    - name: migrate
      image: app
      command: [migrate, up]
      resources: {requests: {cpu: "1", memory: 1Gi}}
  containers:
    - name: app
      image: app:1.2.3
      command: [serve]
      args: [--port, "8080"]
      env: [{name: A, value: b}, {name: C, value: d}]
      ports: [{containerPort: 8080, hostPort: 80}]
      readinessProbe: {httpGet: {path: /ready, port: 8080}}
      volumeMounts: [{name: data, mountPath: /data}]
      resources: {requests: {cpu: 500m, memory: 256Mi}, limits: {memory: 512Mi}}
  volumes: [{name: data, emptyDir: {}}]
  serviceAccountName: web
  priority: 1000000
status:
  phase: Running
  podIP: 10.0.0.7
  conditions:
    - {type: PodScheduled, status: "True", lastTransitionTime: "2026-11-23T10:00:04Z"}
    - {type: Ready, status: "True", lastTransitionTime: "2026-11-23T10:00:09Z"}
    - {type: DisruptionTarget, status: "True", reason: PreemptionByScheduler, message: long text, lastTransitionTime: "2026-11-23T10:05:00Z"}
  containerStatuses:
    - {name: app, image: app:1.2.3, imageID: sha256:abc, ready: true, restartCount: 0, started: true, state: {running: {startedAt: "2026-11-23T10:00:05Z"}}}
"#;

    #[test]
    fn a_cached_pod_keeps_what_controllers_read() {
        let pod = CachedPod::from(serde_saphyr::from_str::<Pod>(POD).unwrap());
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["controller.kubernetes.io/pod-deletion-cost", "stoker.dev/do-not-disrupt"]
        );
        assert_eq!((pod.node_name.as_deref(), pod.phase.as_deref()), (Some("node-a"), Some("Running")));
        let conditions: Vec<&str> = pod.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(conditions, ["PodScheduled", "DisruptionTarget"]);
        assert!(pod.conditions.iter().all(|c| c.message.is_none()));
        assert_eq!((CachedPod::kind(&()), CachedPod::api_version(&())), ("Pod".into(), "v1".into()));
        assert_eq!(pod.object_ref(&()).name.as_deref(), Some("web-1"));
    }

    #[test]
    fn every_decision_about_a_cached_pod_is_the_one_the_whole_pod_gives() {
        let bound: Pod = serde_saphyr::from_str(POD).unwrap();
        let mut pending = bound.clone();
        pending.spec.as_mut().unwrap().node_name = None;
        let conditions = pending.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions[0].status = "False".into();
        conditions[0].reason = Some("Unschedulable".into());
        conditions[0].message = Some("0/3 nodes are available".into());
        let mut mirror = bound.clone();
        mirror.metadata.annotations.as_mut().unwrap().insert("kubernetes.io/config.mirror".into(), "x".into());
        let mut broken = bound.clone();
        broken.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("lots".into()));
        // (pod, provisionable, seconds until bound, evictable, preempted)
        let expected = [
            (bound, false, Some(4.0), true, true),
            (pending, true, None, true, true),
            (mirror, false, Some(4.0), false, true),
            (broken, false, Some(4.0), true, true),
        ];
        for (pod, provisionable, wait, can_evict, was_preempted) in expected {
            let cached = CachedPod::from(pod.clone());
            assert_eq!(
                format!("{:?}", cached.scheduling.as_deref()),
                format!("{:?}", PodInfo::from_pod(&pod).as_ref())
            );
            assert_eq!(is_provisionable(&cached), provisionable);
            assert_eq!(scheduling_wait(&cached), wait);
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            assert_eq!(evictable(&cached.metadata, cached.phase.as_deref()), evictable(&pod.metadata, phase));
            assert_eq!(evictable(&cached.metadata, cached.phase.as_deref()), can_evict);
            assert_eq!(preempted(&cached).is_some(), was_preempted);
            let priority = pod.spec.as_ref().and_then(|s| s.priority);
            assert_eq!(pod_cost(&cached.metadata, cached.priority), pod_cost(&pod.metadata, priority));
            assert!(pod_cost(&cached.metadata, cached.priority) > 1.0);
        }
    }

    /// A pod with what the first one lacks: claimed and ephemeral volumes, pod-level requests,
    /// preferences of every kind, host ports with an IP, a nominated node, a deletion under way
    /// and server-side-apply bookkeeping.
    const OTHER_POD: &str = r#"
metadata:
  name: db-0
  generateName: db-
  namespace: data
  uid: 9e2a
  resourceVersion: "4711"
  generation: 2
  creationTimestamp: "2026-11-23T10:00:00Z"
  deletionTimestamp: "2026-11-23T11:00:00Z"
  deletionGracePeriodSeconds: 30
  finalizers: [example.com/backup]
  labels: {app: db, shard: a}
  annotations: {karpenter.sh/do-not-disrupt: "true", kubernetes.io/config.mirror: x}
  managedFields:
    - {manager: kubelet, operation: Update, apiVersion: v1, fieldsType: FieldsV1, fieldsV1: {"f:status": {"f:phase": {}}}}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}]}]
      preferredDuringSchedulingIgnoredDuringExecution:
        - {weight: 10, preference: {matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [us-east-1a]}]}}
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - {labelSelector: {matchLabels: {app: cache}}, topologyKey: topology.kubernetes.io/zone}
      preferredDuringSchedulingIgnoredDuringExecution:
        - {weight: 5, podAffinityTerm: {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}}
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - {weight: 50, podAffinityTerm: {labelSelector: {matchLabels: {app: db}}, topologyKey: kubernetes.io/hostname}}
  topologySpreadConstraints:
    - {maxSkew: 2, minDomains: 3, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway,
       labelSelector: {matchLabels: {app: db}}, matchLabelKeys: [shard], nodeAffinityPolicy: Ignore, nodeTaintsPolicy: Honor}
  tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]
  resources: {requests: {cpu: "3", memory: 12Gi}}
  initContainers:
    - {name: init, image: busybox, ports: [{containerPort: 9000, hostPort: 9000, protocol: UDP}]}
  containers:
    - name: db
      image: postgres
      env: [{name: PGDATA, value: /data}]
      ports: [{containerPort: 5432, hostPort: 5432, hostIP: 10.0.0.1}]
      resources: {requests: {cpu: "2", memory: 8Gi, ephemeral-storage: 10Gi}}
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: data-db-0}}
    - {name: scratch, ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}}}
    - {name: token, projected: {sources: [{serviceAccountToken: {path: token}}]}}
  priority: -10
status:
  phase: Pending
  nominatedNodeName: node-b
  conditions:
    - {type: PodScheduled, status: "False", reason: Unschedulable, message: "0/3 nodes are available"}
"#;

    /// The watch decodes only the fields kept ([`WatchedPod`]): every pod is cached exactly as
    /// the whole pod is, decoded from YAML or from the JSON an API server sends.
    #[test]
    fn a_pod_decoded_by_the_watch_is_cached_as_the_whole_pod_is() {
        use crate::state::watched_pod::WatchedPod;

        for document in [POD, OTHER_POD] {
            let whole: Pod = serde_saphyr::from_str(document).unwrap();
            let json = serde_json::to_string(&whole).unwrap();
            let decoded =
                [serde_saphyr::from_str::<WatchedPod>(document).unwrap(), serde_json::from_str(&json).unwrap()];
            for watched in decoded {
                assert!(watched.metadata.managed_fields.is_none());
                assert_eq!(
                    format!("{:?}", CachedPod::from(Pod::from(watched))),
                    format!("{:?}", CachedPod::from(whole.clone()))
                );
            }
        }
        let pending = CachedPod::from(serde_saphyr::from_str::<Pod>(OTHER_POD).unwrap());
        let info = pending.scheduling.as_deref().unwrap();
        assert_eq!((info.volume_claims.len(), info.shape.host_ports.len(), info.shape.preferences.len()), (2, 2, 4));
    }

    #[test]
    fn a_pruned_node_keeps_labels_taints_resources_and_conditions() {
        let mut node: Node = serde_saphyr::from_str(
            r#"
metadata:
  name: node-a
  labels: {node.kubernetes.io/instance-type: m7g.large}
  annotations: {karpenter.sh/do-not-disrupt: "true", node.alpha.kubernetes.io/ttl: "0"}
  finalizers: [stoker.dev/termination]
spec:
  providerID: aws:///us-east-1a/i-0abc
  taints: [{key: dedicated, value: db, effect: NoSchedule}]
status:
  capacity: {cpu: "2", memory: 8Gi, pods: "29"}
  allocatable: {cpu: 1930m, memory: 7Gi, pods: "29"}
  conditions: [{type: Ready, status: "True"}]
  images: [{names: [registry.k8s.io/pause:3.10], sizeBytes: 300000}]
  nodeInfo: {architecture: arm64, bootID: b, containerRuntimeVersion: c, kernelVersion: k, kubeProxyVersion: p, kubeletVersion: v1.37.2, machineID: m, operatingSystem: linux, osImage: al2023, systemUUID: u}
"#,
        )
        .unwrap();
        let whole = node.clone();
        node = super::node(node);
        assert_eq!(node.metadata.labels, whole.metadata.labels);
        assert_eq!(node.metadata.finalizers, whole.metadata.finalizers);
        assert_eq!(node.spec, whole.spec);
        let annotations = node.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["karpenter.sh/do-not-disrupt"]);
        let (status, before) = (node.status.unwrap(), whole.status.unwrap());
        assert_eq!((&status.capacity, &status.allocatable), (&before.capacity, &before.allocatable));
        assert_eq!(status.conditions, before.conditions);
        assert!(status.images.is_none() && status.node_info.is_none());
    }

    /// ReplicaSets as an API server returns them: the trimmed form expects the same replicas as
    /// the whole one, and keeps its template only while the set is short of its replicas.
    #[test]
    fn a_trimmed_replica_set_expects_what_the_whole_one_does() {
        use std::sync::Arc;

        use k8s_openapi::api::apps::v1::ReplicaSet;

        use super::{replica_set_growth, replica_set_with_template};
        use crate::controllers::provisioner::expected::expected_pods;
        let set = |replicas: i32, status: &str| -> ReplicaSet {
            serde_saphyr::from_str(&format!(
                r#"
metadata:
  name: api-7d9c5
  namespace: shop
  uid: u1
  resourceVersion: "9"
  annotations: {{deployment.kubernetes.io/revision: "3"}}
  managedFields: [{{manager: kube-controller-manager, operation: Update}}]
  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: api, uid: d1, controller: true}}]
spec:
  replicas: {replicas}
  minReadySeconds: 5
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}, annotations: {{kubectl.kubernetes.io/restartedAt: "now"}}}}
    spec:
      nodeSelector: {{topology.kubernetes.io/zone: us-east-1a}}
      containers: [{{name: c, image: i, resources: {{requests: {{cpu: 1500m, memory: 3Gi}}}}}}]
{status}"#
            ))
            .unwrap()
        };
        let failing = "status: {replicas: 2, conditions: [{type: ReplicaFailure, status: 'True', reason: FailedCreate, message: 'exceeded quota'}]}";
        let cases = [
            ("never synced", set(8, ""), vec![0]),
            ("short", set(8, "status: {replicas: 3, readyReplicas: 1, observedGeneration: 2}"), vec![0, 3]),
            ("steady", set(8, "status: {replicas: 8, readyReplicas: 8}"), vec![5, 8]),
            ("failing", set(8, failing), vec![0, 2]),
            ("scaled to zero", set(0, "status: {replicas: 0}"), vec![0]),
        ];
        let planned = |set: ReplicaSet, tried: usize| -> Vec<(String, crate::scheduling::resources::Resources)> {
            let expected = expected_pods(&[], &[Arc::new(set)], &[], &[], |_| tried);
            expected.iter().map(|pod| (pod.key.clone(), pod.requests.clone())).collect()
        };
        // `tried` up to the pods the set has: a steady set's pods all exist, and the ones
        // kube-scheduler has not tried yet are planned only once one is pending (as a copy of it).
        // Where buffers are served the one cache keeps every template, and expects the same.
        for (case, whole, tried) in cases {
            let trimmed = replica_set_growth(whole.clone());
            let with_template = replica_set_with_template(whole.clone());
            assert!(trimmed.metadata.managed_fields.is_none() && trimmed.metadata.annotations.is_none(), "{case}");
            for tried in tried {
                assert_eq!(planned(trimmed.clone(), tried), planned(whole.clone(), tried), "{case}, {tried} tried");
                assert_eq!(planned(with_template.clone(), tried), planned(whole.clone(), tried), "{case}, {tried}");
            }
            let short = matches!(case, "never synced" | "short" | "failing");
            assert_eq!(trimmed.spec.template.is_some(), short, "{case}: the template only while short");
            assert!(with_template.spec.template.is_some(), "{case}: the buffers' cache keeps every template");
        }
        assert_eq!(planned(replica_set_growth(set(8, "status: {replicas: 3}")), 3).len(), 5, "the control case");
        let trimmed = replica_set_growth(set(8, failing));
        let conditions = trimmed.status.and_then(|status| status.conditions).unwrap();
        assert_eq!(conditions.len(), 1);
        assert!(conditions[0].message.is_none(), "no message kept");
    }

    /// Deployments and their ReplicaSets as an API server returns them: the trimmed forms expect
    /// the same replicas as the whole ones, and a Deployment keeps its template only while its
    /// controller has yet to act on its spec.
    #[test]
    fn a_trimmed_deployment_expects_what_the_whole_one_does() {
        use std::sync::Arc;

        use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

        use super::{deployment_growth, deployment_with_template, replica_set_growth};
        use crate::controllers::provisioner::expected::expected_pods;
        let deployment = |generation: i64, extra: &str, status: &str| -> Deployment {
            serde_saphyr::from_str(&format!(
                r#"
metadata:
  name: api
  namespace: shop
  uid: d1
  generation: {generation}
  resourceVersion: "9"
  annotations: {{deployment.kubernetes.io/revision: "3"}}
  managedFields: [{{manager: kubectl, operation: Update}}]
spec:
  replicas: 12
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 25%}}}}
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}, annotations: {{kubectl.kubernetes.io/restartedAt: "now"}}}}
    spec:
      nodeSelector: {{topology.kubernetes.io/zone: us-east-1a}}
      containers: [{{name: c, image: i, resources: {{requests: {{cpu: 1500m, memory: 3Gi}}}}}}]{extra}
{status}"#
            ))
            .unwrap()
        };
        let set: ReplicaSet = serde_saphyr::from_str(
            r#"
metadata:
  name: api-7d9c5
  namespace: shop
  uid: r1
  ownerReferences:
    - {apiVersion: apps/v1, kind: Deployment, name: api, uid: d1, controller: true}
    - {apiVersion: example.com/v1, kind: Rollout, name: api, uid: x1}
spec: {replicas: 5, selector: {matchLabels: {app: api}}}
status: {replicas: 5}
"#,
        )
        .unwrap();
        let deadline = "status: {observedGeneration: 1, conditions: [{type: Progressing, status: 'False', reason: ProgressDeadlineExceeded, message: 'long'}]}";
        let cases = [
            ("new", deployment(1, "", ""), 7),
            ("scaled", deployment(2, "", "status: {observedGeneration: 1, replicas: 5, readyReplicas: 5}"), 7),
            ("acted on", deployment(2, "", "status: {observedGeneration: 2, replicas: 5}"), 0),
            ("paused", deployment(2, "\n  paused: true", "status: {observedGeneration: 1}"), 0),
            ("past its deadline", deployment(2, "", deadline), 0),
        ];
        let planned =
            |deployment: Deployment, set: ReplicaSet| -> Vec<(String, crate::scheduling::resources::Resources)> {
                let expected = expected_pods(&[], &[Arc::new(set)], &[Arc::new(deployment)], &[], |_| 5);
                expected.iter().map(|pod| (pod.key.clone(), pod.requests.clone())).collect()
            };
        let trimmed_set = replica_set_growth(set.clone());
        assert_eq!(trimmed_set.metadata.owner_references.as_ref().map(Vec::len), Some(1), "its controller's only");
        for (case, whole, expected) in cases {
            let trimmed = deployment_growth(whole.clone());
            let with_template = deployment_with_template(whole.clone());
            assert!(trimmed.metadata.managed_fields.is_none() && trimmed.metadata.annotations.is_none(), "{case}");
            assert_eq!(planned(whole.clone(), set.clone()).len(), expected, "{case}");
            assert_eq!(planned(trimmed.clone(), trimmed_set.clone()), planned(whole.clone(), set.clone()), "{case}");
            assert_eq!(
                planned(with_template.clone(), trimmed_set.clone()),
                planned(whole.clone(), set.clone()),
                "{case}"
            );
            let unobserved = matches!(case, "new" | "scaled" | "paused" | "past its deadline");
            assert_eq!(trimmed.spec.template.spec.is_some(), unobserved, "{case}: the template only while unobserved");
            assert!(with_template.spec.template.spec.is_some(), "{case}: the buffers' cache keeps every template");
        }
        let trimmed = deployment_growth(deployment(2, "", deadline));
        let conditions = trimmed.status.and_then(|status| status.conditions).unwrap();
        assert_eq!(conditions.len(), 1);
        assert!(conditions[0].message.is_none() && conditions[0].reason.is_none(), "no message kept");
    }

    /// Jobs as an API server returns them: the trimmed form expects the same pods as the whole
    /// one, and keeps its template only while the Job is short of pods.
    #[test]
    fn a_trimmed_job_expects_what_the_whole_one_does() {
        use std::sync::Arc;

        use k8s_openapi::api::batch::v1::Job;

        use super::{job_growth, job_short_of_pods};
        use crate::controllers::provisioner::expected::expected_pods;
        let job = |spec: &[&str], status: &str| -> Job {
            let spec = spec.join("\n  ");
            serde_saphyr::from_str(&format!(
                r#"
metadata:
  name: train-28931
  namespace: ml
  uid: j1
  resourceVersion: "12"
  labels: {{batch.kubernetes.io/job-name: train-28931}}
  managedFields: [{{manager: kube-controller-manager, operation: Update}}]
  ownerReferences: [{{apiVersion: batch/v1, kind: CronJob, name: train, uid: c1, controller: true}}]
spec:
  {spec}
  backoffLimit: 6
  completionMode: NonIndexed
  selector: {{matchLabels: {{batch.kubernetes.io/controller-uid: j1}}}}
  template:
    metadata: {{labels: {{app: train}}, annotations: {{sidecar: "no"}}}}
    spec:
      restartPolicy: Never
      nodeSelector: {{karpenter.sh/capacity-type: spot}}
      containers: [{{name: c, image: i, resources: {{requests: {{cpu: '4', memory: 16Gi}}}}}}]
{status}"#
            ))
            .unwrap()
        };
        let finished = "status: {succeeded: 20, conditions: [{type: SuccessCriteriaMet, status: 'True', reason: CompletionsReached, message: 'Reached expected number of succeeded pods'}, {type: Complete, status: 'True'}]}";
        let cases = [
            ("never synced", job(&["parallelism: 8", "completions: 20"], ""), vec![0], true),
            (
                "short",
                job(
                    &["parallelism: 8", "completions: 20"],
                    "status: {active: 3, ready: 1, startTime: '2026-12-06T10:00:00Z'}",
                ),
                vec![0, 3],
                true,
            ),
            (
                "running",
                job(&["parallelism: 8", "completions: 20"], "status: {active: 8, succeeded: 4, ready: 8}"),
                vec![5, 8],
                false,
            ),
            (
                "near its end",
                job(&["parallelism: 8", "completions: 20"], "status: {active: 2, succeeded: 17}"),
                vec![0, 2],
                true,
            ),
            ("finished", job(&["parallelism: 8", "completions: 20"], finished), vec![0], false),
            ("suspended", job(&["parallelism: 8", "completions: 20", "suspend: true"], ""), vec![0], false),
            ("a work queue", job(&["parallelism: 8"], "status: {active: 8, succeeded: 1}"), vec![0, 8], false),
            (
                "failed indexes, uncounted, terminating",
                job(
                    &["parallelism: 8", "completions: 20", "backoffLimitPerIndex: 1", "podReplacementPolicy: Failed"],
                    "status: {active: 2, succeeded: 8, terminating: 1, failedIndexes: '3,9-11', completedIndexes: '0-2,4-8', uncountedTerminatedPods: {succeeded: [p1, p2], failed: [p3]}}",
                ),
                vec![0, 2],
                true,
            ),
        ];
        let planned = |job: Job, tried: usize| -> Vec<(String, crate::scheduling::resources::Resources)> {
            let expected = expected_pods(&[], &[], &[], &[Arc::new(job)], |_| tried);
            expected.iter().map(|pod| (pod.key.clone(), pod.requests.clone())).collect()
        };
        for (case, whole, tried, short) in cases {
            let trimmed = job_growth(whole.clone());
            assert!(trimmed.metadata.managed_fields.is_none() && trimmed.metadata.labels.is_none(), "{case}");
            for tried in tried {
                assert_eq!(planned(trimmed.clone(), tried), planned(whole.clone(), tried), "{case}, {tried} tried");
            }
            assert_eq!(job_short_of_pods(&whole), short, "{case}");
            let template = trimmed.spec.as_ref().map(|spec| spec.template.clone()).unwrap_or_default();
            assert_eq!(template.spec.is_some(), short, "{case}: the template only while short");
        }
        let short = job(&["parallelism: 8", "completions: 20"], "status: {active: 3}");
        assert_eq!(planned(job_growth(short), 3).len(), 5, "the control case");
        let kept = job_growth(job(&["parallelism: 8", "completions: 20"], finished));
        let conditions = kept.status.and_then(|status| status.conditions).unwrap();
        assert_eq!(conditions.len(), 2);
        assert!(conditions.iter().all(|c| c.message.is_none() && c.reason.is_none()), "no message kept");
    }

    /// Claims, volumes and classes as an API server returns them (status, access modes,
    /// capacity, parameters): the trimmed forms place a pod exactly as the whole ones do.
    #[test]
    fn trimmed_volume_objects_place_pods_as_the_whole_ones() {
        use std::sync::Arc;

        use crate::state::volumes::VolumeTopology;
        let claims = [
            "metadata: {name: data-0, namespace: db, uid: c0, resourceVersion: '7', annotations: {pv.kubernetes.io/bind-completed: 'yes'}}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Gi}}, storageClassName: gp3, volumeName: pv-0, volumeMode: Filesystem}\nstatus: {phase: Bound, capacity: {storage: 10Gi}}",
            "metadata: {name: data-1, namespace: db}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 10Gi}}, storageClassName: zonal}\nstatus: {phase: Pending}",
        ];
        let volumes = [
            "metadata: {name: pv-0, labels: {team: db}}\nspec:\n  capacity: {storage: 10Gi}\n  accessModes: [ReadWriteOnce]\n  csi: {driver: ebs.csi.aws.com, volumeHandle: vol-0}\n  nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: topology.ebs.csi.aws.com/zone, operator: In, values: [us-east-1b]}]}]}}\nstatus: {phase: Bound}",
        ];
        let classes = [
            "metadata: {name: zonal, annotations: {storageclass.kubernetes.io/is-default-class: 'false'}}\nprovisioner: ebs.csi.aws.com\nparameters: {type: gp3}\nreclaimPolicy: Delete\nvolumeBindingMode: WaitForFirstConsumer\nallowedTopologies: [{matchLabelExpressions: [{key: topology.kubernetes.io/zone, values: [us-east-1a, us-east-1c]}]}]",
        ];
        fn parsed<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
            serde_saphyr::from_str(yaml).expect("a valid object")
        }
        let whole = VolumeTopology::new(
            claims.map(|c| Arc::new(parsed(c))),
            volumes.map(|v| Arc::new(parsed(v))),
            classes.map(|c| Arc::new(parsed(c))),
        );
        let trimmed = VolumeTopology::new(
            claims.map(|c| Arc::new(super::volume_claim(parsed(c)))),
            volumes.map(|v| Arc::new(super::volume(parsed(v)))),
            classes.map(|c| Arc::new(super::storage_class(parsed(c)))),
        );
        for claim in ["data-0", "data-1"] {
            let pod: Pod = parsed(&format!(
                "metadata: {{name: p, namespace: db}}\nspec: {{containers: [{{name: c}}], volumes: [{{name: d, persistentVolumeClaim: {{claimName: {claim}}}}}]}}"
            ));
            let info = Arc::new(PodInfo::from_pod(&pod).expect("parses"));
            let (from_whole, from_trimmed) = (whole.constrain(&info), trimmed.constrain(&info));
            assert_eq!(
                from_whole.as_ref().map(|p| &p.requirements),
                from_trimmed.as_ref().map(|p| &p.requirements),
                "{claim}"
            );
            assert_ne!(from_whole.expect("placed").requirements, info.requirements, "{claim} constrains the pod");
        }
    }
}
