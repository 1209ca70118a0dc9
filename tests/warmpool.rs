//! The WarmPool controller against the real apiserver and controller-manager of the local
//! environment: a window a minute away scales the pause Deployment up at (start − leadTime) and
//! back down at its end, with status, Events and the PriorityClass to match; a bad schedule is
//! reported in status without touching the size.

mod support;

use std::time::Duration;

use chrono::{Duration as ChronoDuration, DurationRound, Timelike, Utc};
use k8s_openapi::api::{
    core::v1::{Event, Namespace},
    scheduling::v1::PriorityClass,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use stoker::{apis::WarmPool, controllers::warmpool::reconcile};
use support::{client, install_crds, wait_until};

const NAMESPACE: &str = "warmpool-e2e";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_window_scales_pause_pods_up_before_its_start_and_down_at_its_end() {
    let client = client().await;
    install_crds(&client).await;
    support::fresh_namespace(&client, NAMESPACE).await;
    let restricted = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.patch(NAMESPACE, &PatchParams::default(), &Patch::Merge(&restricted)).await.unwrap();

    let shared = support::shared(&client, ()).await;
    let metrics = shared.metrics.clone();
    let policy = stoker::controllers::warmpool::admission::Policy {
        images: vec![stoker::apis::warmpool::DEFAULT_PAUSE_IMAGE.into()],
        nodepools: Vec::new(),
    };
    let controller = tokio::spawn(reconcile::run(shared, policy));

    // A window opening at the first whole minute at least 50 s away, for one minute, 20 s lead.
    let start = (Utc::now() + ChronoDuration::seconds(50)).duration_trunc(ChronoDuration::minutes(1)).unwrap()
        + ChronoDuration::minutes(1);
    let lead = ChronoDuration::seconds(20);
    let pool: WarmPool = serde_json::from_value(json!({
        "apiVersion": "stoker.dev/v1alpha1", "kind": "WarmPool",
        "metadata": {"name": "rush", "namespace": NAMESPACE},
        "spec": {
            "baseline": 1, "leadTime": "20s",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            "schedules": [{"name": "soon", "start": format!("{} {} * * *", start.minute(), start.hour()), "duration": "1m", "replicas": 3}]
        }
    }))
    .unwrap();
    let pools: Api<WarmPool> = Api::namespaced(client.clone(), NAMESPACE);
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let pause_pods = || support::pause_replicas(&client, NAMESPACE, "rush");

    // Baseline first, with the next transition in status.
    let status = wait_until(Duration::from_secs(20), || {
        let pools = pools.clone();
        async move {
            let status = pools.get("rush").await.ok()?.status?;
            (pause_pods().await == Some(1) && status.next_transition.is_some()).then_some(status)
        }
    })
    .await
    .expect("the pool at its baseline of 1, with a next transition");
    let next = status.next_transition.unwrap();
    assert_eq!(next.replicas, 3);
    let exported = metrics.render();
    let desired = format!("stoker_warmpool_desired_replicas{{namespace=\"{NAMESPACE}\",warmpool=\"rush\"}} 1");
    assert!(exported.contains(&desired), "{desired} not in:\n{exported}");
    assert_eq!(next.time.0.as_second(), (start - lead).timestamp());
    assert!(status.conditions.iter().any(|c| c.type_ == "ScheduleValid" && c.status == "True"));
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let class = classes.get("stoker-warm-pool").await.expect("the default PriorityClass");
    assert_eq!((class.value, class.preemption_policy.as_deref()), (Some(-1), Some("Never")));

    // Up at start − lead, not before.
    let up_at = start - lead;
    let seconds_to_up = (up_at - Utc::now()).num_milliseconds() as f64 / 1000.0;
    assert!(seconds_to_up > 2.0, "the test setup took too long ({seconds_to_up}s left)");
    tokio::time::sleep(Duration::from_secs_f64(seconds_to_up - 2.0)).await;
    assert_eq!(pause_pods().await, Some(1), "still at baseline just before start − lead");
    wait_until(Duration::from_secs(15), || async { (pause_pods().await == Some(3)).then_some(()) })
        .await
        .expect("3 pause pods from start − lead");
    let scaled_after = (Utc::now() - up_at).num_milliseconds();
    assert!((0..10_000).contains(&scaled_after), "scaled {scaled_after} ms after start − lead");

    // Down at the end of the window.
    let down_at = start + ChronoDuration::minutes(1);
    tokio::time::sleep(Duration::from_secs_f64(((down_at - Utc::now()).num_milliseconds().max(0) as f64) / 1000.0))
        .await;
    wait_until(Duration::from_secs(15), || async { (pause_pods().await == Some(1)).then_some(()) })
        .await
        .expect("back to the baseline at the window's end");

    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let scaled: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref().is_some_and(|r| r.starts_with("Scaled")))
        .filter_map(|e| e.message)
        .collect();
    assert!(scaled.iter().any(|m| m.contains("from 1 to 3 (soon)")), "{scaled:?}");

    // A bad schedule is reported, and the size stays.
    let broken =
        json!({"spec": {"schedules": [{"name": "soon", "start": "0 25 * * *", "duration": "1m", "replicas": 7}]}});
    pools.patch("rush", &PatchParams::default(), &Patch::Merge(&broken)).await.unwrap();
    let condition = wait_until(Duration::from_secs(15), || {
        let pools = pools.clone();
        async move {
            let status = pools.get("rush").await.ok()?.status?;
            status.conditions.into_iter().find(|c| c.type_ == "ScheduleValid" && c.status == "False")
        }
    })
    .await
    .expect("ScheduleValid=False");
    assert!(condition.message.contains("spec.schedules[0].start"), "{}", condition.message);
    assert_eq!(pause_pods().await, Some(1));
    // The namespace enforces the restricted Pod Security profile: the pause pods were admitted.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let admitted = wait_until(Duration::from_secs(30), || async {
        let listed = pods.list(&ListParams::default().labels("stoker.dev/warmpool=rush")).await.ok()?;
        (!listed.items.is_empty()).then_some(())
    })
    .await;
    assert!(admitted.is_some(), "pause pods start in a namespace enforcing the restricted profile");

    // A namespace user asking for system-node-critical pause pods gets a refusal, not pods.
    let escalating: WarmPool = serde_json::from_value(json!({
        "apiVersion": "stoker.dev/v1alpha1", "kind": "WarmPool",
        "metadata": {"name": "escalate", "namespace": NAMESPACE},
        "spec": {"baseline": 2, "priorityClassName": "system-node-critical", "resources": {"requests": {"cpu": "100m"}}}
    }))
    .unwrap();
    pools.create(&PostParams::default(), &escalating).await.unwrap();
    let refused = wait_until(Duration::from_secs(15), || {
        let pools = pools.clone();
        async move {
            let status = pools.get("escalate").await.ok()?.status?;
            status.conditions.into_iter().find(|c| c.type_ == "Admitted" && c.status == "False")
        }
    })
    .await
    .expect("Admitted=False");
    assert!(refused.message.contains("spec.priorityClassName"), "{}", refused.message);
    assert_eq!(support::pause_replicas(&client, NAMESPACE, "escalate").await, None, "no Deployment for a refused pool");

    controller.abort();
    let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
}
