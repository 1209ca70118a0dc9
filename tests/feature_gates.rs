//! `stoker controller` processes with feature gates against the local control plane: a gate that
//! is off keeps its controller from running (a WarmPool gets no pause pods until a controller with
//! the gate on starts), and a misspelt gate stops the process at startup with the gate named.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use stoker::apis::WarmPool;
use support::{controller, log_of, wait_until};

const NAMESPACE: &str = "feature-gates-e2e";

#[test]
fn a_misspelt_feature_gate_stops_the_controller_with_the_gate_named() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stoker"))
        .args(["controller", "--cluster-name", "gates"])
        .env("FEATURE_GATES", "WarmPool=false")
        .output()
        .expect("run stoker controller");
    assert!(!output.status.success(), "the controller started with an unknown gate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown feature gate `WarmPool` (known: WarmPools, Consolidation, SpotToSpotConsolidation)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_warm_pool_waits_for_a_controller_with_the_warm_pools_gate_on() {
    let client = support::client().await;
    support::install_crds(&client).await;
    support::fresh_namespace(&client, NAMESPACE).await;
    let pool: WarmPool = serde_json::from_value(json!({
        "apiVersion": "stoker.dev/v1alpha1", "kind": "WarmPool",
        "metadata": {"name": "gated", "namespace": NAMESPACE},
        "spec": {"baseline": 2, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
    }))
    .expect("a WarmPool");
    let pools: Api<WarmPool> = Api::namespaced(client.clone(), NAMESPACE);
    pools.create(&PostParams::default(), &pool).await.expect("the WarmPool");
    let pause_pods = || support::pause_replicas(&client, NAMESPACE, "gated");

    // Gated off: the controllers run (the log says so), the WarmPool is left alone.
    let no_leader_election = ("LEADER_ELECT", "false");
    let mut gated = controller("stoker-gated", &[no_leader_election, ("FEATURE_GATES", "WarmPools=false")]);
    let started = wait_until(Duration::from_secs(60), || async {
        log_of("stoker-gated").contains("leading: starting the controllers").then_some(())
    })
    .await;
    assert!(started.is_some(), "the gated controller started; log:\n{}", log_of("stoker-gated"));
    // An ungated controller sizes a new pool within a second; give the gated one five.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pause_pods().await, None, "no pause Deployment while the gate is off");
    let untouched = pools.get("gated").await.expect("the WarmPool");
    assert!(untouched.status.is_none(), "status written while the gate is off: {:?}", untouched.status);
    assert!(log_of("stoker-gated").contains(r#""featureGates":{"warmPools":false"#), "{}", log_of("stoker-gated"));
    gated.kill().await.expect("stop the gated controller");

    // Gate on (the default): the same pool gets its baseline.
    let _ungated = controller("stoker-ungated", &[no_leader_election]);
    let sized = wait_until(Duration::from_secs(60), || async { (pause_pods().await == Some(2)).then_some(()) }).await;
    assert!(sized.is_some(), "the pool at its baseline of 2; log:\n{}", log_of("stoker-ungated"));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(NAMESPACE, &DeleteParams::default()).await.expect("clean up the test namespace");
}
