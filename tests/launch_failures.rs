//! The NodeClaim controller against the real apiserver with the in-memory cloud provider, whose
//! failures are injected in order: a launch that keeps failing, with a different message each
//! time (so each status write is a change that triggers a reconcile at once), is retried with a
//! growing back-off, not in a loop, and launches once the cloud recovers.

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use stoker::cloudprovider::aws::allocatable;

use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use stoker::{
    apis::{NodeClaim, labels},
    cloudprovider::{CloudError, aws::catalog::Catalog, fake::FakeCloudProvider},
    controllers::nodeclaim::{self, NewClaims},
    scheduling::catalog::InstanceType,
};
use support::wait_until;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn failing_launches_back_off_instead_of_looping() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let catalog = Catalog::snapshot();
    let types: Vec<InstanceType> = catalog
        .types
        .iter()
        .filter(|t| t.name == "c5.large")
        .map(|facts| allocatable::instance_type(facts, Vec::new(), &Default::default()).expect("valid facts"))
        .collect();
    let fake = FakeCloudProvider::new(types);
    for attempt in 0..3 {
        fake.fail_next(
            "create",
            CloudError::Aws {
                operation: "CreateFleet",
                code: "UnauthorizedOperation".into(),
                message: format!("denied, request {attempt}"),
            },
        );
    }
    let shared = support::shared(&client, fake).await;
    let controller = tokio::spawn(nodeclaim::run(Arc::new(nodeclaim::Context::new(
        shared.clone(),
        NewClaims::default(),
        chrono::TimeDelta::minutes(30),
    ))));
    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!("launch-failures");
    support::apply(&client, class).await;

    let claims: Api<NodeClaim> = Api::all(client.clone());
    let claim: NodeClaim = serde_json::from_value(json!({
        "apiVersion": "stoker.dev/v1alpha1", "kind": "NodeClaim",
        "metadata": {"name": "launch-failures", "labels": {labels::NODEPOOL: "general"}},
        "spec": {"nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "launch-failures"},
                 "requirements": [{"key": labels::INSTANCE_TYPE, "operator": "In", "values": ["c5.large"]}]}
    }))
    .expect("a NodeClaim");
    let _ = claims.delete("launch-failures", &DeleteParams::default()).await;
    wait_until(Duration::from_secs(30), || async {
        claims.get_opt("launch-failures").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("no claim left from an earlier run");
    let created = Instant::now();
    claims.create(&PostParams::default(), &claim).await.expect("create the claim");

    // The failure is reported on the claim while it waits.
    let reported = wait_until(Duration::from_secs(20), || async {
        let status = claims.get("launch-failures").await.ok()?.status?;
        status.conditions.into_iter().find(|c| c.type_ == "Launched" && c.status == "False")
    })
    .await
    .expect("Launched=False");
    assert_eq!(reported.reason, "UnauthorizedOperation");

    let launched =
        wait_until(Duration::from_secs(60), || async { claims.get("launch-failures").await.ok()?.status?.provider_id })
            .await;
    let took = created.elapsed();
    assert!(launched.is_some(), "the claim launches once the cloud recovers");
    let attempts = shared.provider.calls("create").len();
    println!("3 failures then a launch: {attempts} attempts over {:.1}s", took.as_secs_f64());
    // One attempt per failure and one that launched, never a loop; and none more when a
    // reconcile reads the claim from a cache that has not yet seen the launch's status write.
    assert_eq!(attempts, 4, "{attempts} attempts");
    assert_eq!(shared.provider.instances().len(), 1, "one instance, however often it was asked for");
    // Waits of at least 1, 2 and 4 s (half of 2, 4 and 8 at the least, with jitter).
    assert!(took >= Duration::from_secs(7), "the retries backed off, launching after {took:?}");

    claims.delete("launch-failures", &DeleteParams::default()).await.expect("delete the claim");
    let gone = wait_until(Duration::from_secs(30), || async {
        claims.get_opt("launch-failures").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the claim terminates through the fake cloud");
    assert!(shared.provider.instances().is_empty());
    controller.abort();
}
