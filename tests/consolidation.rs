//! Consolidation end to end on the local control plane and the AWS emulator: three full nodes
//! whose pods shrink become underutilized; a do-not-disrupt pod, then a PodDisruptionBudget,
//! then a scheduled budget of zero nodes (until its window closes) keep them (and say why in
//! Events); once nothing blocks, they are consolidated into one node, which is then replaced by a
//! cheaper one; when the pods grow to need a node each, the three nodes are replaced by one.
//! Every pod Running and no instance leaked.

mod support;

use std::{collections::BTreeSet, time::Duration};

use chrono::Timelike;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Node, policy::v1::PodDisruptionBudget};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::apis::{NodeClaim, labels};
use support::{apply, pods_of, running};

const POOL: &str = "consol";

async fn claims(client: &Client) -> Vec<NodeClaim> {
    support::claims_of(client, POOL).await
}

/// The nodes the Deployment's pods are bound to.
async fn nodes_of(client: &Client, app: &str) -> BTreeSet<String> {
    pods_of(client, app).await.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect()
}

/// Notes of Events with `reason` about any of `nodes`.
async fn events_about(client: &Client, nodes: &BTreeSet<String>, reason: &str) -> Vec<String> {
    support::event_notes(client, reason, |r| r.name.as_ref().is_some_and(|n| nodes.contains(n))).await
}

/// Sets the Deployment's pod CPU request and pod annotations (a rollout). One pod at a time and
/// never more than the replicas: a surge pod would lift a `maxUnavailable: 0`
/// PodDisruptionBudget's allowance to one mid-rollout (and need a node of its own).
async fn roll(client: &Client, cpu: &str, annotations: serde_json::Value) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let patch = json!({"spec": {
        "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "template": {"metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}}});
    deployments.patch("spread", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("roll");
}

async fn scale(client: &Client, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let patch = json!({"spec": {"replicas": replicas}});
    deployments.patch("spread", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scale");
}

/// Waits until `count` pods of the Deployment run with `cpu` requests and no other pod is left.
async fn settled(client: &Client, count: usize, cpu: &str) -> bool {
    support::wait_until(Duration::from_secs(180), || async {
        let pods = pods_of(client, "spread").await;
        let current = |p: &k8s_openapi::api::core::v1::Pod| {
            let requests = p.spec.as_ref()?.containers[0].resources.as_ref()?.requests.clone()?;
            Some(requests.get("cpu")?.0 == cpu)
        };
        let all_current = pods.len() == count && pods.iter().all(|p| current(p) == Some(true));
        (all_current && running(client, "spread").await == count).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn underutilized_nodes_are_kept_while_blocked_then_consolidated_into_a_cheaper_one() {
    let client = support::client().await;
    // Decisions are checked again after 3 s rather than Karpenter's 15 s: the same path, faster.
    let settings = stoker::operator::Settings {
        consolidation_validation_delay: "3s".parse().expect("duration"),
        ..support::settings()
    };
    let metrics = support::start_stoker_with(&client, POOL, settings).await;
    let requirements = json!([
        support::one_of("karpenter.sh/capacity-type", &["on-demand"]),
        support::one_of("karpenter.k8s.aws/instance-category", &["c", "m"]),
        support::one_of("kubernetes.io/arch", &["amd64"])
    ]);
    let disruption = json!({"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5s"});
    apply(&client, support::nodepool(POOL, POOL, requirements, disruption)).await;

    // Three nodes, one at a time: each pod of 3500m fills a 4-vCPU node.
    apply(&client, support::deployment("spread", 1, "3500m", json!({"stoker.dev/nodepool": POOL}))).await;
    for replicas in 1..=3 {
        scale(&client, replicas).await;
        assert!(settled(&client, replicas as usize, "3500m").await, "{replicas} full pods running");
    }
    let full = nodes_of(&client, "spread").await;
    assert_eq!(full.len(), 3, "one node per full pod: {full:?}");
    let cpus_before = vcpus(&client, &claims(&client).await).await;

    // The pods shrink to 300m and carry do-not-disrupt: the nodes are underutilized but kept.
    roll(&client, "300m", json!({labels::KARPENTER_DO_NOT_DISRUPT: "true"})).await;
    assert!(settled(&client, 3, "300m").await, "the rollout finished");
    let held = nodes_of(&client, "spread").await;
    let told = support::wait_until(Duration::from_secs(60), || async {
        let notes = events_about(&client, &held, "Unconsolidatable").await;
        notes.iter().any(|n| n.contains("do-not-disrupt")).then_some(notes)
    })
    .await;
    assert!(told.is_some(), "the kept nodes say why");
    let marked = support::wait_until(Duration::from_secs(30), || async {
        let now = claims(&client).await;
        let consolidatable = |c: &NodeClaim| {
            c.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == "Consolidatable" && c.status == "True")
        };
        now.iter().any(consolidatable).then_some(())
    })
    .await;
    assert!(marked.is_some(), "quiet claims are marked Consolidatable, blocked or not");
    // Long enough for two passes and a validation: an unblocked consolidation would have acted.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(held.is_subset(&nodes_of(&client, "spread").await), "nodes with do-not-disrupt pods are kept");

    // Without the annotation but under a PodDisruptionBudget that allows nothing: still kept.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    apply(
        &client,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "spread", "namespace": "default"},
               "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "spread"}}}}),
    )
    .await;
    roll(&client, "300m", json!({labels::KARPENTER_DO_NOT_DISRUPT: null})).await;
    let rolled = support::wait_until(Duration::from_secs(180), || async {
        let pods = pods_of(&client, "spread").await;
        let plain = pods.iter().all(|p| !p.annotations().contains_key(labels::KARPENTER_DO_NOT_DISRUPT));
        (plain && pods.len() == 3 && running(&client, "spread").await == 3).then_some(())
    })
    .await;
    assert!(rolled.is_some(), "the rollout without the annotation finished");
    let held = nodes_of(&client, "spread").await;
    let told = support::wait_until(Duration::from_secs(60), || async {
        let notes = events_about(&client, &held, "Unconsolidatable").await;
        notes.iter().any(|n| n.contains("PodDisruptionBudget spread")).then_some(notes)
    })
    .await;
    assert!(told.is_some(), "the kept nodes name the PodDisruptionBudget");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(held.is_subset(&nodes_of(&client, "spread").await), "nodes under an exhausted PDB are kept");

    // Without the PDB, a scheduled budget of zero nodes keeps them while its window lasts: the
    // window opened when its schedule fired, at the start of this minute, and closes in 30 s.
    let pools: Api<stoker::apis::NodePool> = Api::all(client.clone());
    let now = chrono::Utc::now();
    let closes = tokio::time::Instant::now() + Duration::from_secs(30);
    let window = json!({"nodes": "0", "schedule": format!("{} {} * * *", now.minute(), now.hour()),
                        "duration": format!("{}s", now.second() + 30)});
    let budgets = |budgets: serde_json::Value| json!({"spec": {"disruption": {"budgets": budgets}}});
    let scheduled = budgets(json!([{"nodes": "10%"}, window]));
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&scheduled)).await.expect("a scheduled budget of 0");
    pdbs.delete("spread", &DeleteParams::default()).await.expect("delete the PDB");
    let told = support::wait_until(Duration::from_secs(25), || async {
        let notes = events_about(&client, &held, "Unconsolidatable").await;
        notes.iter().any(|n| n.contains("disruption budget")).then_some(notes)
    })
    .await;
    assert!(told.is_some(), "the kept nodes name the budget");
    tokio::time::sleep_until(closes - Duration::from_secs(2)).await;
    assert!(held.is_subset(&nodes_of(&client, "spread").await), "a budget of 0 keeps them while its window lasts");

    // The window closes and nothing blocks any more: one cheaper node for the three pods.
    let consolidated = support::wait_until(Duration::from_secs(240), || async {
        let now = claims(&client).await;
        let live: Vec<&NodeClaim> = now.iter().filter(|c| c.metadata.deletion_timestamp.is_none()).collect();
        (now.len() == 1 && live.len() == 1 && running(&client, "spread").await == 3).then_some(())
    })
    .await;
    let left = claims(&client).await;
    assert!(
        consolidated.is_some(),
        "one node left: {:?}",
        left.iter()
            .map(|c| (c.name_any(), c.status.as_ref().and_then(|s| s.instance_type.clone())))
            .collect::<Vec<_>>()
    );
    let cpus_after = vcpus(&client, &left).await;
    assert!(cpus_after < cpus_before, "{cpus_after} vCPUs after, {cpus_before} before");
    // And the last node, larger than its pods need (4 vCPUs for 0.9), is replaced by a cheaper one.
    let replaced = support::wait_until(Duration::from_secs(240), || async {
        let now = claims(&client).await;
        let cheaper = now.len() == 1 && vcpus(&client, &now).await <= 2;
        (cheaper && running(&client, "spread").await == 3).then_some(now)
    })
    .await;
    assert!(replaced.is_some(), "the last node replaced by a smaller one");
    let disrupted = events_on_claims(&client, "DisruptionUnderutilized").await;
    assert!(disrupted.iter().any(|n| n.contains("replaced by a cheaper")), "the replacement is told: {disrupted:?}");

    // Three nodes replaced by one: the pods grow to 2 CPUs, too many for a 2-vCPU node and for
    // two on a 4-vCPU one, so each gets a 4-vCPU node (no disruption meanwhile: budget 0). No
    // single node can go or get cheaper, but one 8-vCPU node for all three costs less than the
    // three together.
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&budgets(json!([{"nodes": "0"}])))).await.expect("hold");
    roll(&client, "2", json!({})).await;
    assert!(settled(&client, 3, "2").await, "the grown pods run");
    assert_eq!(nodes_of(&client, "spread").await.len(), 3, "one grown pod per node");
    let trio: BTreeSet<String> = claims(&client).await.iter().map(|c| c.name_any()).collect();
    pools.patch(POOL, &PatchParams::default(), &Patch::Merge(&budgets(json!([{"nodes": "100%"}])))).await.expect("go");
    let merged = support::wait_until(Duration::from_secs(240), || async {
        let now = claims(&client).await;
        let names: BTreeSet<String> = now.iter().map(|c| c.name_any()).collect();
        let one_new = now.len() == 1 && names.iter().all(|n| !trio.contains(n));
        (one_new && running(&client, "spread").await == 3).then_some(now)
    })
    .await;
    let merged = merged.expect("the three 4-vCPU nodes replaced by one node");
    assert_eq!(vcpus(&client, &merged).await, 8, "one 8-vCPU node holds the three 2-CPU pods");
    let exported = support::scrape(&metrics).await;
    for sample in [
        "stoker_disruption_decisions_total{reason=\"Underutilized\",action=\"replace\"}",
        "stoker_disruption_pods_total{reason=\"Underutilized\"}",
        "stoker_consolidation_savings_dollars_per_hour_total",
        "stoker_consolidation_duration_seconds_count",
        "stoker_reconciles_total{controller=\"disruption\",result=\"success\"}",
        "stoker_reconcile_duration_seconds_count{controller=\"nodeclaim\"}",
    ] {
        let value = exported.lines().find_map(|line| line.strip_prefix(sample)).map(str::trim);
        assert!(value.is_some_and(|v| v != "0"), "{sample} missing or zero in:\n{exported}");
    }

    // No instance leaked: the pool's instances are exactly its one claim's.
    assert!(support::instances_match_claims(&client, POOL, Duration::from_secs(60)).await, "no instance leaked");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("spread", &DeleteParams::default()).await.expect("delete deployment");
    let nodes: Api<Node> = Api::all(client.clone());
    let emptied = support::wait_until(Duration::from_secs(120), || async {
        let selector = format!("{}={POOL}", labels::NODEPOOL);
        let gone = nodes.list(&ListParams::default().labels(&selector)).await.ok()?.items.is_empty();
        (gone && claims(&client).await.is_empty()).then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the last node goes once empty");
}

/// The vCPUs of the claims' nodes, from the nodes' labels.
async fn vcpus(client: &Client, claims: &[NodeClaim]) -> i64 {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut total = 0;
    for claim in claims {
        let Some(name) = claim.status.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        let node = nodes.get(&name).await.expect("the claim's node");
        total += node.labels().get(labels::INSTANCE_CPU).and_then(|c| c.parse::<i64>().ok()).expect("a CPU label");
    }
    total
}

/// Notes of Events with `reason` about NodeClaims of the pool.
async fn events_on_claims(client: &Client, reason: &str) -> Vec<String> {
    support::event_notes(client, reason, |r| r.kind.as_deref() == Some("NodeClaim")).await
}
