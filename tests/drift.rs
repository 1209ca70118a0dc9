//! Drift end to end. A newer AMI registered in the emulator, found by the EC2NodeClass's name
//! selector, drifts every node of the class (condition `Drifted` on its claim); they are replaced
//! one at a time, as the default budget of 10% allows, replacement first, with no pod lost and no
//! instance leaked. A capacity reservation added to the class drifts nothing and takes a new
//! node; deselected, it drifts that node alone. Then a NodePool template label changes, and
//! every node drifts again.

mod support;

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use aws_sdk_ec2::types::Filter;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::{
    apis::{EC2NodeClass, NodeClaim, NodePool, condition, labels},
    cloudprovider::aws::aws_config,
};
use support::{apply, running};

const POOL: &str = "drift";

async fn claims(client: &Client) -> Vec<NodeClaim> {
    support::claims_of(client, POOL).await
}

/// The reason of the claim's `Drifted` condition, when it is true.
fn drift_reason(claim: &NodeClaim) -> Option<&str> {
    let drifted = claim.status.iter().flat_map(|s| &s.conditions).find(|c| c.type_ == condition::DRIFTED)?;
    (drifted.status == "True").then_some(drifted.reason.as_str())
}

/// Registers an image named `name` in the emulator, a copy of the seeded x86_64 EKS image
/// (created now: newer than any before).
async fn register_image(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    let seeded = ec2
        .describe_images()
        .filters(Filter::builder().name("name").values("amazon-eks-node-al2023-x86_64-*").build())
        .send()
        .await
        .expect("describe images");
    let source = seeded.images().first().and_then(|i| i.image_id()).expect("the seeded EKS image");
    let copied =
        ec2.copy_image().source_image_id(source).source_region(support::env("AWS_REGION")).name(name).send().await;
    copied.expect("copy an image").image_id().expect("an image ID").to_owned()
}

/// Waits until the class resolves exactly `image` (amd64) among its AMIs.
async fn class_resolves(client: &Client, image: &str) -> bool {
    let classes: Api<EC2NodeClass> = Api::all(client.clone());
    support::wait_until(Duration::from_secs(60), || async {
        let class = classes.get(POOL).await.ok()?;
        class.status?.amis.iter().any(|ami| ami.id == image).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_new_ami_rolls_the_nodes_one_budget_at_a_time_and_a_template_change_drifts_them() {
    let client = support::client().await;
    support::start_stoker(&client, POOL).await;
    // The class selects images by name, newest first, as teams that bake their own AMIs do.
    let ec2 = aws_sdk_ec2::Client::new(&aws_config(None).await);
    let family = format!("stoker-e2e-drift-{}", chrono::Utc::now().timestamp());
    let first_image = register_image(&ec2, &format!("{family}-1")).await;
    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!(POOL);
    class["spec"]["amiSelectorTerms"] = json!([{"name": format!("{family}-*")}]);
    class["spec"]["amiFamily"] = json!("AL2023");
    apply(&client, class).await;
    assert!(class_resolves(&client, &first_image).await, "the class selects the image by name");
    let pool = |team: &str| {
        let requirements = json!([support::one_of("karpenter.sh/capacity-type", &["on-demand"])]);
        let pool = support::nodepool(POOL, POOL, requirements, json!({"consolidateAfter": "Never"}));
        support::with(pool, "/spec/template/metadata/labels", json!({"team": team}))
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

    // A newer image: the class resolves it once it looks again (every 5 minutes, or at once on
    // an edit, as here); every node drifts; at most one goes at a time and pods keep running.
    let second_image = register_image(&ec2, &format!("{family}-2")).await;
    let classes: Api<EC2NodeClass> = Api::all(client.clone());
    let touch = json!({"metadata": {"annotations": {"e2e.stoker.dev/touched": "1"}}});
    classes.patch(POOL, &PatchParams::default(), &Patch::Merge(&touch)).await.expect("touch the class");
    assert!(class_resolves(&client, &second_image).await, "the newer image is selected");
    let (most_going, fewest_running) = (Cell::new(0), Cell::new(3));
    let seen_drifted = RefCell::new(BTreeSet::new());
    let rolled = support::wait_until(Duration::from_secs(420), || async {
        let now = claims(&client).await;
        let going = now.iter().filter(|c| first.contains(&c.name_any()) && c.metadata.deletion_timestamp.is_some());
        most_going.set(most_going.get().max(going.count()));
        let ami_drifted = now.iter().filter(|c| drift_reason(c) == Some("AMIDrifted"));
        seen_drifted.borrow_mut().extend(ami_drifted.map(|c| c.name_any()));
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
    for claim in claims(&client).await {
        let image = claim.status.as_ref().and_then(|s| s.image_id.as_deref());
        assert_eq!(image, Some(second_image.as_str()), "{} runs the new image", claim.name_any());
    }

    // No instance leaked: the pool's instances are exactly its claims'.
    assert!(support::instances_match_claims(&client, POOL, Duration::from_secs(90)).await, "no instance leaked");

    // A capacity reservation joins the class: its terms are not hashed, so no node drifts, and a
    // fourth pod gets a node in it. Then the class stops selecting it: that node alone drifts
    // and is replaced by an on-demand one.
    let team = format!("drift-{}", std::process::id());
    let reservation: &str = &support::capacity_reservation(&ec2, &team).await;
    let select = |team: &str| json!({"spec": {"capacityReservationSelectorTerms": [{"tags": {"team": team}}]}});
    classes.patch(POOL, &PatchParams::default(), &Patch::Merge(&select(&team))).await.expect("select it");
    let selected = support::wait_until(Duration::from_secs(60), || async {
        let status = classes.get(POOL).await.ok()?.status?;
        status.capacity_reservations.iter().any(|r| r.id == reservation).then_some(())
    })
    .await;
    assert!(selected.is_some(), "the class resolves the reservation");
    let pools: Api<NodePool> = Api::all(client.clone());
    let either = json!({"spec": {"template": {"spec": {"requirements": [
        support::one_of("karpenter.sh/capacity-type", &["reserved", "on-demand"])]}}}});
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&either)).await.expect("allow reserved");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let scale = json!({"spec": {"replicas": 4}});
    deployments.patch("rolling", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("a fourth pod");
    let reserved_claim = support::wait_until(Duration::from_secs(120), || async {
        let now = claims(&client).await;
        let reserved = now
            .iter()
            .find(|c| c.labels().get(labels::CAPACITY_RESERVATION_ID).map(String::as_str) == Some(reservation))?;
        (running(&client, "rolling").await == 4).then(|| reserved.name_any())
    })
    .await
    .expect("the fourth pod runs on a node in the reservation");
    let others = || async {
        let now = claims(&client).await.into_iter().filter(|c| c.name_any() != reserved_claim);
        now.map(|c| (c.name_any(), drift_reason(&c).map(str::to_owned))).collect::<BTreeMap<_, _>>()
    };
    let kept = others().await;
    assert_eq!(kept.len(), 3, "the three nodes of before stay, none drifted: {kept:?}");
    assert!(kept.values().all(Option::is_none), "a new reservation term drifts nothing: {kept:?}");
    classes.patch(POOL, &PatchParams::default(), &Patch::Merge(&select("nobody"))).await.expect("deselect it");
    let reason: RefCell<Option<String>> = RefCell::new(None);
    let replaced = support::wait_until(Duration::from_secs(180), || async {
        if let Some(claim) = claims(&client).await.iter().find(|c| c.name_any() == reserved_claim) {
            if let Some(why) = drift_reason(claim) {
                *reason.borrow_mut() = Some(why.to_owned());
            }
            return None;
        }
        (running(&client, "rolling").await == 4).then_some(())
    })
    .await;
    assert!(replaced.is_some(), "the node of the deselected reservation is replaced");
    assert_eq!(reason.borrow().as_deref(), Some("CapacityReservationDrifted"));
    let after = others().await;
    assert!(kept.keys().all(|name| after.get(name) == Some(&None)), "no other node drifted: {after:?}");

    // The template's labels change: every node drifts, and the first replacement carries the
    // new label.
    let rolled: BTreeSet<String> = claims(&client).await.iter().map(|c| c.name_any()).collect();
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"team": "b"}}}}});
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("new label");
    let relabelled = support::wait_until(Duration::from_secs(120), || async {
        let now = claims(&client).await;
        let mut old = now.iter().filter(|c| rolled.contains(&c.name_any()));
        let all_marked = old.all(|c| drift_reason(c) == Some("NodePoolDrifted"));
        let nodes: Api<Node> = Api::all(client.clone());
        let selector = format!("{}={POOL},team=b", labels::NODEPOOL);
        let relabelled = !nodes.list(&ListParams::default().labels(&selector)).await.ok()?.items.is_empty();
        (all_marked && relabelled).then_some(())
    })
    .await;
    assert!(relabelled.is_some(), "every node drifted by the template, and a replacement with the new label");

    deployments.delete("rolling", &DeleteParams::default()).await.expect("delete deployment");
    pools.delete(POOL, &DeleteParams::default()).await.expect("delete the pool");
    let gone =
        support::wait_until(Duration::from_secs(120), || async { claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "the pool's nodes go with it");
}
