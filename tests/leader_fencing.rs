//! A leader cut off from the apiserver stops acting on its own clock: two `stoker controller`
//! processes, the leader's apiserver traffic through a proxy that is cut (requests hang, nothing
//! errors), its EC2 traffic through a recording proxy. Within the Lease's duration of the cut it
//! stops its controllers, the standby takes over and goes on provisioning, and from the cut's
//! deadline on the cut-off replica sends EC2 nothing that writes.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
use kube::{Api, Client, api::DeleteParams};
use serde_json::json;
use support::{apply, controller, env, fault_proxy::FaultProxy, log_of, running, tcp_proxy::TcpProxy, wait_until};

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases.get_opt("stoker-leader-election").await.ok()??.spec?.holder_identity
}

/// EC2 actions that change something (everything else stoker calls reads).
fn writes(action: &str) -> bool {
    ["Create", "Delete", "Terminate", "Run", "Modify", "Cancel", "Request"].iter().any(|verb| action.starts_with(verb))
}

/// A kubeconfig like the tests' own, whose server is `address`.
fn kubeconfig_through(address: &str) -> std::path::PathBuf {
    let original = std::fs::read_to_string(env("KUBECONFIG")).expect("the kubeconfig");
    let server = format!("https://127.0.0.1:{}", env("CLUSTER_ENDPOINT").rsplit(':').next().expect("a port"));
    assert!(original.contains(&server), "the kubeconfig names {server}");
    let path = std::env::temp_dir().join("stoker-fenced.kubeconfig");
    std::fs::write(&path, original.replace(&server, &format!("https://{address}"))).expect("write the kubeconfig");
    path
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_leader_cut_off_from_the_apiserver_stops_writing_within_the_lease() {
    let client = support::client().await;
    support::install_crds(&client).await;
    tokio::spawn(stoker::cli::simulator::run(env("CLUSTER_NAME"), Duration::from_secs(1)));
    let apiserver = env("CLUSTER_ENDPOINT").trim_start_matches("https://").to_owned();
    let partition = TcpProxy::start(&apiserver).await;
    let ec2 = FaultProxy::start(&env("AWS_ENDPOINT_URL_EC2")).await;
    let kubeconfig = kubeconfig_through(&partition.address);
    let _fenced = controller(
        "stoker-fenced",
        &[("KUBECONFIG", kubeconfig.to_str().expect("a path")), ("AWS_ENDPOINT_URL_EC2", &ec2.endpoint)],
    );
    let led =
        wait_until(Duration::from_secs(60), || async { (holder(&client).await? == "stoker-fenced").then_some(()) })
            .await;
    assert!(led.is_some(), "stoker-fenced took the Lease; log:\n{}", log_of("stoker-fenced"));
    let _standby = controller("stoker-standby", &[]);

    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!("fence");
    apply(&client, class).await;
    let requirements = json!([support::one_of("node.kubernetes.io/instance-type", &["c6a.2xlarge"])]);
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"});
    apply(&client, support::nodepool("fence", "fence", requirements, disruption)).await;
    apply(&client, support::deployment("fence-burst", 4, "1", json!({"stoker.dev/nodepool": "fence"}))).await;
    let ran =
        wait_until(Duration::from_secs(120), || async { (running(&client, "fence-burst").await == 4).then_some(()) })
            .await;
    assert!(ran.is_some(), "4 pods run under the leader; log:\n{}", log_of("stoker-fenced"));
    assert!(ec2.all_seen().iter().any(|s| writes(&s.action)), "the leader launched through its proxy");

    // The partition: the leader's requests hang from now on.
    partition.cut();
    let cut = Instant::now();
    let stepped_down = wait_until(Duration::from_secs(20), || async {
        log_of("stoker-fenced").contains("lost the leader Lease").then_some(())
    })
    .await;
    let stepped_down_after = cut.elapsed();
    println!("the cut-off leader stopped its controllers {:.1}s after the cut", stepped_down_after.as_secs_f64());
    assert!(
        stepped_down.is_some() && stepped_down_after <= Duration::from_secs(10),
        "the cut-off leader stops within the Lease's 10 s (took {stepped_down_after:?}); log:\n{}",
        log_of("stoker-fenced")
    );
    let took_over =
        wait_until(Duration::from_secs(30), || async { (holder(&client).await? == "stoker-standby").then_some(()) })
            .await;
    assert!(took_over.is_some(), "the standby took the Lease; log:\n{}", log_of("stoker-standby"));

    // The new leader serves a scale-up while the cut-off one watches nothing and writes nothing.
    apply(&client, support::deployment("fence-burst", 12, "1", json!({"stoker.dev/nodepool": "fence"}))).await;
    let ran =
        wait_until(Duration::from_secs(120), || async { (running(&client, "fence-burst").await == 12).then_some(()) })
            .await;
    assert!(ran.is_some(), "12 pods run under the new leader; log:\n{}", log_of("stoker-standby"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let deadline = cut + Duration::from_secs(10);
    let late_writes: Vec<String> =
        ec2.all_seen().into_iter().filter(|s| s.at > deadline && writes(&s.action)).map(|s| s.action).collect();
    assert!(late_writes.is_empty(), "the cut-off replica wrote to EC2 after its deadline: {late_writes:?}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments.delete("fence-burst", &DeleteParams::default()).await.expect("delete the burst");
    let claims: Api<stoker::apis::NodeClaim> = Api::all(client.clone());
    let emptied = wait_until(Duration::from_secs(120), || async {
        let left = claims.list(&kube::api::ListParams::default().labels("stoker.dev/nodepool=fence")).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the new leader removes the empty nodes");
}
