//! Node repair end to end: a node whose kubelet stops (kwok lets go of it and it reports
//! NotReady) is replaced after the repair threshold, without draining; its pod runs again on a
//! new node and the broken instance is terminated.

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::{
    apis::{NodeClaim, NodePool},
    cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, aws_config},
    },
};
use support::{apply, pods_of, running};

const POOL: &str = "repair";

async fn claims(client: &Client) -> Vec<NodeClaim> {
    support::claims_of(client, POOL).await
}

async fn node_of_pod(client: &Client) -> Option<String> {
    let pods: Vec<Pod> = pods_of(client, "fragile").await;
    pods.iter().find_map(|p| p.spec.as_ref()?.node_name.clone())
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_node_not_ready_past_the_threshold_is_replaced() {
    let client = support::client().await;
    let settings =
        stoker::operator::Settings { node_repair_after: "20s".parse().expect("duration"), ..support::settings() };
    support::start_stoker_with(&client, POOL, settings).await;
    let requirements = json!([support::one_of("karpenter.sh/capacity-type", &["on-demand"])]);
    apply(&client, support::nodepool(POOL, POOL, requirements, json!({"consolidateAfter": "Never"}))).await;
    apply(&client, support::deployment("fragile", 1, "500m", json!({"stoker.dev/nodepool": POOL}))).await;
    let broken = support::wait_until(Duration::from_secs(120), || async {
        (running(&client, "fragile").await == 1).then_some(())?;
        node_of_pod(&client).await
    })
    .await
    .expect("the pod runs");
    let claim = claims(&client)
        .await
        .into_iter()
        .find(|c| c.status.as_ref().and_then(|s| s.node_name.as_ref()) == Some(&broken));
    let claim = claim.expect("the node's claim");
    let instance = claim.status.as_ref().and_then(|s| s.provider_id.clone()).expect("a provider ID");

    // The kubelet stops: kwok no longer keeps the node Ready, and it reports NotReady.
    let nodes: Api<Node> = Api::all(client.clone());
    let unmanaged = json!({"metadata": {"annotations": {"kwok.x-k8s.io/node": "stopped"}}});
    nodes.patch(&broken, &PatchParams::default(), &Patch::Merge(&unmanaged)).await.expect("let go of the node");
    let now = chrono::Utc::now().to_rfc3339();
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletStopped",
        "message": "stopped by the test", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes.patch_status(&broken, &PatchParams::default(), &Patch::Strategic(&not_ready)).await.expect("NotReady");

    let repaired = support::wait_until(Duration::from_secs(180), || async {
        let gone = !claims(&client).await.iter().any(|c| c.name_any() == claim.name_any());
        let elsewhere = node_of_pod(&client).await.is_some_and(|n| n != broken);
        (gone && elsewhere && running(&client, "fragile").await == 1).then_some(())
    })
    .await;
    assert!(repaired.is_some(), "the broken node was replaced and the pod runs elsewhere");
    let events: Api<Event> = Api::all(client.clone());
    let told = events.list(&ListParams::default()).await.expect("events").items.into_iter().any(|e| {
        e.reason.as_deref() == Some("NodeRepair") && e.regarding.and_then(|r| r.name) == Some(claim.name_any())
    });
    assert!(told, "the repair is told on the claim");
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(support::cluster_info()));
    let terminated = support::wait_until(Duration::from_secs(60), || async {
        let live = provider.list().await.ok()?;
        (!live.iter().any(|i| i.provider_id == instance)).then_some(())
    })
    .await;
    assert!(terminated.is_some(), "the broken instance is terminated");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("fragile", &DeleteParams::default()).await.expect("delete deployment");
    let pools: Api<NodePool> = Api::all(client.clone());
    pools.delete(POOL, &DeleteParams::default()).await.expect("delete the pool");
    let gone =
        support::wait_until(Duration::from_secs(120), || async { claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "the pool's nodes go with it");
}
