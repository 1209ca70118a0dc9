//! Support for tests that run against the local environment (`hack/local-up.sh`): a client for
//! the real apiserver, CRD installation, and manifest helpers.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod fault_proxy;
pub mod iam;
pub mod tcp_proxy;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery,
};
use serde_json::Value;

pub const FIELD_MANAGER: &str = "stoker-tests";

/// A client for the local apiserver, from `KUBECONFIG` as `hack/test.sh` exports it.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: these tests need the local environment; run hack/test.sh (or hack/local-up.sh and source .local/env)"
    );
    Client::try_default().await.expect("a client for the local apiserver")
}

/// Applies every stoker CRD and waits until the apiserver serves them.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in stoker::apis::crds() {
        api.patch(&crd.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|error| panic!("applying CRD {}: {error}", crd.name_any()));
    }
    for crd in stoker::apis::crds() {
        let name = crd.name_any();
        let established = wait_until(Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
            }
        })
        .await;
        assert!(established.is_some(), "CRD {name} did not become Established");
    }
}

/// Polls `check` until it returns Some or the timeout passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every YAML document in a string, as JSON values.
pub fn documents(yaml: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("valid YAML");
    documents.into_iter().filter(|value| !value.is_null()).collect()
}

/// The API for an object's kind, namespaced where the object says so.
pub async fn api_for(client: &Client, object: &Value) -> (Api<DynamicObject>, DynamicObject) {
    let object: DynamicObject = serde_json::from_value(object.clone()).expect("a Kubernetes object");
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("a valid apiVersion");
    let (resource, capabilities): (ApiResource, _) = discovery::pinned_kind(client, &gvk).await.expect("a served kind");
    let api = match (&capabilities.scope, object.namespace()) {
        (discovery::Scope::Namespaced, namespace) => {
            Api::namespaced_with(client.clone(), namespace.as_deref().unwrap_or("default"), &resource)
        }
        (discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    (api, object)
}

/// Creates an object with `dryRun=All`: the apiserver validates it fully and stores nothing.
pub async fn dry_run_create(client: &Client, object: &Value) -> Result<(), kube::Error> {
    let (api, object) = api_for(client, object).await;
    api.create(&PostParams { dry_run: true, field_manager: Some(FIELD_MANAGER.into()) }, &object).await.map(|_| ())
}

/// Replaces the value at a JSON pointer (creating missing parent objects) and returns the result.
pub fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let mut target = &mut object;
    for segment in parent.split('/').skip(1) {
        target = match target {
            Value::Array(items) => &mut items[segment.parse::<usize>().expect("an array index")],
            Value::Object(map) => map.entry(segment).or_insert_with(|| Value::Object(Default::default())),
            other => panic!("cannot descend into {other}"),
        };
    }
    match target {
        Value::Array(items) => items[key.parse::<usize>().expect("an array index")] = value,
        Value::Object(map) => {
            map.insert(key.replace("~1", "/").replace("~0", "~"), value);
        }
        other => panic!("cannot set {key} in {other}"),
    }
    object
}

/// Removes the value at a JSON pointer.
pub fn without(mut object: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    if let Some(Value::Object(map)) = object.pointer_mut(parent) {
        map.remove(key);
    }
    object
}

/// The Events with `reason` about objects `regarding` accepts.
pub async fn events(
    client: &Client,
    reason: &str,
    regarding: impl Fn(&k8s_openapi::api::core::v1::ObjectReference) -> bool,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().is_some_and(&regarding))
        .collect()
}

/// Notes of the Events with `reason` about objects `regarding` accepts.
pub async fn event_notes(
    client: &Client,
    reason: &str,
    regarding: impl Fn(&k8s_openapi::api::core::v1::ObjectReference) -> bool,
) -> Vec<String> {
    events(client, reason, regarding).await.into_iter().filter_map(|e| e.note).collect()
}

/// The repository's examples, file name and documents. Paths in tests are relative to the package
/// root, cargo's working directory for tests: a compile-time `CARGO_MANIFEST_DIR` would name
/// whichever checkout last built the shared target directory.
pub fn examples() -> Vec<(String, Vec<Value>)> {
    let dir = "examples";
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable example");
            (path.file_name().unwrap().to_string_lossy().into_owned(), documents(&text))
        })
        .collect()
}

/// The first document of an example file.
pub fn example(name: &str) -> Value {
    examples()
        .into_iter()
        .find(|(file, _)| file == name)
        .and_then(|(_, documents)| documents.into_iter().next())
        .unwrap_or_else(|| panic!("no example {name}"))
}

/// A variable `hack/test.sh` exports (from `.local/test/env`).
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} from hack/test.sh"))
}

/// Creates namespace `name` afresh, after any left by an earlier run has gone.
pub async fn fresh_namespace(client: &Client, name: &str) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &kube::api::DeleteParams::default()).await;
    wait_until(Duration::from_secs(60), || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt(name).await.ok().flatten().is_none().then_some(()) }
    })
    .await
    .expect("the old test namespace to go away");
    let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("a namespace");
    namespaces.create(&PostParams::default(), &namespace).await.expect("the test namespace");
}

/// How many pause pods the WarmPool `pool` in `namespace` asks for; None before its Deployment exists.
pub async fn pause_replicas(client: &Client, namespace: &str, pool: &str) -> Option<i32> {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), namespace);
    deployments.get_opt(&format!("warmpool-{pool}")).await.ok().flatten()?.spec.replicas
}

/// Server-side applies a manifest with the tests' field manager.
pub async fn apply(client: &Client, manifest: Value) {
    let (api, object) = api_for(client, &manifest).await;
    api.patch(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", object.name_any()));
}

/// Controller settings for the local environment (metrics and health on free ports).
pub fn settings() -> stoker::operator::Settings {
    stoker::operator::Settings {
        cluster_name: env("CLUSTER_NAME"),
        cluster_endpoint: Some(env("CLUSTER_ENDPOINT")),
        cluster_ca_bundle: Some(env("CLUSTER_CA_BUNDLE")),
        cluster_service_cidr: Some(env("CLUSTER_SERVICE_CIDR")),
        region: None,
        batch_idle_duration: "1s".parse().expect("duration"),
        batch_max_duration: "10s".parse().expect("duration"),
        consolidation_validation_delay: "15s".parse().expect("duration"),
        node_repair_after: "30m".parse().expect("duration"),
        log_level: "info".into(),
        log_format: stoker::operator::settings::LogFormat::Text,
        metrics_address: "127.0.0.1:0".into(),
        health_address: "127.0.0.1:0".into(),
        leader_elect: true,
        leader_election_namespace: "default".into(),
        feature_gates: Default::default(),
        warm_pool_images: vec![stoker::apis::warmpool::DEFAULT_PAUSE_IMAGE.into()],
        warm_pool_nodepools: Vec::new(),
        interruption_queue: None,
        act_on_rebalance_recommendations: false,
        policies: Default::default(),
    }
}

/// The cluster as the cloud provider needs it to list this cluster's instances.
pub fn cluster_info() -> stoker::cloudprovider::aws::ClusterInfo {
    stoker::cloudprovider::aws::ClusterInfo {
        name: env("CLUSTER_NAME"),
        endpoint: String::new(),
        ca_bundle: String::new(),
        service_cidr: String::new(),
        kubernetes_minor: String::new(),
    }
}

/// A NodePool of EC2NodeClass `class` whose nodes meet `requirements` (a JSON array), with
/// `disruption`; a test adds what else it needs with [`with`].
pub fn nodepool(name: &str, class: &str, requirements: Value, disruption: Value) -> Value {
    serde_json::json!({
        "apiVersion": "stoker.dev/v1alpha1", "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": class},
                "requirements": requirements
            }},
            "disruption": disruption
        }
    })
}

/// A requirement that `key` takes one of `values`.
pub fn one_of(key: &str, values: &[&str]) -> Value {
    serde_json::json!({"key": key, "operator": "In", "values": values})
}

/// A NodePool of one on-demand instance type of EC2NodeClass `class`, with `disruption`.
pub fn on_demand_pool(name: &str, class: &str, instance_type: &str, disruption: Value) -> Value {
    let requirements = serde_json::json!([
        one_of("node.kubernetes.io/instance-type", &[instance_type]),
        one_of("karpenter.sh/capacity-type", &["on-demand"])
    ]);
    nodepool(name, class, requirements, disruption)
}

/// A Deployment of pause containers in `default`, each requesting `cpu` and 256Mi.
pub fn deployment(name: &str, replicas: i32, cpu: &str, node_selector: Value) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "nodeSelector": node_selector,
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]
                }
            }
        }
    })
}

/// The pods of a Deployment made by [`deployment`].
pub async fn pods_of(client: &Client, app: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    pods_in(client, "default", app).await
}

/// The pods labelled `app` in `namespace`.
pub async fn pods_in(client: &Client, namespace: &str, app: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    pods.list(&kube::api::ListParams::default().labels(&format!("app={app}"))).await.expect("list pods").items
}

/// How many of a Deployment's pods run.
pub async fn running(client: &Client, app: &str) -> usize {
    running_in(client, "default", app).await
}

/// How many of the pods labelled `app` in `namespace` run.
pub async fn running_in(client: &Client, namespace: &str, app: &str) -> usize {
    pods_in(client, namespace, app)
        .await
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

/// A `stoker controller` process named `name` (its log in the temp directory), with extra
/// environment; killed when dropped.
pub fn controller(name: &str, extra_env: &[(&str, &str)]) -> tokio::process::Child {
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{name}.log"))).expect("a log file");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_stoker"))
        .arg("controller")
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", "default")
        .env("LOG_FORMAT", "text")
        .env("METRICS_ADDRESS", "127.0.0.1:0")
        .env("HEALTH_ADDRESS", "127.0.0.1:0")
        .envs(extra_env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start stoker controller")
}

/// What a controller started by [`controller`] logged so far.
pub fn log_of(name: &str) -> String {
    std::fs::read_to_string(std::env::temp_dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// How many AWS calls the emulator has recorded so far (`STOKER_AWS_CALL_LOG`): pass it to
/// [`recorded_calls`] to see only the calls made after.
pub fn calls_recorded() -> usize {
    std::fs::read_to_string(env("STOKER_AWS_CALL_LOG")).map(|log| log.lines().count()).unwrap_or(0)
}

/// The parameters of each `action` call stoker made after the first `since` recorded calls for
/// which `pick` holds, in order.
pub fn recorded_calls(
    since: usize,
    action: &str,
    pick: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> Vec<std::collections::BTreeMap<String, String>> {
    let log = std::fs::read_to_string(env("STOKER_AWS_CALL_LOG")).expect("the emulator's call log");
    log.lines()
        .skip(since)
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|call| call["action"] == action)
        .filter_map(|call| serde_json::from_value(call["params"].clone()).ok())
        .filter(|params| pick(params))
        .collect()
}

/// What `/metrics` at `address` serves, over plain HTTP/1.0.
pub async fn scrape(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("the metrics endpoint");
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.expect("a request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("a response");
    response
}

/// Starts stoker's controller and the node simulator in this process (logs to the test output)
/// and applies the example EC2NodeClass under `class_name`: the setup of the in-process
/// end-to-end tests. Returns the address its metrics are served on.
pub async fn start_stoker(client: &Client, class_name: &str) -> String {
    start_stoker_with(client, class_name, settings()).await
}

/// [`start_stoker`] with these settings (its metrics address replaced by a free port).
pub async fn start_stoker_with(client: &Client, class_name: &str, settings: stoker::operator::Settings) -> String {
    let _ = tracing_subscriber::fmt().with_env_filter("stoker=info").with_test_writer().try_init();
    install_crds(client).await;
    let metrics_address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    tokio::spawn(stoker::operator::run(stoker::operator::Settings {
        metrics_address: metrics_address.clone(),
        ..settings
    }));
    tokio::spawn(stoker::cli::simulator::run(env("CLUSTER_NAME"), Duration::from_secs(1)));
    let mut class = example("ec2nodeclass.yaml");
    class["metadata"]["name"] = serde_json::json!(class_name);
    apply(client, class).await;
    metrics_address
}

/// What the controllers share, for running one controller in a test: a fresh cluster state
/// (listed before this returns), an Event recorder, metrics, and `provider`.
pub async fn shared<P>(client: &Client, provider: P) -> std::sync::Arc<stoker::controllers::Shared<P>> {
    let served = stoker::state::capacity_buffers_served(client).await;
    let state = stoker::state::ClusterState::start(client, served, |_| {});
    state.ready().await.expect("the caches list");
    let reporter = kube::runtime::events::Reporter { controller: "stoker-test".into(), instance: None };
    std::sync::Arc::new(stoker::controllers::Shared {
        client: client.clone(),
        recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
        metrics: Default::default(),
        provider: std::sync::Arc::new(provider),
        state,
        provisionable: Default::default(),
        preemptions: tokio::sync::broadcast::channel(16).0,
        policies: Default::default(),
        buffer_outcomes: Default::default(),
        nominations: Default::default(),
    })
}

/// The NodeClaims of NodePool `pool`.
pub async fn claims_of(client: &Client, pool: &str) -> Vec<stoker::apis::NodeClaim> {
    let api: Api<stoker::apis::NodeClaim> = Api::all(client.clone());
    let selector = format!("{}={pool}", stoker::apis::labels::NODEPOOL);
    api.list(&kube::api::ListParams::default().labels(&selector)).await.expect("list claims").items
}

/// A targeted capacity reservation for one m5.large in us-east-1a, made in the emulator and
/// tagged `team: TEAM` (a tag of the caller's own, so no other reservation matches its terms);
/// returns its ID.
pub async fn capacity_reservation(ec2: &aws_sdk_ec2::Client, team: &str) -> String {
    use aws_sdk_ec2::types::{CapacityReservationInstancePlatform, InstanceMatchCriteria};
    let reservation = ec2
        .create_capacity_reservation()
        .instance_type("m5.large")
        .instance_platform(CapacityReservationInstancePlatform::LinuxUnix)
        .availability_zone("us-east-1a")
        .instance_count(1)
        .instance_match_criteria(InstanceMatchCriteria::Targeted)
        .tag_specifications(reservation_tags(team))
        .send()
        .await
        .expect("a capacity reservation in the emulator");
    let id = reservation.capacity_reservation().and_then(|r| r.capacity_reservation_id());
    id.expect("its ID").to_owned()
}

/// Buys a one-instance m5.large Capacity Block in us-east-1a tagged `team=<team>`, from `start`
/// for `hours` (the emulator sells blocks that started in the past); returns its ID.
pub async fn capacity_block(
    ec2: &aws_sdk_ec2::Client,
    team: &str,
    start: chrono::DateTime<chrono::Utc>,
    hours: i32,
) -> String {
    use aws_sdk_ec2::{primitives::DateTime, types::CapacityReservationInstancePlatform};
    let offerings = ec2
        .describe_capacity_block_offerings()
        .instance_type("m5.large")
        .instance_count(1)
        .capacity_duration_hours(hours)
        .start_date_range(DateTime::from_secs(start.timestamp()))
        .send()
        .await
        .expect("Capacity Block offerings");
    let offering = offerings
        .capacity_block_offerings()
        .iter()
        .find(|o| o.availability_zone() == Some("us-east-1a"))
        .and_then(|o| o.capacity_block_offering_id())
        .expect("an offering in us-east-1a");
    let bought = ec2
        .purchase_capacity_block()
        .capacity_block_offering_id(offering)
        .instance_platform(CapacityReservationInstancePlatform::LinuxUnix)
        .tag_specifications(reservation_tags(team))
        .send()
        .await
        .expect("a Capacity Block");
    let id = bought.capacity_reservation().and_then(|r| r.capacity_reservation_id());
    id.expect("its ID").to_owned()
}

/// The tag `team=<team>` on a capacity reservation being made: what a test's node class selects.
pub fn reservation_tags(team: &str) -> aws_sdk_ec2::types::TagSpecification {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    TagSpecification::builder()
        .resource_type(ResourceType::CapacityReservation)
        .tags(Tag::builder().key("team").value(team).build())
        .build()
}

/// Whether the live instances launched for NodePool `pool` are exactly its claims' (none leaked,
/// none missing), waiting up to `timeout` for terminations to finish.
pub async fn instances_match_claims(client: &Client, pool: &str, timeout: Duration) -> bool {
    use stoker::cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, aws_config},
    };
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(cluster_info()));
    wait_until(timeout, || async {
        let claimed: std::collections::BTreeSet<String> =
            claims_of(client, pool).await.iter().filter_map(|c| c.status.as_ref()?.provider_id.clone()).collect();
        let live: std::collections::BTreeSet<String> = provider
            .list()
            .await
            .ok()?
            .into_iter()
            .filter(|i| i.tags.get(stoker::apis::labels::EC2_NODEPOOL_TAG).is_some_and(|p| p == pool))
            .map(|i| i.provider_id)
            .collect();
        (live == claimed).then_some(())
    })
    .await
    .is_some()
}
