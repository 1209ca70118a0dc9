//! What pods' PersistentVolumeClaims require of the node they run on: a bound volume's node
//! affinity, or, for a claim not yet bound, its StorageClass's `allowedTopologies` (where the
//! provisioner may create it). Each volume gives alternatives (its terms are ORed); a pod's
//! requirements become every compatible combination of its own alternatives with its volumes'.
//! Each EBS volume also takes one of the node's attachments ([`labels::EBS_VOLUMES`]), so a type
//! that cannot attach them all is not chosen. Pure, over the cached claims, volumes and classes.
//!
//! The requirements place the pod; they do not enter its spread constraints' node filters, which
//! read only the pod's own node affinity, as kube-scheduler's do.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim},
    storage::v1::StorageClass,
};
use kube::ResourceExt;

use crate::{
    apis::labels,
    scheduling::{
        pod::{PodInfo, term_requirements},
        requirements::{Requirement, Requirements},
    },
};

/// The claims, volumes and classes a decision reads, indexed by name.
#[derive(Debug, Default)]
pub struct VolumeTopology {
    claims: HashMap<(String, String), Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
}

impl VolumeTopology {
    pub fn new(
        claims: impl IntoIterator<Item = Arc<PersistentVolumeClaim>>,
        volumes: impl IntoIterator<Item = Arc<PersistentVolume>>,
        classes: impl IntoIterator<Item = Arc<StorageClass>>,
    ) -> Self {
        let mut topology = Self::default();
        claims.into_iter().for_each(|c| topology.add_claim(c));
        volumes.into_iter().for_each(|v| topology.add_volume(v));
        classes.into_iter().for_each(|c| topology.add_class(c));
        topology
    }

    pub fn add_claim(&mut self, claim: Arc<PersistentVolumeClaim>) {
        self.claims.insert((claim.namespace().unwrap_or_default(), claim.name_any()), claim);
    }

    pub fn add_volume(&mut self, volume: Arc<PersistentVolume>) {
        self.volumes.insert(volume.name_any(), volume);
    }

    pub fn add_class(&mut self, class: Arc<StorageClass>) {
        self.classes.insert(class.name_any(), class);
    }

    /// The pod with its volumes' requirements folded into its own and its EBS volumes counted
    /// in its requests, or why it cannot be planned yet (a claim, volume or class it names does
    /// not exist).
    pub fn constrain(&self, pod: &Arc<PodInfo>) -> Result<Arc<PodInfo>, String> {
        if pod.volume_claims.is_empty() {
            return Ok(pod.clone());
        }
        let mut volumes = Vec::new();
        let mut ebs_volumes = 0;
        for claim in &pod.volume_claims {
            let volume = self.of_claim(&pod.namespace, claim)?;
            if !volume.alternatives.is_empty() {
                volumes.push(volume.alternatives);
            }
            ebs_volumes += i64::from(volume.ebs);
        }
        if volumes.is_empty() && ebs_volumes == 0 {
            return Ok(pod.clone());
        }
        let mut constrained = PodInfo::clone(pod);
        if !volumes.is_empty() {
            constrained.requirements =
                volumes.iter().fold(pod.requirements.clone(), |own, volume| combine(&own, volume));
        }
        if ebs_volumes > 0 {
            constrained.requests.set(labels::EBS_VOLUMES, ebs_volumes);
        }
        Ok(Arc::new(constrained))
    }

    /// What one claim's volume asks of the node.
    fn of_claim(&self, namespace: &str, name: &str) -> Result<ClaimVolume, String> {
        let claim = self
            .claims
            .get(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| format!("PersistentVolumeClaim {namespace}/{name} not found"))?;
        let spec = claim.spec.as_ref();
        if let Some(volume) = spec.and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
            let volume = self
                .volumes
                .get(volume)
                .ok_or_else(|| format!("PersistentVolume {volume}, bound to claim {namespace}/{name}, not found"))?;
            let ebs = volume.spec.as_ref().is_some_and(|s| {
                s.aws_elastic_block_store.is_some() || s.csi.as_ref().is_some_and(|csi| csi.driver == EBS_CSI_DRIVER)
            });
            return Ok(ClaimVolume { alternatives: volume_alternatives(volume), ebs });
        }
        match spec.and_then(|s| s.storage_class_name.as_deref()).filter(|c| !c.is_empty()) {
            Some(class) => {
                let class = self
                    .classes
                    .get(class)
                    .ok_or_else(|| format!("StorageClass {class}, of claim {namespace}/{name}, not found"))?;
                let ebs = [EBS_CSI_DRIVER, IN_TREE_EBS].contains(&class.provisioner.as_str());
                Ok(ClaimVolume { alternatives: class_alternatives(class), ebs })
            }
            None => Ok(ClaimVolume { alternatives: Vec::new(), ebs: false }),
        }
    }
}

/// The EBS CSI driver, and the in-tree provisioner name that migrates to it.
const EBS_CSI_DRIVER: &str = "ebs.csi.aws.com";
const IN_TREE_EBS: &str = "kubernetes.io/aws-ebs";

/// What a pod's claim asks of its node: the alternatives its volume allows (none when it does
/// not constrain the node), and whether it is an EBS volume the node must attach.
struct ClaimVolume {
    alternatives: Vec<Requirements>,
    ebs: bool,
}

/// Topology keys volumes use for well-known node labels: the EBS CSI driver's zone key and the
/// deprecated beta labels (nodes carry the well-known ones from the start; the driver's label
/// arrives only when its node plugin registers).
fn normalized(key: &str) -> &str {
    match key {
        "topology.ebs.csi.aws.com/zone" | "failure-domain.beta.kubernetes.io/zone" => labels::ZONE,
        "failure-domain.beta.kubernetes.io/region" => labels::REGION,
        other => other,
    }
}

fn normalize(requirements: Requirements) -> Requirements {
    let mut out = Requirements::new();
    for (key, requirement) in requirements.iter() {
        out.add(normalized(key), requirement.clone());
    }
    out
}

/// A bound volume's node affinity, one alternative per term. A local or hostPath volume's
/// hostname is left out: the node it named is the one being replaced, as Karpenter reads it.
fn volume_alternatives(volume: &PersistentVolume) -> Vec<Requirements> {
    let Some(spec) = &volume.spec else { return Vec::new() };
    let node_local = spec.local.is_some() || spec.host_path.is_some();
    let terms = spec.node_affinity.as_ref().and_then(|a| a.required.as_ref()).map(|r| r.node_selector_terms.as_slice());
    terms
        .unwrap_or_default()
        .iter()
        .map(|term| {
            let mut requirements = normalize(term_requirements(term));
            if node_local {
                requirements = requirements.without(labels::HOSTNAME);
            }
            requirements
        })
        .collect()
}

/// Where a StorageClass may provision, one alternative per topology term.
fn class_alternatives(class: &StorageClass) -> Vec<Requirements> {
    class
        .allowed_topologies
        .iter()
        .flatten()
        .map(|term| {
            let mut requirements = Requirements::new();
            for expression in term.match_label_expressions.iter().flatten() {
                requirements.add(normalized(&expression.key), Requirement::one_of(expression.values.iter().cloned()));
            }
            requirements
        })
        .collect()
}

/// Every combination of one of the pod's alternatives with one of a volume's that can hold
/// together; all of them when none can, so the solver reports the conflict.
fn combine(own: &[Requirements], volume: &[Requirements]) -> Vec<Requirements> {
    let all = || own.iter().flat_map(|a| volume.iter().map(move |b| (a, b)));
    let compatible: Vec<Requirements> =
        all().filter(|(a, b)| a.conflict_with(b, |_| true).is_none()).map(|(a, b)| a.intersect(b)).collect();
    if compatible.is_empty() { all().map(|(a, b)| a.intersect(b)).collect() } else { compatible }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object<T: serde::de::DeserializeOwned>(yaml: &str) -> Arc<T> {
        Arc::new(serde_saphyr::from_str(yaml).expect("valid object"))
    }

    fn topology() -> VolumeTopology {
        let claims = [
            "metadata: {name: bound, namespace: db}\nspec: {volumeName: pv-b, storageClassName: gp3}",
            "metadata: {name: waiting, namespace: db}\nspec: {storageClassName: zonal}",
            "metadata: {name: anywhere, namespace: db}\nspec: {storageClassName: gp3}",
            "metadata: {name: lost, namespace: db}\nspec: {volumeName: gone}",
            "metadata: {name: local, namespace: db}\nspec: {volumeName: pv-local}",
            "metadata: {name: in-tree, namespace: db}\nspec: {storageClassName: legacy}",
            "metadata: {name: shared-files, namespace: db}\nspec: {storageClassName: efs}",
        ];
        let volumes = [
            "metadata: {name: pv-b}\nspec:\n  csi: {driver: ebs.csi.aws.com, volumeHandle: vol-b}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions: [{key: topology.ebs.csi.aws.com/zone, operator: In, values: [us-east-1b]}]",
            "metadata: {name: pv-local}\nspec:\n  local: {path: /mnt/disk}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [gone-node]}]",
        ];
        let classes = [
            "metadata: {name: gp3}\nprovisioner: ebs.csi.aws.com",
            "metadata: {name: legacy}\nprovisioner: kubernetes.io/aws-ebs",
            "metadata: {name: efs}\nprovisioner: efs.csi.aws.com",
            "metadata: {name: zonal}\nprovisioner: ebs.csi.aws.com\nvolumeBindingMode: WaitForFirstConsumer\nallowedTopologies:\n- matchLabelExpressions: [{key: topology.ebs.csi.aws.com/zone, values: [us-east-1a]}]\n- matchLabelExpressions: [{key: topology.kubernetes.io/zone, values: [us-east-1c]}]",
        ];
        VolumeTopology::new(claims.map(object), volumes.map(object), classes.map(object))
    }

    fn pod_with_claims(claims: &[&str], node_selector: &str) -> Arc<PodInfo> {
        let volumes: Vec<String> = claims
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{{name: v{i}, persistentVolumeClaim: {{claimName: {c}}}}}"))
            .collect();
        let yaml = format!(
            "metadata: {{name: p, namespace: db}}\nspec:\n  containers: [{{name: c}}]\n  volumes: [{}]\n{node_selector}",
            volumes.join(", ")
        );
        Arc::new(PodInfo::from_pod(&serde_saphyr::from_str(&yaml).expect("a pod")).expect("parses"))
    }

    fn zones(pod: &PodInfo) -> Vec<Vec<String>> {
        pod.requirements
            .iter()
            .map(|r| r.get(labels::ZONE).and_then(Requirement::finite_values).into_iter().flatten().cloned().collect())
            .collect()
    }

    #[test]
    fn a_bound_volume_pins_the_zone_under_its_normalized_key() {
        let pod = topology().constrain(&pod_with_claims(&["bound"], "")).expect("constrained");
        assert_eq!(zones(&pod), [["us-east-1b"]]);
        assert!(pod.requirements[0].get("topology.ebs.csi.aws.com/zone").is_none());
    }

    #[test]
    fn an_unbound_claim_takes_each_allowed_topology_as_an_alternative() {
        let pod = topology().constrain(&pod_with_claims(&["waiting"], "")).expect("constrained");
        assert_eq!(zones(&pod), [["us-east-1a"], ["us-east-1c"]]);
        // With the pod's own nodeSelector, only the compatible alternative is left.
        let pinned = pod_with_claims(&["waiting"], "  nodeSelector: {topology.kubernetes.io/zone: us-east-1c}");
        assert_eq!(zones(&topology().constrain(&pinned).expect("constrained")), [["us-east-1c"]]);
        // Two volumes that cannot share a zone: the conflict is kept for the solver to report.
        let both = topology().constrain(&pod_with_claims(&["waiting", "bound"], "")).expect("constrained");
        assert!(both.requirements.iter().all(|r| r.get(labels::ZONE).is_some_and(Requirement::is_unsatisfiable)));
    }

    #[test]
    fn unconstrained_volumes_leave_the_pod_alone_and_missing_objects_are_named() {
        let topology = topology();
        let pod = pod_with_claims(&["anywhere", "local"], "");
        assert_eq!(topology.constrain(&pod).expect("fine").requirements, pod.requirements);
        let unconstrained = pod_with_claims(&["shared-files"], "");
        assert!(Arc::ptr_eq(&topology.constrain(&unconstrained).expect("fine"), &unconstrained));
        let local = topology.constrain(&pod_with_claims(&["local"], "")).expect("fine");
        assert!(local.requirements.iter().all(|r| r.get(labels::HOSTNAME).is_none()), "a local volume's host is gone");
        let error = topology.constrain(&pod_with_claims(&["missing"], "")).unwrap_err();
        assert_eq!(error, "PersistentVolumeClaim db/missing not found");
        let error = topology.constrain(&pod_with_claims(&["lost"], "")).unwrap_err();
        assert!(error.contains("PersistentVolume gone"), "{error}");
    }

    #[test]
    fn each_ebs_volume_takes_an_attachment_and_other_volumes_none() {
        let topology = topology();
        let attachments = |claims: &[&str]| {
            topology.constrain(&pod_with_claims(claims, "")).expect("constrained").requests.get(labels::EBS_VOLUMES)
        };
        // Bound to an EBS CSI volume, waiting for one, provisioned anywhere, in-tree EBS.
        assert_eq!(attachments(&["bound"]), 1);
        assert_eq!(attachments(&["waiting"]), 1);
        assert_eq!(attachments(&["bound", "anywhere", "in-tree"]), 3);
        // A local volume and a network file system attach nothing.
        assert_eq!(attachments(&["local", "shared-files"]), 0);
    }
}
