//! The pods Deployments, ReplicaSets and Jobs are still to have tried by the scheduler (not
//! created yet, or still in its queue), planned for by the batch that is closing.
//!
//! kube-controller-manager creates a scaled-up ReplicaSet's pods at its API client's rate (20
//! requests a second by default, shared by five ReplicaSets at a time), so 1,000 new replicas of
//! 30 Deployments reach the provisioner over about 50 s, and most ReplicaSets have no pod yet when
//! the first batch closes; a Job's pods come the same way (in doubling batches, at the same
//! rate). Each batch sizes its nodes for its own pods only, so the last node of each kind in each
//! batch is part full, and the burst costs more than one plan for all of it (16% more in the wide
//! race). The pods still to come are not a guess: a ReplicaSet's `replicas` say how many, a Job's
//! parallelism and completions (as its controller counts them, [`job_wants_running`]), and each
//! is a copy of the template. So a batch plans, for every ReplicaSet and Job short of its pods,
//! for each pod the scheduler has not tried yet: those not created, and those created but still
//! in its queue (which are not pending, so not in the batch, and would otherwise make the next
//! one). Later batches find the room on the NodeClaims this one created.
//!
//! A step earlier, a Deployment's controller makes or scales its ReplicaSet (five Deployments
//! at a time, sharing the same rate), so a new or scaled-up Deployment may have no ReplicaSet
//! holding its replicas yet when the batch closes. While its controller has yet to act on its
//! spec (its observed generation behind its generation), a batch plans too for its replicas its
//! ReplicaSets do not hold (`replicas_by_deployment`), as copies of its template; once it has
//! acted, its ReplicaSets say everything.
//!
//! Each is a copy of the owner's pending pod when the batch has one (admission made it what it
//! is: defaults of a LimitRange, a webhook's sidecar, its priority), else of its template as the
//! cache keeps it while the owner is short ([`short_of_pods`], [`job_short_of_pods`],
//! [`deployment_unobserved`]); a template for another scheduler is left out (kube-scheduler
//! would never try its pods). A Deployment's template lacks the `pod-template-hash` label its
//! ReplicaSet adds (a spread that keys on it counts every revision's pods for those copies).
//! Left out too: a ReplicaSet that says it cannot create pods (`ReplicaFailure`: a quota, an
//! admission webhook) or is being deleted, a Deployment paused, being deleted or failing
//! ([`deployment_failing`]), a Job suspended, finishing or left to another controller, and pods
//! with volume claims (each replica's would be its own). Karpenter plans for pending pods only.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    batch::v1::Job,
    core::v1::PodTemplateSpec,
};
use kube::api::ObjectMeta;

use crate::{
    scheduling::{inputs::pod_from_template, pod::PodInfo},
    state::cache::{
        CachedPod, deployment_failing, deployment_unobserved, job_short_of_pods, job_wants_running, short_of_pods,
    },
};

/// The most expected pods one batch plans for: the solver's time grows with its pods.
pub const MAX_EXPECTED: usize = 10_000;

/// The UID of the ReplicaSet or Job controlling `pod`, if one does.
fn creator_uid(pod: &CachedPod) -> Option<&str> {
    let owner = pod.metadata.owner_references.iter().flatten().find(|owner| owner.controller == Some(true))?;
    let creator =
        matches!((owner.kind.as_str(), owner.api_version.as_str()), ("ReplicaSet", "apps/v1") | ("Job", "batch/v1"));
    creator.then_some(owner.uid.as_str())
}

/// A ReplicaSet or Job with pods the scheduler has still to try.
struct Short<'a> {
    metadata: &'a ObjectMeta,
    /// Part of its expected pods' keys: a ReplicaSet and a Job may have one name.
    kind: &'static str,
    untried: usize,
    /// Its pod template while it is short of pods, the only time a batch reads it.
    template: Option<&'a PodTemplateSpec>,
}

/// `set` with its replicas less its `tried` live pods; none when it is going or cannot create
/// pods.
fn short_replica_set(set: &ReplicaSet, tried: usize) -> Short<'_> {
    let mut conditions = set.status.iter().flat_map(|s| s.conditions.iter().flatten());
    let failing =
        conditions.any(|c| c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True"));
    // The apps controllers' default is one replica.
    let replicas = usize::try_from(set.spec.replicas.unwrap_or(1)).unwrap_or(0);
    let untried = if set.metadata.deletion_timestamp.is_some() || failing { 0 } else { replicas.saturating_sub(tried) };
    let template = set.spec.template.as_ref().filter(|_| short_of_pods(set));
    Short { metadata: &set.metadata, kind: "", untried, template }
}

/// `deployment` with its replicas less those its ReplicaSets hold (`in_replica_sets`), while its
/// controller has yet to act on its spec; none when it is going, paused (its controller creates
/// no ReplicaSet then) or cannot create its pods.
fn short_deployment(deployment: &Deployment, in_replica_sets: usize) -> Short<'_> {
    let spec = &deployment.spec;
    let acting = deployment_unobserved(deployment)
        && spec.paused != Some(true)
        && deployment.metadata.deletion_timestamp.is_none()
        && !deployment_failing(deployment);
    // The apps controllers' default is one replica.
    let replicas = if acting { usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0) } else { 0 };
    let untried = replicas.saturating_sub(in_replica_sets);
    Short {
        metadata: &deployment.metadata,
        kind: ":deployment",
        untried,
        template: Some(&spec.template).filter(|_| acting),
    }
}

/// Each Deployment's replicas its ReplicaSets hold, by the Deployment's UID.
fn replicas_by_deployment(sets: &[Arc<ReplicaSet>]) -> HashMap<&str, usize> {
    let mut held: HashMap<&str, usize> = HashMap::new();
    for set in sets {
        let owners = set.metadata.owner_references.iter().flatten();
        let deployment = owners
            .filter(|owner| owner.controller == Some(true))
            .find(|owner| owner.kind == "Deployment" && owner.api_version == "apps/v1");
        if let Some(deployment) = deployment {
            let replicas = usize::try_from(set.spec.replicas.unwrap_or(1)).unwrap_or(0);
            let sum = held.entry(deployment.uid.as_str()).or_default();
            *sum = sum.saturating_add(replicas);
        }
    }
    held
}

/// `job` with the pods it wants running less its `tried` live pods.
fn short_job(job: &Job, tried: usize) -> Short<'_> {
    let untried = job_wants_running(job).saturating_sub(tried);
    let template = job.spec.as_ref().map(|spec| &spec.template).filter(|_| job_short_of_pods(job));
    Short { metadata: &job.metadata, kind: ":job", untried, template }
}

/// What an owner's pods look like when it has no pending pod to copy: its `template`, if
/// kube-scheduler places its pods.
fn from_template(owner: &ObjectMeta, template: &PodTemplateSpec) -> Option<PodInfo> {
    let scheduler = template.spec.as_ref()?.scheduler_name.as_deref();
    if !matches!(scheduler, None | Some("default-scheduler")) {
        return None;
    }
    PodInfo::from_pod(&pod_from_template(owner, template, 0)).ok()
}

/// The pods the ReplicaSets in `sets`, the Deployments in `deployments` and the Jobs in `jobs`
/// have still to have tried by the scheduler, each a copy of one of its `pending` pods (which the
/// simulation parsed) or of its template, under a key no Pod can have; `tried` counts an owner's
/// live pods the scheduler has tried, by UID. At most [`MAX_EXPECTED`], owners in (namespace,
/// name) order, ReplicaSets first, then Deployments, then Jobs.
pub fn expected_pods(
    pending: &[Arc<CachedPod>],
    sets: &[Arc<ReplicaSet>],
    deployments: &[Arc<Deployment>],
    jobs: &[Arc<Job>],
    tried: impl Fn(&str) -> usize,
) -> Vec<Arc<PodInfo>> {
    let mut copies: HashMap<&str, &Arc<PodInfo>> = HashMap::new();
    for pod in pending {
        if let (Some(uid), Ok(info)) = (creator_uid(pod), pod.scheduling.as_ref()) {
            copies.entry(uid).or_insert(info);
        }
    }
    let tried_of = |metadata: &ObjectMeta| metadata.uid.as_deref().map(&tried);
    let held = replicas_by_deployment(sets);
    let deployments = deployments.iter().filter_map(|deployment| {
        let in_replica_sets = held.get(deployment.metadata.uid.as_deref()?).copied().unwrap_or(0);
        Some(short_deployment(deployment, in_replica_sets))
    });
    let sets = sets.iter().filter_map(|set| Some(short_replica_set(set, tried_of(&set.metadata)?)));
    let jobs = jobs.iter().filter_map(|job| Some(short_job(job, tried_of(&job.metadata)?)));
    let mut short: Vec<Short> = sets.chain(deployments).chain(jobs).filter(|short| short.untried > 0).collect();
    // ReplicaSets first (their kind is ""), then Deployments, then Jobs, each kind in
    // (namespace, name) order.
    short.sort_by(|a, b| {
        (a.kind, &a.metadata.namespace, &a.metadata.name).cmp(&(b.kind, &b.metadata.namespace, &b.metadata.name))
    });
    let mut expected = Vec::new();
    for short in short {
        let copied = short.metadata.uid.as_deref().and_then(|uid| copies.get(uid));
        let Some(info) = copied
            .map(|info| PodInfo::clone(info))
            .or_else(|| short.template.and_then(|template| from_template(short.metadata, template)))
        else {
            continue;
        };
        if !info.volume_claims.is_empty() {
            continue;
        }
        let info = Arc::new(info);
        let namespace = short.metadata.namespace.as_deref().unwrap_or_default();
        let owner = format!("{}{}", short.metadata.name.as_deref().unwrap_or_default(), short.kind);
        let untried = short.untried.min(MAX_EXPECTED - expected.len());
        expected.extend((0..untried).map(|replica| {
            Arc::new(PodInfo { key: expected_key(namespace, &owner, replica), ..PodInfo::clone(&info) })
        }));
    }
    expected
}

/// An expected pod's key: `namespace/<replicaset>:expected:<n>` or
/// `namespace/<job>:job:expected:<n>`, which no Pod's name can be.
fn expected_key(namespace: &str, owner: &str, replica: usize) -> String {
    format!("{namespace}/{owner}{EXPECTED}{replica}")
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
        owned_pod(name, "apps/v1, kind: ReplicaSet", set, uid, extra_spec)
    }

    /// A pending pod whose controller is `owner` (`apiVersion: …, kind: …`) of that name and UID.
    fn owned_pod(name: &str, owner: &str, owner_name: &str, uid: &str, extra_spec: &str) -> Arc<CachedPod> {
        let pod: Pod = serde_saphyr::from_str(&format!(
            "metadata:\n  name: {name}\n  namespace: shop\n  labels: {{app: web}}\n  ownerReferences: [{{apiVersion: {owner}, name: {owner_name}, uid: {uid}, controller: true}}]\nspec:\n  containers: [{{name: c, image: i, resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}}}]{extra_spec}\nstatus: {{phase: Pending, conditions: [{{type: PodScheduled, status: 'False', reason: Unschedulable}}]}}\n"
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
        let expected = expected_pods(&pods, &sets, &[], &[], |uid| if uid == "u1" { 3 } else { 0 });
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
        let expected = expected_pods(&[], &[with_template("api", "u1", 6, "")], &[], &[], |_| 2);
        assert_eq!(expected.len(), 4, "6 replicas, 2 tried");
        assert_eq!(expected[0].requests.get("cpu"), 2000, "the template's requests");
        assert!(expected.iter().all(|pod| Arc::ptr_eq(&pod.shape, &expected[0].shape)), "one shape, shared");
        assert!(expected.iter().all(|pod| pod.key.starts_with("shop/api:expected:")));

        // A pending pod is copied rather than the template (admission may have changed it).
        let copied =
            expected_pods(&[pending("api-x", "api", "u1", "")], &[with_template("api", "u1", 6, "")], &[], &[], |_| 2);
        assert_eq!(copied[0].requests.get("cpu"), 500, "the pending pod's requests");
        // A pending pod of a ReplicaSet re-made under the same name is not its pod.
        let remade =
            expected_pods(&[pending("api-x", "api", "u0", "")], &[with_template("api", "u1", 6, "")], &[], &[], |_| 2);
        assert_eq!(remade[0].requests.get("cpu"), 2000, "the new set's template");

        let elsewhere = with_template("api", "u1", 6, "\n      schedulerName: batch-scheduler");
        assert!(expected_pods(&[], &[elsewhere], &[], &[], |_| 0).is_empty(), "kube-scheduler never tries its pods");
        let named = with_template("api", "u1", 6, "\n      schedulerName: default-scheduler");
        assert_eq!(expected_pods(&[], &[named], &[], &[], |_| 0).len(), 6);
        assert!(expected_pods(&[], &[replica_set("api", "u1", 6, "")], &[], &[], |_| 0).is_empty(), "no template kept");
        // The buffers' cache keeps every template; a set with all its pods is not read from it.
        let mut steady = (*with_template("api", "u1", 6, "")).clone();
        steady.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus { replicas: 6, ..Default::default() });
        assert!(expected_pods(&[], &[Arc::new(steady)], &[], &[], |_| 2).is_empty(), "its untried pods exist");
        let with_claim = "\n      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]";
        assert!(expected_pods(&[], &[with_template("api", "u1", 6, with_claim)], &[], &[], |_| 0).is_empty());
    }

    #[test]
    fn nothing_is_expected_of_a_replica_set_that_cannot_or_need_not_create_pods() {
        let pods = vec![pending("web-a", "web", "u1", "")];
        let none = |set: Arc<ReplicaSet>, tried: usize| expected_pods(&pods, &[set], &[], &[], |_| tried).len();
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

        assert!(expected_pods(&pods, &[], &[], &[], |_| 1).is_empty(), "a ReplicaSet not in the cache");
        let with_claim = "\n  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]";
        let pods = vec![pending("web-a", "web", "u1", with_claim)];
        let sets = [replica_set("web", "u1", 10, "")];
        assert!(expected_pods(&pods, &sets, &[], &[], |_| 1).is_empty(), "each replica's claims would be its own");
    }

    /// A Deployment of 2-CPU pods at generation `generation`, with `extra` lines in its spec and
    /// `status` (YAML flow fields).
    fn deployment(uid: &str, replicas: i32, generation: i64, extra: &str, status: &str) -> Arc<Deployment> {
        Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: api, namespace: shop, uid: {uid}, generation: {generation}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    spec:\n      containers: [{{name: c, image: i, resources: {{requests: {{cpu: '2', memory: 1Gi}}}}}}]{extra}\nstatus: {{{status}}}\n"
            ))
            .expect("a Deployment"),
        )
    }

    /// A ReplicaSet of `replicas` whose controller is the Deployment of UID `deployment`.
    fn owned_set(name: &str, uid: &str, replicas: i32, deployment: &str, controller: bool) -> Arc<ReplicaSet> {
        Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: {name}, namespace: shop, uid: {uid}, ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: api, uid: {deployment}, controller: {controller}}}]}}\nspec: {{replicas: {replicas}, selector: {{matchLabels: {{app: api}}}}}}\nstatus: {{replicas: {replicas}}}\n"
            ))
            .expect("a ReplicaSet"),
        )
    }

    #[test]
    fn a_deployment_its_controller_has_not_acted_on_expects_the_replicas_its_replica_sets_lack() {
        let expect = |deployment: Arc<Deployment>, sets: &[Arc<ReplicaSet>]| {
            expected_pods(&[], sets, &[deployment], &[], |_| usize::MAX)
        };
        // New: no ReplicaSet yet (kube-controller-manager had not come to it).
        let new = expect(deployment("d1", 15, 1, "", ""), &[]);
        assert_eq!(new.len(), 15, "every replica, from the template");
        assert_eq!(new[0].requests.get("cpu"), 2000, "the template's requests");
        assert!(new.iter().all(|pod| pod.key.starts_with("shop/api:deployment:expected:") && is_expected(&pod.key)));
        assert!(new.iter().all(|pod| Arc::ptr_eq(&pod.shape, &new[0].shape)), "one shape, shared");
        // Scaled from 10 to 40: the 30 its ReplicaSets do not hold yet (the set's own pods are
        // the set's to expect, here all tried).
        let scaled = deployment("d1", 40, 2, "", "observedGeneration: 1");
        assert_eq!(expect(scaled.clone(), &[owned_set("api-1", "r1", 10, "d1", true)]).len(), 30);
        let rolling = [owned_set("api-1", "r1", 6, "d1", true), owned_set("api-2", "r2", 4, "d1", true)];
        assert_eq!(expect(scaled.clone(), &rolling).len(), 30, "two revisions hold 10 together");
        for (sets, why) in [
            (vec![owned_set("api-1", "r1", 10, "d9", true)], "another Deployment's set"),
            (vec![owned_set("api-1", "r1", 10, "d1", false)], "a set it does not control"),
        ] {
            assert_eq!(expect(scaled.clone(), &sets).len(), 40, "{why} holds none of its replicas");
        }
        assert_eq!(expect(scaled.clone(), &[owned_set("api-1", "r1", 40, "d1", true)]).len(), 0, "its set holds all");
        assert_eq!(expect(scaled, &[owned_set("api-1", "r1", 50, "d1", true)]).len(), 0, "more (scaling in)");

        let failing_create =
            "observedGeneration: 1, conditions: [{type: Progressing, status: 'False', reason: FailedRSCreate}]";
        let replica_failure = "conditions: [{type: ReplicaFailure, status: 'True', reason: FailedCreate}]";
        for (deployment, why) in [
            (
                deployment("d1", 15, 3, "", "observedGeneration: 3"),
                "its controller acted on this spec: its sets say it",
            ),
            (deployment("d1", 15, 1, "\n  paused: true", ""), "paused: its controller creates no ReplicaSet"),
            (deployment("d1", 15, 2, "", failing_create), "it cannot create a ReplicaSet"),
            (deployment("d1", 15, 1, "", replica_failure), "its set cannot create pods"),
            (
                deployment("d1", 15, 1, "\n      schedulerName: batch-scheduler", ""),
                "kube-scheduler never tries its pods",
            ),
            (
                deployment("d1", 15, 1, "\n      volumes: [{name: d, persistentVolumeClaim: {claimName: d}}]", ""),
                "claims",
            ),
            (deployment("d1", -3, 1, "", ""), "replicas the API server would refuse"),
        ] {
            assert!(expect(deployment, &[]).is_empty(), "{why}");
        }
        let progressing =
            "observedGeneration: 1, conditions: [{type: Progressing, status: 'True', reason: NewReplicaSetAvailable}]";
        assert_eq!(expect(deployment("d1", 15, 2, "", progressing), &[]).len(), 15, "the control case");
        let mut going = (*deployment("d1", 15, 1, "", "")).clone();
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(expect(Arc::new(going), &[]).is_empty(), "being deleted");

        // A Deployment's pods are its ReplicaSets' (a pod naming a Deployment its controller is
        // not one of them): its expected pods are copies of its template.
        let pods = [owned_pod("api-x", "apps/v1, kind: Deployment", "api", "d1", "")];
        let templated = expected_pods(&pods, &[], &[deployment("d1", 2, 1, "", "")], &[], |_| 0);
        assert_eq!(templated[0].requests.get("cpu"), 2000, "the template's requests");
    }

    #[test]
    fn a_batch_expects_at_most_its_bound_in_name_order() {
        let pods = vec![pending("a-x", "a", "ua", ""), pending("b-x", "b", "ub", "")];
        let huge = i32::MAX;
        let sets = [replica_set("b", "ub", huge, ""), replica_set("a", "ua", huge, "")];
        let expected = expected_pods(&pods, &sets, &[], &[], |_| 1);
        assert_eq!(expected.len(), MAX_EXPECTED);
        assert!(expected.iter().all(|pod| pod.key.starts_with("shop/a:")), "the first ReplicaSet by name");
    }

    /// A Job of 1-CPU pods with these `spec` fields (one per line) and `status` fields.
    fn job(name: &str, uid: &str, spec: &[&str], status: &str) -> Arc<Job> {
        Arc::new(
            serde_saphyr::from_str(&format!(
                "metadata: {{name: {name}, namespace: shop, uid: {uid}}}\nspec:\n  {}\n  template:\n    metadata: {{labels: {{app: batch}}}}\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: i, resources: {{requests: {{cpu: '1', memory: 1Gi}}}}}}]\nstatus: {{{status}}}\n",
                spec.join("\n  ")
            ))
            .expect("a Job"),
        )
    }

    #[test]
    fn a_job_expects_the_pods_it_wants_running_less_those_tried() {
        let expect = |job: Arc<Job>, tried: usize| expected_pods(&[], &[], &[], &[job], |_| tried);
        let wide = expect(job("train", "j1", &["parallelism: 10", "completions: 100"], "active: 3"), 3);
        assert_eq!(wide.len(), 7, "parallelism 10, 3 tried");
        assert_eq!(wide[0].requests.get("cpu"), 1000, "the template's requests");
        assert!(wide.iter().all(|pod| pod.key.starts_with("shop/train:job:expected:") && is_expected(&pod.key)));
        assert!(wide.iter().all(|pod| Arc::ptr_eq(&pod.shape, &wide[0].shape)), "one shape, shared");

        let count = |spec: &[&str], status: &str, tried: usize| expect(job("j", "j1", spec, status), tried).len();
        assert_eq!(count(&["parallelism: 10", "completions: 12"], "succeeded: 8", 1), 3, "4 completions lacking");
        assert_eq!(count(&["parallelism: 5"], "", 0), 5, "a work queue starts its parallelism");
        assert_eq!(count(&["parallelism: 5"], "succeeded: 1, active: 2", 2), 0, "and no pod once one succeeded");
        assert_eq!(count(&["completions: 3"], "", 0), 1, "parallelism 1 by default");
        assert_eq!(count(&["parallelism: 4", "managedBy: kubernetes.io/job-controller"], "", 0), 4);
        for (spec, status, why) in [
            (vec!["parallelism: 4", "suspend: true"], "", "suspended (Kueue queues a Job so)"),
            (vec!["parallelism: 4", "managedBy: kueue.x-k8s.io/multikueue"], "", "another controller creates its pods"),
            (vec!["parallelism: 4"], "conditions: [{type: FailureTarget, status: 'True'}]", "failing"),
            (vec!["parallelism: 4"], "conditions: [{type: SuccessCriteriaMet, status: 'True'}]", "succeeding"),
            (vec!["parallelism: 4"], "conditions: [{type: Complete, status: 'True'}]", "complete"),
            (vec!["parallelism: 4", "completions: 4"], "succeeded: 9", "more succeeded than its completions"),
            (vec!["parallelism: -4"], "", "a parallelism the API server would refuse"),
        ] {
            assert_eq!(count(&spec, status, 0), 0, "{why}");
        }
        assert_eq!(count(&["parallelism: 4"], "conditions: [{type: Complete, status: 'False'}]", 0), 4, "control");
        // Counted as the Job controller counts: succeeded pods its status has yet to count, an
        // Indexed Job's failed indexes (never retried), terminating pods a Job that replaces only
        // failed ones waits for.
        let uncounted = "succeeded: 6, uncountedTerminatedPods: {succeeded: [a, b], failed: [c]}";
        assert_eq!(count(&["parallelism: 10", "completions: 10"], uncounted, 0), 2, "8 succeeded");
        let indexed = ["parallelism: 10", "completions: 10", "completionMode: Indexed", "backoffLimitPerIndex: 0"];
        assert_eq!(count(&indexed, "succeeded: 2, failedIndexes: '1,3-5'", 0), 4, "4 failed indexes");
        assert_eq!(count(&indexed, "succeeded: 2, failedIndexes: 'x,9-8,7'", 0), 7, "only what reads counts");
        let huge = "succeeded: 2, failedIndexes: '0-9223372036854775807,5'";
        assert_eq!(count(&indexed, huge, 0), 0, "a range to the last i64 neither overflows nor panics");
        let replacing = ["parallelism: 5", "podReplacementPolicy: Failed"];
        assert_eq!(count(&replacing, "terminating: 3", 0), 2, "waits for its terminating pods");
        assert_eq!(count(&["parallelism: 5"], "terminating: 3", 0), 5, "replaces terminating pods at once");
        assert_eq!(count(&["parallelism: 4"], "active: 4", 4), 0, "every pod tried");

        // A pending pod of the Job is copied rather than its template; a ReplicaSet of the same
        // name expects pods of its own keys.
        let pod = owned_pod("train-x", "batch/v1, kind: Job", "train", "j1", "");
        let jobs = [job("train", "j1", &["parallelism: 2"], "active: 1")];
        let both =
            expected_pods(&[pod], &[with_template("train", "u1", 2, "")], &[], &jobs, |uid| usize::from(uid == "j1"));
        let keys: BTreeSet<&str> = both.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["shop/train:expected:0", "shop/train:expected:1", "shop/train:job:expected:0"])
        );
        let copied = both.iter().find(|p| p.key.contains(":job:")).expect("the Job's pod");
        assert_eq!(copied.requests.get("cpu"), 500, "the pending pod's requests");
        let cron_job_pod = owned_pod("train-x", "batch/v1, kind: CronJob", "train", "j1", "");
        let templated = expected_pods(&[cron_job_pod], &[], &[], &jobs, |_| 1);
        assert_eq!(templated[0].requests.get("cpu"), 1000, "only a Job's or ReplicaSet's pod stands for its pods");
    }
}
