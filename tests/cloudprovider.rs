//! The AWS cloud provider against the local AWS emulator (moto: EC2, SSM, IAM), with EC2 calls
//! routed through the fault-injecting proxy in `support::fault_proxy` for the capacity errors
//! and throttling moto does not model.

mod support;

use std::{collections::BTreeMap, time::Duration};

use base64::Engine;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use stoker::{
    apis::{
        ec2nodeclass::EC2NodeClass,
        labels,
        nodeclaim::{NodeClaim, NodeClaimSpec, ResourceRequests},
        requirements::{NodeSelectorRequirementWithMinValues, Operator},
    },
    cloudprovider::{
        CloudError, CloudProvider, Followers, PriorLaunches,
        aws::{AwsCloudProvider, AwsOptions, ClusterInfo, ami::arch_of, aws_config, batching::BatchWindow, catalog},
    },
};
use support::fault_proxy::{CapacityRule, FaultProxy};

struct Harness {
    provider: AwsCloudProvider,
    proxy: FaultProxy,
    /// A direct client to the emulator, for checking what the provider did.
    ec2: aws_sdk_ec2::Client,
    class: EC2NodeClass,
    cluster: String,
}

/// A provider for a cluster name of its own (tests share the emulator), with EC2 behind a
/// fresh proxy and the example node class resolved.
async fn harness(unavailable_ttl: Duration) -> Harness {
    harness_with(|options| options.unavailable_ttl = unavailable_ttl).await
}

/// [`harness`] with the provider's options changed by `configure`.
async fn harness_with(configure: impl FnOnce(&mut AwsOptions)) -> Harness {
    harness_in(None, configure).await
}

/// [`harness_with`] in `region` (the environment's when `None`).
async fn harness_in(region: Option<String>, configure: impl FnOnce(&mut AwsOptions)) -> Harness {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_EC2").expect("AWS_ENDPOINT_URL_EC2 from hack/test.sh");
    let config = aws_config(region).await;
    let proxy = FaultProxy::start(&endpoint).await;
    // Standard retries: stoker's own back-off is under test here. (In production the SDK's
    // adaptive rate limiter slows every later call after a throttle, which would make throttling
    // tests take minutes.)
    let proxied = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&config)
            .retry_config(aws_config::retry::RetryConfig::standard())
            .endpoint_url(&proxy.endpoint)
            .build(),
    );
    let cluster = format!("stoker-test-{:08x}", fastrand::u32(..));
    let info = ClusterInfo {
        name: cluster.clone(),
        endpoint: "https://127.0.0.1:26444".into(),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode("-----BEGIN CERTIFICATE-----\n"),
        service_cidr: "10.96.0.0/16".into(),
        kubernetes_minor: "1.37".into(),
    };
    let mut options = AwsOptions::new(info);
    options.throttle_backoff = Duration::from_millis(50);
    configure(&mut options);
    let provider = AwsCloudProvider::from_clients(
        proxied,
        aws_sdk_ssm::Client::new(&config),
        aws_sdk_iam::Client::new(&config),
        options,
    );
    let mut class: EC2NodeClass =
        serde_json::from_value(support::example("ec2nodeclass.yaml")).expect("example EC2NodeClass");
    class.spec.role = Some(format!("KarpenterNodeRole-{}", std::env::var("CLUSTER_NAME").expect("CLUSTER_NAME")));
    class.status = Some(provider.resolve_node_class(&class).await.expect("the example node class resolves"));
    Harness { provider, proxy, ec2: aws_sdk_ec2::Client::new(&config), class, cluster }
}

fn requirement(key: &str, values: &[&str]) -> NodeSelectorRequirementWithMinValues {
    NodeSelectorRequirementWithMinValues {
        key: key.into(),
        operator: Operator::In,
        values: values.iter().map(|v| v.to_string()).collect(),
        min_values: None,
    }
}

fn nodeclaim(name: &str, instance_types: &[&str], capacity_types: &[&str]) -> NodeClaim {
    let mut claim = NodeClaim::new(
        name,
        NodeClaimSpec {
            requirements: vec![
                requirement(labels::INSTANCE_TYPE, instance_types),
                requirement(labels::CAPACITY_TYPE, capacity_types),
                requirement(labels::NODEPOOL, &["general"]),
            ],
            resources: ResourceRequests { requests: BTreeMap::from([("cpu".into(), Quantity("1".into()))]) },
            taints: Vec::new(),
            startup_taints: Vec::new(),
            node_class_ref: serde_json::from_value(
                serde_json::json!({"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"}),
            )
            .expect("reference"),
            expire_after: None,
            termination_grace_period: None,
        },
    );
    claim.metadata.uid = Some(format!("{:08x}-0000-4000-8000-{:012x}", fastrand::u32(..), fastrand::u64(..1 << 48)));
    claim.metadata.labels = Some(BTreeMap::from([(labels::NODEPOOL.into(), "general".into())]));
    claim
}

async fn instance_tags(ec2: &aws_sdk_ec2::Client, id: &str) -> BTreeMap<String, String> {
    let output = ec2.describe_instances().instance_ids(id).send().await.expect("DescribeInstances");
    let instance = &output.reservations()[0].instances()[0];
    instance
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn node_class_resolves_and_the_catalog_is_priced_per_zone() {
    let h = harness(Duration::from_secs(180)).await;
    let status = h.class.status.as_ref().expect("resolved");
    let zones: Vec<&str> = status.subnets.iter().map(|s| s.zone.as_str()).collect();
    assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert_eq!(status.security_groups.len(), 1);
    let amis: Vec<(&str, &str, usize)> = status
        .amis
        .iter()
        .map(|a| (a.id.as_str(), a.requirements[0].values[0].as_str(), a.requirements.len()))
        .collect();
    assert_eq!(
        amis,
        [
            ("ami-0e0a202300000000", "amd64", 3),
            ("ami-0a1d1a2300000000", "amd64", 2),
            ("ami-0e0e002300000000", "amd64", 2),
            ("ami-0e0a202300000001", "arm64", 3),
            ("ami-0a1d1a2300000001", "arm64", 2),
        ],
        "al2023@latest through SSM: standard, NVIDIA and (x86_64 only) Neuron"
    );
    let profile = status.instance_profile.clone().expect("an instance profile for the role");
    assert!(profile.starts_with(&format!("stoker_{}_", h.cluster)), "{profile}");

    let types = h.provider.instance_types(&h.class).await.expect("instance types");
    assert!(types.len() > 500, "{} types", types.len());
    let m5 = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
    let mut offerings: Vec<(&str, &str, f64)> =
        m5.offerings.iter().map(|o| (o.zone.as_str(), o.capacity_type.as_str(), o.price)).collect();
    offerings.sort_by(|a, b| a.partial_cmp(b).expect("prices compare"));
    assert_eq!(offerings.len(), 6, "{offerings:?}");
    // The emulator's placeholder spot price (0.00001) falls back to the on-demand price.
    assert!(offerings.iter().all(|(_, _, price)| *price == 0.096), "{offerings:?}");
    assert!(types.iter().any(|t| t.labels[labels::ARCH] == "arm64"), "arm64 types, as an arm64 AMI resolved");
    let g5 = types.iter().find(|t| t.name == "g5.xlarge").expect("g5.xlarge");
    assert_eq!(g5.labels.get(labels::INSTANCE_GPU_NAME).map(String::as_str), Some("a10g"));
    assert_eq!(g5.capacity.get(labels::NVIDIA_GPU), 1);

    // The live DescribeInstanceTypes replies read fact for fact like the committed snapshot, which
    // hack/update-catalog.py made from the same recorded replies.
    let live = catalog::fetch(&h.ec2).await.expect("the live catalog");
    let snapshot = catalog::Catalog::snapshot();
    let mut compared = 0;
    for facts in &snapshot.types {
        if let Some(read) = live.types.iter().find(|t| t.name == facts.name) {
            assert_eq!(read, facts, "{} read live", facts.name);
            compared += 1;
        }
    }
    assert!(compared > 500, "{compared} types compared");

    // Priced once and shared until something changes; a catalog refresh prices again what was in use.
    let again = h.provider.instance_types(&h.class).await.expect("instance types");
    assert!(std::sync::Arc::ptr_eq(&types, &again), "served from the cache");
    h.provider.refresh().await.expect("a catalog refresh");
    let refreshed = h.provider.instance_types(&h.class).await.expect("instance types");
    assert!(!std::sync::Arc::ptr_eq(&types, &refreshed), "priced again after the refresh");
    assert_eq!(*types, *refreshed, "the same catalog and prices give the same types");
    let after = h.provider.instance_types(&h.class).await.expect("instance types");
    assert!(std::sync::Arc::ptr_eq(&refreshed, &after), "the refresh left the new pricing in the cache");
}

/// An `ssmParameter` term resolves to the image its parameter holds and follows the parameter as
/// an image pipeline updates it; a parameter that is missing, or holds something other than an
/// AMI ID, is an error naming it.
#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn an_ssm_parameter_term_follows_the_image_its_parameter_holds() {
    let h = harness(Duration::from_secs(180)).await;
    let ssm = aws_sdk_ssm::Client::new(&aws_config(None).await);
    let name = format!("/stoker/{}/golden-ami", h.cluster);
    let put = |value: &str| {
        ssm.put_parameter()
            .name(&name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
    };
    let with_term = |parameter: &str| {
        let mut class = h.class.clone();
        class.spec.ami_selector_terms =
            vec![serde_json::from_value(serde_json::json!({"ssmParameter": parameter})).expect("a term")];
        class
    };
    let class = with_term(&name);
    let resolved = |status: &stoker::apis::ec2nodeclass::EC2NodeClassStatus| -> Vec<(String, String)> {
        status.amis.iter().map(|ami| (ami.id.clone(), arch_of(ami).unwrap_or_default().to_owned())).collect()
    };

    put("ami-0e0a202300000000").await.expect("PutParameter");
    let status = h.provider.resolve_node_class(&class).await.expect("the class resolves");
    assert_eq!(resolved(&status), [("ami-0e0a202300000000".to_owned(), "amd64".to_owned())]);
    // The pipeline publishes another image: the next resolution follows (and drift the nodes).
    put("ami-0e0a202300000001").await.expect("PutParameter");
    let status = h.provider.resolve_node_class(&class).await.expect("the class resolves");
    assert_eq!(resolved(&status), [("ami-0e0a202300000001".to_owned(), "arm64".to_owned())]);

    put("golden-2026-12").await.expect("PutParameter");
    let error = h.provider.resolve_node_class(&class).await.expect_err("not an AMI ID");
    assert_eq!(error.reason(), "InvalidConfiguration");
    assert!(error.to_string().contains(&format!("{name:?} holds \"golden-2026-12\", not an AMI ID")), "{error}");
    let missing = format!("{name}-missing");
    let error = h.provider.resolve_node_class(&with_term(&missing)).await.expect_err("no such parameter");
    assert_eq!(error.reason(), "InvalidConfiguration");
    assert!(error.to_string().contains(&format!("{missing:?} does not exist")), "{error}");
}

/// A Capacity Block bought ahead is listed `scheduled` with its start, and nothing is offered in
/// it until then; from its start it resolves `active` and is offered as reserved capacity.
#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_capacity_block_bought_ahead_is_offered_from_its_start() {
    let h = harness(Duration::from_secs(180)).await;
    let ec2 = aws_sdk_ec2::Client::new(&aws_config(None).await);
    let team = format!("ahead-{}", h.cluster);
    let start = chrono::Utc::now() + chrono::TimeDelta::seconds(15);
    let block = support::capacity_block(&ec2, &team, start, 1).await;
    let mut class = h.class.clone();
    class.spec.capacity_reservation_selector_terms =
        vec![serde_json::from_value(serde_json::json!({"tags": {"team": team}})).expect("a term")];
    let offered_in_block = |types: &[stoker::scheduling::catalog::InstanceType]| {
        let m5 = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
        m5.offerings.iter().filter(|o| o.reservation_id.as_deref() == Some(block.as_str())).count()
    };

    let status = h.provider.resolve_node_class(&class).await.expect("the class resolves");
    let listed = status.capacity_reservations.iter().find(|r| r.id == block).expect("the block is listed");
    assert_eq!((listed.state.as_str(), listed.reservation_type.as_str()), ("scheduled", "capacity-block"));
    assert_eq!(listed.starts_at(), chrono::DateTime::from_timestamp(start.timestamp(), 0));
    class.status = Some(status);
    let types = h.provider.instance_types(&class).await.expect("instance types");
    assert_eq!(offered_in_block(&types), 0, "nothing launches into it before its start");

    let wait = (start - chrono::Utc::now() + chrono::TimeDelta::seconds(1)).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let status = h.provider.resolve_node_class(&class).await.expect("the class resolves");
    let listed = status.capacity_reservations.iter().find(|r| r.id == block).expect("the block is listed");
    assert_eq!((listed.state.as_str(), listed.start_time.as_deref()), ("active", None));
    class.status = Some(status);
    let types = h.provider.instance_types(&class).await.expect("instance types");
    assert_eq!(offered_in_block(&types), 1, "offered from its start");
}

/// The Price List client and parser on AWS's own replies: the emulator answers GetProducts from
/// recorded real items (`hack/emulator_price_list.py`): one, us-east-1's m5.large, whose terms
/// hold its on-demand price and eleven reserved ones, several lower and some zero. The request
/// selects the provider's region, and only the on-demand term prices.
#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn on_demand_prices_are_read_from_recorded_price_list_replies() {
    let other = support::env("STOKER_OTHER_REGION");
    for (region, recorded) in [(None, 1), (Some(other), 0)] {
        let config = aws_config(region.clone()).await;
        let cluster = ClusterInfo { kubernetes_minor: "1.37".into(), ..support::cluster_info() };
        let provider = AwsCloudProvider::new(&config, AwsOptions::new(cluster));
        let priced = provider.refresh_on_demand_prices().await.expect("GetProducts answers");
        assert_eq!(priced, recorded, "instance types priced by the recorded replies in {region:?}");
        if recorded == 0 {
            continue;
        }
        let mut class: EC2NodeClass =
            serde_json::from_value(support::example("ec2nodeclass.yaml")).expect("example EC2NodeClass");
        class.spec.role = Some(format!("KarpenterNodeRole-{}", support::env("CLUSTER_NAME")));
        class.status = Some(provider.resolve_node_class(&class).await.expect("the example node class resolves"));
        let types = provider.instance_types(&class).await.expect("instance types");
        let m5 = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
        let on_demand: Vec<f64> =
            m5.offerings.iter().filter(|o| o.capacity_type == "on-demand").map(|o| o.price).collect();
        assert!(!on_demand.is_empty() && on_demand.iter().all(|price| *price == 0.096), "{on_demand:?}");
    }
}

/// m5.large is cheaper than m5ad.large in us-east-1 (0.096 against 0.103 $/h), the other way
/// round in ap-south-1 (0.101 against 0.067): each region launches its own cheaper type, priced
/// from its own column of the snapshot.
#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn each_region_launches_the_type_that_is_cheaper_there() {
    let other = support::env("STOKER_OTHER_REGION");
    assert_eq!(other, "ap-south-1", "the prices below are ap-south-1's");
    for (region, cheaper, prices) in
        [(None, "m5.large", [0.096, 0.103]), (Some(other.clone()), "m5ad.large", [0.101, 0.067])]
    {
        let h = harness_in(region.clone(), |_| {}).await;
        let zone = h.class.status.as_ref().expect("resolved").subnets[0].zone.clone();
        assert!(zone.starts_with(region.as_deref().unwrap_or("us-east-1")), "{zone}");
        let types = h.provider.instance_types(&h.class).await.expect("instance types");
        let on_demand = |name: &str| {
            let offering = types
                .iter()
                .find(|t| t.name == name)
                .and_then(|t| t.offerings.iter().find(|o| o.capacity_type == "on-demand" && o.zone == zone));
            offering.unwrap_or_else(|| panic!("{name} on demand in {zone}")).price
        };
        assert_eq!([on_demand("m5.large"), on_demand("m5ad.large")], prices, "in {zone}");

        let claim = nodeclaim(&format!("general-{cheaper}"), &["m5.large", "m5ad.large"], &["on-demand"]);
        let instance =
            h.provider.create(&claim, &h.class, PriorLaunches::None, Followers::NoneExpected).await.expect("a launch");
        assert_eq!(instance.instance_type, cheaper, "in {zone}");
        assert!(instance.zone.starts_with(region.as_deref().unwrap_or("us-east-1")), "{}", instance.zone);
        let fleet = &h.proxy.seen("CreateFleet")[0].params;
        let first = fleet.iter().find(|(k, _)| k.ends_with(".Overrides.1.InstanceType")).map(|(_, v)| v.as_str());
        assert_eq!(first, Some(cheaper), "the cheaper type is offered first");
        h.provider.delete(&instance.provider_id).await.expect("terminate");
    }
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_launch_tags_everything_passes_the_client_token_and_is_never_repeated() {
    let h = harness(Duration::from_secs(180)).await;
    let claim = nodeclaim("general-tags", &["m5.large", "m5.xlarge", "c5.large"], &["spot", "on-demand"]);
    // A claim the caller has just created: no instance is looked for before launching.
    let instance =
        h.provider.create(&claim, &h.class, PriorLaunches::None, Followers::NoneExpected).await.expect("a launch");
    assert_eq!(h.proxy.seen("DescribeInstances").len(), 0, "a new claim needs no adoption lookup");
    assert_eq!(instance.capacity_type, "spot");
    assert!(["m5.large", "m5.xlarge", "c5.large"].contains(&instance.instance_type.as_str()));
    assert_eq!(instance.provider_id, format!("aws:///{}/{}", instance.zone, instance.id));
    assert_eq!(instance.image_id, "ami-0e0a202300000000");

    let fleets = h.proxy.seen("CreateFleet");
    assert_eq!(fleets.len(), 1);
    let params = &fleets[0].params;
    let uid = claim.metadata.uid.as_deref().expect("uid");
    assert!(params["ClientToken"].starts_with(&format!("stoker-{uid}-")), "{}", params["ClientToken"]);
    assert_eq!(params["Type"], "instant");
    assert_eq!(params["TargetCapacitySpecification.TotalTargetCapacity"], "1");
    assert_eq!(params["SpotOptions.AllocationStrategy"], "price-capacity-optimized");
    let overrides = params.keys().filter(|k| k.ends_with(".InstanceType")).count();
    assert_eq!(overrides, 9, "3 types x 3 zonal subnets");
    let tagged: Vec<&str> =
        params.iter().filter(|(k, _)| k.ends_with(".ResourceType")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(tagged, ["instance", "volume", "fleet"]);

    let tags = instance_tags(&h.ec2, &instance.id).await;
    assert_eq!(tags.get(&format!("kubernetes.io/cluster/{}", h.cluster)).map(String::as_str), Some("owned"));
    assert_eq!(tags.get("stoker.dev/cluster"), Some(&h.cluster));
    assert_eq!(tags.get("stoker.dev/nodepool").map(String::as_str), Some("general"));
    assert_eq!(tags.get("stoker.dev/nodeclaim").map(String::as_str), Some("general-tags"));
    assert_eq!(tags.get("Name").map(String::as_str), Some("general-tags"));
    assert_eq!(tags.get("team").map(String::as_str), Some("platform"), "the node class's tags");

    // The launch template: IMDSv2, hop limit 1, and the AL2023 bootstrap.
    let template = &params["LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName"];
    let versions = h
        .ec2
        .describe_launch_template_versions()
        .launch_template_name(template)
        .send()
        .await
        .expect("DescribeLaunchTemplateVersions");
    let data = versions.launch_template_versions()[0].launch_template_data().expect("template data");
    // Network interfaces take the ownership tags (and the class's) from the template.
    let interfaces = data
        .tag_specifications()
        .iter()
        .find(|spec| spec.resource_type().map(|r| r.as_str()) == Some("network-interface"))
        .expect("a tag specification for network interfaces");
    let interface_tags: BTreeMap<&str, &str> =
        interfaces.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))).collect();
    let owned = format!("kubernetes.io/cluster/{}", h.cluster);
    assert_eq!(
        interface_tags,
        BTreeMap::from([(owned.as_str(), "owned"), ("stoker.dev/cluster", h.cluster.as_str()), ("team", "platform")])
    );
    let metadata = data.metadata_options().expect("metadata options");
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    let user_data =
        base64::engine::general_purpose::STANDARD.decode(data.user_data().expect("user data")).expect("base64");
    let user_data = String::from_utf8(user_data).expect("text");
    assert!(user_data.contains("kind: NodeConfig"), "{user_data}");
    assert!(user_data.contains(&format!("name: {}", h.cluster)), "{user_data}");
    assert!(user_data.contains("--register-with-taints=stoker.dev/unregistered:NoExecute"), "{user_data}");

    // Asked again (a retry, or a controller restarted after the call): the same instance.
    let again =
        h.provider.create(&claim, &h.class, PriorLaunches::Unknown, Followers::NoneExpected).await.expect("adopted");
    assert_eq!(again.id, instance.id);
    assert_eq!(h.proxy.seen("CreateFleet").len(), 1, "no second CreateFleet");
    let listed = h.provider.list().await.expect("list");
    assert_eq!(listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [instance.id.as_str()]);

    // Launch templates used within the idle time stay; idle ones are deleted.
    assert_eq!(h.provider.prune_launch_templates(Duration::from_secs(3600)).await, Ok(0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.provider.prune_launch_templates(Duration::from_millis(500)).await, Ok(1));
    let left = h.ec2.describe_launch_templates().launch_template_names(template).send().await;
    assert!(left.is_err(), "{template} deleted");
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn launches_alike_share_one_createfleet_and_each_claim_keeps_its_instance_across_a_restart() {
    // A wide idle window: the four launches start together, but on a loaded machine their
    // planning can spread them over more than the default 35 ms, which would split the call
    // (how long a batch waits is the unit tests' part).
    let h = harness_with(|options| {
        options.unavailable_ttl = Duration::from_secs(180);
        options.batch_window = BatchWindow { idle: Duration::from_secs(2), max: Duration::from_secs(10) };
    })
    .await;
    let types = ["m5.large", "m5.xlarge"];
    let alike: Vec<NodeClaim> =
        ["general-b", "general-c", "general-a"].iter().map(|n| nodeclaim(n, &types, &["on-demand"])).collect();
    let different = nodeclaim("general-d", &["c5.large"], &["on-demand"]);
    let launches = alike
        .iter()
        .chain([&different])
        .map(|claim| h.provider.create(claim, &h.class, PriorLaunches::None, Followers::Expected));
    let launched: Vec<_> =
        futures::future::join_all(launches).await.into_iter().map(|r| r.expect("a launch")).collect();

    // One call for the three alike, one for the other.
    let fleets = h.proxy.seen("CreateFleet");
    let mut counts: Vec<&str> =
        fleets.iter().map(|f| f.params["TargetCapacitySpecification.TotalTargetCapacity"].as_str()).collect();
    counts.sort_unstable();
    assert_eq!(counts, ["1", "3"], "{} calls", fleets.len());
    let shared = fleets.iter().find(|f| f.params["TargetCapacitySpecification.TotalTargetCapacity"] == "3").unwrap();
    let fleet_tags: BTreeMap<&str, &str> = (1..)
        .map_while(|i| {
            Some((
                shared.params.get(&format!("TagSpecification.1.Tag.{i}.Key"))?,
                shared.params.get(&format!("TagSpecification.1.Tag.{i}.Value"))?,
            ))
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(fleet_tags.get("stoker.dev/launch-batch"), Some(&"general-a general-b general-c"));
    assert!(!fleet_tags.contains_key("stoker.dev/nodeclaim"), "no one claim's name on every instance");

    // Three instances, one each, every one tagged with its own claim afterwards.
    let mut ids: Vec<&str> = launched.iter().map(|i| i.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "an instance per claim");
    for (claim, instance) in alike.iter().chain([&different]).zip(&launched) {
        let name = claim.metadata.name.as_deref().unwrap();
        assert_eq!(instance.nodeclaim(), Some(name));
        let tags = instance_tags(&h.ec2, &instance.id).await;
        assert_eq!(tags.get("stoker.dev/nodeclaim").map(String::as_str), Some(name), "{tags:?}");
        assert_eq!(tags.get("Name").map(String::as_str), Some(name));
    }
    // Members in name order took the instances in ID order.
    let mut by_name: Vec<(&str, &str)> =
        alike.iter().zip(&launched).map(|(c, i)| (c.metadata.name.as_deref().unwrap(), i.id.as_str())).collect();
    by_name.sort_unstable();
    assert!(by_name.windows(2).all(|pair| pair[0].1 < pair[1].1), "{by_name:?}");

    // The controller died after the call, before two of the instances got their claim's tag:
    // a restarted controller finds each claim's instance from the batch tag, launches nothing,
    // and writes the missing tags (a simulated kubelet, and people, read them).
    for instance in &launched[..2] {
        h.ec2
            .delete_tags()
            .resources(&instance.id)
            .tags(aws_sdk_ec2::types::Tag::builder().key("stoker.dev/nodeclaim").build())
            .send()
            .await
            .expect("DeleteTags");
    }
    for (claim, instance) in alike.iter().zip(&launched) {
        let again =
            h.provider.create(claim, &h.class, PriorLaunches::Unknown, Followers::NoneExpected).await.expect("adopted");
        assert_eq!(again.id, instance.id, "{:?}", claim.metadata.name);
        let tags = instance_tags(&h.ec2, &instance.id).await;
        assert_eq!(tags.get("stoker.dev/nodeclaim"), claim.metadata.name.as_ref(), "{tags:?}");
    }
    assert_eq!(h.proxy.seen("CreateFleet").len(), 2, "no further CreateFleet");
    for instance in &launched {
        h.provider.delete(&instance.provider_id).await.expect("terminated");
    }
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn the_last_launch_of_a_decision_sends_the_shared_call_without_waiting_out_the_window() {
    // A window no test would sit out: only the last launch's word can send the call.
    let hour = Duration::from_secs(3600);
    let h = harness_with(|options| options.batch_window = BatchWindow { idle: hour, max: hour }).await;
    let types = ["m5.large"];
    let first = nodeclaim("general-first", &types, &["on-demand"]);
    let last = nodeclaim("general-last", &types, &["on-demand"]);
    let launches = futures::future::join(
        h.provider.create(&first, &h.class, PriorLaunches::None, Followers::Expected),
        h.provider.create(&last, &h.class, PriorLaunches::None, Followers::NoneExpected),
    );
    let (first, last) = tokio::time::timeout(Duration::from_secs(60), launches).await.expect("the call went out");
    let (first, last) = (first.expect("a launch"), last.expect("a launch"));
    let fleets = h.proxy.seen("CreateFleet");
    assert_eq!(fleets.len(), 1, "one call for both");
    assert_eq!(fleets[0].params["TargetCapacitySpecification.TotalTargetCapacity"], "2");
    for instance in [first, last] {
        h.provider.delete(&instance.provider_id).await.expect("terminated");
    }
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn prepared_launch_templates_are_the_ones_the_first_launch_uses() {
    let h = harness(Duration::from_secs(180)).await;
    let claim = nodeclaim("general-prepared", &["m5.large", "m6g.large"], &["on-demand"]);
    h.provider.prepare(&claim, &h.class).await.expect("prepared");
    let created: Vec<String> =
        h.proxy.seen("CreateLaunchTemplate").iter().map(|call| call.params["LaunchTemplateName"].clone()).collect();
    assert_eq!(created.len(), 5, "one per AMI of the node class: {created:?}");
    h.provider.prepare(&claim, &h.class).await.expect("prepared again");
    assert_eq!(h.proxy.seen("CreateLaunchTemplate").len(), 5, "known templates are not created again");

    h.provider.create(&claim, &h.class, PriorLaunches::None, Followers::NoneExpected).await.expect("a launch");
    assert_eq!(h.proxy.seen("CreateLaunchTemplate").len(), 5, "the launch created nothing more");
    let fleets = h.proxy.seen("CreateFleet");
    let used: Vec<&String> =
        fleets[0].params.iter().filter(|(k, _)| k.ends_with("LaunchTemplateName")).map(|(_, v)| v).collect();
    assert!(!used.is_empty() && used.iter().all(|name| created.contains(name)), "{used:?} not in {created:?}");
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn accelerated_types_launch_with_their_image_variant() {
    let h = harness(Duration::from_secs(180)).await;
    for (name, instance_type, image) in [
        ("general-gpu", "g5.xlarge", "ami-0a1d1a2300000000"),
        ("general-neuron", "inf2.xlarge", "ami-0e0e002300000000"),
        ("general-plain", "m5.large", "ami-0e0a202300000000"),
    ] {
        let claim = nodeclaim(name, &[instance_type], &["on-demand"]);
        let instance =
            h.provider.create(&claim, &h.class, PriorLaunches::None, Followers::NoneExpected).await.expect("a launch");
        assert_eq!((instance.instance_type.as_str(), instance.image_id.as_str()), (instance_type, image));
        let launched = h.ec2.describe_instances().instance_ids(&instance.id).send().await.expect("DescribeInstances");
        assert_eq!(launched.reservations()[0].instances()[0].image_id(), Some(image), "{instance_type}");
    }
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn capacity_errors_fall_back_to_the_next_offering_then_on_demand_and_expire() {
    let ttl = Duration::from_secs(3);
    let h = harness(ttl).await;

    // No m5.large spot capacity: EC2 itself moves on to the next override of the same call.
    h.proxy.refuse_capacity(CapacityRule {
        instance_type: Some("m5.large".into()),
        capacity_type: Some("spot".into()),
        code: "InsufficientInstanceCapacity".into(),
    });
    let claim = nodeclaim("general-next", &["m5.large", "m5.xlarge"], &["spot", "on-demand"]);
    let instance =
        h.provider.create(&claim, &h.class, PriorLaunches::Unknown, Followers::NoneExpected).await.expect("a launch");
    assert_eq!((instance.instance_type.as_str(), instance.capacity_type.as_str()), ("m5.xlarge", "spot"));
    // EC2 named the m5.large pools it could not fill; they are remembered, so the next plan
    // leaves them out rather than counting on them.
    assert_eq!(h.provider.unavailable_offerings(), 3, "m5.large spot in three zones");
    let types = h.provider.instance_types(&h.class).await.expect("instance types");
    let spot_offerings = |name: &str| -> Vec<bool> {
        let found = types.iter().find(|t| t.name == name).expect("the type");
        found.offerings.iter().filter(|o| o.capacity_type == "spot").map(|o| o.available).collect()
    };
    assert_eq!(spot_offerings("m5.large"), [false; 3]);
    assert_eq!(spot_offerings("m5.xlarge"), [true; 3]);

    // No spot capacity at all: every override fails, stoker marks them and retries on-demand.
    h.proxy.refuse_capacity(CapacityRule {
        instance_type: None,
        capacity_type: Some("spot".into()),
        code: "InsufficientInstanceCapacity".into(),
    });
    let claim = nodeclaim("general-fallback", &["m5.large", "m5.xlarge"], &["spot", "on-demand"]);
    let before = h.proxy.seen("CreateFleet").len();
    let instance = h
        .provider
        .create(&claim, &h.class, PriorLaunches::Unknown, Followers::NoneExpected)
        .await
        .expect("an on-demand launch");
    assert_eq!(instance.capacity_type, "on-demand");
    let calls: Vec<String> = h.proxy.seen("CreateFleet")[before..]
        .iter()
        .map(|s| s.params["TargetCapacitySpecification.DefaultTargetCapacityType"].clone())
        .collect();
    assert_eq!(calls, ["spot", "on-demand"]);
    assert!(h.provider.unavailable_offerings() >= 6, "both types' spot offerings in three zones are cached");

    // A spot-only NodeClaim now fails fast from the cache, naming the error seen.
    let spot_only = nodeclaim("general-spot-only", &["m5.large", "m5.xlarge"], &["spot"]);
    let before = h.proxy.seen("CreateFleet").len();
    let error = h
        .provider
        .create(&spot_only, &h.class, PriorLaunches::Unknown, Followers::NoneExpected)
        .await
        .expect_err("no spot capacity");
    assert!(matches!(error, CloudError::InsufficientCapacity { .. }), "{error}");
    assert_eq!(h.proxy.seen("CreateFleet").len(), before, "answered from the unavailable-offerings cache");
    let types = h.provider.instance_types(&h.class).await.expect("instance types");
    let m5 = types.iter().find(|t| t.name == "m5.large").expect("m5.large");
    assert!(m5.offerings.iter().filter(|o| o.capacity_type == "spot").all(|o| !o.available));

    // Capacity is back and the cache entries expire: spot launches again.
    h.proxy.clear_capacity_rules();
    tokio::time::sleep(ttl).await;
    assert_eq!(h.provider.unavailable_offerings(), 0);
    let instance = h
        .provider
        .create(&spot_only, &h.class, PriorLaunches::Unknown, Followers::NoneExpected)
        .await
        .expect("spot again");
    assert_eq!(instance.capacity_type, "spot");
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn throttled_calls_are_retried_with_backoff() {
    let h = harness(Duration::from_secs(180)).await;
    // More throttles than the SDK's own three attempts: stoker's back-off takes over.
    h.proxy.throttle("CreateFleet", 4);
    let claim = nodeclaim("general-throttled", &["c5.large"], &["on-demand"]);
    let instance = h
        .provider
        .create(&claim, &h.class, PriorLaunches::Unknown, Followers::NoneExpected)
        .await
        .expect("a launch after throttling");
    assert_eq!(instance.instance_type, "c5.large");
    assert_eq!(h.proxy.seen("CreateFleet").len(), 5);

    // Throttled on every attempt: reported as throttling (retried later), never as a capacity
    // error (which would delete the claim and mark offerings unavailable).
    h.proxy.throttle("CreateFleet", 1000);
    let claim = nodeclaim("general-throttled-out", &["c5.large"], &["on-demand"]);
    let error = h
        .provider
        .create(&claim, &h.class, PriorLaunches::None, Followers::NoneExpected)
        .await
        .expect_err("throttled throughout");
    assert!(matches!(error, CloudError::Throttled { .. }), "{error}");
    assert_eq!(error.reason(), "Throttled");
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_catalog_refresh_that_fails_keeps_the_last_good_catalog() {
    let h = harness(Duration::from_secs(180)).await;
    let before = h.provider.instance_types(&h.class).await.expect("priced types");
    // EC2 throttles every DescribeInstanceTypes from now on.
    h.proxy.throttle("DescribeInstanceTypes", 10_000);
    let refreshed = h.provider.refresh().await.expect("the last good catalog, not an error");
    assert!(!refreshed.types.is_empty());
    let asked = h.proxy.seen("DescribeInstanceTypes").len();
    // Launches and batches keep being served, without a fetch of their own.
    for _ in 0..20 {
        let types = h.provider.instance_types(&h.class).await.expect("still priced types");
        assert_eq!(types.len(), before.len());
    }
    let claim = nodeclaim("general-during-outage", &["c5.large"], &["on-demand"]);
    h.provider
        .create(&claim, &h.class, PriorLaunches::None, Followers::NoneExpected)
        .await
        .expect("a launch during the outage");
    assert_eq!(h.proxy.seen("DescribeInstanceTypes").len(), asked, "no storm of catalog retries");
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn only_instances_tagged_for_this_cluster_are_terminated() {
    let h = harness(Duration::from_secs(180)).await;
    let subnet = h.class.status.as_ref().expect("resolved").subnets[0].id.clone();
    let foreign = h
        .ec2
        .run_instances()
        .image_id("ami-0e0a202300000000")
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .subnet_id(&subnet)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(aws_sdk_ec2::types::Tag::builder().key("stoker.dev/cluster").value(&h.cluster).build())
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");
    let foreign = foreign.instances()[0].instance_id().expect("id").to_owned();
    let provider_id = format!("aws:///us-east-1a/{foreign}");
    let error = h.provider.delete(&provider_id).await.expect_err("refused");
    assert!(matches!(&error, CloudError::NotOwned { instance, .. } if *instance == foreign), "{error}");
    assert_eq!(h.provider.get(&provider_id).await.expect("still there").state, "running");

    let claim = nodeclaim("general-delete", &["c5.large"], &["on-demand"]);
    let own =
        h.provider.create(&claim, &h.class, PriorLaunches::Unknown, Followers::NoneExpected).await.expect("a launch");
    h.provider.delete(&own.provider_id).await.expect("terminated");
    assert!(matches!(h.provider.get(&own.provider_id).await, Err(CloudError::NotFound(_))));
    assert!(matches!(h.provider.delete(&own.provider_id).await, Err(CloudError::NotFound(_))));
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn a_broad_nodeclaim_sends_at_most_sixty_overrides_cheapest_first() {
    let h = harness(Duration::from_secs(180)).await;
    let mut claim = nodeclaim("general-broad", &["unused"], &["on-demand"]);
    // Only capacity type and node pool: hundreds of instance types in three zones would fit.
    claim.spec.requirements.remove(0);
    let instance =
        h.provider.create(&claim, &h.class, PriorLaunches::Unknown, Followers::NoneExpected).await.expect("a launch");
    let params = &h.proxy.seen("CreateFleet")[0].params;
    let types: Vec<&str> =
        params.iter().filter(|(k, _)| k.ends_with(".InstanceType")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(types.len(), 60);
    assert_eq!(params["OnDemandOptions.AllocationStrategy"], "lowest-price");
    // The emulator takes the first override; stoker put the cheapest first.
    let catalog = h.provider.instance_types(&h.class).await.expect("instance types");
    let cheapest = catalog
        .iter()
        .filter(|t| t.allocatable.get("cpu") >= 1000)
        .flat_map(|t| t.offerings.iter().filter(|o| o.capacity_type == "on-demand").map(move |o| (o.price, &t.name)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("a fitting type");
    assert_eq!(&instance.instance_type, cheapest.1);
}
