//! End to end on the local control plane (apiserver, scheduler, controller-manager, kwok) and
//! the AWS emulator: stoker's controller and the node registration simulator run in this
//! process; a Deployment's pending pods become NodeClaims, instances, Nodes and Running pods,
//! and go away again when the Deployment does; a StatefulSet's pod gets a node in the zone its
//! volume's StorageClass allows.

mod support;

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::{
    apis::{NodeClaim, labels},
    cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, aws_config},
    },
};
use support::{apply, running};

/// The CreateFleet calls for the `e2e` NodePool recorded after the first `since` calls: how many,
/// how many launch configurations they asked for (templates, overrides and capacity type), and
/// how many instances in all.
fn launch_calls(since: usize) -> (usize, usize, usize) {
    let fleets = support::recorded_calls(since, "CreateFleet", |params| {
        params.iter().any(|(key, value)| {
            value == "stoker.dev/nodepool"
                && params.get(&key.replace(".Key", ".Value")).is_some_and(|pool| pool == "e2e")
        })
    });
    let configurations: BTreeSet<String> = fleets
        .iter()
        .map(|params| {
            let launch: Vec<String> = params
                .iter()
                .filter(|(key, _)| {
                    key.starts_with("LaunchTemplateConfigs") || key.ends_with("DefaultTargetCapacityType")
                })
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            launch.join("&")
        })
        .collect();
    let instances =
        fleets.iter().map(|p| p["TargetCapacitySpecification.TotalTargetCapacity"].parse::<usize>().unwrap_or(0)).sum();
    (fleets.len(), configurations.len(), instances)
}

async fn e2e_claims(client: &Client) -> Vec<NodeClaim> {
    let api: Api<NodeClaim> = Api::all(client.clone());
    api.list(&ListParams::default().labels("stoker.dev/nodepool=e2e")).await.expect("list claims").items
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn pending_pods_become_nodes_and_go_away_with_their_deployment() {
    let client = support::client().await;
    let metrics = support::start_stoker(&client, "e2e").await;
    let requirements = json!([
        support::one_of("karpenter.sh/capacity-type", &["spot", "on-demand"]),
        support::one_of("karpenter.k8s.aws/instance-category", &["c", "m"]),
        support::one_of("kubernetes.io/arch", &["amd64"])
    ]);
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    let pool = support::with(support::nodepool("e2e", "e2e", requirements, disruption), "/spec/weight", json!(10));
    let startup_taints = json!([{"key": "e2e.stoker.dev/agent-not-ready", "effect": "NoSchedule"}]);
    apply(&client, support::with(pool, "/spec/template/spec/startupTaints", startup_taints)).await;

    // The startup taint is someone else's to remove (a CNI agent on EKS); this task plays it.
    let agent = client.clone();
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(agent);
        loop {
            for node in nodes
                .list(&ListParams::default().labels("stoker.dev/nodepool=e2e"))
                .await
                .into_iter()
                .flat_map(|l| l.items)
            {
                let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
                if taints.iter().any(|t| t.key == "e2e.stoker.dev/agent-not-ready") {
                    let kept: Vec<_> =
                        taints.into_iter().filter(|t| t.key != "e2e.stoker.dev/agent-not-ready").collect();
                    // With the version read: a stale write must not put back a taint stoker lifted
                    // in between (the unregistered one), as a real agent's update would not.
                    let patch =
                        json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": kept}});
                    let _ = nodes.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    // A burst of 50 pods of 500m: one batch, a few nodes, never a second launch for the same pods.
    let calls_before_burst = support::calls_recorded();
    apply(&client, support::deployment("burst", 50, "500m", json!({"stoker.dev/nodepool": "e2e"}))).await;
    let all_running = support::wait_until(Duration::from_secs(180), || async {
        (running(&client, "burst").await == 50).then_some(())
    })
    .await;
    let claims = e2e_claims(&client).await;
    assert!(
        all_running.is_some(),
        "50 pods running; claims: {:#?}",
        claims.iter().map(|c| &c.status).collect::<Vec<_>>()
    );
    let launched = claims.len();
    assert!((1..=6).contains(&launched), "a burst makes few nodes, not one per pod: {launched}");
    // Pods can run a moment before their node's claim is marked initialized (both follow the
    // node's startup taint going): wait for the marks.
    let lifecycle = ["Launched", "Registered", "Initialized", "Ready"];
    let complete = |claim: &NodeClaim| {
        claim
            .status
            .as_ref()
            .is_some_and(|s| lifecycle.iter().all(|t| s.conditions.iter().any(|c| c.type_ == *t && c.status == "True")))
    };
    let claims = support::wait_until(Duration::from_secs(30), || async {
        let claims = e2e_claims(&client).await;
        claims.iter().all(complete).then_some(claims)
    })
    .await
    .unwrap_or(claims);
    for claim in &claims {
        let status = claim.status.as_ref().expect("status");
        for condition in lifecycle {
            assert!(
                status.conditions.iter().any(|c| c.type_ == condition && c.status == "True"),
                "{} lacks {condition}: {:?}",
                claim.name_any(),
                status.conditions
            );
        }
        assert!(status.provider_id.as_deref().is_some_and(|id| id.starts_with("aws:///us-east-1")));
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes.get(status.node_name.as_deref().expect("node name")).await.expect("the node");
        assert_eq!(node.labels()[labels::NODECLAIM], claim.name_any());
        assert_eq!(node.labels()[labels::NODEPOOL], "e2e");
        // The well-known labels workloads select on.
        for key in [
            labels::INSTANCE_TYPE,
            labels::ZONE,
            labels::CAPACITY_TYPE,
            labels::ARCH,
            labels::OS,
            labels::INSTANCE_FAMILY,
            labels::INSTANCE_CATEGORY,
            labels::INSTANCE_CPU,
            labels::INSTANCE_MEMORY,
        ] {
            assert!(node.labels().contains_key(key), "{} lacks {key}: {:?}", node.name_any(), node.labels());
        }
        assert_eq!(Some(&node.labels()[labels::INSTANCE_TYPE]), status.instance_type.as_ref());
        let taints: Vec<String> =
            node.spec.iter().flat_map(|s| s.taints.iter().flatten()).map(|t| t.key.clone()).collect();
        assert!(!taints.contains(&labels::UNREGISTERED_TAINT.to_owned()), "{taints:?}");
        assert!(node.finalizers().iter().any(|f| f == "stoker.dev/termination"));
    }
    // What happened is in the metrics.
    let exported = support::scrape(&metrics).await;
    for sample in [
        "stoker_nodeclaims_created_total{nodepool=\"e2e\"}",
        "stoker_nodeclaims_launched_total{nodepool=\"e2e\",capacity_type=\"spot\"}",
        "stoker_nodeclaims_registered_total{nodepool=\"e2e\",capacity_type=\"spot\"}",
        "stoker_nodeclaims_initialized_total{nodepool=\"e2e\",capacity_type=\"spot\"}",
        "stoker_cloudprovider_duration_seconds_count{method=\"create\"}",
        "stoker_nodepool_usage{nodepool=\"e2e\",resource=\"nodes\"}",
    ] {
        let value = exported.lines().find_map(|line| line.strip_prefix(sample)).map(str::trim);
        assert!(value.is_some_and(|v| v != "0"), "{sample} missing or zero in:\n{exported}");
    }

    // The NodePool says what the batch planned and how it compares with the lower bound.
    let planned = support::event_notes(&client, "Planned", |r| {
        r.kind.as_deref() == Some("NodePool") && r.name.as_deref() == Some("e2e")
    })
    .await;
    assert!(
        planned.iter().any(|note| note.contains("pod(s) at $") && note.contains("x the lower bound")),
        "a Planned Event on the NodePool: {planned:?}"
    );

    // Later batches see the pods placed and launch nothing more.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(e2e_claims(&client).await.len(), launched, "no second launch");

    let (calls, configurations, asked) = launch_calls(calls_before_burst);
    println!("burst: {launched} claims, {calls} CreateFleet calls, {configurations} configurations");
    assert_eq!((calls, asked), (configurations, launched), "one call per launch configuration, one instance per claim");

    // The instances carry the cluster's tags.
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(support::cluster_info()));
    let instance_ids: BTreeSet<String> = provider
        .list()
        .await
        .expect("list instances")
        .into_iter()
        .filter(|i| i.tags.get("stoker.dev/nodepool").is_some_and(|p| p == "e2e"))
        .map(|i| i.provider_id)
        .collect();
    let claimed: BTreeSet<String> =
        claims.iter().filter_map(|c| c.status.as_ref().and_then(|s| s.provider_id.clone())).collect();
    assert_eq!(instance_ids, claimed);

    // Pods that must not share a node: a claim each, all alike, launched by one CreateFleet call.
    let calls_before_spread = support::calls_recorded();
    let mut apart = support::deployment("apart", 4, "100m", json!({"stoker.dev/nodepool": "e2e"}));
    apart["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "apart"}}, "topologyKey": "kubernetes.io/hostname"}
    ]}});
    apply(&client, apart).await;
    let spread = support::wait_until(Duration::from_secs(180), || async {
        (running(&client, "apart").await == 4).then_some(())
    })
    .await;
    assert!(spread.is_some(), "4 pods apart running");
    let added = e2e_claims(&client).await.len() - launched;
    let (calls, configurations, asked) = launch_calls(calls_before_spread);
    println!("apart: {added} claims, {calls} CreateFleet calls, {configurations} configurations");
    assert!(added >= 2, "pods apart need nodes of their own: {added} claims");
    assert_eq!((calls, configurations, asked), (1, 1, added), "one call for claims that launch alike");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("apart", &DeleteParams::default()).await.expect("delete deployment");

    a_volume_that_waits_for_its_pod_gets_a_node_in_its_zone(&client).await;

    // Deleting one Node drains and terminates it through its NodeClaim; its pods come back.
    let victim = claims[0].clone();
    let victim_node = victim.status.as_ref().and_then(|s| s.node_name.clone()).expect("node");
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.delete(&victim_node, &DeleteParams::default()).await.expect("delete node");
    let replaced = support::wait_until(Duration::from_secs(120), || async {
        let gone = !e2e_claims(&client).await.iter().any(|c| c.name_any() == victim.name_any());
        let node_gone = nodes.get_opt(&victim_node).await.ok()?.is_none();
        (gone && node_gone && running(&client, "burst").await == 50).then_some(())
    })
    .await;
    assert!(replaced.is_some(), "the node's claim was terminated and its pods run elsewhere");
    let victim_id = victim.status.as_ref().and_then(|s| s.provider_id.clone()).expect("provider id");
    assert!(provider.get(&victim_id).await.is_err(), "instance {victim_id} terminated");

    // Without the Deployment the nodes are empty, and go after consolidateAfter; not while a pod
    // waits for a scheduler's first try (here one naming a scheduler that is not running), since
    // nobody knows yet where it goes.
    let untried: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    apply(
        &client,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "untried", "namespace": "default"},
            "spec": {"schedulerName": "not-running", "containers": [{"name": "c", "image": "pause"}]}
        }),
    )
    .await;
    let before = e2e_claims(&client).await.len();
    assert!(before > 0);
    deployments.delete("burst", &DeleteParams::default()).await.expect("delete deployment");
    tokio::time::sleep(Duration::from_secs(25)).await;
    let kept = e2e_claims(&client).await.len();
    // Gone before asserting: left behind, it would hold disruption back in the tests after this.
    untried.delete("untried", &DeleteParams::default().grace_period(0)).await.expect("delete the untried pod");
    assert_eq!(kept, before, "no node removed while a pod awaits its scheduler");
    let emptied =
        support::wait_until(Duration::from_secs(120), || async { e2e_claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(
        emptied.is_some(),
        "empty nodes removed: {:?}",
        e2e_claims(&client).await.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    );
    let left = provider.list().await.expect("list").into_iter().filter(|i| claimed.contains(&i.provider_id)).count();
    assert_eq!(left, 0, "every instance terminated");
}

/// A StatefulSet whose StorageClass binds on first use and provisions only in us-east-1c: its pod
/// gets a node there, the (test-played) provisioner creates the volume where the scheduler chose,
/// and the pod runs. Everything is deleted again before the test goes on.
async fn a_volume_that_waits_for_its_pod_gets_a_node_in_its_zone(client: &Client) {
    apply(
        client,
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "zonal-c"},
            "provisioner": "ebs.csi.aws.com",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone", "values": ["us-east-1c"]}]}]
        }),
    )
    .await;
    apply(
        client,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {
                        "nodeSelector": {"stoker.dev/nodepool": "e2e"},
                        "containers": [{"name": "db", "image": "postgres", "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]
                    }
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "zonal-c", "resources": {"requests": {"storage": "1Gi"}}}
                }]
            }
        }),
    )
    .await;
    // The provisioner's part: once the scheduler has chosen a node, a volume in that node's zone.
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let selected = support::wait_until(Duration::from_secs(120), || async {
        let claim = claims.get_opt("data-db-0").await.ok()??;
        claim.annotations().get("volume.kubernetes.io/selected-node").cloned()
    })
    .await
    .expect("the scheduler chose a node for the pod and its volume");
    let zone = nodes.get(&selected).await.expect("the node").labels().get(labels::ZONE).cloned();
    assert_eq!(zone.as_deref(), Some("us-east-1c"), "the node of a volume allowed only in us-east-1c");
    apply(
        client,
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv-db-0"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "zonal-c",
                "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-db-0"},
                "claimRef": {"namespace": "default", "name": "data-db-0"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1c"]}
                ]}]}}
            }
        }),
    )
    .await;
    let ran =
        support::wait_until(Duration::from_secs(120), || async { (running(client, "db").await == 1).then_some(()) })
            .await;
    assert!(ran.is_some(), "the StatefulSet's pod runs once its volume is bound");

    let statefulsets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), "default");
    statefulsets.delete("db", &DeleteParams::default()).await.expect("delete the StatefulSet");
    claims.delete("data-db-0", &DeleteParams::default()).await.expect("delete the claim");
    let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    volumes.delete("pv-db-0", &DeleteParams::default()).await.expect("delete the volume");
}
