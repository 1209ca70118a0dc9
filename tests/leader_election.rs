//! Two `stoker controller` processes against the local control plane and the AWS emulator: only
//! the Lease holder writes; when it is killed, the other takes over and goes on provisioning,
//! and no pod is launched for twice.

mod support;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::{
    apis::NodeClaim,
    cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, ClusterInfo, aws_config},
    },
};
use tokio::process::{Child, Command};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} from hack/test.sh"))
}

fn controller(name: &str) -> Child {
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{name}.log"))).expect("a log file");
    Command::new(env!("CARGO_BIN_EXE_stoker"))
        .arg("controller")
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", "default")
        .env("LOG_FORMAT", "text")
        .env("METRICS_ADDRESS", "127.0.0.1:0")
        .env("HEALTH_ADDRESS", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start stoker controller")
}

fn log_of(name: &str) -> String {
    std::fs::read_to_string(std::env::temp_dir().join(format!("{name}.log"))).unwrap_or_default()
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases.get_opt("stoker-leader-election").await.ok()??.spec?.holder_identity
}

async fn apply(client: &Client, manifest: serde_json::Value) {
    let (api, object) = support::api_for(client, &manifest).await;
    api.patch(&object.name_any(), &PatchParams::apply("stoker-tests").force(), &Patch::Apply(&manifest))
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", object.name_any()));
}

fn deployment(replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "le-burst", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "le-burst"}},
            "template": {
                "metadata": {"labels": {"app": "le-burst"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "nodeSelector": {"stoker.dev/nodepool": "le"},
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "1", "memory": "256Mi"}}}]
                }
            }
        }
    })
}

async fn running(client: &Client) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods.list(&ListParams::default().labels("app=le-burst")).await.expect("pods");
    list.items.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count()
}

async fn claims(client: &Client) -> Vec<NodeClaim> {
    let api: Api<NodeClaim> = Api::all(client.clone());
    api.list(&ListParams::default().labels("stoker.dev/nodepool=le")).await.expect("claims").items
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let client = support::client().await;
    support::install_crds(&client).await;
    tokio::spawn(stoker::cli::simulator::run(env("CLUSTER_NAME"), Duration::from_secs(1)));
    let mut first = controller("stoker-a");
    let led =
        support::wait_until(Duration::from_secs(60), || async { (holder(&client).await? == "stoker-a").then_some(()) })
            .await;
    assert!(led.is_some(), "stoker-a took the Lease; log:\n{}", log_of("stoker-a"));
    let _second = controller("stoker-b");

    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!("le");
    apply(&client, class).await;
    apply(
        &client,
        json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "le"},
            "spec": {
                "template": {"spec": {
                    "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "le"},
                    "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["c6a.2xlarge"]}]
                }},
                "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"}
            }
        }),
    )
    .await;
    apply(&client, deployment(6)).await;
    let ran =
        support::wait_until(Duration::from_secs(120), || async { (running(&client).await == 6).then_some(()) }).await;
    assert!(ran.is_some(), "6 pods run; leader log:\n{}", log_of("stoker-a"));
    assert_eq!(holder(&client).await.as_deref(), Some("stoker-a"));
    assert!(log_of("stoker-a").contains("created NodeClaim"));
    assert!(!log_of("stoker-b").contains("created NodeClaim"), "the standby wrote:\n{}", log_of("stoker-b"));
    assert!(!log_of("stoker-b").contains("leading"), "the standby thinks it leads");

    // Kill the leader: the standby takes the Lease once it expires and carries on.
    first.kill().await.expect("kill stoker-a");
    let killed = Instant::now();
    let took_over =
        support::wait_until(Duration::from_secs(60), || async { (holder(&client).await? == "stoker-b").then_some(()) })
            .await;
    let takeover = killed.elapsed();
    println!("standby took the Lease {:.1}s after the leader was killed", takeover.as_secs_f64());
    assert!(took_over.is_some() && takeover <= Duration::from_secs(15), "takeover took {takeover:?}");

    apply(&client, deployment(14)).await;
    let ran =
        support::wait_until(Duration::from_secs(120), || async { (running(&client).await == 14).then_some(()) }).await;
    assert!(ran.is_some(), "14 pods run under the new leader; log:\n{}", log_of("stoker-b"));
    assert!(log_of("stoker-b").contains("created NodeClaim"));

    // Exactly one instance per NodeClaim: no launch was made twice.
    let info = ClusterInfo {
        name: env("CLUSTER_NAME"),
        endpoint: String::new(),
        ca_bundle: String::new(),
        service_cidr: String::new(),
        kubernetes_minor: String::new(),
    };
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(info));
    let instances = provider.list().await.expect("instances");
    let le_claims = claims(&client).await;
    for claim in &le_claims {
        let launched = instances.iter().filter(|i| i.nodeclaim() == Some(claim.name_any().as_str())).count();
        assert_eq!(launched, 1, "{} has {launched} instances", claim.name_any());
    }
    // 6 + 8 one-CPU pods on 8-vCPU nodes: two nodes fit them; never one per pod.
    assert!((2..=4).contains(&le_claims.len()), "{} NodeClaims", le_claims.len());

    // Clean up under the new leader, so later tests start from nothing.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("le-burst", &DeleteParams::default()).await.expect("delete deployment");
    let emptied =
        support::wait_until(Duration::from_secs(120), || async { claims(&client).await.is_empty().then_some(()) })
            .await;
    assert!(emptied.is_some(), "empty nodes removed by the new leader");
}
