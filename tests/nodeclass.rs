//! The EC2NodeClass controller against the real apiserver and the AWS emulator: status and
//! conditions from resolution, an Event naming what cannot be resolved, and cleanup of launch
//! templates and the instance profile behind the finalizer.

mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;
use stoker::{
    apis::{ec2nodeclass::EC2NodeClass, labels, nodeclaim::NodeClaim},
    cloudprovider::{
        CloudProvider, Followers, PriorLaunches,
        aws::{AwsCloudProvider, AwsOptions, ClusterInfo, aws_config},
    },
    controllers::nodeclass,
};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} from hack/test.sh"))
}

fn condition(class: &EC2NodeClass, type_: &str) -> Option<(String, String, String)> {
    let found = class.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((found.status.clone(), found.reason.clone(), found.message.clone()))
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn node_classes_are_resolved_reported_and_cleaned_up() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let cluster = format!("stoker-nc-{:08x}", fastrand::u32(..));
    let info = ClusterInfo {
        name: cluster.clone(),
        endpoint: env("CLUSTER_ENDPOINT"),
        ca_bundle: env("CLUSTER_CA_BUNDLE"),
        service_cidr: env("CLUSTER_SERVICE_CIDR"),
        kubernetes_minor: "1.37".into(),
    };
    let shared = support::shared(&client, AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(info))).await;
    let provider = shared.provider.clone();
    let controller = tokio::spawn(nodeclass::run(shared));

    let api: Api<EC2NodeClass> = Api::all(client.clone());
    let apply = PatchParams::apply("stoker-tests").force();
    let good_name = format!("{cluster}-good");
    let mut good = support::example("ec2nodeclass.yaml");
    good["metadata"]["name"] = json!(good_name);
    good["spec"]["role"] = json!(format!("KarpenterNodeRole-{}", env("CLUSTER_NAME")));
    api.patch(&good_name, &apply, &Patch::Apply(&good)).await.expect("apply the example node class");

    let ready = support::wait_until(Duration::from_secs(60), || async {
        let class = api.get(&good_name).await.ok()?;
        (condition(&class, "Ready")?.0 == "True").then_some(class)
    })
    .await
    .expect("the example node class becomes Ready");
    let status = ready.status.as_ref().expect("status");
    assert_eq!(status.subnets.len(), 3);
    // al2023@latest: standard and NVIDIA images for both architectures, Neuron for x86_64.
    assert_eq!(status.amis.len(), 5);
    for type_ in ["SubnetsReady", "SecurityGroupsReady", "AMIsReady", "InstanceProfileReady"] {
        assert_eq!(condition(&ready, type_).map(|c| c.0), Some("True".into()), "{type_}");
    }
    assert!(ready.metadata.finalizers.iter().flatten().any(|f| f == nodeclass::FINALIZER));
    let profile = status.instance_profile.clone().expect("instance profile");

    // Launch once so a launch template exists for the class.
    let claim: NodeClaim = serde_json::from_value(json!({
        "apiVersion": "stoker.dev/v1alpha1", "kind": "NodeClaim",
        "metadata": {"name": format!("{cluster}-claim"), "uid": "11111111-2222-4333-8444-555555555555",
                      "labels": {labels::NODEPOOL: "general"}},
        "spec": {"requirements": [{"key": labels::INSTANCE_TYPE, "operator": "In", "values": ["c5.large"]}],
                  "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": good_name}}
    }))
    .expect("a NodeClaim");
    let instance = provider
        .create(&claim, &ready, PriorLaunches::Unknown, Followers::NoneExpected)
        .await
        .expect("a launch with the resolved class");

    // A class whose subnets match nothing: SubnetsReady=False and an Event naming the field.
    let bad_name = format!("{cluster}-bad");
    let mut bad = good.clone();
    bad["metadata"]["name"] = json!(bad_name);
    bad["spec"]["subnetSelectorTerms"] = json!([{"tags": {"karpenter.sh/discovery": "no-such-cluster"}}]);
    api.patch(&bad_name, &apply, &Patch::Apply(&bad)).await.expect("apply the bad node class");
    let not_ready = support::wait_until(Duration::from_secs(60), || async {
        let class = api.get(&bad_name).await.ok()?;
        (condition(&class, "SubnetsReady")?.0 == "False").then_some(class)
    })
    .await
    .expect("SubnetsReady=False");
    let (_, reason, message) = condition(&not_ready, "Ready").expect("Ready condition");
    assert_eq!(reason, "NotResolved");
    assert!(message.contains("spec.subnetSelectorTerms"), "{message}");
    let events: Api<Event> = Api::all(client.clone());
    let event = support::wait_until(Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(bad_name.as_str())
                && e.reason.as_deref() == Some("NotResolved")
        })
    })
    .await
    .expect("a NotResolved event");
    assert!(event.note.unwrap_or_default().contains("spec.subnetSelectorTerms"));

    // A twin of the example with the same role gets an instance profile of its own.
    let twin_name = format!("{cluster}-twin");
    let mut twin = good.clone();
    twin["metadata"]["name"] = json!(twin_name);
    api.patch(&twin_name, &apply, &Patch::Apply(&twin)).await.expect("apply the twin node class");
    let twin_profile = support::wait_until(Duration::from_secs(60), || async {
        let class = api.get(&twin_name).await.ok()?;
        (condition(&class, "Ready")?.0 == "True").then_some(class.status?.instance_profile?)
    })
    .await
    .expect("the twin becomes Ready with an instance profile");
    assert_ne!(twin_profile, profile, "two classes with one role share no instance profile");

    // Deleting a class: the finalizer deletes its launch templates and its own instance profile,
    // and the twin's nodes keep their credentials.
    let iam = aws_sdk_iam::Client::new(&aws_config(None).await);
    api.delete(&good_name, &DeleteParams::default()).await.expect("delete");
    let gone = support::wait_until(Duration::from_secs(60), || async {
        api.get_opt(&good_name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the example class's finalizer was released");
    assert!(iam.get_instance_profile().instance_profile_name(&profile).send().await.is_err(), "{profile} deleted");
    let kept =
        iam.get_instance_profile().instance_profile_name(&twin_profile).send().await.expect("the twin's profile");
    let roles: Vec<&str> = kept.instance_profile().iter().flat_map(|p| p.roles()).map(|r| r.role_name()).collect();
    assert_eq!(roles, [good["spec"]["role"].as_str().expect("a role")], "the twin's profile keeps its role");
    for name in [&bad_name, &twin_name] {
        api.delete(name, &DeleteParams::default()).await.expect("delete");
    }
    let gone = support::wait_until(Duration::from_secs(60), || async {
        let left = api.list(&ListParams::default()).await.ok()?;
        left.items.iter().all(|c| c.metadata.name.as_deref().is_none_or(|n| !n.starts_with(&cluster))).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the finalizer was released");
    let ec2 = stoker::cloudprovider::aws::ec2_client(None).await;
    let templates = ec2
        .describe_launch_templates()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:stoker.dev/cluster").values(&cluster).build())
        .send()
        .await
        .expect("DescribeLaunchTemplates");
    assert_eq!(templates.launch_templates().len(), 0, "launch templates deleted");
    let lookup = iam.get_instance_profile().instance_profile_name(&twin_profile).send().await;
    assert!(lookup.is_err(), "instance profile {twin_profile} deleted");

    provider.delete(&instance.provider_id).await.expect("terminate the test instance");
    controller.abort();
}
