//! Emptiness and nominations end to end on the local control plane and the AWS emulator: a node
//! the provisioner counts on for a pending pod is not removed as empty while the pod waits for
//! it, however long past `consolidateAfter`, and goes once nothing waits for it any more; the pod
//! is told once (a `Nominated` Event) which node it should schedule on.
//!
//! The waiting pod names a scheduler that does not run, so kube-scheduler never binds it and it
//! stays pending as long as the test needs; its `Unschedulable` condition is set by the test, as a
//! scheduler would after a failed try. That is the state a burst leaves pods in while
//! kube-scheduler works through its queue.

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use stoker::apis::{NodeClaim, labels};
use support::{apply, deployment, running};

const POOL: &str = "nominee";

/// Names of the pool's NodeClaims, and whether any is being deleted.
async fn claim_names(client: &Client) -> (BTreeSet<String>, bool) {
    let claims: Vec<NodeClaim> = support::claims_of(client, POOL).await;
    let deleting = claims.iter().any(|c| c.metadata.deletion_timestamp.is_some());
    (claims.iter().map(ResourceExt::name_any).collect(), deleting)
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_node_a_pending_pod_is_nominated_to_outlives_consolidate_after_then_goes() {
    let client = support::client().await;
    support::start_stoker(&client, POOL).await;
    // c6a.xlarge (3,920m allocatable): room for both 1-CPU pods on one node.
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    apply(&client, support::on_demand_pool(POOL, POOL, "c6a.xlarge", disruption)).await;
    let on_pool = json!({ labels::NODEPOOL: POOL });

    // One node, holding one pod.
    apply(&client, deployment("holder", 1, "1", on_pool.clone())).await;
    let up = support::wait_until(Duration::from_secs(120), || async {
        (running(&client, "holder").await == 1).then_some(())
    })
    .await;
    assert!(up.is_some(), "the holder runs");
    let (node_claims, _) = claim_names(&client).await;
    assert_eq!(node_claims.len(), 1, "one node for the holder: {node_claims:?}");

    // A pod no running scheduler will bind, marked unschedulable as after a failed try: the
    // provisioner places it on the node's free room and nominates the node for it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let waiting: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "waiting", "namespace": "default"},
        "spec": {
            "schedulerName": "not-running",
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": on_pool,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "1", "memory": "256Mi"}}}]
        }
    }))
    .expect("a pod");
    let waiting = pods.create(&PostParams::default(), &waiting).await.expect("create the waiting pod");
    let failed_try = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "waiting for its turn", "lastTransitionTime": chrono::Utc::now().to_rfc3339()
    }]}});
    pods.patch_status("waiting", &PatchParams::default(), &Patch::Strategic(&failed_try))
        .await
        .expect("mark the pod unschedulable");
    // Two batches' worth (the periodic check runs every 10 s): placed on the node, nothing launched.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(claim_names(&client).await, (node_claims.clone(), false), "the pod fits the node: no launch");

    // The holder goes: the node is empty, but nominated for the waiting pod. Well past
    // consolidateAfter (5 s) and past a nomination's 20 s, renewed by every batch, it stays.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("holder", &DeleteParams::default()).await.expect("delete the holder");
    let emptied = support::wait_until(Duration::from_secs(60), || async {
        support::pods_of(&client, "holder").await.is_empty().then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the holder's pod is gone");
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = claim_names(&client).await;
        assert_eq!(now, (node_claims.clone(), false), "the nominated empty node is kept, nothing launched");
    }

    // Told where it should schedule, once, though every batch placed it there again.
    let claim = node_claims.first().expect("the node's claim");
    let told = support::events(&client, "Nominated", |r| r.uid.is_some() && r.uid == waiting.uid()).await;
    assert_eq!(told.len(), 1, "one Nominated Event: {told:?}");
    assert_eq!(told[0].note.as_deref(), Some(format!("Pod should schedule on: nodeclaim/{claim}").as_str()));
    assert!(told[0].series.is_none(), "told once, not every batch: {:?}", told[0].series);

    // Nothing waits for it any more: it goes (nomination lapsed, then consolidateAfter).
    pods.delete("waiting", &DeleteParams::default()).await.expect("delete the waiting pod");
    let removed = support::wait_until(Duration::from_secs(90), || async {
        claim_names(&client).await.0.is_empty().then_some(())
    })
    .await;
    assert!(removed.is_some(), "the empty node goes once no pod waits for it: {:?}", claim_names(&client).await);
    assert!(support::instances_match_claims(&client, POOL, Duration::from_secs(60)).await, "no instance leaked");
}
