//! Capacity Blocks for ML end to end on the local control plane and the EC2 emulator: a node
//! class selects a block bought for this run, a pod lands in it as its own market type
//! (`capacity-block` in the fleet and the template: the emulator refuses anything else), the
//! claim and Node are labelled with the block, and from 40 minutes before the block ends the
//! class says `expiring`, the node is drained with a `CapacityBlockEnding` Event and its pod
//! runs on an on-demand replacement. The block is bought to end 40 minutes and about 75 seconds
//! after the test starts (the emulator sells blocks that started in the past).

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node};
use kube::{Api, ResourceExt, api::DeleteParams};
use serde_json::json;
use stoker::{apis::EC2NodeClass, cloudprovider::aws::aws_config};
use support::{apply, claims_of, running};

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_capacity_block_is_launched_into_and_drained_before_it_ends() {
    let client = support::client().await;
    support::start_stoker(&client, "blocks-default").await;
    let ec2 = aws_sdk_ec2::Client::new(&aws_config(None).await);
    // A tag of this run's own, so no other reservation in the emulator can match.
    let team = format!("blocks-{}", std::process::id());
    // 24 hours long, ending 40 minutes and 75 seconds from now.
    let ends = chrono::Utc::now() + chrono::TimeDelta::minutes(40) + chrono::TimeDelta::seconds(75);
    let block = support::capacity_block(&ec2, &team, ends - chrono::TimeDelta::hours(24), 24).await;

    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!("blocks");
    class["spec"]["capacityReservationSelectorTerms"] = json!([{"tags": {"team": team}}]);
    apply(&client, class).await;
    let requirements = json!([
        support::one_of("node.kubernetes.io/instance-type", &["m5.large", "c5.large"]),
        support::one_of("karpenter.sh/capacity-type", &["reserved", "on-demand"])
    ]);
    let when_empty = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    apply(&client, support::nodepool("blocks", "blocks", requirements, when_empty)).await;
    let classes: Api<EC2NodeClass> = Api::all(client.clone());
    let state_of_block = || async {
        let status = classes.get("blocks").await.ok()?.status?;
        let resolved = status.capacity_reservations.into_iter().find(|r| r.id == block)?;
        Some((resolved.reservation_type, resolved.state, resolved.end_time.is_some()))
    };
    let resolved = support::wait_until(Duration::from_secs(30), || async { state_of_block().await }).await;
    assert_eq!(resolved, Some(("capacity-block".to_owned(), "active".to_owned(), true)));

    // The pod's node launches into the block (the emulator takes it only as its market type).
    apply(&client, support::deployment("blocks-work", 1, "1500m", json!({"stoker.dev/nodepool": "blocks"}))).await;
    let in_block = support::wait_until(Duration::from_secs(60), || async {
        let claims = claims_of(&client, "blocks").await;
        let claim = claims.into_iter().find(|c| c.status.as_ref().is_some_and(|s| s.node_name.is_some()))?;
        (running(&client, "blocks-work").await == 1).then_some(claim)
    })
    .await
    .expect("the pod runs on a launched node");
    let labels = in_block.labels();
    assert_eq!(labels.get("karpenter.sh/capacity-type").map(String::as_str), Some("reserved"));
    assert_eq!(labels.get("karpenter.k8s.aws/capacity-reservation-id"), Some(&block));
    assert_eq!(labels.get("karpenter.k8s.aws/capacity-reservation-type").map(String::as_str), Some("capacity-block"));
    let node_name = in_block.status.as_ref().and_then(|s| s.node_name.clone()).expect("its node");
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(&node_name).await.expect("its Node");
    assert_eq!(
        node.labels().get("karpenter.k8s.aws/capacity-reservation-type").map(String::as_str),
        Some("capacity-block")
    );

    // From 40 minutes before its end: the class says expiring, the node drains with an Event,
    // and the pod runs on an on-demand node (nothing more launches into the block).
    let uid = in_block.uid().expect("a UID");
    let ending = support::wait_until(Duration::from_secs(200), || async {
        let notes = support::event_notes(&client, "CapacityBlockEnding", |r| r.uid.as_deref() == Some(&uid)).await;
        notes.into_iter().next()
    })
    .await;
    let ending = ending.expect("a CapacityBlockEnding Event on the block's claim");
    assert!(ending.contains(&block) && ending.contains("draining the node"), "{ending}");
    let expiring = support::wait_until(Duration::from_secs(30), || async {
        state_of_block().await.filter(|(_, state, _)| state == "expiring").map(|_| ())
    })
    .await;
    assert!(expiring.is_some(), "the class says the block is expiring: {:?}", state_of_block().await);
    let moved = support::wait_until(Duration::from_secs(120), || async {
        let claims = claims_of(&client, "blocks").await;
        let gone = !claims.iter().any(|c| c.name_any() == in_block.name_any());
        let on_demand = claims
            .iter()
            .all(|c| c.labels().get("karpenter.sh/capacity-type").map(String::as_str) == Some("on-demand"));
        (gone && on_demand && !claims.is_empty() && running(&client, "blocks-work").await == 1).then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "the block's node went and its pod runs on-demand: {:?}",
        claims_of(&client, "blocks").await.iter().map(|c| (c.name_any(), c.labels().clone())).collect::<Vec<_>>()
    );

    // Clean up: the nodes go with their pods, and no instance is left behind.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("blocks-work", &DeleteParams::default()).await.expect("delete the Deployment");
    let gone = support::wait_until(Duration::from_secs(120), || async {
        claims_of(&client, "blocks").await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "empty nodes removed");
    assert!(support::instances_match_claims(&client, "blocks", Duration::from_secs(60)).await, "no instance leaked");
}
