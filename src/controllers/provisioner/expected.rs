//! A ReplicaSet's replicas the scheduler has yet to try (not created yet, or still in its queue),
//! planned for by the batch that finds the ReplicaSet's first pods pending.
//!
//! kube-controller-manager creates a scaled-up ReplicaSet's pods at its API client's rate (20
//! requests a second by default), so 1,000 new replicas reach the provisioner over about 50 s and
//! fall into five or six batches. Each batch sizes its nodes for its own pods only, so the last
//! node of each kind in each batch is part full, and the burst costs more than one plan for all
//! of it (16% more in the wide race). The pods a ReplicaSet is still to create are not a guess:
//! its `replicas` say how many, and each is a copy of its pod that is pending now. So a batch
//! holding a pending pod of a ReplicaSet plans, as copies of that pod, for every replica the
//! scheduler has not tried yet: those not created, and those created but still in its queue
//! (which are not pending, so not in the batch, and would otherwise make the next one). Later
//! batches find the room on the NodeClaims this one created.
//!
//! Left out: a ReplicaSet that says it cannot create pods (`ReplicaFailure`: a quota, an admission
//! webhook) or is being deleted, and pods with volume claims (each replica's would be its own).
//! The flow: [`creators`] names the ReplicaSets to read, the provisioner reads them, and
//! [`expected_pods`] makes the copies. Karpenter plans for pending pods only.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;

use crate::{scheduling::pod::PodInfo, state::cache::CachedPod};

/// The most expected pods one batch plans for: the solver's time grows with its pods.
pub const MAX_EXPECTED: usize = 10_000;

/// The ReplicaSet controlling a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Creator {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Creator {
    /// The ReplicaSet controlling `pod`, if one does.
    pub fn of(pod: &CachedPod) -> Option<Self> {
        let owner = pod.metadata.owner_references.iter().flatten().find(|owner| owner.controller == Some(true))?;
        (owner.kind == "ReplicaSet" && owner.api_version == "apps/v1").then(|| Self {
            namespace: pod.namespace().unwrap_or_default(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        })
    }

    /// How many of `set`'s replicas the scheduler has still to try: its replicas less its `tried`
    /// live pods; none when it is not this creator (re-made under the same name), is going, or
    /// cannot create pods.
    fn untried(&self, set: &ReplicaSet, tried: usize) -> usize {
        let mut conditions = set.status.iter().flat_map(|s| s.conditions.iter().flatten());
        let failing =
            conditions.any(|c| c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True"));
        if set.uid().as_deref() != Some(self.uid.as_str()) || set.metadata.deletion_timestamp.is_some() || failing {
            return 0;
        }
        // The apps controllers' default is one replica.
        let replicas = usize::try_from(set.spec.replicas.unwrap_or(1)).unwrap_or(0);
        replicas.saturating_sub(tried)
    }
}

/// The ReplicaSets controlling `pending` pods, each once.
pub fn creators(pending: &[Arc<CachedPod>]) -> BTreeSet<Creator> {
    pending.iter().filter_map(|pod| Creator::of(pod)).collect()
}

/// The replicas of the ReplicaSets in `sets` the scheduler has still to try, each a copy of one
/// of its `pending` pods (which the simulation parsed) under a key no Pod can have; `tried`
/// counts a ReplicaSet's live pods the scheduler has tried, by UID. At most [`MAX_EXPECTED`].
pub fn expected_pods(
    pending: &[Arc<CachedPod>],
    sets: &HashMap<Creator, ReplicaSet>,
    tried: impl Fn(&str) -> usize,
) -> Vec<Arc<PodInfo>> {
    let mut seen = BTreeSet::new();
    let mut expected = Vec::new();
    for pod in pending {
        let Some(creator) = Creator::of(pod) else { continue };
        let (Some(set), Ok(info)) = (sets.get(&creator), pod.scheduling.as_ref()) else { continue };
        if !info.volume_claims.is_empty() || !seen.insert(creator.clone()) {
            continue;
        }
        let untried = creator.untried(set, tried(&creator.uid)).min(MAX_EXPECTED - expected.len());
        expected.extend(
            (0..untried)
                .map(|replica| Arc::new(PodInfo { key: expected_key(&creator, replica), ..PodInfo::clone(info) })),
        );
    }
    expected
}

/// An expected pod's key: `namespace/<replicaset>:expected:<n>`, which no Pod's name can be.
fn expected_key(creator: &Creator, replica: usize) -> String {
    format!("{}/{}{EXPECTED}{replica}", creator.namespace, creator.name)
}

const EXPECTED: &str = ":expected:";

/// Whether a planned pod's key is an expected pod's.
pub fn is_expected(key: &str) -> bool {
    key.split_once('/').is_some_and(|(_, name)| name.contains(EXPECTED))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    fn pending(name: &str, set: &str, uid: &str, extra_spec: &str) -> Arc<CachedPod> {
        let pod: Pod = serde_saphyr::from_str(&format!(
            "metadata:\n  name: {name}\n  namespace: shop\n  labels: {{app: web}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {set}, uid: {uid}, controller: true}}]\nspec:\n  containers: [{{name: c, image: i, resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}}}]{extra_spec}\nstatus: {{phase: Pending, conditions: [{{type: PodScheduled, status: 'False', reason: Unschedulable}}]}}\n"
        ))
        .expect("a pod");
        Arc::new(CachedPod::from(pod))
    }

    fn replica_set(name: &str, uid: &str, replicas: i32, extra: &str) -> ReplicaSet {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, namespace: shop, uid: {uid}}}\nspec: {{replicas: {replicas}, selector: {{matchLabels: {{app: web}}}}}}\n{extra}"
        ))
        .expect("a ReplicaSet")
    }

    fn sets(of: Vec<(&str, &str, ReplicaSet)>) -> HashMap<Creator, ReplicaSet> {
        of.into_iter()
            .map(|(name, uid, set)| (Creator { namespace: "shop".into(), name: name.into(), uid: uid.into() }, set))
            .collect()
    }

    #[test]
    fn a_replica_set_short_of_its_replicas_expects_copies_of_its_pending_pod() {
        let pods = vec![pending("web-a", "web", "u1", ""), pending("web-b", "web", "u1", "")];
        let sets = sets(vec![("web", "u1", replica_set("web", "u1", 10, ""))]);
        let expected = expected_pods(&pods, &sets, |uid| if uid == "u1" { 3 } else { 0 });
        assert_eq!(expected.len(), 7, "10 replicas, 3 tried");
        let info = pods[0].scheduling.as_ref().expect("parsed");
        for pod in &expected {
            assert!(Arc::ptr_eq(&pod.shape, &info.shape), "the pending pod's shape, shared");
            assert!(!pod.placeholder);
        }
        let keys: BTreeSet<&str> = expected.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), 7, "keys are distinct");
        assert!(keys.contains("shop/web:expected:0"));
        assert!(keys.iter().all(|key| is_expected(key)));
        assert!(!is_expected("shop/web-7d9c5") && !is_expected("shop/capacitybuffer:web:0"));
        assert_eq!(creators(&pods).len(), 1);
    }

    #[test]
    fn nothing_is_expected_of_a_replica_set_that_cannot_or_need_not_create_pods() {
        let pods = vec![pending("web-a", "web", "u1", "")];
        let none = |set: ReplicaSet, tried: usize| {
            let sets = sets(vec![("web", "u1", set)]);
            expected_pods(&pods, &sets, |_| tried).len()
        };
        assert_eq!(none(replica_set("web", "u1", 3, ""), 3), 0, "every replica exists");
        assert_eq!(none(replica_set("web", "u1", 3, ""), 5), 0, "more than its replicas (scaling in)");
        let failing = "status: {conditions: [{type: ReplicaFailure, status: 'True', reason: FailedCreate}]}";
        assert_eq!(none(replica_set("web", "u1", 10, failing), 1), 0, "a quota refuses its pods");
        assert_eq!(none(replica_set("web", "u2", 10, ""), 1), 0, "re-made under the same name");
        let mut going = replica_set("web", "u1", 10, "");
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(none(going, 1), 0, "being deleted");
        assert_eq!(none(replica_set("web", "u1", 10, ""), 1), 9, "the control case");

        let unread = expected_pods(&pods, &HashMap::new(), |_| 1);
        assert!(unread.is_empty(), "a ReplicaSet that could not be read");
        let with_claim = "\n  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]";
        let pods = vec![pending("web-a", "web", "u1", with_claim)];
        let sets = sets(vec![("web", "u1", replica_set("web", "u1", 10, ""))]);
        assert!(expected_pods(&pods, &sets, |_| 1).is_empty(), "each replica's claims would be its own");
    }

    #[test]
    fn a_batch_expects_at_most_its_bound() {
        let pods = vec![pending("a-x", "a", "ua", ""), pending("b-x", "b", "ub", "")];
        let huge = i32::MAX;
        let sets =
            sets(vec![("a", "ua", replica_set("a", "ua", huge, "")), ("b", "ub", replica_set("b", "ub", huge, ""))]);
        assert_eq!(expected_pods(&pods, &sets, |_| 1).len(), MAX_EXPECTED);
    }
}
