//! Hostile input against the real apiserver while a provisioning burst runs (corpus and what is
//! expected of each object: `tests/hostile/`).
//!
//! - What the schema can check, the apiserver refuses, naming the field.
//! - What an older, looser CRD let through (written here under a CRD whose `spec` accepts
//!   anything, then the real CRD is put back) is reported and ignored: objects this version
//!   cannot decode, durations past any sensible bound (one of them once panicked every replica),
//!   counts past `int32`, values of the wrong type.
//! - Meanwhile two controller processes stay up, the burst's pods all run, a good WarmPool keeps
//!   its pause pods, and nothing logs a panic.

mod support;

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod, events::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use stoker::apis::NodeClaim;
use support::{FIELD_MANAGER, api_for, apply, controller, documents, env, log_of, running, wait_until};

const NAMESPACE: &str = "hostile-e2e";

fn corpus(file: &str) -> Vec<Value> {
    let path = format!("tests/hostile/{file}");
    documents(&std::fs::read_to_string(&path).expect("the corpus"))
        .into_iter()
        .map(|mut object| {
            if object["kind"] == "WarmPool" {
                object["metadata"]["namespace"] = json!(NAMESPACE);
            }
            object
        })
        .collect()
}

fn annotation<'a>(object: &'a Value, key: &str) -> &'a str {
    object["metadata"]["annotations"][key].as_str().unwrap_or_else(|| panic!("{key} on {object}"))
}

fn describe(object: &Value) -> String {
    format!("{} {}", object["kind"].as_str().unwrap_or("?"), object["metadata"]["name"].as_str().unwrap_or("?"))
}

/// The CRDs as an older, looser stoker might have had them: any `spec` is stored.
fn loose_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = stoker::apis::crds();
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            let schema = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()).expect("a schema");
            let properties = schema.properties.as_mut().expect("properties");
            properties.insert(
                "spec".into(),
                JSONSchemaProps {
                    type_: Some("object".into()),
                    x_kubernetes_preserve_unknown_fields: Some(true),
                    ..Default::default()
                },
            );
            schema.x_kubernetes_validations = None;
        }
    }
    crds
}

async fn apply_crds(client: &Client, crds: &[CustomResourceDefinition]) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        api.patch(&crd.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(crd))
            .await
            .unwrap_or_else(|error| panic!("applying CRD {}: {error}", crd.name_any()));
    }
    // Schema changes reach the apiserver's handlers a moment after the CRD is updated.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// Writes the stored corpus under the loose CRDs, then puts the real ones back.
async fn store_past_validation(client: &Client, objects: &[Value]) {
    apply_crds(client, &loose_crds()).await;
    let mut written = Ok(());
    for object in objects {
        let (api, dynamic) = api_for(client, object).await;
        let _ = api.delete(&dynamic.name_any(), &DeleteParams::default()).await;
        let created = wait_until(Duration::from_secs(20), || {
            let (api, dynamic) = (api.clone(), dynamic.clone());
            async move { api.create(&PostParams::default(), &dynamic).await.ok() }
        })
        .await;
        if created.is_none() {
            written = Err(format!("{} was not stored under the loose CRD", describe(object)));
            break;
        }
    }
    support::install_crds(client).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    written.expect("the stored corpus written");
}

/// Warning Events with `reason` about the object named `name`.
async fn warnings(client: &Client, name: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::all(client.clone());
    events
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.note)
        .collect()
}

/// The status and reason of a condition of a stored object, read without decoding its spec.
async fn condition(client: &Client, object: &Value, type_: &str) -> Option<(String, String)> {
    let (api, dynamic) = api_for(client, object).await;
    let current: DynamicObject = api.get(&dynamic.name_any()).await.ok()?;
    let conditions = current.data["status"]["conditions"].as_array()?.clone();
    let found = conditions.into_iter().find(|c| c["type"] == type_)?;
    Some((found["status"].as_str()?.to_owned(), found["reason"].as_str()?.to_owned()))
}

/// How stoker shows an object of this kind as reported: the condition it sets False, if any.
fn reported_condition(kind: &str, expect: &str) -> Option<(&'static str, &'static str)> {
    match (kind, expect) {
        ("NodePool", "undecodable" | "invalid") => Some(("ValidationSucceeded", "InvalidSpec")),
        ("EC2NodeClass" | "WarmPool", "undecodable") => Some(("Ready", "InvalidSpec")),
        ("WarmPool", "invalid") => Some(("ScheduleValid", "InvalidSchedule")),
        _ => None,
    }
}

fn burst(replicas: i32) -> Value {
    support::deployment("hostile-burst", replicas, "500m", json!({"stoker.dev/nodepool": "hostile"}))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn hostile_objects_are_refused_or_reported_while_provisioning_goes_on() {
    let client = support::client().await;
    support::install_crds(&client).await;
    support::fresh_namespace(&client, NAMESPACE).await;

    // 1. The schema refuses what it can check, naming the field.
    for object in corpus("refused.yaml") {
        let field = annotation(&object, "hostile.stoker.dev/refused-field");
        match support::dry_run_create(&client, &object).await {
            Ok(()) => panic!("{} was accepted", describe(&object)),
            Err(error) => {
                assert!(error.to_string().contains(field), "{}: {error} does not name {field}", describe(&object))
            }
        }
    }

    // 2. What an older CRD let through is stored before any controller runs.
    let stored = corpus("stored.yaml");
    store_past_validation(&client, &stored).await;

    // 3. Two replicas, the node simulator, and good objects beside the bad ones.
    tokio::spawn(stoker::cli::simulator::run(env("CLUSTER_NAME"), Duration::from_secs(1)));
    let mut leader = controller("stoker-hostile-a", &[]);
    let mut standby = controller("stoker-hostile-b", &[]);
    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!("hostile");
    apply(&client, class).await;
    let requirements = json!([support::one_of("node.kubernetes.io/instance-type", &["c6a.2xlarge"])]);
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    apply(&client, support::nodepool("hostile", "hostile", requirements, disruption)).await;
    apply(
        &client,
        json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "WarmPool",
            "metadata": {"name": "steady", "namespace": NAMESPACE},
            "spec": {"baseline": 2, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                     "nodeSelector": {"stoker.dev/nodepool": "hostile"}}
        }),
    )
    .await;
    // A pod asking for more than any machine has, close to the largest amount a quantity can
    // hold, so every sum it enters must saturate: it stays pending, and nothing else does. (Two
    // such containers would overflow the scheduler's own sum, which then binds the pod.)
    apply(
        &client,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hostile-huge", "namespace": NAMESPACE},
            "spec": {
                "nodeSelector": {"stoker.dev/nodepool": "hostile"},
                "containers": [
                    {"name": "a", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "9e15"}}},
                    {"name": "b", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "1"}}}
                ]
            }
        }),
    )
    .await;
    apply(&client, burst(12)).await;

    // 4. The burst runs, the good WarmPool holds its pause pods, and every bad object is reported.
    let ran = wait_until(Duration::from_secs(180), || async {
        (running(&client, "hostile-burst").await == 12).then_some(())
    })
    .await;
    assert!(ran.is_some(), "12 pods run beside the hostile objects; log:\n{}", log_of("stoker-hostile-a"));
    let held = wait_until(Duration::from_secs(60), || async {
        (support::pause_replicas(&client, NAMESPACE, "steady").await == Some(2)).then_some(())
    })
    .await;
    assert!(held.is_some(), "the good WarmPool holds its pause pods");
    for object in &stored {
        let expect = annotation(object, "hostile.stoker.dev/expect");
        let name = object["metadata"]["name"].as_str().expect("a name");
        let kind = object["kind"].as_str().expect("a kind");
        if matches!(expect, "undecodable" | "unwritable") {
            let reported =
                wait_until(Duration::from_secs(60), || async { warnings(&client, name, "InvalidSpec").await.pop() })
                    .await;
            assert!(reported.is_some(), "no InvalidSpec Event for {}", describe(object));
        }
        match reported_condition(kind, expect) {
            Some((type_, reason)) => {
                let shown = wait_until(Duration::from_secs(60), || async {
                    (condition(&client, object, type_).await? == ("False".to_owned(), reason.to_owned())).then_some(())
                })
                .await;
                assert!(shown.is_some(), "{} has no {type_}=False ({reason})", describe(object));
            }
            None if expect == "fine" => {
                let type_ = if kind == "NodePool" { "ValidationSucceeded" } else { "ScheduleValid" };
                let reconciled = wait_until(Duration::from_secs(60), || async {
                    (condition(&client, object, type_).await?.0 == "True").then_some(())
                })
                .await;
                assert!(reconciled.is_some(), "{} was not reconciled", describe(object));
            }
            None => {}
        }
    }
    let huge: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let huge = huge.get("hostile-huge").await.expect("the huge pod");
    assert!(huge.spec.and_then(|s| s.node_name).is_none(), "a pod asking for 9e15 CPUs got a node");

    // 5. A burst after all that is still served, by both processes alive and panic-free.
    apply(&client, burst(20)).await;
    let ran = wait_until(Duration::from_secs(180), || async {
        (running(&client, "hostile-burst").await == 20).then_some(())
    })
    .await;
    assert!(ran.is_some(), "20 pods run; log:\n{}", log_of("stoker-hostile-a"));
    for (name, process) in [("stoker-hostile-a", &mut leader), ("stoker-hostile-b", &mut standby)] {
        assert!(process.try_wait().expect("process state").is_none(), "{name} exited; log:\n{}", log_of(name));
        assert!(!log_of(name).contains("panicked"), "{name} panicked; log:\n{}", log_of(name));
    }

    // Clean up: the bad objects and the namespace (with the pause pods) go, then the burst's
    // nodes, emptied, go under the same leader.
    for object in &stored {
        let (api, dynamic) = api_for(&client, object).await;
        let _ = api.delete(&dynamic.name_any(), &DeleteParams::default()).await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("hostile-burst", &DeleteParams::default()).await.expect("delete the burst");
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let emptied = wait_until(Duration::from_secs(120), || async {
        let left = claims.list(&ListParams::default().labels("stoker.dev/nodepool=hostile")).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the burst's nodes removed");
}
