//! Two `stoker controller` processes against the local control plane and the AWS emulator: only
//! the Lease holder writes; when it is killed, the other takes over and goes on provisioning,
//! and no pod is launched for twice.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
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
use support::{apply, controller, env, log_of, running};

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases.get_opt("stoker-leader-election").await.ok()??.spec?.holder_identity
}

/// A free loopback address for a controller's metrics.
fn metrics_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").to_string()
}

/// The value of the `stoker_leader` gauge a controller exports.
async fn leader_gauge(address: &str) -> Option<String> {
    let exported = support::scrape(address).await;
    exported.lines().find_map(|line| line.strip_prefix("stoker_leader ").map(str::to_owned))
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
    let (first_metrics, second_metrics) = (metrics_address(), metrics_address());
    let mut first = controller("stoker-a", &[("METRICS_ADDRESS", &first_metrics)]);
    let led =
        support::wait_until(Duration::from_secs(60), || async { (holder(&client).await? == "stoker-a").then_some(()) })
            .await;
    assert!(led.is_some(), "stoker-a took the Lease; log:\n{}", log_of("stoker-a"));
    let _second = controller("stoker-b", &[("METRICS_ADDRESS", &second_metrics)]);

    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!("le");
    apply(&client, class).await;
    let requirements = json!([support::one_of("node.kubernetes.io/instance-type", &["c6a.2xlarge"])]);
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    apply(&client, support::nodepool("le", "le", requirements, disruption)).await;
    apply(&client, support::deployment("le-burst", 6, "1", json!({"stoker.dev/nodepool": "le"}))).await;
    let ran = support::wait_until(Duration::from_secs(120), || async {
        (running(&client, "le-burst").await == 6).then_some(())
    })
    .await;
    assert!(ran.is_some(), "6 pods run; leader log:\n{}", log_of("stoker-a"));
    assert_eq!(holder(&client).await.as_deref(), Some("stoker-a"));
    assert!(log_of("stoker-a").contains("created NodeClaim"));
    assert!(!log_of("stoker-b").contains("created NodeClaim"), "the standby wrote:\n{}", log_of("stoker-b"));
    assert!(!log_of("stoker-b").contains("leading"), "the standby thinks it leads");
    assert_eq!(leader_gauge(&first_metrics).await.as_deref(), Some("1"), "the leader says it leads");
    assert_eq!(leader_gauge(&second_metrics).await.as_deref(), Some("0"), "the standby says it does not");

    // Kill the leader: the standby takes the Lease once it expires and carries on.
    first.kill().await.expect("kill stoker-a");
    let killed = Instant::now();
    let took_over =
        support::wait_until(Duration::from_secs(60), || async { (holder(&client).await? == "stoker-b").then_some(()) })
            .await;
    let takeover = killed.elapsed();
    println!("standby took the Lease {:.1}s after the leader was killed", takeover.as_secs_f64());
    assert!(took_over.is_some() && takeover <= Duration::from_secs(15), "takeover took {takeover:?}");

    apply(&client, support::deployment("le-burst", 14, "1", json!({"stoker.dev/nodepool": "le"}))).await;
    let ran = support::wait_until(Duration::from_secs(120), || async {
        (running(&client, "le-burst").await == 14).then_some(())
    })
    .await;
    assert!(ran.is_some(), "14 pods run under the new leader; log:\n{}", log_of("stoker-b"));
    assert!(log_of("stoker-b").contains("created NodeClaim"));
    assert_eq!(leader_gauge(&second_metrics).await.as_deref(), Some("1"), "the new leader says it leads");

    // Exactly one instance per NodeClaim: no launch was made twice.
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(support::cluster_info()));
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
