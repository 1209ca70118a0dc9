//! A ReplicaSet's replicas the scheduler has yet to try (not created yet, or still in its queue),
//! planned for by the batch that is closing.
//!
//! kube-controller-manager creates a scaled-up ReplicaSet's pods at its API client's rate (20
//! requests a second by default, shared by five ReplicaSets at a time), so 1,000 new replicas of
//! 30 Deployments reach the provisioner over about 50 s, and most ReplicaSets have no pod yet when
//! the first batch closes. Each batch sizes its nodes for its own pods only, so the last node of
//! each kind in each batch is part full, and the burst costs more than one plan for all of it
//! (16% more in the wide race). The pods a ReplicaSet is still to create are not a guess: its
//! `replicas` say how many, and each is a copy of its template. So a batch plans, for every
//! ReplicaSet short of its replicas, for each replica the scheduler has not tried yet: those not
//! created, and those created but still in its queue (which are not pending, so not in the batch,
//! and would otherwise make the next one). Later batches find the room on the NodeClaims this one
//! created.
//!
//! Each is a copy of the ReplicaSet's pending pod when the batch has one (admission made it what
//! it is: defaults of a LimitRange, a webhook's sidecar, its priority), else of its template as
//! the cache keeps it while the set is short (see [`replica_set_growth`]); a template for another
//! scheduler is left out (kube-scheduler would never try its pods). Left out too: a ReplicaSet
//! that says it cannot create pods (`ReplicaFailure`: a quota, an admission webhook) or is being
//! deleted, and pods with volume claims (each replica's would be its own). Karpenter plans for
//! pending pods only.
//!
//! [`replica_set_growth`]: crate::state::cache::replica_set_growth

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;

use crate::{
    scheduling::{inputs::pod_from_template, pod::PodInfo},
    state::cache::{CachedPod, short_of_pods},
};

/// The most expected pods one batch plans for: the solver's time grows with its pods.
pub const MAX_EXPECTED: usize = 10_000;

/// The UID of the ReplicaSet controlling `pod`, if one does.
fn creator_uid(pod: &CachedPod) -> Option<&str> {
    let owner = pod.metadata.owner_references.iter().flatten().find(|owner| owner.controller == Some(true))?;
    (owner.kind == "ReplicaSet" && owner.api_version == "apps/v1").then_some(owner.uid.as_str())
}

/// How many of `set`'s replicas the scheduler has still to try: its replicas less its `tried`
/// live pods; none when it is going or cannot create pods.
fn untried(set: &ReplicaSet, tried: usize) -> usize {
    let mut conditions = set.status.iter().flat_map(|s| s.conditions.iter().flatten());
    let failing =
        conditions.any(|c| c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True"));
    if set.metadata.deletion_timestamp.is_some() || failing {
        return 0;
    }
    // The apps controllers' default is one replica.
    let replicas = usize::try_from(set.spec.replicas.unwrap_or(1)).unwrap_or(0);
    replicas.saturating_sub(tried)
}

/// What `set`'s pods look like when it has no pending pod to copy: its template, while it is
/// [short of pods](short_of_pods) and if kube-scheduler places its pods.
fn from_template(set: &ReplicaSet) -> Option<PodInfo> {
    if !short_of_pods(set) {
        return None;
    }
    let template = set.spec.template.as_ref()?;
    let scheduler = template.spec.as_ref()?.scheduler_name.as_deref();
    if !matches!(scheduler, None | Some("default-scheduler")) {
        return None;
    }
    PodInfo::from_pod(&pod_from_template(&set.metadata, template, 0)).ok()
}

/// The replicas of the ReplicaSets in `sets` the scheduler has still to try, each a copy of one
/// of its `pending` pods (which the simulation parsed) or of its template, under a key no Pod can
/// have; `tried` counts a ReplicaSet's live pods the scheduler has tried, by UID. At most
/// [`MAX_EXPECTED`], ReplicaSets in name order.
pub fn expected_pods(
    pending: &[Arc<CachedPod>],
    sets: &[Arc<ReplicaSet>],
    tried: impl Fn(&str) -> usize,
) -> Vec<Arc<PodInfo>> {
    let mut copies: HashMap<&str, &Arc<PodInfo>> = HashMap::new();
    for pod in pending {
        if let (Some(uid), Ok(info)) = (creator_uid(pod), pod.scheduling.as_ref()) {
            copies.entry(uid).or_insert(info);
        }
    }
    let mut short: Vec<(&ReplicaSet, usize)> = sets
        .iter()
        .filter_map(|set| {
            let untried = untried(set, tried(set.metadata.uid.as_deref()?));
            (untried > 0).then_some((&**set, untried))
        })
        .collect();
    short.sort_by(|(a, _), (b, _)| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut expected = Vec::new();
    for (set, untried) in short {
        let copied = set.metadata.uid.as_deref().and_then(|uid| copies.get(uid));
        let Some(info) = copied.map(|info| PodInfo::clone(info)).or_else(|| from_template(set)) else { continue };
        if !info.volume_claims.is_empty() {
            continue;
        }
        let info = Arc::new(info);
        let (namespace, name) = (set.namespace().unwrap_or_default(), set.name_any());
        let untried = untried.min(MAX_EXPECTED - expected.len());
        expected.extend((0..untried).map(|replica| {
            Arc::new(PodInfo { key: expected_key(&namespace, &name, replica), ..PodInfo::clone(&info) })
        }));
    }
    expected
}

/// An expected pod's key: `namespace/<replicaset>:expected:<n>`, which no Pod's name can be.
fn expected_key(namespace: &str, set: &str, replica: usize) -> String {
    format!("{namespace}/{set}{EXPECTED}{replica}")
}

const EXPECTED: &str = ":expected:";

/// Whether a planned pod's key is an expected pod's.
pub fn is_expected(key: &str) -> bool {
    key.split_once('/').is_some_and(|(_, name)| name.contains(EXPECTED))
}

/// How many of these planned pods' keys are expected pods'.
pub fn count_expected<'a>(keys: impl IntoIterator<Item = &'a String>) -> usize {
    keys.into_iter().filter(|key| is_expected(key)).count()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    fn pending(name: &str, set: &str, uid: &str, extra_spec: &str) -> Arc<CachedPod> {
        let pod: Pod = serde_saphyr::from_str(&format!(
            "metadata:\n  name: {name}\n  namespace: shop\n  labels: {{app: web}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {set}, uid: {uid}, controller: true}}]\nspec:\n  containers: [{{name: c, image: i, resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}}}]{extra_spec}\nstatus: {{phase: Pending, conditions: [{{type: PodScheduled, status: 'False', reason: Unschedulable}}]}}\n"
        ))
        .expect("a pod");
        Arc::new(CachedPod::from(pod))
    }

    /// A ReplicaSet as the cache keeps it, without its template (it is not short, or the test
    /// copies a pending pod).
    fn replica_set(name: &str, uid: &str, replicas: i32, extra: &str) -> Arc<ReplicaSet> {
        Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: {name}, namespace: shop, uid: {uid}}}\nspec: {{replicas: {replicas}, selector: {{matchLabels: {{app: web}}}}}}\n{extra}"
            ))
            .expect("a ReplicaSet"),
        )
    }

    /// A ReplicaSet with its pod template: 2 CPUs, and `extra_spec` in the pod spec.
    fn with_template(name: &str, uid: &str, replicas: i32, extra_spec: &str) -> Arc<ReplicaSet> {
        Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: {name}, namespace: shop, uid: {uid}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    spec:\n      containers: [{{name: c, image: i, resources: {{requests: {{cpu: '2', memory: 1Gi}}}}}}]{extra_spec}\n"
            ))
            .expect("a ReplicaSet"),
        )
    }

    #[test]
    fn a_replica_set_short_of_its_replicas_expects_copies_of_its_pending_pod() {
        let pods = vec![pending("web-a", "web", "u1", ""), pending("web-b", "web", "u1", "")];
        let sets = vec![replica_set("web", "u1", 10, "")];
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
        assert_eq!(count_expected(&["shop/web-7d9c5".to_owned(), expected[0].key.clone()]), 1);
        assert!(!is_expected("shop/web-7d9c5") && !is_expected("shop/capacitybuffer:web:0"));
    }

    #[test]
    fn a_replica_set_without_a_pending_pod_expects_copies_of_its_template() {
        let expected = expected_pods(&[], &[with_template("api", "u1", 6, "")], |_| 2);
        assert_eq!(expected.len(), 4, "6 replicas, 2 tried");
        assert_eq!(expected[0].requests.get("cpu"), 2000, "the template's requests");
        assert!(expected.iter().all(|pod| Arc::ptr_eq(&pod.shape, &expected[0].shape)), "one shape, shared");
        assert!(expected.iter().all(|pod| pod.key.starts_with("shop/api:expected:")));

        // A pending pod is copied rather than the template (admission may have changed it).
        let copied = expected_pods(&[pending("api-x", "api", "u1", "")], &[with_template("api", "u1", 6, "")], |_| 2);
        assert_eq!(copied[0].requests.get("cpu"), 500, "the pending pod's requests");
        // A pending pod of a ReplicaSet re-made under the same name is not its pod.
        let remade = expected_pods(&[pending("api-x", "api", "u0", "")], &[with_template("api", "u1", 6, "")], |_| 2);
        assert_eq!(remade[0].requests.get("cpu"), 2000, "the new set's template");

        let elsewhere = with_template("api", "u1", 6, "\n      schedulerName: batch-scheduler");
        assert!(expected_pods(&[], &[elsewhere], |_| 0).is_empty(), "kube-scheduler never tries its pods");
        let named = with_template("api", "u1", 6, "\n      schedulerName: default-scheduler");
        assert_eq!(expected_pods(&[], &[named], |_| 0).len(), 6);
        assert!(expected_pods(&[], &[replica_set("api", "u1", 6, "")], |_| 0).is_empty(), "no template kept");
        // The buffers' cache keeps every template; a set with all its pods is not read from it.
        let mut steady = (*with_template("api", "u1", 6, "")).clone();
        steady.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus { replicas: 6, ..Default::default() });
        assert!(expected_pods(&[], &[Arc::new(steady)], |_| 2).is_empty(), "its untried pods exist");
        let with_claim = "\n      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]";
        assert!(expected_pods(&[], &[with_template("api", "u1", 6, with_claim)], |_| 0).is_empty());
    }

    #[test]
    fn nothing_is_expected_of_a_replica_set_that_cannot_or_need_not_create_pods() {
        let pods = vec![pending("web-a", "web", "u1", "")];
        let none = |set: Arc<ReplicaSet>, tried: usize| expected_pods(&pods, &[set], |_| tried).len();
        assert_eq!(none(replica_set("web", "u1", 3, ""), 3), 0, "every replica exists");
        assert_eq!(none(replica_set("web", "u1", 3, ""), 5), 0, "more than its replicas (scaling in)");
        let failing = "status: {conditions: [{type: ReplicaFailure, status: 'True', reason: FailedCreate}]}";
        assert_eq!(none(replica_set("web", "u1", 10, failing), 1), 0, "a quota refuses its pods");
        assert_eq!(none(replica_set("web", "u2", 10, ""), 1), 0, "re-made under the same name, no template");
        let mut going = (*replica_set("web", "u1", 10, "")).clone();
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(none(Arc::new(going), 1), 0, "being deleted");
        assert_eq!(none(replica_set("web", "u1", 10, ""), 1), 9, "the control case");

        assert!(expected_pods(&pods, &[], |_| 1).is_empty(), "a ReplicaSet not in the cache");
        let with_claim = "\n  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]";
        let pods = vec![pending("web-a", "web", "u1", with_claim)];
        let sets = [replica_set("web", "u1", 10, "")];
        assert!(expected_pods(&pods, &sets, |_| 1).is_empty(), "each replica's claims would be its own");
    }

    #[test]
    fn a_batch_expects_at_most_its_bound_in_name_order() {
        let pods = vec![pending("a-x", "a", "ua", ""), pending("b-x", "b", "ub", "")];
        let huge = i32::MAX;
        let sets = [replica_set("b", "ub", huge, ""), replica_set("a", "ua", huge, "")];
        let expected = expected_pods(&pods, &sets, |_| 1);
        assert_eq!(expected.len(), MAX_EXPECTED);
        assert!(expected.iter().all(|pod| pod.key.starts_with("shop/a:")), "the first ReplicaSet by name");
    }
}
