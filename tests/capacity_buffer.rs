//! CapacityBuffers with the whole controller, on the local control plane and the AWS emulator: a
//! buffer of fixed `replicas` pulls in a spare node that emptiness never removes; a buffer at a
//! `percentage` of a Deployment keeps room beside it, a new replica of the Deployment starts on
//! that room without a launch, and scaling the Deployment resizes the buffer; references that
//! cannot be resolved are reported in the buffer's conditions, and fixed ones recover; a Virtual
//! WarmPool keeps its (limited) room as a CapacityBuffer instead of pause pods.

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::apis::{CapacityBuffer, NodeClaim, WarmPool};
use support::apply;

/// A NodePool of c6a.xlarge only (3,920m allocatable CPU: two 1,800m chunks fill a node) that
/// removes empty nodes 5 s after they empty.
fn pool(name: &str) -> serde_json::Value {
    let disruption = json!({"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5s"});
    support::on_demand_pool(name, "buffers", "c6a.xlarge", disruption)
}

fn buffer(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "autoscaling.x-k8s.io/v1beta1", "kind": "CapacityBuffer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec
    })
}

fn pod_template(name: &str, pool: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "PodTemplate",
        "metadata": {"name": name, "namespace": "default"},
        "template": {"spec": {
            "nodeSelector": {"stoker.dev/nodepool": pool},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "1800m", "memory": "512Mi"}}}]
        }}
    })
}

async fn claim_names(client: &Client, pool: &str) -> BTreeSet<String> {
    support::claims_of(client, pool).await.iter().map(ResourceExt::name_any).collect()
}

/// The buffer's (ReadyForProvisioning reason, Ready reason, status.replicas).
async fn buffer_state(client: &Client, name: &str) -> Option<(String, String, Option<i32>)> {
    let buffers: Api<CapacityBuffer> = Api::namespaced(client.clone(), "default");
    let status = buffers.get(name).await.ok()?.status?;
    let reason = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.reason.clone());
    Some((reason("ReadyForProvisioning")?, reason("Ready")?, status.replicas))
}

async fn wait_for_buffer(client: &Client, name: &str, resolved: &str, ready: &str, replicas: Option<i32>) {
    let wanted = (resolved.to_owned(), ready.to_owned(), replicas);
    let reached = support::wait_until(Duration::from_secs(120), || async {
        (buffer_state(client, name).await? == wanted).then_some(())
    })
    .await;
    assert!(reached.is_some(), "buffer {name} never reached {wanted:?}; it is {:?}", buffer_state(client, name).await);
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn capacity_buffers_keep_spare_nodes_that_real_pods_start_on() {
    let client = support::client().await;
    support::start_stoker(&client, "buffers").await;
    let claims: Api<NodeClaim> = Api::all(client.clone());

    // The schema refuses what CEL can check: both references at once.
    let both = buffer(
        "both",
        json!({"podTemplateRef": {"name": "t"}, "scalableRef": {"kind": "Deployment", "name": "d"}, "replicas": 1}),
    );
    let refused = support::dry_run_create(&client, &both).await.expect_err("both references are refused");
    assert!(refused.to_string().contains("podTemplateRef or scalableRef"), "{refused}");

    // 1. Two chunks of 1,800m: one spare node, which emptiness never removes.
    apply(&client, pool("spare")).await;
    apply(&client, pod_template("chunk", "spare")).await;
    apply(&client, buffer("spare", json!({"podTemplateRef": {"name": "chunk"}, "replicas": 2}))).await;
    wait_for_buffer(&client, "spare", "Resolved", "FitsExistingCapacity", Some(2)).await;
    let spare = claim_names(&client, "spare").await;
    assert_eq!(spare.len(), 1, "two chunks fill one c6a.xlarge: {spare:?}");
    let initialized = support::wait_until(Duration::from_secs(60), || async {
        let claim = claims.get(spare.first()?).await.ok()?;
        claim.status?.conditions.iter().any(|c| c.type_ == "Initialized" && c.status == "True").then_some(())
    })
    .await;
    assert!(initialized.is_some(), "the spare node initialized");
    // Empty past the 15 s settling time and consolidateAfter (5 s), with room to spare: still there.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(claim_names(&client, "spare").await, spare, "the buffer's node is neither removed nor replaced");

    // Without the buffer the node is empty, and goes.
    let buffers: Api<CapacityBuffer> = Api::namespaced(client.clone(), "default");
    buffers.delete("spare", &DeleteParams::default()).await.expect("delete buffer");
    let emptied = support::wait_until(Duration::from_secs(90), || async {
        claim_names(&client, "spare").await.is_empty().then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the node no buffer holds is removed as empty");

    // 2. A buffer at 50% of a two-replica Deployment: one chunk beside it, on a second node.
    apply(&client, pool("relative")).await;
    apply(&client, support::deployment("checkout", 2, "1800m", json!({"stoker.dev/nodepool": "relative"}))).await;
    apply(
        &client,
        buffer(
            "checkout",
            json!({"scalableRef": {"apiGroup": "apps", "kind": "Deployment", "name": "checkout"}, "percentage": 50}),
        ),
    )
    .await;
    wait_for_buffer(&client, "checkout", "Resolved", "FitsExistingCapacity", Some(1)).await;
    let running = support::wait_until(Duration::from_secs(120), || async {
        (support::running(&client, "checkout").await == 2).then_some(())
    })
    .await;
    assert!(running.is_some(), "the Deployment's two pods run");
    let before = claim_names(&client, "relative").await;
    assert_eq!(before.len(), 2, "one node for the two replicas, one for the chunk: {before:?}");
    let nodes: Api<Node> = Api::all(client.clone());
    let node_names: BTreeSet<String> = nodes
        .list(&ListParams::default().labels("stoker.dev/nodepool=relative"))
        .await
        .expect("nodes")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();

    // A third replica starts on the buffer's room, on a node that was already there; the buffer
    // grows to 2 chunks (50% of 3, rounded up) and pulls in the capacity behind it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let scale = json!({"spec": {"replicas": 3}});
    deployments.patch("checkout", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale up");
    let third = support::wait_until(Duration::from_secs(120), || async {
        let pods = support::pods_of(&client, "checkout").await;
        let running: Vec<&Pod> =
            pods.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).collect();
        (running.len() == 3)
            .then(|| running.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect::<Vec<_>>())
    })
    .await
    .expect("the third replica runs");
    assert!(
        third.iter().all(|node| node_names.contains(node)),
        "every replica runs on a node that predates it: {third:?} vs {node_names:?}"
    );
    wait_for_buffer(&client, "checkout", "Resolved", "FitsExistingCapacity", Some(2)).await;
    let after = claim_names(&client, "relative").await;
    assert_eq!(after.len(), 3, "the buffer refilled behind the real pod: {after:?}");
    assert!(before.is_subset(&after));

    // 3. References that cannot be resolved are reported, and recover once fixed.
    apply(&client, buffer("lost", json!({"podTemplateRef": {"name": "missing"}, "replicas": 1}))).await;
    apply(
        &client,
        buffer(
            "odd",
            json!({"scalableRef": {"apiGroup": "example.com", "kind": "CronTab", "name": "x"}, "percentage": 10}),
        ),
    )
    .await;
    wait_for_buffer(&client, "lost", "PodTemplateNotFound", "PodTemplateNotFound", None).await;
    wait_for_buffer(&client, "odd", "ResolutionFailed", "ResolutionFailed", None).await;
    let notes = support::event_notes(&client, "PodTemplateNotFound", |r| r.name.as_deref() == Some("lost")).await;
    assert!(notes.iter().any(|n| n.contains("PodTemplate missing not found")), "{notes:?}");
    let mut fixed = pod_template("missing", "relative");
    fixed["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("100m");
    apply(&client, fixed).await;
    wait_for_buffer(&client, "lost", "Resolved", "FitsExistingCapacity", Some(1)).await;

    for name in ["checkout", "lost", "odd"] {
        let _ = buffers.delete(name, &DeleteParams::default()).await;
    }
    let _ = deployments.delete("checkout", &DeleteParams::default()).await;

    // 4. A Virtual WarmPool at 20% of a ten-replica Deployment (2 pods) shaped by a PodTemplate,
    // capped by limits at 2 (3,600m): no pause pods, a CapacityBuffer of 2 chunks it owns, one
    // spare node behind it.
    apply(&client, pool("virtual")).await;
    let mut web = support::deployment("web", 10, "1m", json!({"stoker.dev/nodepool": "virtual"}));
    web["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("1Mi");
    apply(&client, web).await;
    apply(&client, pod_template("virtual-shape", "virtual")).await;
    apply(
        &client,
        json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "WarmPool",
            "metadata": {"name": "virtual", "namespace": "default"},
            "spec": {
                "scalableRef": {"kind": "Deployment", "name": "web"},
                "baselinePercentage": 20,
                "mode": "Virtual",
                "limits": {"cpu": "3600m"},
                // Shaped by a PodTemplate: its 1,800m and its node selector.
                "podTemplateRef": {"name": "virtual-shape"}
            }
        }),
    )
    .await;
    let pools: Api<WarmPool> = Api::namespaced(client.clone(), "default");
    let held = support::wait_until(Duration::from_secs(120), || async {
        let status = pools.get("virtual").await.ok()?.status?;
        (status.replicas == Some(2) && status.ready_replicas == Some(2)).then_some(())
    })
    .await;
    assert!(
        held.is_some(),
        "the virtual pool holds room for 2 pods: {:?}",
        pools.get("virtual").await.ok().and_then(|p| p.status)
    );
    wait_for_buffer(&client, "warmpool-virtual", "Resolved", "FitsExistingCapacity", Some(2)).await;
    assert_eq!(claim_names(&client, "virtual").await.len(), 1, "two 1,800m chunks fill one node");
    let pause = deployments.get("warmpool-virtual").await.expect("the pool's Deployment");
    assert_eq!(pause.spec.replicas, Some(0), "no pause pods in Virtual mode");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pause_pods = pods.list(&ListParams::default().labels("stoker.dev/warmpool=virtual")).await.expect("pods");
    assert!(pause_pods.items.is_empty(), "no pause pods in Virtual mode");

    // It follows the Deployment's scaling: 20% of 20 is 4, held at the limits' 2; 20% of 5 is 1.
    let size = || async { pools.get("virtual").await.ok()?.status?.replicas };
    let scale_web = |replicas: i32| {
        let deployments = deployments.clone();
        async move {
            let scale = json!({"spec": {"replicas": replicas}});
            deployments.patch("web", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale web");
        }
    };
    scale_web(20).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(size().await, Some(2), "the limits hold the pool at 2");
    scale_web(5).await;
    let followed =
        support::wait_until(Duration::from_secs(60), || async { (size().await == Some(1)).then_some(()) }).await;
    assert!(followed.is_some(), "the pool follows the Deployment down to 1: {:?}", size().await);
    wait_for_buffer(&client, "warmpool-virtual", "Resolved", "FitsExistingCapacity", Some(1)).await;
    pools.delete("virtual", &DeleteParams::default()).await.expect("delete the WarmPool");
    let _ = deployments.delete("web", &DeleteParams::default()).await;
}
