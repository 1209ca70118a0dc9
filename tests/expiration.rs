//! Expiration end to end: nodes of a NodePool with a short `expireAfter` are replaced when it
//! elapses (the claim says so in an Event), their pods run again on new nodes, and the expired
//! instances are terminated.

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client, ResourceExt, api::DeleteParams};
use serde_json::json;
use stoker::{
    apis::NodeClaim,
    cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, aws_config},
    },
};
use support::{apply, pods_of, running};

const POOL: &str = "expiry";

async fn claims(client: &Client) -> Vec<NodeClaim> {
    support::claims_of(client, POOL).await
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn nodes_past_their_expire_after_are_replaced() {
    let client = support::client().await;
    support::start_stoker(&client, POOL).await;
    let requirements = json!([support::one_of("karpenter.sh/capacity-type", &["on-demand"])]);
    let pool = support::nodepool(POOL, POOL, requirements, json!({"consolidateAfter": "Never"}));
    apply(&client, support::with(pool, "/spec/template/spec/expireAfter", json!("45s"))).await;
    apply(&client, support::deployment("aging", 2, "500m", json!({"stoker.dev/nodepool": POOL}))).await;
    let first = support::wait_until(Duration::from_secs(120), || async {
        let names: BTreeSet<String> = claims(&client).await.iter().map(|c| c.name_any()).collect();
        (running(&client, "aging").await == 2 && !names.is_empty()).then_some(names)
    })
    .await
    .expect("the pods run");
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(support::cluster_info()));
    let first_ids: BTreeSet<String> = claims(&client)
        .await
        .iter()
        .filter(|c| first.contains(&c.name_any()))
        .filter_map(|c| c.status.as_ref()?.provider_id.clone())
        .collect();

    // Past 45 s the first nodes go, and the pods run on new ones.
    let replaced = support::wait_until(Duration::from_secs(180), || async {
        let now: BTreeSet<String> = claims(&client).await.iter().map(|c| c.name_any()).collect();
        let nodes: BTreeSet<String> =
            pods_of(&client, "aging").await.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
        let on_first = claims(&client)
            .await
            .iter()
            .filter(|c| first.contains(&c.name_any()))
            .any(|c| c.status.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| nodes.contains(n)));
        (now.is_disjoint(&first) && !on_first && running(&client, "aging").await == 2).then_some(())
    })
    .await;
    assert!(replaced.is_some(), "the expired nodes were replaced and the pods run again");

    let expired = support::events(&client, "Expired", |r| r.name.as_ref().is_some_and(|n| first.contains(n))).await;
    assert!(!expired.is_empty(), "the expired claims say why");
    let terminated = support::wait_until(Duration::from_secs(60), || async {
        let live: BTreeSet<String> = provider.list().await.ok()?.into_iter().map(|i| i.provider_id).collect();
        live.is_disjoint(&first_ids).then_some(())
    })
    .await;
    assert!(terminated.is_some(), "the expired instances are terminated");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("aging", &DeleteParams::default()).await.expect("delete deployment");
    let api: Api<stoker::apis::NodePool> = Api::all(client.clone());
    api.delete(POOL, &DeleteParams::default()).await.expect("delete the pool");
    let gone =
        support::wait_until(Duration::from_secs(120), || async { claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "the pool's nodes go with it");
}
