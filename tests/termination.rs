//! Termination end to end, with stoker in this process against the local control plane and the
//! EC2 emulator:
//!
//! - a node whose instance is gone does not wait for evictions: a single-replica StatefulSet
//!   guarded by a `minAvailable: 1` PodDisruptionBudget would block its drain forever, yet the
//!   claim goes and the pod runs again on a new node;
//! - a drain as Karpenter does it: a do-not-disrupt pod stays until the NodePool's
//!   `terminationGracePeriod`, a pod tolerating stoker's disruption taint is never evicted, any
//!   other pod is evicted at once;
//! - stoker's finalizers, on any kind: added and released without ever dropping a finalizer
//!   another controller holds, kept while cleanup is in progress.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::{Value, json};
use stoker::apis::NodeClaim;
use support::{apply, wait_until};

fn pool(name: &str, grace: Option<&str>) -> Value {
    let requirements = json!([support::one_of("node.kubernetes.io/instance-type", &["c6a.xlarge"])]);
    let pool = support::nodepool(name, "term", requirements, json!({"consolidateAfter": "Never"}));
    match grace {
        Some(grace) => support::with(pool, "/spec/template/spec/terminationGracePeriod", json!(grace)),
        None => pool,
    }
}

async fn claims_of(client: &Client, pool: &str) -> Vec<NodeClaim> {
    let api: Api<NodeClaim> = Api::all(client.clone());
    api.list(&ListParams::default().labels(&format!("stoker.dev/nodepool={pool}"))).await.expect("claims").items
}

async fn pod(client: &Client, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default").get_opt(name).await.ok().flatten()
}

fn running_on(pod: &Pod) -> Option<String> {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|_| running && pod.metadata.deletion_timestamp.is_none())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn termination_skips_dead_instances_and_drains_like_karpenter() {
    let client = support::client().await;
    support::start_stoker(&client, "term").await;

    // 1. A dead instance under a PDB that forbids every eviction.
    apply(&client, pool("term-dead", None)).await;
    apply(
        &client,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db", "namespace": "default"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}}),
    )
    .await;
    apply(
        &client,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
               "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}},
                                     "spec": {"nodeSelector": {"stoker.dev/nodepool": "term-dead"}, "terminationGracePeriodSeconds": 0,
                                              "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                                              "resources": {"requests": {"cpu": "1"}}}]}}}}),
    )
    .await;
    let first = wait_until(Duration::from_secs(120), || async { running_on(&pod(&client, "db-0").await?) }).await;
    let first = first.expect("db-0 runs on a stoker node");
    let claim = claims_of(&client, "term-dead").await.into_iter().next().expect("the db's NodeClaim");
    let instance = claim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .expect("launched")
        .rsplit('/')
        .next()
        .expect("an id")
        .to_owned();
    let ec2 = stoker::cloudprovider::aws::ec2_client(None).await;
    ec2.terminate_instances()
        .instance_ids(&instance)
        .send()
        .await
        .expect("terminate the instance behind stoker's back");
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let deleted = Instant::now();
    claims.delete(&claim.name_any(), &DeleteParams::default()).await.expect("delete the claim");
    let gone = wait_until(Duration::from_secs(60), || async {
        claims.get_opt(&claim.name_any()).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "a claim whose instance is gone terminates despite the PodDisruptionBudget");
    println!("dead node's claim gone {:.1}s after its deletion", deleted.elapsed().as_secs_f64());
    let again = wait_until(Duration::from_secs(180), || async {
        running_on(&pod(&client, "db-0").await?).filter(|node| *node != first)
    })
    .await;
    assert!(again.is_some(), "db-0 runs again on a new node");
    let statefulsets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), "default");
    statefulsets.delete("db", &DeleteParams::default()).await.expect("delete the StatefulSet");
    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    budgets.delete("db", &DeleteParams::default()).await.expect("delete the PDB");

    // 2. A drain with a protected, a tolerant and a plain pod on one node, 40 s of grace.
    apply(&client, pool("term-drain", Some("40s"))).await;
    let bare = |name: &str, extra: Value| {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                             "spec": {"nodeSelector": {"stoker.dev/nodepool": "term-drain"}, "terminationGracePeriodSeconds": 0,
                                      "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                                      "resources": {"requests": {"cpu": "500m"}}}]}});
        if let Value::Object(extra) = extra {
            for (pointer, value) in extra {
                pod = support::with(pod, &pointer, value);
            }
        }
        pod
    };
    apply(&client, bare("plain", json!({}))).await;
    apply(&client, bare("protected", json!({"/metadata/annotations": {"karpenter.sh/do-not-disrupt": "true"}}))).await;
    apply(
        &client,
        bare("tolerant", json!({"/spec/tolerations": [{"key": "stoker.dev/disrupted", "operator": "Exists"}]})),
    )
    .await;
    let placed = wait_until(Duration::from_secs(120), || async {
        let mut nodes = Vec::new();
        for name in ["plain", "protected", "tolerant"] {
            nodes.push(running_on(&pod(&client, name).await?)?);
        }
        nodes.dedup();
        (nodes.len() == 1).then_some(())
    })
    .await;
    assert!(placed.is_some(), "the three pods run on one node");
    let claim = claims_of(&client, "term-drain").await.into_iter().next().expect("the drain's NodeClaim");
    let deleted = Instant::now();
    claims.delete(&claim.name_any(), &DeleteParams::default()).await.expect("delete the claim");
    let plain_gone =
        wait_until(Duration::from_secs(20), || async { pod(&client, "plain").await.is_none().then_some(()) }).await;
    assert!(plain_gone.is_some(), "the plain pod is evicted at once");
    tokio::time::sleep(Duration::from_secs(10)).await;
    for name in ["protected", "tolerant"] {
        let kept = pod(&client, name).await.expect("still there");
        assert!(kept.metadata.deletion_timestamp.is_none(), "{name} is not evicted within the grace period");
    }
    let finished = wait_until(Duration::from_secs(90), || async {
        claims.get_opt(&claim.name_any()).await.ok()?.is_none().then_some(())
    })
    .await;
    let took = deleted.elapsed();
    assert!(finished.is_some(), "the drain ends once the grace period is over");
    assert!(
        took >= Duration::from_secs(38),
        "the do-not-disrupt pod held the drain for the grace period, not {took:?}"
    );
    println!("drain with a do-not-disrupt pod and 40 s of grace took {:.1}s", took.as_secs_f64());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["protected", "tolerant"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn finalizers_never_drop_another_controllers_and_wait_for_cleanup() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::controller::Action;
    use stoker::controllers::finalizer::{self, Cleanup};

    const OURS: &str = "stoker.dev/termination";
    const THEIRS: &str = "example.com/theirs";
    let client = support::client().await;
    support::fresh_namespace(&client, "finalizers").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "finalizers");
    let created: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": [THEIRS]}})).unwrap();
    let read = api.create(&Default::default(), &created).await.expect("create");
    let finalizers = |object: &ConfigMap| object.finalizers().to_vec();

    finalizer::add(&api, &read, OURS).await.expect("add to the list as read");
    let held = api.get("held").await.unwrap();
    assert_eq!(finalizers(&held), [THEIRS, OURS]);

    // Another controller drops its finalizer after we read: our release, from the stale object,
    // must not remove whatever now sits at the index we saw.
    let theirs_gone = json!([{"op": "remove", "path": "/metadata/finalizers/0"}]);
    let patch: json_patch::Patch = serde_json::from_value(theirs_gone).unwrap();
    api.patch("held", &Default::default(), &kube::api::Patch::<()>::Json(patch)).await.expect("their release");
    assert!(finalizer::release(&api, &held, OURS).await.is_err(), "a stale release must fail its test");
    assert_eq!(finalizers(&api.get("held").await.unwrap()), [OURS]);

    // A stale add fails the same way instead of overwriting the list.
    let mut stale = held.clone();
    stale.metadata.finalizers = Some(vec![THEIRS.into()]);
    assert!(finalizer::add(&api, &stale, "example.com/third").await.is_err(), "a stale add must fail its test");
    assert_eq!(finalizers(&api.get("held").await.unwrap()), [OURS]);

    // Deleted: cleanup in progress keeps the finalizer, done releases it and the object goes.
    api.delete("held", &DeleteParams::default()).await.expect("delete");
    let deleting = api.get("held").await.unwrap();
    let applied = || async { panic!("apply runs only for live objects") };
    let waiting = finalizer::reconcile(&api, OURS, &deleting, applied, || async {
        Ok(Cleanup::InProgress(Action::requeue(Duration::from_secs(5))))
    })
    .await
    .expect("in progress");
    assert_eq!(waiting, Action::requeue(Duration::from_secs(5)));
    assert_eq!(finalizers(&api.get("held").await.unwrap()), [OURS]);
    finalizer::reconcile(&api, OURS, &deleting, applied, || async { Ok(Cleanup::Done) }).await.expect("done");
    assert!(api.get_opt("held").await.unwrap().is_none(), "released: nothing holds the object any more");
}
