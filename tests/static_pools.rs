//! A static NodePool (`spec.replicas`) on the local control plane and the AWS emulator, with
//! stoker's controller and the node simulator in this process: it keeps its number of nodes
//! without any pod asking, pods land on them but never make it launch more, a node that goes is
//! replaced, an empty one is never consolidated away, and lowering `replicas` removes the
//! emptiest.

mod support;

use std::{collections::BTreeSet, time::Duration};

use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::{Value, json};
use stoker::apis::{NodeClaim, NodePool};
use support::{apply, claims_of, running, wait_until};

const POOL: &str = "static";

fn static_pool(replicas: i64) -> Value {
    let requirements = json!([
        support::one_of("node.kubernetes.io/instance-type", &["m5.large", "m5.xlarge"]),
        support::one_of("karpenter.sh/capacity-type", &["on-demand"])
    ]);
    let disruption = json!({"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5s"});
    let pool =
        support::with(support::nodepool(POOL, POOL, requirements, disruption), "/spec/replicas", json!(replicas));
    support::with(pool, "/spec/limits", json!({"nodes": 3}))
}

/// The names of the pool's claims with a registered node, once there are `count` of them and
/// no others.
async fn settled(client: &Client, count: usize, timeout: Duration) -> Option<BTreeSet<String>> {
    wait_until(timeout, || async {
        let claims = claims_of(client, POOL).await;
        let ready: BTreeSet<String> = claims
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter(|c| c.status.as_ref().is_some_and(|s| s.node_name.is_some()))
            .map(|c| c.name_any())
            .collect();
        (claims.len() == count && ready.len() == count).then_some(ready)
    })
    .await
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_static_pool_keeps_its_replicas() {
    let client = support::client().await;
    support::start_stoker(&client, POOL).await;
    apply(&client, static_pool(2)).await;

    // Two nodes with no pod asking for them, the cheapest type allowed.
    let first = settled(&client, 2, Duration::from_secs(120)).await.expect("two static nodes");
    for claim in claims_of(&client, POOL).await {
        let status = claim.status.expect("status");
        assert_eq!(status.instance_type.as_deref(), Some("m5.large"), "{}", claim.metadata.name.unwrap_or_default());
        assert_eq!(status.capacity_type.as_deref(), Some("on-demand"));
    }

    // Empty past the settling time and consolidateAfter (15 s + 5 s, and a 5 s pass), the nodes
    // stay; a pod that fits none of them waits instead of making the pool launch.
    let selector = json!({"stoker.dev/nodepool": POOL});
    apply(&client, support::deployment("too-big", 1, "3", selector.clone())).await;
    tokio::time::sleep(Duration::from_secs(27)).await;
    let names: BTreeSet<String> = claims_of(&client, POOL).await.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, first, "no launch for pods, and no empty node consolidated away (consolidateAfter 5s)");

    // Pods land on them.
    apply(&client, support::deployment("on-static", 2, "500m", selector.clone())).await;
    let placed =
        wait_until(Duration::from_secs(60), || async { (running(&client, "on-static").await == 2).then_some(()) })
            .await;
    assert!(placed.is_some(), "pods run on the static nodes");

    // A node that goes is replaced (one the pods run on, so the pods move).
    let busy: BTreeSet<String> = support::pods_of(&client, "on-static")
        .await
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let listed = claims_of(&client, POOL).await;
    let on_busy =
        listed.iter().find(|c| c.status.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| busy.contains(n)));
    let gone = on_busy.unwrap_or(&listed[0]).name_any();
    claims.delete(&gone, &DeleteParams::default()).await.expect("delete a claim");
    let replaced = wait_until(Duration::from_secs(120), || async {
        let now = settled(&client, 2, Duration::from_secs(1)).await?;
        (!now.contains(&gone)).then_some(now)
    })
    .await
    .expect("the node that went was replaced");
    let stayed: BTreeSet<String> = first.iter().filter(|name| **name != gone).cloned().collect();
    assert!(stayed.is_subset(&replaced), "the other node stayed: {replaced:?}, first {first:?}");
    assert_eq!(running(&client, "too-big").await, 0, "a 3-CPU pod fits no m5.large");

    // One replica fewer: the node without the Deployment's pods goes.
    let pods = support::pods_of(&client, "on-static").await;
    let busy: BTreeSet<String> = pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    apply(&client, static_pool(1)).await;
    let kept = settled(&client, 1, Duration::from_secs(120)).await.expect("one node left");
    let kept_node = claims_of(&client, POOL).await[0].status.as_ref().and_then(|s| s.node_name.clone()).expect("node");
    if busy.len() == 1 {
        assert!(busy.contains(&kept_node), "the emptier node went; pods were on {busy:?}, {kept_node} kept");
    }
    assert_eq!(kept.len(), 1);

    // Events on the pool say what happened.
    let notes = support::event_notes(&client, "ScaledDown", |r| r.name.as_deref() == Some(POOL)).await;
    assert!(notes.iter().any(|n| n.contains("to keep 1 replica")), "{notes:?}");

    // Clean up: without the pool its NodeClaims go, and so do their instances.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "default");
    for name in ["on-static", "too-big"] {
        deployments.delete(name, &DeleteParams::default()).await.expect("delete deployment");
    }
    let pools: Api<NodePool> = Api::all(client.clone());
    pools.delete(POOL, &DeleteParams::default()).await.expect("delete the pool");
    let emptied = wait_until(Duration::from_secs(120), || async {
        claims
            .list(&ListParams::default().labels(&format!("stoker.dev/nodepool={POOL}")))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the pool's claims go with it");
    assert!(support::instances_match_claims(&client, POOL, Duration::from_secs(60)).await, "no instance left behind");
}
