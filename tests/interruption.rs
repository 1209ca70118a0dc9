//! Interruptions end to end, with the emulator serving SQS: messages that are not JSON, events of
//! another kind and a warning for an instance no NodeClaim owns are deleted from the queue and
//! change nothing; a spot interruption warning (delivered twice) drains its node, whose pods run
//! again on a new node, and its claim goes; a state change to terminated removes a claim at once.

mod support;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use stoker::{
    apis::{NodeClaim, NodePool},
    cloudprovider::aws::{aws_config, instances::instance_id},
};
use support::{apply, running};

const POOL: &str = "interrupted";
const QUEUE: &str = "stoker-interruptions";

async fn claims(client: &Client) -> Vec<NodeClaim> {
    support::claims_of(client, POOL).await
}

/// An EventBridge event as EventBridge delivers it to SQS.
fn event(source: &str, detail_type: &str, detail: serde_json::Value) -> String {
    json!({
        "version": "0", "id": "e2e", "detail-type": detail_type, "source": source,
        "account": "123456789012", "time": chrono::Utc::now().to_rfc3339(), "region": "us-east-1",
        "resources": [], "detail": detail
    })
    .to_string()
}

fn spot_warning(instance: &str) -> String {
    event(
        "aws.ec2",
        "EC2 Spot Instance Interruption Warning",
        json!({"instance-id": instance, "instance-action": "terminate"}),
    )
}

/// The claim's instance ID.
fn instance_of(claim: &NodeClaim) -> String {
    let provider_id = claim.status.as_ref().and_then(|s| s.provider_id.as_deref()).expect("launched");
    instance_id(provider_id).expect("an instance ID").to_owned()
}

struct Queue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    async fn send(&self, body: &str) {
        self.sqs.send_message().queue_url(&self.url).message_body(body).send().await.expect("send a message");
    }

    /// Messages waiting or being handled.
    async fn depth(&self) -> usize {
        let reply = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        let attributes = reply.attributes().cloned().unwrap_or_default();
        attributes.values().filter_map(|count| count.parse::<usize>().ok()).sum()
    }

    async fn drained(&self) -> bool {
        support::wait_until(Duration::from_secs(60), || async { (self.depth().await == 0).then_some(()) })
            .await
            .is_some()
    }
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn interruptions_drain_and_replace_nodes_and_garbage_changes_nothing() {
    let client = support::client().await;
    let config = aws_config(None).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let created = sqs.create_queue().queue_name(QUEUE).send().await.expect("create the queue");
    let queue = Queue { url: created.queue_url().expect("a queue URL").to_owned(), sqs };
    let settings = stoker::operator::Settings { interruption_queue: Some(QUEUE.into()), ..support::settings() };
    let metrics = support::start_stoker_with(&client, POOL, settings).await;
    let requirements = json!([support::one_of("karpenter.sh/capacity-type", &["spot"])]);
    apply(&client, support::nodepool(POOL, POOL, requirements, json!({"consolidateAfter": "Never"}))).await;
    apply(&client, support::deployment("interrupted", 2, "500m", json!({"stoker.dev/nodepool": POOL}))).await;
    let first = support::wait_until(Duration::from_secs(120), || async {
        let now = claims(&client).await;
        let launched = now.len() == 1 && now[0].status.as_ref().is_some_and(|s| s.provider_id.is_some());
        (launched && running(&client, "interrupted").await == 2).then(|| now[0].clone())
    })
    .await
    .expect("two pods on one spot node");

    // Garbage, another kind of event, and a warning for an instance no claim owns: deleted, and
    // nothing else happens.
    for body in [
        "not json".to_owned(),
        "{\"detail-type\": 42}".to_owned(),
        event("aws.s3", "Object Created", json!({"bucket": {"name": "b"}})),
        spot_warning("i-0123456789abcdef0"),
    ] {
        queue.send(&body).await;
    }
    assert!(queue.drained().await, "every message deleted");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = claims(&client).await;
    assert_eq!(now.len(), 1, "no claim made or deleted");
    assert!(now[0].metadata.deletion_timestamp.is_none(), "the node is untouched");

    // The warning for the node's instance, delivered twice: the node is drained, its pods run on
    // a new node, and its claim goes.
    let warning = spot_warning(&instance_of(&first));
    queue.send(&warning).await;
    queue.send(&warning).await;
    let replaced = support::wait_until(Duration::from_secs(180), || async {
        let now = claims(&client).await;
        let moved = now.len() == 1 && now[0].name_any() != first.name_any();
        let launched = moved && now[0].status.as_ref().is_some_and(|s| s.provider_id.is_some());
        (launched && running(&client, "interrupted").await == 2).then(|| now[0].clone())
    })
    .await;
    let second = replaced.expect("the pods run again on a new node and the interrupted claim is gone");
    assert!(queue.drained().await, "handled messages are deleted");
    let told = support::event_notes(&client, "Interrupted", |o| o.name.as_deref() == Some(&first.name_any())).await;
    assert!(told.iter().any(|n| n.contains("Spot interruption")), "the claim says why: {told:?}");
    // The replacement was created at once, by the interruption: the claim's Event names it.
    let replacement = format!("replaced by nodeclaim/{}", second.name_any());
    assert!(told.iter().any(|n| n.contains(&replacement)), "the Event names the replacement: {told:?}");

    // A state change to terminated removes the claim at once.
    let terminated = event(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        json!({"instance-id": instance_of(&second), "state": "terminated"}),
    );
    queue.send(&terminated).await;
    let removed = support::wait_until(Duration::from_secs(60), || async {
        claims(&client).await.iter().all(|c| c.name_any() != second.name_any()).then_some(())
    })
    .await;
    assert!(removed.is_some(), "the terminated instance's claim is deleted");

    let exported = support::scrape(&metrics).await;
    for sample in [
        "stoker_interruption_messages_total{kind=\"malformed\"} 2",
        "stoker_interruption_messages_total{kind=\"unknown\"} 1",
        "stoker_interruption_messages_total{kind=\"spot_interruption\"} 3",
        "stoker_interruption_messages_total{kind=\"state_change\"} 1",
        "stoker_interruption_actions_total{action=\"none\"} 1",
        // One replacement and one drain, though the warning came twice.
        "stoker_interruption_replacement_seconds_count 1",
        "stoker_interruption_drain_seconds_count 1",
    ] {
        assert!(exported.lines().any(|line| line == sample), "{sample} not in:\n{exported}");
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("interrupted", &DeleteParams::default()).await.expect("delete deployment");
    let pools: Api<NodePool> = Api::all(client.clone());
    pools.delete(POOL, &DeleteParams::default()).await.expect("delete the pool");
    let gone =
        support::wait_until(Duration::from_secs(120), || async { claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "the pool's nodes go with it");
    assert!(support::instances_match_claims(&client, POOL, Duration::from_secs(60)).await, "no instance leaked");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let selector = format!("stoker.dev/nodepool={POOL}");
    assert!(nodes.list(&ListParams::default().labels(&selector)).await.expect("nodes").items.is_empty());
}
