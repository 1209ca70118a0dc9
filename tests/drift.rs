//! Drift end to end: a NodePool's template label changes, so every node of the pool is drifted
//! (condition `Drifted` on its claim); they are replaced one at a time, as the default budget of
//! 10% allows, replacement first, with no pod lost and no instance leaked.

mod support;

use std::{
    cell::{Cell, RefCell},
    collections::BTreeSet,
    time::Duration,
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::apis::{NodeClaim, NodePool, condition, labels};
use support::{apply, running};

const POOL: &str = "drift";

async fn claims(client: &Client) -> Vec<NodeClaim> {
    support::claims_of(client, POOL).await
}

fn marked_drifted(claim: &NodeClaim) -> bool {
    claim.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == condition::DRIFTED && c.status == "True")
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_changed_nodepool_template_rolls_its_nodes_one_budget_at_a_time() {
    let client = support::client().await;
    support::start_stoker(&client, POOL).await;
    let pool = |team: &str| {
        json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": POOL},
            "spec": {
                "template": {
                    "metadata": {"labels": {"team": team}},
                    "spec": {
                        "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": POOL},
                        "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}]
                    }
                },
                "disruption": {"consolidateAfter": "Never"}
            }
        })
    };
    apply(&client, pool("a")).await;
    // One pod per node (required anti-affinity): three nodes.
    let mut spread = support::deployment("rolling", 3, "500m", json!({"stoker.dev/nodepool": POOL}));
    spread["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "rolling"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    apply(&client, spread).await;
    let first: BTreeSet<String> = support::wait_until(Duration::from_secs(120), || async {
        let names: BTreeSet<String> = claims(&client).await.iter().map(|c| c.name_any()).collect();
        (running(&client, "rolling").await == 3 && names.len() == 3).then_some(names)
    })
    .await
    .expect("three pods on three nodes");

    // The template changes: every node drifts; at most one goes at a time and pods keep running.
    let pools: Api<NodePool> = Api::all(client.clone());
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"team": "b"}}}}});
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("new label");
    let (most_going, fewest_running) = (Cell::new(0), Cell::new(3));
    let seen_drifted = RefCell::new(BTreeSet::new());
    let rolled = support::wait_until(Duration::from_secs(420), || async {
        let now = claims(&client).await;
        let going = now.iter().filter(|c| first.contains(&c.name_any()) && c.metadata.deletion_timestamp.is_some());
        most_going.set(most_going.get().max(going.count()));
        seen_drifted.borrow_mut().extend(now.iter().filter(|c| marked_drifted(c)).map(|c| c.name_any()));
        let up = running(&client, "rolling").await;
        fewest_running.set(fewest_running.get().min(up));
        let names: BTreeSet<String> = now.iter().map(|c| c.name_any()).collect();
        (names.is_disjoint(&first) && up == 3).then_some(())
    })
    .await;
    assert!(
        rolled.is_some(),
        "every drifted node replaced: {:?}",
        claims(&client).await.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(most_going.get(), 1, "the 10% budget lets one node of three go at a time");
    let fewest = fewest_running.get();
    assert!(fewest >= 2, "replacement first: at most the moving pod is down ({fewest} running)");
    assert!(!seen_drifted.borrow().is_disjoint(&first), "drifted claims are marked");
    let nodes: Api<Node> = Api::all(client.clone());
    let selector = format!("{}={POOL}", labels::NODEPOOL);
    for node in nodes.list(&ListParams::default().labels(&selector)).await.expect("nodes").items {
        assert_eq!(
            node.labels().get("team").map(String::as_str),
            Some("b"),
            "{} carries the new label",
            node.name_any()
        );
    }

    // No instance leaked: the pool's instances are exactly its claims'.
    assert!(support::instances_match_claims(&client, POOL, Duration::from_secs(90)).await, "no instance leaked");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("rolling", &DeleteParams::default()).await.expect("delete deployment");
    pools.delete(POOL, &DeleteParams::default()).await.expect("delete the pool");
    let gone =
        support::wait_until(Duration::from_secs(120), || async { claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "the pool's nodes go with it");
}
