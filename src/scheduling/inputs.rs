//! From Kubernetes objects to the solver's input: a NodePool becomes a `NodePoolTemplate` (its
//! requirements with template labels folded in, its taints, the DaemonSet pods that would run on
//! its nodes, what its limits still allow), and workload manifests become the pods their
//! controllers would create (for `stoker plan`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::Job,
        core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{
    catalog::{InstanceType, is_well_known},
    pod::{PodInfo, SoftTaints},
    quantity::QuantityError,
    requirements::{Requirement, Requirements},
    resources::Resources,
    solver::NodePoolTemplate,
};
use crate::apis::{NodePool, labels};

/// The NodePools as the solver sees them, with the instance types of their node classes in one
/// slice, and the pools left out with why.
pub struct Pools {
    /// The cached slice itself when there is one node class, so a batch copies no catalog; a
    /// concatenation, one range per class, otherwise.
    pub instance_types: Arc<[InstanceType]>,
    pub templates: Vec<NodePoolTemplate>,
    pub skipped: Vec<String>,
}

/// Every usable pool as a [`NodePoolTemplate`]: `types_by_class` holds the instance types of each
/// ready node class (a pool whose class is missing is skipped), `in_use` what each pool's nodes
/// already count against its limits. A pool being deleted launches nothing, and neither does a
/// static pool (`replicas`) for pods: its own controller keeps its count.
pub fn pool_templates<'a>(
    pools: impl IntoIterator<Item = &'a NodePool>,
    types_by_class: &BTreeMap<String, Arc<[InstanceType]>>,
    daemonsets: &[DaemonSet],
    in_use: &HashMap<String, Resources>,
) -> Pools {
    let mut ranges: HashMap<&str, std::ops::Range<usize>> = HashMap::new();
    let instance_types = if types_by_class.len() == 1
        && let Some((class, types)) = types_by_class.first_key_value()
    {
        ranges.insert(class.as_str(), 0..types.len());
        types.clone()
    } else {
        let mut all = Vec::new();
        for (class, types) in types_by_class {
            let start = all.len();
            all.extend(types.iter().cloned());
            ranges.insert(class.as_str(), start..all.len());
        }
        all.into()
    };
    let mut templates = Vec::new();
    let mut skipped = Vec::new();
    for pool in pools {
        let name = pool.metadata.name.clone().unwrap_or_default();
        if pool.metadata.deletion_timestamp.is_some() || pool.spec.replicas.is_some() {
            continue;
        }
        let class = &pool.spec.template.spec.node_class_ref.name;
        let Some(range) = ranges.get(class.as_str()) else {
            skipped.push(format!("NodePool {name}: EC2NodeClass {class} is not ready"));
            continue;
        };
        let used = in_use.get(&name).cloned().unwrap_or_default();
        match nodepool_template(pool, range.clone().collect(), daemonsets, &used) {
            Ok(template) => templates.push(template),
            Err(error) => skipped.push(format!("NodePool {name}: {error}")),
        }
    }
    Pools { instance_types, templates, skipped }
}

/// The solver's view of a NodePool. `instance_types` are indices of the types its node class can
/// launch; `in_use` is what its running and in-flight nodes already count against its limits.
pub fn nodepool_template(
    pool: &NodePool,
    instance_types: Vec<usize>,
    daemonsets: &[DaemonSet],
    in_use: &Resources,
) -> Result<NodePoolTemplate, QuantityError> {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let template = &pool.spec.template;
    let mut requirements = Requirements::from_api(&template.spec.requirements)
        .intersect(&Requirements::from_labels(&template.metadata.labels));
    requirements.add(labels::NODEPOOL, Requirement::one_of([name.clone()]));
    let taints = template.spec.taints.clone();
    let daemon_overhead = daemon_overhead(&requirements, &taints, daemonsets)?;
    let remaining = match &pool.spec.limits {
        Some(limits) => {
            // Only the limited resources: what is in use of others is no business of the limits.
            let limited = Resources::from_quantities(limits)?;
            Some(
                limited.iter().map(|(name, limit)| (name.to_owned(), limit.saturating_sub(in_use.get(name)))).collect(),
            )
        }
        None => None,
    };
    Ok(NodePoolTemplate {
        name,
        weight: pool.spec.weight.unwrap_or(0),
        requirements,
        taints,
        instance_types,
        daemon_overhead,
        remaining,
    })
}

/// The summed requests of the DaemonSet pods that would run on a node with these requirements
/// and taints: those that tolerate the taints and whose node selection the node can satisfy.
pub fn daemon_overhead(
    requirements: &Requirements,
    taints: &[k8s_openapi::api::core::v1::Taint],
    daemonsets: &[DaemonSet],
) -> Result<Resources, QuantityError> {
    let mut overhead = Resources::new();
    for daemonset in daemonsets {
        let spec = &daemonset.spec;
        let pod = PodInfo::from_pod(&pod_from_template(&daemonset.metadata, &spec.template, 0))?;
        let lands = pod.untolerated_taint(taints, SoftTaints::Tolerated).is_none()
            && pod
                .requirements
                .iter()
                .any(|alternative| requirements.conflict_with(alternative, is_well_known).is_none());
        if lands {
            overhead.add(&pod.requests);
        }
    }
    Ok(overhead)
}

/// The pod a controller creates from a template: the owner's namespace, the template's labels
/// and spec, named `<owner>-<index>`.
pub fn pod_from_template(owner: &ObjectMeta, template: &PodTemplateSpec, index: usize) -> Pod {
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = Some(format!("{}-{index}", owner.name.as_deref().unwrap_or("pod")));
    metadata.namespace = owner.namespace.clone().or(metadata.namespace);
    Pod { metadata, spec: template.spec.clone(), status: None }
}

/// A workload manifest the planner understands.
#[derive(Debug, Clone)]
pub enum Workload {
    Pod(Box<Pod>),
    Deployment(Box<Deployment>),
    ReplicaSet(Box<ReplicaSet>),
    StatefulSet(Box<StatefulSet>),
    Job(Box<Job>),
}

impl Workload {
    /// The pods it stands for: a Pod itself, `replicas` pods (default 1) of a Deployment,
    /// ReplicaSet or StatefulSet, `parallelism` pods (default 1) of a Job.
    pub fn pods(&self) -> Vec<Pod> {
        let expand = |meta: &ObjectMeta, template: &PodTemplateSpec, count: Option<i32>| -> Vec<Pod> {
            (0..count.unwrap_or(1).max(0) as usize).map(|i| pod_from_template(meta, template, i)).collect()
        };
        match self {
            Workload::Pod(pod) => vec![(**pod).clone()],
            Workload::Deployment(d) => expand(&d.metadata, &d.spec.template, d.spec.replicas),
            Workload::ReplicaSet(r) => {
                r.spec.template.as_ref().map(|t| expand(&r.metadata, t, r.spec.replicas)).unwrap_or_default()
            }
            Workload::StatefulSet(s) => {
                let mut pods = expand(&s.metadata, &s.spec.template, s.spec.replicas);
                // The StatefulSet controller gives each pod a volume per claim template.
                for (ordinal, pod) in pods.iter_mut().enumerate() {
                    let spec = pod.spec.get_or_insert_with(Default::default);
                    for template in s.spec.volume_claim_templates.iter().flatten() {
                        let name = template.metadata.name.clone().unwrap_or_default();
                        spec.volumes.get_or_insert_with(Vec::new).push(Volume {
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: claim_name(&name, s, ordinal),
                                read_only: None,
                            }),
                            name,
                            ..Volume::default()
                        });
                    }
                }
                pods
            }
            Workload::Job(j) => {
                j.spec.as_ref().map(|s| expand(&j.metadata, &s.template, s.parallelism)).unwrap_or_default()
            }
        }
    }

    /// The PersistentVolumeClaims its controller would create: a StatefulSet's, one per claim
    /// template and pod, as yet unbound.
    pub fn claims(&self) -> Vec<PersistentVolumeClaim> {
        let Workload::StatefulSet(set) = self else { return Vec::new() };
        let replicas = set.spec.replicas.unwrap_or(1).max(0) as usize;
        let mut claims = Vec::new();
        for template in set.spec.volume_claim_templates.iter().flatten() {
            let name = template.metadata.name.clone().unwrap_or_default();
            for ordinal in 0..replicas {
                claims.push(PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(claim_name(&name, set, ordinal)),
                        namespace: set.metadata.namespace.clone(),
                        ..ObjectMeta::default()
                    },
                    spec: template.spec.clone(),
                    status: None,
                });
            }
        }
        claims
    }
}

/// The name the StatefulSet controller gives a pod's claim: `<template>-<set>-<ordinal>`.
fn claim_name(template: &str, set: &StatefulSet, ordinal: usize) -> String {
    format!("{template}-{}-{ordinal}", set.metadata.name.as_deref().unwrap_or("pod"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::resources::{CPU, MEMORY};

    fn pool(yaml: &str) -> NodePool {
        serde_saphyr::from_str(yaml).expect("a NodePool")
    }

    fn daemonset(yaml: &str) -> DaemonSet {
        serde_saphyr::from_str(yaml).expect("a DaemonSet")
    }

    const GPU_POOL: &str = r#"
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: gpu}
spec:
  weight: 20
  limits: {cpu: "100", nodes: "10"}
  template:
    metadata: {labels: {team: ml}}
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
      taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
"#;

    fn ds(name: &str, cpu: &str, extra: &str) -> DaemonSet {
        daemonset(&format!(
            "metadata: {{name: {name}, namespace: kube-system}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, resources: {{requests: {{cpu: '{cpu}', memory: 64Mi}}}}}}]\n{extra}"
        ))
    }

    #[test]
    fn a_nodepool_folds_labels_weight_limits_and_taints_in() {
        let mut in_use = Resources::new();
        in_use.set(CPU, 40_000);
        in_use.set(MEMORY, 160 << 30);
        let template = nodepool_template(&pool(GPU_POOL), vec![0, 1], &[], &in_use).expect("valid");
        assert_eq!(template.name, "gpu");
        assert_eq!(template.weight, 20);
        assert!(template.requirements.get("team").expect("template label").admits(Some("ml")));
        assert!(template.requirements.get(labels::NODEPOOL).expect("nodepool label").admits(Some("gpu")));
        assert!(!template.requirements.get(labels::ARCH).expect("arch").admits(Some("arm64")));
        assert_eq!(template.taints.len(), 1);
        let remaining = template.remaining.expect("limits");
        assert_eq!(remaining.get(CPU), 60_000);
        assert_eq!(remaining.get(crate::scheduling::solver::NODES), 10);
        assert_eq!(remaining.iter().count(), 2, "memory is not limited, so it is not in remaining: {remaining:?}");
    }

    #[test]
    fn daemonset_overhead_counts_only_daemonsets_that_land() {
        let everywhere = ds("logs", "100m", "      tolerations: [{operator: Exists}]");
        let untolerating = ds("metrics", "200m", "");
        let arm_only = ds(
            "arm-agent",
            "300m",
            "      tolerations: [{operator: Exists}]\n      nodeSelector: {kubernetes.io/arch: arm64}",
        );
        let ml_only = ds("ml-agent", "50m", "      tolerations: [{operator: Exists}]\n      nodeSelector: {team: ml}");
        let template = nodepool_template(
            &pool(GPU_POOL),
            vec![],
            &[everywhere, untolerating, arm_only, ml_only],
            &Resources::new(),
        )
        .expect("valid");
        assert_eq!(template.daemon_overhead.get(CPU), 150);
        assert_eq!(template.daemon_overhead.get(MEMORY), 128 << 20);
    }

    #[test]
    fn workloads_expand_into_their_pods() {
        let deployment: Deployment = serde_saphyr::from_str(
            "metadata: {name: web, namespace: shop}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c}]}",
        )
        .expect("a Deployment");
        let pods = Workload::Deployment(Box::new(deployment)).pods();
        let names: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or(""),
                    p.metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(names, ["shop/web-0", "shop/web-1", "shop/web-2"]);
        assert_eq!(pods[0].metadata.labels.as_ref().expect("labels")["app"], "web");
        let job: Job = serde_saphyr::from_str(
            "metadata: {name: batch}\nspec:\n  parallelism: 2\n  template:\n    spec: {containers: [{name: c}], restartPolicy: Never}",
        )
        .expect("a Job");
        assert_eq!(Workload::Job(Box::new(job)).pods().len(), 2);
    }
}
