//! The objects a WarmPool is made of, built from its spec: the Deployment of pause pods and the
//! PriorityClass that lets any real workload preempt them; in `Virtual` mode, the CapacityBuffer
//! and PodTemplate that keep the same room without pods.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        core::v1::{
            Capabilities, Container, PodSecurityContext, PodSpec, PodTemplate, PodTemplateSpec, ResourceRequirements,
            SeccompProfile, SecurityContext,
        },
        scheduling::v1::PriorityClass,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use kube::{Resource, ResourceExt};

use crate::apis::{
    CapacityBuffer, WarmPool,
    capacitybuffer::{ACTIVE_CAPACITY, CapacityBufferSpec, LocalObjectRef},
    labels,
    warmpool::DEFAULT_PRIORITY_CLASS,
};

/// The user pause pods run as: `nobody`, as in the pause image's own build.
const PAUSE_USER: i64 = 65535;

/// The labels of a WarmPool's pause pods (and the Deployment's selector).
pub fn pod_labels(pool: &WarmPool) -> BTreeMap<String, String> {
    [(labels::WARMPOOL.to_owned(), pool.name_any())].into()
}

/// The Deployment holding `replicas` pause pods for `pool`, owned by it.
pub fn deployment(pool: &WarmPool, replicas: i32) -> Deployment {
    let spec = &pool.spec;
    let mut resources = spec.resources.clone();
    // Limits equal to requests unless given: a pause pod is Guaranteed and never grows.
    if resources.limits.is_none() {
        resources.limits = resources.requests.clone();
    }
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(pool)),
            namespace: pool.namespace(),
            labels: Some(pod_labels(pool)),
            owner_references: pool.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(pod_labels(pool)), ..Default::default() },
            // Pause pods carry no state: replace them all at once when the shape changes.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels(pool)), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "pause".into(),
                        image: Some(spec.image.clone()),
                        resources: Some(ResourceRequirements { claims: None, ..resources }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
                            read_only_root_filesystem: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    // The restricted Pod Security profile, so pause pods start in namespaces that
                    // enforce it (the pause image runs as any non-root user).
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(PAUSE_USER),
                        run_as_group: Some(PAUSE_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    priority_class_name: Some(spec.priority_class_name.clone()),
                    termination_grace_period_seconds: Some(0),
                    node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    affinity: spec.affinity.clone(),
                    topology_spread_constraints: (!spec.topology_spread_constraints.is_empty())
                        .then(|| spec.topology_spread_constraints.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// What a `Virtual` pool keeps instead of pause pods: a PodTemplate of the pause pod and a
/// CapacityBuffer of `replicas` chunks of it, both named like the Deployment and owned by the pool.
pub fn virtual_room(pool: &WarmPool, replicas: i32) -> (PodTemplate, CapacityBuffer) {
    let name = deployment_name(pool);
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: pool.namespace(),
        labels: Some(pod_labels(pool)),
        owner_references: pool.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..Default::default()
    };
    let template = PodTemplate { metadata: metadata.clone(), template: Some(deployment(pool, 0).spec.template) };
    let mut buffer = CapacityBuffer::new(
        &name,
        CapacityBufferSpec {
            provisioning_strategy: Some(ACTIVE_CAPACITY.to_owned()),
            pod_template_ref: Some(LocalObjectRef { name: name.clone() }),
            scalable_ref: None,
            replicas: Some(replicas),
            percentage: None,
            limits: None,
        },
    );
    buffer.metadata = metadata;
    (template, buffer)
}

/// The Deployment's name: the WarmPool's, so `kubectl get deploy` shows which pool it serves.
pub fn deployment_name(pool: &WarmPool) -> String {
    format!("warmpool-{}", pool.name_any())
}

/// stoker's PriorityClass for pause pods: below every real workload (value -1), and never
/// preempting anything itself.
pub fn default_priority_class() -> PriorityClass {
    PriorityClass {
        metadata: ObjectMeta {
            name: Some(DEFAULT_PRIORITY_CLASS.into()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "stoker".to_owned())].into()),
            ..Default::default()
        },
        value: Some(-1),
        preemption_policy: Some("Never".into()),
        global_default: Some(false),
        description: Some("Pause pods of stoker WarmPools: preempted first by every real workload.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> WarmPool {
        let mut pool: WarmPool = serde_saphyr::from_str(
            "
apiVersion: stoker.dev/v1alpha1
kind: WarmPool
metadata: {name: rush, namespace: shop, uid: 1234}
spec:
  resources: {requests: {cpu: 500m, memory: 1Gi}}
  nodeSelector: {stoker.dev/nodepool: spot}
  tolerations: [{key: batch, operator: Exists}]
",
        )
        .unwrap();
        pool.metadata.uid = Some("1234".into());
        pool
    }

    #[test]
    fn pause_pods_are_guaranteed_preemptible_and_owned() {
        let deployment = deployment(&pool(), 7);
        assert_eq!(deployment.metadata.name.as_deref(), Some("warmpool-rush"));
        assert_eq!(deployment.metadata.namespace.as_deref(), Some("shop"));
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("WarmPool", "1234", Some(true)));
        let spec = deployment.spec;
        assert_eq!(spec.replicas, Some(7));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.priority_class_name.as_deref(), Some(DEFAULT_PRIORITY_CLASS));
        assert_eq!(pod.termination_grace_period_seconds, Some(0));
        assert_eq!(pod.node_selector.unwrap()["stoker.dev/nodepool"], "spot");
        assert_eq!(pod.tolerations.unwrap().len(), 1);
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("registry.k8s.io/pause:3.10"));
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(resources.limits, resources.requests);
        assert_eq!(spec.template.metadata.unwrap().labels.unwrap()[labels::WARMPOOL], "rush");
    }

    #[test]
    fn the_priority_class_never_preempts() {
        let class = default_priority_class();
        assert_eq!(class.value, Some(-1));
        assert_eq!(class.preemption_policy.as_deref(), Some("Never"));
    }
}
