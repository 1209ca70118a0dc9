//! What the shared caches keep of each Pod and Node. The controllers read a small part of them:
//! scheduling constraints and requests, the node a pod is bound to, a few conditions, labels,
//! taints, owner references and three annotations. At 10,000 pods the rest (container commands,
//! env and probes, container statuses, node image lists, other tools' annotations) is most of the
//! cache's memory, so the reflectors drop it as objects arrive.
//!
//! Nothing written back to the API server is built from a cached object's dropped parts: the
//! controllers patch only labels, taints and finalizers, which are kept. A field a new decision
//! reads must be kept here; the tests below compare every decision made from a pruned object with
//! the one made from the whole object.

use std::mem::take;

use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodCondition, PodSpec, PodStatus};
use kube::{Resource, api::ObjectMeta};

use crate::apis::labels;

/// The annotations a controller reads from a cached Pod or Node.
const READ_ANNOTATIONS: [&str; 3] = [labels::DO_NOT_DISRUPT, labels::KARPENTER_DO_NOT_DISRUPT, labels::MIRROR_POD];

/// The pod conditions a controller reads: binding (provisionable pods, their wait) and the
/// scheduler's preemption mark (warm-pool preemptions).
const READ_POD_CONDITIONS: [&str; 2] = ["PodScheduled", "DisruptionTarget"];

/// Any cached object: server-side apply bookkeeping is never read.
pub fn managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

pub fn pod(pod: &mut Pod) {
    prune_annotations(&mut pod.metadata);
    if let Some(spec) = &mut pod.spec {
        *spec = PodSpec {
            containers: take(&mut spec.containers).into_iter().map(container).collect(),
            init_containers: spec.init_containers.take().map(|init| init.into_iter().map(container).collect()),
            node_name: spec.node_name.take(),
            node_selector: spec.node_selector.take(),
            affinity: spec.affinity.take(),
            tolerations: spec.tolerations.take(),
            topology_spread_constraints: spec.topology_spread_constraints.take(),
            overhead: spec.overhead.take(),
            ..PodSpec::default()
        };
    }
    if let Some(status) = &mut pod.status {
        let conditions = status.conditions.take().map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| READ_POD_CONDITIONS.contains(&c.type_.as_str()))
                .map(|c| PodCondition { message: None, ..c })
                .collect()
        });
        *status = PodStatus {
            phase: status.phase.take(),
            nominated_node_name: status.nominated_node_name.take(),
            conditions,
            ..PodStatus::default()
        };
    }
}

/// What counts for requests and host ports; the rest of a container is for the kubelet.
fn container(container: Container) -> Container {
    Container {
        name: container.name,
        resources: container.resources,
        ports: container.ports,
        restart_policy: container.restart_policy,
        ..Container::default()
    }
}

pub fn node(node: &mut Node) {
    prune_annotations(&mut node.metadata);
    if let Some(status) = &mut node.status {
        *status = NodeStatus {
            capacity: status.capacity.take(),
            allocatable: status.allocatable.take(),
            conditions: status.conditions.take(),
            ..NodeStatus::default()
        };
    }
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

    use crate::{
        controllers::{
            nodeclaim::lifecycle::evictable,
            provisioner::snapshot::{is_provisionable, scheduling_wait},
            warmpool::preemption::preempted,
        },
        scheduling::pod::PodInfo,
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

    fn pruned(pod: &Pod) -> Pod {
        let mut pruned = pod.clone();
        super::pod(&mut pruned);
        pruned
    }

    #[test]
    fn a_pruned_pod_drops_what_no_controller_reads() {
        let pod: Pod = serde_yaml::from_str(POD).unwrap();
        let pruned = pruned(&pod);
        let annotations = pruned.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["stoker.dev/do-not-disrupt"]);
        let spec = pruned.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none() && spec.service_account_name.is_none());
        let app = &spec.containers[0];
        assert!(app.command.is_none() && app.env.is_none() && app.readiness_probe.is_none() && app.image.is_none());
        let status = pruned.status.as_ref().unwrap();
        assert!(status.container_statuses.is_none() && status.pod_ip.is_none());
        let conditions: Vec<&str> = status.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(conditions, ["PodScheduled", "DisruptionTarget"]);
    }

    #[test]
    fn every_decision_about_a_pruned_pod_is_the_same() {
        let bound: Pod = serde_yaml::from_str(POD).unwrap();
        let mut pending = bound.clone();
        pending.spec.as_mut().unwrap().node_name = None;
        let conditions = pending.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions[0].status = "False".into();
        conditions[0].reason = Some("Unschedulable".into());
        conditions[0].message = Some("0/3 nodes are available".into());
        let mut mirror = bound.clone();
        mirror.metadata.annotations.as_mut().unwrap().insert("kubernetes.io/config.mirror".into(), "x".into());
        for pod in [bound, pending, mirror] {
            let pruned = pruned(&pod);
            assert_eq!(format!("{:?}", PodInfo::from_pod(&pruned)), format!("{:?}", PodInfo::from_pod(&pod)));
            assert_eq!(is_provisionable(&pruned), is_provisionable(&pod));
            assert_eq!(scheduling_wait(&pruned), scheduling_wait(&pod));
            assert_eq!(evictable(&pruned), evictable(&pod));
            assert_eq!(preempted(&pruned), preempted(&pod));
        }
    }

    #[test]
    fn a_pruned_node_keeps_labels_taints_resources_and_conditions() {
        let mut node: Node = serde_yaml::from_str(
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
        super::node(&mut node);
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
}
