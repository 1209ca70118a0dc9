//! Pod signatures: replicas of one Deployment can go exactly where each other can, so a target
//! that refused one of them for good is not asked again for the next.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Toleration;

use crate::scheduling::{
    pod::{HostPort, PodInfo, Preference, TopologyTerm},
    requirements::Requirements,
    resources::Resources,
};

/// Everything about a pod that decides where it can go but its tolerations (which do not
/// implement `Hash`): requests, requirements, host ports, topology terms, preferences, namespace
/// and labels. Replicas of a Deployment share it.
pub(super) type Constraints<'a> = (
    &'a Resources,
    &'a [Requirements],
    &'a [HostPort],
    &'a [TopologyTerm],
    &'a [Preference],
    &'a str,
    &'a BTreeMap<String, String>,
);

pub(super) fn constraints(pod: &PodInfo) -> Constraints<'_> {
    (&pod.requests, &pod.requirements, &pod.host_ports, &pod.topology, &pod.preferences, &pod.namespace, &pod.labels)
}

/// A hash of what decides where a pod can go: equal for pods that are [`alike`].
pub(super) fn signature(pod: &PodInfo) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    constraints(pod).hash(&mut hasher);
    for toleration in &pod.tolerations {
        let Toleration { key, operator, value, effect, toleration_seconds } = toleration;
        (key, operator, value, effect, toleration_seconds).hash(&mut hasher);
    }
    hasher.finish()
}

/// Whether two pods can go exactly where the other can.
pub(super) fn alike(a: &PodInfo, b: &PodInfo) -> bool {
    constraints(a) == constraints(b) && a.tolerations == b.tolerations
}

/// Each pod's signature class: pods that are [`alike`] share one. Classes are numbered in the
/// order of their first pod's key, so the packing order never depends on hash values.
pub(super) fn signature_classes(pods: &[Arc<PodInfo>]) -> Vec<usize> {
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
