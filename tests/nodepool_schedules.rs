//! A NodePool schedule on the local control plane and the AWS emulator, with stoker's
//! controller and the node simulator in this process: a window with `limits: {cpu: 0}` drains
//! the pool's nodes one at a time (its budget), launches nothing while open although pods wait,
//! says so in status, and when the clock closes it the nodes come back for the waiting pods.

mod support;

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Timelike, Utc};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::{Value, json};
use stoker::apis::{NodeClaim, NodePool};
use support::{apply, claims_of, running, wait_until};

const POOL: &str = "scheduled";
const APP: &str = "scheduled-work";

/// The pool, with a window `off` that opened at the start of `opened`'s minute and closes at
/// `closes`, setting cpu to zero; no window when `None`.
fn pool(window: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Value {
    let mut pool = support::on_demand_pool(
        POOL,
        POOL,
        "m5.large",
        json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never", "budgets": [{"nodes": "1"}]}),
    );
    if let Some((opened, closes)) = window {
        let minute = opened.with_second(0).and_then(|t| t.with_nanosecond(0)).expect("a minute");
        pool["spec"]["schedules"] = json!([{
            "name": "off",
            "start": format!("{} {} * * *", minute.minute(), minute.hour()),
            "duration": format!("{}s", (closes - minute).num_seconds()),
            "limits": {"cpu": "0"}
        }]);
    }
    pool
}

async fn status(client: &kube::Client) -> Value {
    let pools: Api<NodePool> = Api::all(client.clone());
    let pool = pools.get(POOL).await.expect("the pool");
    serde_json::to_value(pool.status.unwrap_or_default()).expect("status as JSON")
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_window_with_zero_limits_drains_the_pool_and_the_nodes_return_when_it_closes() {
    let client = support::client().await;
    support::start_stoker(&client, POOL).await;
    remove_pool_and_pods(&client).await;
    apply(&client, pool(None)).await;
    // One 1.5-CPU pod per m5.large: three nodes.
    apply(&client, support::deployment(APP, 3, "1500m", json!({"stoker.dev/nodepool": POOL}))).await;
    let up = wait_until(Duration::from_secs(120), || async { (running(&client, APP).await == 3).then_some(()) }).await;
    assert!(up.is_some(), "three pods run on three nodes");
    let before: BTreeSet<String> = claims_of(&client, POOL).await.iter().map(|c| c.name_any()).collect();
    assert_eq!(before.len(), 3);

    // The window opens now for ten minutes: status says so, and the next change is its close.
    let now = Utc::now();
    let closes = now + chrono::Duration::minutes(10);
    apply(&client, pool(Some((now, closes)))).await;
    let shown = wait_until(Duration::from_secs(30), || async {
        let status = status(&client).await;
        let next = &status["nextTransition"];
        let at: DateTime<Utc> = next["time"].as_str().and_then(|t| t.parse().ok())?;
        let closing = next["activeSchedules"] == json!([]) && (at - closes).num_seconds().abs() <= 1;
        (status["activeSchedules"] == json!(["off"]) && closing).then_some(())
    })
    .await;
    assert!(shown.is_some(), "status names the open window and its close: {}", status(&client).await);

    // Drained one node at a time (budget 1), never a launch for the pods that wait.
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let mut most_at_once = 0;
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let listed = claims.list(&ListParams::default().labels(&format!("stoker.dev/nodepool={POOL}"))).await;
        let listed = listed.expect("list claims").items;
        most_at_once = most_at_once.max(listed.iter().filter(|c| c.metadata.deletion_timestamp.is_some()).count());
        seen.extend(listed.iter().map(|c| c.name_any()));
        if listed.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the pool drains to zero; left: {}", listed.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(most_at_once, 1, "the budget lets one node go at a time");
    assert!(seen.is_subset(&before), "no launch while the window is open: {seen:?} beyond {before:?}");
    // Past the provisioner's periodic retry, the pods still wait and nothing launches.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(claims_of(&client, POOL).await.is_empty(), "no launch while the window is open");
    assert_eq!(running(&client, APP).await, 0, "the pods wait for the window to close");
    let notes = support::event_notes(&client, "DisruptionScheduled", |r| r.kind.as_deref() == Some("NodeClaim")).await;
    assert!(notes.iter().any(|n| n.contains("open schedule of NodePool scheduled")), "{notes:?}");

    // The window now closes 15 s from now, by the clock: status follows and the nodes return.
    let closes = Utc::now() + chrono::Duration::seconds(15);
    apply(&client, pool(Some((now, closes)))).await;
    let back =
        wait_until(Duration::from_secs(150), || async { (running(&client, APP).await == 3).then_some(()) }).await;
    assert!(back.is_some(), "the pods run again once the window closed");
    assert!(Utc::now() >= closes, "not before the window closed");
    let status = status(&client).await;
    assert!(status.get("activeSchedules").is_none(), "{status}");
    let next: DateTime<Utc> =
        status["nextTransition"]["time"].as_str().and_then(|t| t.parse().ok()).expect("the next opening");
    assert!((next - (now + chrono::Duration::days(1))).num_seconds().abs() <= 60, "opens again tomorrow: {next}");

    remove_pool_and_pods(&client).await;
    assert!(support::instances_match_claims(&client, POOL, Duration::from_secs(60)).await, "no instance left behind");
}

/// Deletes the Deployment and the pool, if there, and waits until the pool's claims are gone.
async fn remove_pool_and_pods(client: &kube::Client) {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "default");
    let _ = deployments.delete(APP, &DeleteParams::default()).await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let _ = pools.delete(POOL, &DeleteParams::default()).await;
    let emptied = wait_until(Duration::from_secs(120), || async {
        let gone = pools.get_opt(POOL).await.ok()?.is_none() && claims_of(client, POOL).await.is_empty();
        gone.then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the pool and its claims go");
}
