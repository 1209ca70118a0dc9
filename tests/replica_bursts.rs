//! ReplicaSets' bursts end to end on the local control plane: kube-controller-manager creates eight
//! new Deployments' 120 pods at its API client's rate (about 6 s), batches close far sooner (0.5 s
//! idle, 1 s at most), and still the first batch plans for every replica, the ones not created
//! yet included (of ReplicaSets without a pod yet too): one `Planned` Event for all 120 pods, and
//! every pod runs on those NodeClaims. A Job's 90 parallel pods, which its controller creates in
//! doubling batches at the same rate, are planned by one batch too. A ReplicaSet a ResourceQuota
//! holds back gets nodes for the pods that exist, not for its replicas.

mod support;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::ResourceQuota};
use kube::{Api, Client, ResourceExt, api::DeleteParams};
use serde_json::json;
use support::{apply, claims_of, running};

/// The notes of the `Planned` Events about NodePool `pool` (this one: not an earlier run's).
async fn planned_notes(client: &Client, pool: &str) -> Vec<String> {
    let pools: Api<stoker::apis::NodePool> = Api::all(client.clone());
    let uid = pools.get(pool).await.expect("the pool").uid();
    support::event_notes(client, "Planned", |regarding| regarding.uid == uid).await
}

/// How many pods a `Planned` note planned for ("Planned 4 NodeClaim(s) for 120 pod(s) at …").
fn planned_pods(note: &str) -> usize {
    let count = note.split(" for ").nth(1).and_then(|rest| rest.split(' ').next());
    count.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("a planned note: {note}"))
}

/// A Deployment of `replicas` pods of 250m in `namespace` for NodePool `pool`.
fn pods_for(name: &str, namespace: &str, replicas: i32, pool: &str) -> serde_json::Value {
    let mut manifest = support::deployment(name, replicas, "250m", json!({"stoker.dev/nodepool": pool}));
    manifest["metadata"]["namespace"] = json!(namespace);
    manifest
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_burst_is_planned_whole_by_its_first_batch() {
    let client = support::client().await;
    let settings = stoker::operator::Settings {
        batch_idle_duration: "500ms".parse().expect("duration"),
        batch_max_duration: "1s".parse().expect("duration"),
        ..support::settings()
    };
    support::start_stoker_with(&client, "bursts", settings).await;
    let when_empty = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    let pools: Api<stoker::apis::NodePool> = Api::all(client.clone());
    for pool in ["bursts", "held", "jobs"] {
        apply(&client, support::on_demand_pool(pool, "bursts", "c5.2xlarge", when_empty.clone())).await;
        // Ready once the controllers lead and the class is resolved: the burst must not pile up
        // before the provisioner runs.
        support::wait_until(Duration::from_secs(60), || async {
            let conditions = pools.get(pool).await.ok()?.status?.conditions;
            conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
        })
        .await
        .expect("the pool ready");
    }

    // 120 pods of 250m in eight Deployments: four c5.2xlarge (31 such pods each), all planned by
    // the first batch. kube-controller-manager syncs five ReplicaSets at a time, sharing its 20
    // requests a second, so some have no pod yet when the first batch closes (within 1 s): it
    // plans for theirs from their templates (without them: 90 pods, then 27 in a second plan).
    let bursts: Vec<String> = (1..=8).map(|n| format!("burst-{n}")).collect();
    for name in &bursts {
        apply(&client, pods_for(name, "default", 15, "bursts")).await;
    }
    let running_bursts = || async {
        let mut sum = 0;
        for name in &bursts {
            sum += running(&client, name).await;
        }
        sum
    };
    let all_running =
        support::wait_until(Duration::from_secs(240), || async { (running_bursts().await == 120).then_some(()) }).await;
    let notes = planned_notes(&client, "bursts").await;
    let claims = claims_of(&client, "bursts").await;
    assert!(all_running.is_some(), "120 pods running; plans: {notes:?}; {} claims", claims.len());
    assert_eq!(notes.len(), 1, "one batch planned every NodeClaim: {notes:?}");
    assert_eq!(planned_pods(&notes[0]), 120, "for every replica, those not created yet too: {notes:?}");
    assert!(
        notes[0].contains("of the pods: Deployments', ReplicaSets' and Jobs' pods the scheduler has not tried yet"),
        "{notes:?}"
    );
    assert_eq!(claims.len(), 4, "no claim beyond the first plan's");

    // A Job of 90 parallel pods of 250m: three c5.2xlarge, planned by the first batch though its
    // controller creates the pods over seconds (1, 2, 4, … at a time). kwok completes a Job's
    // pods once they run, so the Job's success is the measure.
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "crunch", "namespace": "default"},
        "spec": {"parallelism": 90, "completions": 90, "template": {
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"stoker.dev/nodepool": "jobs"},
                "containers": [{"name": "work", "image": "registry.k8s.io/pause:3.10",
                                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]
            }
        }}
    });
    apply(&client, job).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let succeeded = support::wait_until(Duration::from_secs(240), || async {
        let succeeded = jobs.get("crunch").await.ok()?.status?.succeeded?;
        (succeeded == 90).then_some(())
    })
    .await;
    let notes = planned_notes(&client, "jobs").await;
    assert!(succeeded.is_some(), "the Job's 90 pods succeeded; plans: {notes:?}");
    assert_eq!(notes.len(), 1, "one batch planned every NodeClaim: {notes:?}");
    assert_eq!(planned_pods(&notes[0]), 90, "for every pod, those not created yet too: {notes:?}");
    assert!(notes[0].starts_with("Planned 3 NodeClaim(s)"), "{notes:?}");

    // A quota lets 5 of 40 replicas exist: nodes for those 5 only (one claim, where the 40 would
    // need two).
    support::fresh_namespace(&client, "bursts-quota").await;
    let quota = json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "pods", "namespace": "bursts-quota"},
        "spec": {"hard": {"pods": "5"}}
    });
    apply(&client, quota).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "bursts-quota");
    // Until the quota controller has counted, the quota refuses every pod.
    support::wait_until(Duration::from_secs(60), || async {
        let quota = quotas.get("pods").await.ok()?;
        quota.status?.hard.is_some().then_some(())
    })
    .await
    .expect("the quota counted");
    apply(&client, pods_for("held", "bursts-quota", 40, "held")).await;
    let five_running = support::wait_until(Duration::from_secs(180), || async {
        (support::running_in(&client, "bursts-quota", "held").await == 5).then_some(())
    })
    .await;
    let notes = planned_notes(&client, "held").await;
    assert!(five_running.is_some(), "the 5 pods the quota allows run; plans: {notes:?}");
    let planned: usize = notes.iter().map(|note| planned_pods(note)).sum();
    assert_eq!(planned, 5, "planned for the pods that exist only: {notes:?}");
    assert_eq!(claims_of(&client, "held").await.len(), 1);

    // Clean up: the nodes go with their pods.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    for name in &bursts {
        deployments.delete(name, &DeleteParams::default()).await.expect("delete the burst");
    }
    jobs.delete("crunch", &DeleteParams::background()).await.expect("delete the Job");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces.delete("bursts-quota", &DeleteParams::default()).await.expect("delete the quota's namespace");
    let gone = support::wait_until(Duration::from_secs(180), || async {
        let mut left = 0;
        for pool in ["bursts", "held", "jobs"] {
            left += claims_of(&client, pool).await.len();
        }
        (left == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "empty nodes removed");
    for pool in ["bursts", "held", "jobs"] {
        assert!(support::instances_match_claims(&client, pool, Duration::from_secs(60)).await, "no instance leaked");
    }
}
