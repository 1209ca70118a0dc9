//! Warm pools with the whole controller, on the local control plane and the AWS emulator: pause
//! pods pull nodes in; a real pod preempts a pause pod and runs at once; the preempted pause pod
//! pulls in replacement capacity; the WarmPool counts the preemption. Prints how long the real
//! pod took to run, warm and cold (figures for docs/performance.md, not asserted).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;
use stoker::apis::{NodeClaim, WarmPool};
use support::apply;

/// A NodePool of c6a.xlarge only (3,920m allocatable CPU), so two 1,800m pause pods fill a node.
fn pool(name: &str) -> serde_json::Value {
    support::on_demand_pool(name, "warm", "c6a.xlarge", json!({"consolidateAfter": "Never"}))
}

fn real_pod(name: &str, pool: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "real"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": {"stoker.dev/nodepool": pool},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "1800m", "memory": "512Mi"}}}]
        }
    }))
    .expect("a Pod")
}

/// Creates the pod and returns how long it took to run.
async fn time_to_running(client: &Client, pod: Pod) -> Duration {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = pod.name_any();
    let _ = pods.delete(&name, &DeleteParams::default()).await;
    support::wait_until(Duration::from_secs(30), || async { pods.get_opt(&name).await.ok()?.is_none().then_some(()) })
        .await;
    let started = Instant::now();
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    support::wait_until(Duration::from_secs(120), || async {
        let pod = pods.get_opt(&name).await.ok()??;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{name} did not run"));
    started.elapsed()
}

async fn ready_pause_pods(client: &Client) -> i32 {
    let pools: Api<WarmPool> = Api::namespaced(client.clone(), "default");
    pools.get("warm").await.ok().and_then(|p| p.status).and_then(|s| s.ready_replicas).unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_real_pod_preempts_warm_capacity_and_the_pool_refills() {
    let client = support::client().await;
    support::start_stoker(&client, "warm").await;
    apply(&client, pool("warm")).await;
    apply(&client, pool("cold")).await;
    apply(
        &client,
        json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "WarmPool",
            "metadata": {"name": "warm", "namespace": "default"},
            "spec": {
                "baseline": 2,
                "resources": {"requests": {"cpu": "1800m", "memory": "512Mi"}},
                "nodeSelector": {"stoker.dev/nodepool": "warm"}
            }
        }),
    )
    .await;
    let warmed = support::wait_until(Duration::from_secs(120), || async {
        (ready_pause_pods(&client).await == 2).then_some(())
    })
    .await;
    assert!(warmed.is_some(), "the pause pods pulled a node in and run");
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let warm_claims = || async {
        claims.list(&ListParams::default().labels("stoker.dev/nodepool=warm")).await.expect("claims").items.len()
    };
    assert_eq!(warm_claims().await, 1, "two 1,800m pause pods fill one c6a.xlarge");

    // A real pod (priority 0 > -1) preempts a pause pod and runs on the warm node.
    let warm = time_to_running(&client, real_pod("real-warm", "warm")).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let node = pods.get("real-warm").await.expect("pod").spec.and_then(|s| s.node_name).expect("bound");
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(nodes.get(&node).await.expect("node").labels()["stoker.dev/nodepool"], "warm");

    // The preempted pause pod pulls a second node in; the pool is whole again and counts it.
    // The count can land before the Deployment's status drops to one ready replica (two writers,
    // no order between them), so "two ready" alone may still be the status from before the
    // preemption: the second NodeClaim is what says the pool refilled.
    let refilled = support::wait_until(Duration::from_secs(120), || async {
        let pools: Api<WarmPool> = Api::namespaced(client.clone(), "default");
        let status = pools.get("warm").await.ok()?.status?;
        let whole = status.ready_replicas == Some(2) && status.preemptions.unwrap_or(0) >= 1;
        (whole && warm_claims().await == 2).then_some(status)
    })
    .await
    .expect("replacement capacity for the preempted pause pod, pause pods ready again and the preemption counted");
    assert!(refilled.last_preemption_time.is_some());

    // Without warm capacity the same pod waits for a node to be launched and registered.
    let cold = time_to_running(&client, real_pod("real-cold", "cold")).await;
    println!("warm start: real pod running after {:.2}s; cold start: {:.2}s", warm.as_secs_f64(), cold.as_secs_f64());
    assert!(warm < cold, "warm {warm:?} is faster than cold {cold:?}");

    for name in ["real-warm", "real-cold"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
}
