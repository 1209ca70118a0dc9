//! The controller's edges, end to end on the local control plane and the AWS emulator (EC2 calls
//! through the fault-injecting proxy): weighted pools fall back from spot to on-demand on capacity
//! errors; limits stop launches with an Event; pods nobody can host get an Event and launch
//! nothing; a GPU pod gets a GPU type booted from the NVIDIA image; a NodeOverlay's price flips
//! the type launched; a capacity reservation is used first while it has room, and its node is
//! relabelled on-demand when it ends; a PodDisruptionBudget blocks
//! a drain until relaxed; a controller killed in the middle of a burst and restarted leaves every
//! pod Running with no duplicated or leaked instance.

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node, events::v1::Event, policy::v1::PodDisruptionBudget};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use stoker::{
    apis::NodeClaim,
    cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, aws_config},
    },
};
use support::{
    apply, controller, deployment, env,
    fault_proxy::{CapacityRule, FaultProxy},
    log_of, pods_of, running,
};

fn pool(name: &str, weight: i32, capacity_type: &str, types: &[&str], extra: serde_json::Value) -> serde_json::Value {
    let requirements = json!([
        support::one_of("karpenter.sh/capacity-type", &[capacity_type]),
        support::one_of("node.kubernetes.io/instance-type", types)
    ]);
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    let pool = support::with(support::nodepool(name, "edge", requirements, disruption), "/spec/weight", json!(weight));
    let mut pool = support::with(pool, "/spec/template/metadata/labels", json!({"edge": "yes"}));
    if let (Some(spec), Some(extra)) = (pool["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    pool
}

async fn edge_claims(client: &Client) -> Vec<NodeClaim> {
    let api: Api<NodeClaim> = Api::all(client.clone());
    api.list(&ListParams::default().labels("edge=yes")).await.expect("claims").items
}

/// Events whose note contains `text`, about objects named with `prefix`.
async fn events_about(client: &Client, prefix: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::all(client.clone());
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()).is_some_and(|n| n.starts_with(prefix)))
        .filter_map(|e| e.note)
        .collect()
}

async fn delete_deployment(client: &Client, name: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let _ = deployments.delete(name, &DeleteParams::default()).await;
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn the_controllers_edges_end_to_end() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let proxy = FaultProxy::start(&env("AWS_ENDPOINT_URL_EC2")).await;
    tokio::spawn(stoker::cli::simulator::run(env("CLUSTER_NAME"), Duration::from_secs(1)));
    let mut stoker =
        controller("stoker-edges", &[("LEADER_ELECT", "false"), ("AWS_ENDPOINT_URL_EC2", &proxy.endpoint)]);

    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!("edge");
    apply(&client, class).await;
    apply(&client, pool("edge-spot", 50, "spot", &["c6a.2xlarge", "m6a.2xlarge"], json!({}))).await;
    let on_demand_types = ["c6a.2xlarge", "m6a.2xlarge", "c6a.4xlarge"];
    apply(&client, pool("edge-od", 10, "on-demand", &on_demand_types, json!({"limits": {"cpu": "16"}}))).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let claims: Api<NodeClaim> = Api::all(client.clone());

    // 1. The heavier spot pool is used; 4 x 1.8 CPU fill one 8-vCPU node.
    apply(&client, deployment("edge-a", 4, "1800m", json!({"edge": "yes"}))).await;
    let ran = support::wait_until(Duration::from_secs(90), || async {
        (running(&client, "edge-a").await == 4).then_some(())
    })
    .await;
    assert!(ran.is_some(), "edge-a runs; log:\n{}", log_of("stoker-edges"));
    let pools: BTreeSet<String> =
        edge_claims(&client).await.iter().filter_map(|c| c.labels().get("stoker.dev/nodepool").cloned()).collect();
    assert_eq!(pools, BTreeSet::from(["edge-spot".to_owned()]));

    // 2. Killed in the middle of a burst and restarted: everything runs, nothing doubled or leaked.
    apply(&client, deployment("edge-e", 24, "1", json!({"edge": "yes"}))).await;
    let in_flight = support::wait_until(Duration::from_secs(60), || async {
        let claims = edge_claims(&client).await;
        (claims.len() > 1).then_some(())
    })
    .await;
    assert!(in_flight.is_some(), "the burst's NodeClaims are created");
    stoker.kill().await.expect("SIGKILL");
    stoker = controller("stoker-edges-2", &[("LEADER_ELECT", "false"), ("AWS_ENDPOINT_URL_EC2", &proxy.endpoint)]);
    let ran = support::wait_until(Duration::from_secs(180), || async {
        (running(&client, "edge-e").await == 24).then_some(())
    })
    .await;
    assert!(ran.is_some(), "every pod runs after the restart; log:\n{}", log_of("stoker-edges-2"));
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(support::cluster_info()));
    let instances = provider.list().await.expect("instances");
    for claim in &edge_claims(&client).await {
        let launched = instances.iter().filter(|i| i.nodeclaim() == Some(claim.name_any().as_str())).count();
        assert_eq!(launched, 1, "{} has {launched} instances", claim.name_any());
    }
    let edge_instances =
        instances.iter().filter(|i| i.tags.get("stoker.dev/nodepool").is_some_and(|p| p.starts_with("edge-"))).count();
    assert_eq!(edge_instances, edge_claims(&client).await.len(), "no instance leaked");
    delete_deployment(&client, "edge-e").await;
    // The pools' default budget (10%) lets one empty node go at a time; generous for a loaded
    // machine, where each removal waits on settling, a pass and the instance's termination.
    let back = support::wait_until(Duration::from_secs(240), || async {
        (edge_claims(&client).await.len() == 1).then_some(())
    })
    .await;
    assert!(back.is_some(), "the burst's empty nodes are removed");

    // 3. No spot capacity anywhere: the launch fails, and the on-demand pool takes over.
    proxy.refuse_capacity(CapacityRule {
        instance_type: None,
        capacity_type: Some("spot".into()),
        code: "InsufficientInstanceCapacity".into(),
    });
    apply(&client, deployment("edge-b", 4, "1", json!({"edge": "yes"}))).await;
    let ran = support::wait_until(Duration::from_secs(120), || async {
        (running(&client, "edge-b").await == 4).then_some(())
    })
    .await;
    assert!(ran.is_some(), "edge-b runs on on-demand; log:\n{}", log_of("stoker-edges-2"));
    for pod in pods_of(&client, "edge-b").await {
        let node = nodes.get(pod.spec.and_then(|s| s.node_name).as_deref().expect("bound")).await.expect("node");
        assert_eq!(node.labels()["karpenter.sh/capacity-type"], "on-demand");
        assert_eq!(node.labels()["stoker.dev/nodepool"], "edge-od");
    }
    assert!(
        !events_about(&client, "edge-spot-", "LaunchFailed").await.is_empty(),
        "the failed spot launch is reported"
    );

    // 4. The on-demand pool holds 8 of its 16 CPU: a 12-CPU pod needs a 16-vCPU node, which the
    // limit forbids, and the pod hears why.
    apply(&client, deployment("edge-c", 1, "12", json!({"edge": "yes"}))).await;
    let told = support::wait_until(Duration::from_secs(60), || async {
        events_about(&client, "edge-c-", "ProvisioningFailed").await.into_iter().find(|n| n.contains("limits"))
    })
    .await;
    assert!(told.is_some(), "a ProvisioningFailed event names the limits");
    assert_eq!(running(&client, "edge-c").await, 0);
    delete_deployment(&client, "edge-c").await;

    // 5. Pods nobody can host: an event names the reason, nothing is launched.
    let before = edge_claims(&client).await.len();
    apply(&client, deployment("edge-d", 1, "100m", json!({"edge": "yes", "kubernetes.io/arch": "s390x"}))).await;
    let told = support::wait_until(Duration::from_secs(60), || async {
        events_about(&client, "edge-d-", "ProvisioningFailed")
            .await
            .into_iter()
            .find(|n| n.contains("kubernetes.io/arch"))
    })
    .await;
    assert!(told.is_some(), "the event names the unsatisfiable requirement");
    assert_eq!(edge_claims(&client).await.len(), before, "nothing launched for it");
    delete_deployment(&client, "edge-d").await;

    // 6. A pod asking for a GPU gets a GPU type from the pool that has them, booted from the
    // NVIDIA image.
    apply(&client, pool("edge-gpu", 1, "on-demand", &["g4dn.xlarge", "g5.xlarge"], json!({}))).await;
    let mut gpu = deployment("edge-g", 1, "500m", json!({"edge": "yes"}));
    let resources = &mut gpu["spec"]["template"]["spec"]["containers"][0]["resources"];
    resources["requests"]["nvidia.com/gpu"] = json!("1");
    resources["limits"] = json!({"nvidia.com/gpu": "1"});
    apply(&client, gpu).await;
    let ran = support::wait_until(Duration::from_secs(90), || async {
        (running(&client, "edge-g").await == 1).then_some(())
    })
    .await;
    assert!(ran.is_some(), "the GPU pod runs; log:\n{}", log_of("stoker-edges-2"));
    let node_of_g = pods_of(&client, "edge-g").await[0].spec.clone().and_then(|s| s.node_name).expect("bound");
    let claim_of_g = claims.get(&nodes.get(&node_of_g).await.expect("node").labels()["stoker.dev/nodeclaim"]).await;
    let claim_of_g = claim_of_g.expect("the GPU pod's NodeClaim");
    assert_eq!(claim_of_g.labels().get("stoker.dev/nodepool").map(String::as_str), Some("edge-gpu"));
    assert!(claim_of_g.labels().contains_key("karpenter.k8s.aws/instance-gpu-name"), "{:?}", claim_of_g.labels());
    let image = claim_of_g.status.as_ref().and_then(|s| s.image_id.clone());
    assert_eq!(image.as_deref(), Some("ami-0a1d1a2300000000"), "the NVIDIA AL2023 image");
    delete_deployment(&client, "edge-g").await;

    // A pod that asks for a zone by its ID (the emulator's us-east-1b is use1-az1) runs there, on
    // a node labelled with it.
    apply(&client, deployment("edge-z", 1, "500m", json!({"edge": "yes", "topology.k8s.aws/zone-id": "use1-az1"})))
        .await;
    let ran = support::wait_until(Duration::from_secs(90), || async {
        (running(&client, "edge-z").await == 1).then_some(())
    })
    .await;
    assert!(ran.is_some(), "the pod asking for a zone ID runs; log:\n{}", log_of("stoker-edges-2"));
    let node_of_z = pods_of(&client, "edge-z").await[0].spec.clone().and_then(|s| s.node_name).expect("bound");
    let node_labels = nodes.get(&node_of_z).await.expect("node").labels().clone();
    assert_eq!(node_labels.get("topology.kubernetes.io/zone").map(String::as_str), Some("us-east-1b"));
    assert_eq!(node_labels.get("topology.k8s.aws/zone-id").map(String::as_str), Some("use1-az1"));
    delete_deployment(&client, "edge-z").await;

    // A NodeOverlay's price flips the choice: c5.large is EC2's cheaper type until the user says
    // m5.large costs them less; an overlay whose quantity cannot be read says so in its status
    // and takes nothing else out of effect.
    apply(&client, pool("edge-price", 1, "on-demand", &["c5.large", "m5.large"], json!({}))).await;
    let launched_type = |name: &'static str| {
        let (client, nodes, claims) = (client.clone(), nodes.clone(), claims.clone());
        async move {
            let ran = support::wait_until(Duration::from_secs(90), || async {
                (running(&client, name).await == 1).then_some(())
            })
            .await;
            assert!(ran.is_some(), "{name} runs; log:\n{}", log_of("stoker-edges-2"));
            let node = pods_of(&client, name).await[0].spec.clone().and_then(|s| s.node_name).expect("bound");
            let claim = claims.get(&nodes.get(&node).await.expect("node").labels()["stoker.dev/nodeclaim"]).await;
            claim.expect("its NodeClaim").status.and_then(|s| s.instance_type).unwrap_or_default()
        }
    };
    // 1.5 CPU each: two never share a 2-vCPU node.
    apply(&client, deployment("edge-p1", 1, "1500m", json!({"stoker.dev/nodepool": "edge-price"}))).await;
    assert_eq!(launched_type("edge-p1").await, "c5.large");
    let overlay = |name: &str, spec: serde_json::Value| json!({"apiVersion": "stoker.dev/v1alpha1", "kind": "NodeOverlay", "metadata": {"name": name}, "spec": spec});
    apply(&client, overlay("edge-bad", json!({"capacity": {"example.com/slice": "lots"}}))).await;
    let m5_only = json!([{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large"]}]);
    apply(&client, overlay("edge-savings", json!({"requirements": m5_only, "price": "0.01"}))).await;
    let overlays: Api<stoker::apis::NodeOverlay> = Api::all(client.clone());
    let ready = |name: &'static str| {
        let overlays = overlays.clone();
        async move {
            support::wait_until(Duration::from_secs(30), || async {
                let conditions = overlays.get(name).await.ok()?.status?.conditions;
                conditions.into_iter().find(|c| c.type_ == "Ready").map(|c| (c.status, c.reason, c.message))
            })
            .await
        }
    };
    let bad = ready("edge-bad").await.expect("the invalid overlay's condition");
    assert_eq!((bad.0.as_str(), bad.1.as_str()), ("False", "InvalidSpec"));
    assert!(bad.2.contains("spec.capacity"), "{}", bad.2);
    assert_eq!(ready("edge-savings").await.map(|r| r.0).as_deref(), Some("True"));
    apply(&client, deployment("edge-p2", 1, "1500m", json!({"stoker.dev/nodepool": "edge-price"}))).await;
    assert_eq!(launched_type("edge-p2").await, "m5.large", "the overlaid price wins");
    for name in ["edge-bad", "edge-savings"] {
        overlays.delete(name, &DeleteParams::default()).await.expect("delete the overlay");
    }
    for name in ["edge-p1", "edge-p2"] {
        delete_deployment(&client, name).await;
    }

    // An On-Demand Capacity Reservation is used first while it has room: two pods that each
    // need their own node get one reserved m5.large in the reservation's zone, labelled with it,
    // and one on-demand node; the place comes back when the reserved node goes.
    let ec2 = aws_sdk_ec2::Client::new(&aws_config(None).await);
    // A tag of this run's own, so no other reservation in the emulator can match.
    let team = format!("edge-{}", std::process::id());
    let reservation_id: &str = &support::capacity_reservation(&ec2, &team).await;
    let room = |ec2: aws_sdk_ec2::Client, id: String| async move {
        let described = ec2.describe_capacity_reservations().capacity_reservation_ids(id).send().await;
        described.expect("describe").capacity_reservations()[0].available_instance_count().unwrap_or(-1)
    };
    let mut reserved_class = support::example("ec2nodeclass.yaml");
    reserved_class["metadata"]["name"] = json!("edge-reserved");
    reserved_class["spec"]["capacityReservationSelectorTerms"] = json!([{"tags": {"team": team}}]);
    apply(&client, reserved_class).await;
    let mut reserved_pool = pool("edge-reserved", 1, "on-demand", &["c5.large", "m5.large"], json!({}));
    reserved_pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] = json!("edge-reserved");
    reserved_pool["spec"]["template"]["spec"]["requirements"][0]["values"] = json!(["reserved", "on-demand"]);
    apply(&client, reserved_pool).await;
    let classes: Api<stoker::apis::EC2NodeClass> = Api::all(client.clone());
    let resolved = support::wait_until(Duration::from_secs(30), || async {
        let status = classes.get("edge-reserved").await.ok()?.status?;
        let found: Vec<_> = status
            .capacity_reservations
            .iter()
            .map(|r| (r.id.clone(), r.instance_type.clone(), r.availability_zone.clone()))
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    let ours = (reservation_id.to_owned(), "m5.large".to_owned(), "us-east-1a".to_owned());
    assert_eq!(resolved, Some(vec![ours]), "only the reservation made for this run matches its tag");
    apply(&client, deployment("edge-r", 2, "1500m", json!({"stoker.dev/nodepool": "edge-reserved"}))).await;
    let ran = support::wait_until(Duration::from_secs(120), || async {
        (running(&client, "edge-r").await == 2).then_some(())
    })
    .await;
    assert!(ran.is_some(), "both pods run; log:\n{}", log_of("stoker-edges-2"));
    let reserved_claims: Vec<NodeClaim> = edge_claims(&client)
        .await
        .into_iter()
        .filter(|c| c.labels().get("stoker.dev/nodepool").map(String::as_str) == Some("edge-reserved"))
        .collect();
    let mut kinds: Vec<(String, Option<String>)> = reserved_claims
        .iter()
        .map(|c| {
            let labels = c.labels();
            (
                labels["karpenter.sh/capacity-type"].clone(),
                labels.get("karpenter.k8s.aws/capacity-reservation-id").cloned(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [("on-demand".to_owned(), None), ("reserved".to_owned(), Some(reservation_id.to_owned()))],
        "log:\n{}",
        log_of("stoker-edges-2")
    );
    let reserved_claim = reserved_claims.iter().find(|c| c.labels()["karpenter.sh/capacity-type"] == "reserved");
    let reserved_claim = reserved_claim.expect("the reserved claim");
    let status = reserved_claim.status.clone().unwrap_or_default();
    assert_eq!((status.instance_type.as_deref(), status.zone.as_deref()), (Some("m5.large"), Some("us-east-1a")));
    assert_eq!(room(ec2.clone(), reservation_id.to_owned()).await, 0, "the reservation is taken");
    delete_deployment(&client, "edge-r").await;
    claims.delete(&reserved_claim.name_any(), &DeleteParams::default()).await.expect("delete the reserved claim");
    let released = support::wait_until(Duration::from_secs(120), || async {
        (room(ec2.clone(), reservation_id.to_owned()).await == 1).then_some(())
    })
    .await;
    assert!(released.is_some(), "the terminated instance gives its place back");

    // A reservation that ends leaves its instance running as an on-demand one: within the
    // minute's check its claim and Node say so, without the reservation's ID, and an Event tells.
    let pool_claims = || async {
        let found = edge_claims(&client).await.into_iter();
        found
            .filter(|c| c.labels().get("stoker.dev/nodepool").map(String::as_str) == Some("edge-reserved"))
            .collect::<Vec<NodeClaim>>()
    };
    // Started on an empty pool, so the pod cannot land on the on-demand node of before.
    let emptied =
        support::wait_until(Duration::from_secs(120), || async { pool_claims().await.is_empty().then_some(()) }).await;
    assert!(emptied.is_some(), "the pool's on-demand node goes once empty");
    apply(&client, deployment("edge-r2", 1, "1500m", json!({"stoker.dev/nodepool": "edge-reserved"}))).await;
    let reserved_again = support::wait_until(Duration::from_secs(120), || async {
        let claims: Vec<NodeClaim> = pool_claims().await;
        let node = claims.iter().find_map(|c| c.status.as_ref()?.node_name.clone())?;
        (running(&client, "edge-r2").await == 1 && claims[0].labels()["karpenter.sh/capacity-type"] == "reserved")
            .then(|| (claims[0].name_any(), node))
    })
    .await;
    let (reserved_claim, reserved_node) = reserved_again.expect("the pod runs on a reserved node again");
    ec2.cancel_capacity_reservation()
        .capacity_reservation_id(reservation_id)
        .send()
        .await
        .expect("cancel the reservation");
    let on_demand = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get("karpenter.sh/capacity-type").map(String::as_str) == Some("on-demand")
            && !labels.contains_key("karpenter.k8s.aws/capacity-reservation-id")
    };
    let relabelled = support::wait_until(Duration::from_secs(150), || async {
        let claim = claims.get(&reserved_claim).await.ok()?;
        let node = nodes.get(&reserved_node).await.ok()?;
        (on_demand(claim.labels()) && on_demand(node.labels())).then_some(claim)
    })
    .await;
    let relabelled = relabelled.unwrap_or_else(|| panic!("relabelled on-demand; log:\n{}", log_of("stoker-edges-2")));
    assert_eq!(relabelled.status.and_then(|s| s.capacity_type).as_deref(), Some("on-demand"));
    assert_eq!(running(&client, "edge-r2").await, 1, "the node runs on");
    // The Event is published after the labels are written: wait for it rather than read once.
    let told = support::wait_until(Duration::from_secs(30), || async {
        let told = events_about(&client, &reserved_claim, "CapacityReservationEnded").await;
        told.iter().any(|note| note.contains(reservation_id)).then_some(())
    })
    .await;
    let notes = events_about(&client, &reserved_claim, "CapacityReservationEnded").await;
    assert!(told.is_some(), "an Event names the reservation: {notes:?}");
    delete_deployment(&client, "edge-r2").await;

    // 7. A PodDisruptionBudget with maxUnavailable 0 blocks the drain until it is relaxed.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    apply(
        &client,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "edge-a", "namespace": "default"},
               "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "edge-a"}}}}),
    )
    .await;
    let node_of_a = pods_of(&client, "edge-a").await[0].spec.clone().and_then(|s| s.node_name).expect("bound");
    let claim_of_a = nodes.get(&node_of_a).await.expect("node").labels()["stoker.dev/nodeclaim"].clone();
    claims.delete(&claim_of_a, &DeleteParams::default()).await.expect("delete the claim");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(claims.get_opt(&claim_of_a).await.expect("get").is_some(), "the drain waits for the budget");
    assert_eq!(running(&client, "edge-a").await, 4, "no pod lost while blocked");
    pdbs.delete("edge-a", &DeleteParams::default()).await.expect("relax the budget");
    let drained = support::wait_until(Duration::from_secs(120), || async {
        (claims.get_opt(&claim_of_a).await.ok()?.is_none() && running(&client, "edge-a").await == 4).then_some(())
    })
    .await;
    assert!(drained.is_some(), "drained, terminated, and the pods run elsewhere; log:\n{}", log_of("stoker-edges-2"));

    // 8. Without the Deployments and their NodeClaims, no instance is left.
    for name in ["edge-a", "edge-b"] {
        delete_deployment(&client, name).await;
    }
    proxy.clear_capacity_rules();
    let names: Vec<String> = edge_claims(&client).await.iter().map(|c| c.name_any()).collect();
    for name in &names {
        let _ = claims.delete(name, &DeleteParams::default()).await;
    }
    let gone =
        support::wait_until(Duration::from_secs(120), || async { edge_claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "every NodeClaim terminated");
    let left: Vec<String> = provider
        .list()
        .await
        .expect("instances")
        .into_iter()
        .filter(|i| i.tags.get("stoker.dev/nodepool").is_some_and(|p| p.starts_with("edge-")))
        .map(|i| i.id)
        .collect();
    assert!(left.is_empty(), "instances left in the emulator: {left:?}");
    drop(stoker);
}
