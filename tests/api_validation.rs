//! The CRDs against the real apiserver of the local environment: they install and become
//! Established, every example is accepted, and each schema or CEL rule rejects a bad manifest
//! with a message naming the field.

mod support;

use serde_json::{Value, json};
use support::{client, dry_run_create, example, examples, install_crds, with, without};

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn crds_install_and_every_example_is_accepted() {
    let client = client().await;
    install_crds(&client).await;
    let mut checked = 0;
    for (file, documents) in examples() {
        for document in documents {
            dry_run_create(&client, &document).await.unwrap_or_else(|error| panic!("{file} was rejected: {error}"));
            checked += 1;
        }
    }
    assert!(checked >= 4, "expected at least four example documents, found {checked}");
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn converted_karpenter_manifests_are_accepted() {
    use stoker::cli::convert::{Conversion, convert_document};
    let client = client().await;
    install_crds(&client).await;
    let text = std::fs::read_to_string("examples/karpenter/karpenter.yaml").expect("the Karpenter example");
    let mut converted = Vec::new();
    for document in support::documents(&text) {
        match convert_document(&document) {
            Conversion::Converted { document, notes, problems } => {
                assert!(problems.is_empty(), "{problems:?}");
                assert!(notes.iter().all(|note| note.contains("dropped")), "{notes:?}");
                converted.push(document);
            }
            Conversion::Unchanged { .. } => {}
            other => panic!("the example must convert: {other:?}"),
        }
    }
    let kinds: Vec<&str> = converted.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["NodePool", "EC2NodeClass"]);
    for document in &converted {
        dry_run_create(&client, document).await.unwrap_or_else(|error| panic!("{document} was rejected: {error}"));
    }
}

/// One bad manifest per rule: (what is wrong, manifest, field the message must name, words it
/// must contain).
fn invalid_manifests() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let spot = example("nodepool-spot.yaml");
    let class = example("ec2nodeclass.yaml");
    let warm = example("warmpool.yaml");
    let overlay = example("nodeoverlay.yaml");
    let batch = example("nodepool-batch.yaml");
    let requirement = "/spec/template/spec/requirements/0";
    vec![
        (
            "overlay with price and priceAdjustment",
            with(overlay.clone(), "/spec/price", json!("0.05")),
            "spec.priceAdjustment",
            "mutually exclusive",
        ),
        (
            "overlay adjustment without a sign",
            with(overlay.clone(), "/spec/priceAdjustment", json!("10%")),
            "spec.priceAdjustment",
            "should match",
        ),
        (
            "overlay adding cpu",
            with(overlay.clone(), "/spec/capacity", json!({"cpu": "4"})),
            "spec.capacity",
            "extended resources",
        ),
        ("overlay weight 0", with(overlay.clone(), "/spec/weight", json!(0)), "spec.weight", "1"),
        (
            "overlay requirement with minValues",
            with(overlay, "/spec/requirements/0/minValues", json!(1)),
            "spec.requirements",
            "minValues",
        ),
        ("weight above 100", with(spot.clone(), "/spec/weight", json!(101)), "spec.weight", "100"),
        ("weight below 1", with(spot.clone(), "/spec/weight", json!(0)), "spec.weight", "1"),
        (
            "a static pool limiting cpu",
            with(without(spot.clone(), "/spec/weight"), "/spec/replicas", json!(2)),
            "spec.limits",
            "only 'limits.nodes' is supported on static NodePools",
        ),
        (
            "a static pool with a weight",
            with(without(spot.clone(), "/spec/limits"), "/spec/replicas", json!(2)),
            "spec.weight",
            "'weight' is not supported on static NodePools",
        ),
        (
            "a static pool with schedules",
            with(without(without(batch.clone(), "/spec/limits"), "/spec/weight"), "/spec/replicas", json!(2)),
            "spec.schedules",
            "'schedules' are not supported on static NodePools",
        ),
        (
            "a NodePool schedule that changes nothing",
            without(without(batch.clone(), "/spec/schedules/0/limits"), "/spec/schedules/0/exclusions"),
            "spec.schedules[0]",
            "must set 'limits', 'weight' or 'disruption'",
        ),
        (
            "a NodePool schedule with duration and end",
            with(batch.clone(), "/spec/schedules/0/end", json!("0 0 * * mon")),
            "spec.schedules[0]",
            "exactly one of 'duration' or 'end'",
        ),
        (
            "a NodePool schedule's empty disruption",
            with(batch.clone(), "/spec/schedules/1/disruption", json!({})),
            "spec.schedules[1].disruption",
            "must set 'consolidationPolicy' or 'consolidateAfter'",
        ),
        (
            "NodePool schedule names repeated",
            with(batch.clone(), "/spec/schedules/1/name", json!("weekends-off")),
            "spec.schedules",
            "schedule names must be unique",
        ),
        (
            "a NodePool schedule's weight above 100",
            with(batch, "/spec/schedules/1/weight", json!(101)),
            "spec.schedules[1].weight",
            "100",
        ),
        (
            "negative replicas",
            with(without(spot.clone(), "/spec/weight"), "/spec/replicas", json!(-1)),
            "spec.replicas",
            "0",
        ),
        (
            "In without values",
            with(spot.clone(), requirement, json!({"key": "karpenter.sh/capacity-type", "operator": "In"})),
            "spec.template.spec.requirements[0].values",
            "must have values",
        ),
        (
            "Exists with values",
            with(spot.clone(), requirement, json!({"key": "team", "operator": "Exists", "values": ["a"]})),
            "spec.template.spec.requirements[0].values",
            "must not have values",
        ),
        (
            "Gt with a word",
            with(
                spot.clone(),
                requirement,
                json!({"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["four"]}),
            ),
            "spec.template.spec.requirements[0].values",
            "single non-negative integer",
        ),
        (
            "Lt with two values",
            with(
                spot.clone(),
                requirement,
                json!({"key": "karpenter.k8s.aws/instance-cpu", "operator": "Lt", "values": ["4", "8"]}),
            ),
            "spec.template.spec.requirements[0].values",
            "single non-negative integer",
        ),
        (
            "Gte beyond 18 digits",
            with(
                spot.clone(),
                requirement,
                json!({"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gte", "values": ["9223372036854775807"]}),
            ),
            "spec.template.spec.requirements[0].values",
            "single non-negative integer",
        ),
        (
            "unknown operator",
            with(spot.clone(), &format!("{requirement}/operator"), json!("Equals")),
            "spec.template.spec.requirements[0].operator",
            "Unsupported value",
        ),
        (
            "minValues above 50",
            with(spot.clone(), "/spec/template/spec/requirements/4/minValues", json!(51)),
            "spec.template.spec.requirements[4].minValues",
            "50",
        ),
        (
            "minValues above the number of values",
            with(
                spot.clone(),
                requirement,
                json!({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"], "minValues": 2}),
            ),
            "spec.template.spec.requirements[0].minValues",
            "minValues",
        ),
        (
            "more than 100 requirements",
            with(
                spot.clone(),
                "/spec/template/spec/requirements",
                Value::Array((0..101).map(|i| json!({"key": format!("k{i}"), "operator": "Exists"})).collect()),
            ),
            "spec.template.spec.requirements",
            "100",
        ),
        (
            "requirement in the stoker.dev domain",
            with(spot.clone(), requirement, json!({"key": "stoker.dev/nodepool", "operator": "Exists"})),
            "spec.template.spec.requirements[0].key",
            "restricted",
        ),
        (
            "template label in the stoker.dev domain",
            with(spot.clone(), "/spec/template/metadata/labels/stoker.dev~1team", json!("a")),
            "spec.template.metadata.labels",
            "restricted",
        ),
        (
            "more than 50 budgets",
            with(spot.clone(), "/spec/disruption/budgets", Value::Array(vec![json!({"nodes": "1"}); 51])),
            "spec.disruption.budgets",
            "50",
        ),
        (
            "budget schedule without duration",
            without(spot.clone(), "/spec/disruption/budgets/1/duration"),
            "spec.disruption.budgets[1].schedule",
            "'schedule' must be set with 'duration'",
        ),
        (
            "budget nodes neither count nor percentage",
            with(spot.clone(), "/spec/disruption/budgets/0/nodes", json!("ten")),
            "spec.disruption.budgets[0].nodes",
            "should match",
        ),
        (
            "budget of 150%",
            with(spot.clone(), "/spec/disruption/budgets/0/nodes", json!("150%")),
            "spec.disruption.budgets[0].nodes",
            "should match",
        ),
        (
            "expireAfter not a duration",
            with(spot.clone(), "/spec/template/spec/expireAfter", json!("7 days")),
            "spec.template.spec.expireAfter",
            "should match",
        ),
        (
            "consolidation policy unknown",
            with(spot.clone(), "/spec/disruption/consolidationPolicy", json!("Always")),
            "spec.disruption.consolidationPolicy",
            "Unsupported value",
        ),
        (
            "nodeClassRef of the wrong kind",
            with(spot.clone(), "/spec/template/spec/nodeClassRef/kind", json!("AWSNodeTemplate")),
            "spec.template.spec.nodeClassRef.kind",
            "EC2NodeClass",
        ),
        (
            "taint with an unknown effect",
            with(spot, "/spec/template/spec/taints", json!([{"key": "a", "effect": "Sometimes"}])),
            "spec.template.spec.taints",
            "effect",
        ),
        (
            "both role and instanceProfile",
            with(class.clone(), "/spec/instanceProfile", json!("profile")),
            "spec",
            "exactly one of 'role' or 'instanceProfile'",
        ),
        (
            "neither role nor instanceProfile",
            without(class.clone(), "/spec/role"),
            "spec",
            "exactly one of 'role' or 'instanceProfile'",
        ),
        (
            "no subnet selector terms",
            with(class.clone(), "/spec/subnetSelectorTerms", json!([])),
            "spec.subnetSelectorTerms",
            "1",
        ),
        (
            "subnet term with tags and id",
            with(class.clone(), "/spec/subnetSelectorTerms/0/id", json!("subnet-0abc")),
            "spec.subnetSelectorTerms[0]",
            "exactly one of 'tags' or 'id'",
        ),
        (
            "capacity reservation term with tags and id",
            with(
                class.clone(),
                "/spec/capacityReservationSelectorTerms",
                json!([{"id": "cr-0abc", "tags": {"a": "b"}}]),
            ),
            "spec.capacityReservationSelectorTerms[0]",
            "exactly one of 'tags' or 'id'",
        ),
        (
            "capacity reservation owner beside an id",
            with(
                class.clone(),
                "/spec/capacityReservationSelectorTerms",
                json!([{"id": "cr-0abc", "ownerID": "123456789012"}]),
            ),
            "spec.capacityReservationSelectorTerms[0]",
            "'ownerID' narrows a 'tags' term",
        ),
        (
            "capacity reservation id of another kind",
            with(class.clone(), "/spec/capacityReservationSelectorTerms", json!([{"id": "subnet-0abc"}])),
            "spec.capacityReservationSelectorTerms[0].id",
            "cr-",
        ),
        (
            "capacity reservation owner that is not an account",
            with(
                class.clone(),
                "/spec/capacityReservationSelectorTerms",
                json!([{"tags": {"a": "b"}, "ownerID": "me"}]),
            ),
            "spec.capacityReservationSelectorTerms[0].ownerID",
            "[0-9]{12}",
        ),
        (
            "alias term beside another term",
            with(class.clone(), "/spec/amiSelectorTerms", json!([{"alias": "al2023@latest"}, {"id": "ami-0123"}])),
            "spec.amiSelectorTerms",
            "only term",
        ),
        (
            "image garbage collection stopping above where it starts",
            with(
                class.clone(),
                "/spec/kubelet",
                json!({"imageGCHighThresholdPercent": 80, "imageGCLowThresholdPercent": 85}),
            ),
            "spec.kubelet.imageGCLowThresholdPercent",
            "imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent",
        ),
        (
            "image garbage collection above 100 percent",
            with(class.clone(), "/spec/kubelet", json!({"imageGCHighThresholdPercent": 101})),
            "spec.kubelet.imageGCHighThresholdPercent",
            "100",
        ),
        (
            "IMDS tokens neither required nor optional",
            with(class.clone(), "/spec/metadataOptions/httpTokens", json!("sometimes")),
            "spec.metadataOptions.httpTokens",
            "Unsupported value",
        ),
        (
            "hop limit above 64",
            with(class, "/spec/metadataOptions/httpPutResponseHopLimit", json!(65)),
            "spec.metadataOptions.httpPutResponseHopLimit",
            "64",
        ),
        (
            "schedule with duration and end",
            with(warm.clone(), "/spec/schedules/0/duration", json!("5h")),
            "spec.schedules[0]",
            "exactly one of 'duration' or 'end'",
        ),
        (
            "schedule with neither duration nor end",
            without(warm.clone(), "/spec/schedules/0/end"),
            "spec.schedules[0]",
            "exactly one of 'duration' or 'end'",
        ),
        (
            "schedule with replicas and capacity",
            with(warm.clone(), "/spec/schedules/0/capacity", json!({"cpu": "16"})),
            "spec.schedules[0]",
            "exactly one of 'replicas', 'capacity' or 'percentage'",
        ),
        (
            "percentage without the workload it is of",
            with(warm.clone(), "/spec/baselinePercentage", json!(20)),
            "spec",
            "a percentage needs scalableRef",
        ),
        (
            "schedule name with capitals",
            with(warm.clone(), "/spec/schedules/0/name", json!("Mornings")),
            "spec.schedules[0].name",
            "should match",
        ),
        (
            "two schedules with one name",
            with(warm.clone(), "/spec/schedules/1/name", json!("weekday-mornings")),
            "spec.schedules",
            "unique",
        ),
        ("negative baseline", with(warm.clone(), "/spec/baseline", json!(-1)), "spec.baseline", "0"),
        (
            "exclusion range backwards",
            with(warm.clone(), "/spec/exclusions/1/to", json!("2026-12-01")),
            "spec.exclusions[1].from",
            "'from' must not be after 'to'",
        ),
        (
            "exclusion date not a date",
            with(warm.clone(), "/spec/exclusions/0/date", json!("Christmas")),
            "spec.exclusions[0].date",
            "should match",
        ),
        (
            "pause pods without requests",
            with(warm, "/spec/resources", json!({"limits": {"cpu": "1"}})),
            "spec.resources",
            "requests",
        ),
    ]
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn the_apiserver_rejects_each_invalid_manifest_naming_the_field() {
    let client = client().await;
    install_crds(&client).await;
    let cases = invalid_manifests();
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (what, manifest, field, words) in cases {
        match dry_run_create(&client, &manifest).await {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) => {
                let message = status.message;
                if status.code != 422 || !message.contains(&format!("{field}:")) || !message.contains(words) {
                    failures.push(format!(
                        "{what}: expected 422 naming {field:?} with {words:?}, got {}: {message}",
                        status.code
                    ));
                }
            }
            Err(other) => failures.push(format!("{what}: {other}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the invalid manifests were not rejected as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn nodeclaim_spec_is_immutable() {
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
    use stoker::apis::NodeClaim;

    let client = client().await;
    install_crds(&client).await;
    let api: Api<NodeClaim> = Api::all(client);
    let claim: NodeClaim = serde_json::from_value(json!({
        "apiVersion": "stoker.dev/v1alpha1",
        "kind": "NodeClaim",
        "metadata": {"name": "immutable-test"},
        "spec": {
            "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"},
            "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]
        }
    }))
    .unwrap();
    let _ = api.delete("immutable-test", &DeleteParams::default()).await;
    support::wait_until(std::time::Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.get_opt("immutable-test").await.ok().flatten().is_none().then_some(()) }
    })
    .await;
    api.create(&PostParams::default(), &claim).await.expect("a valid NodeClaim");
    let change = json!({"spec": {"requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}]}});
    let error = api.patch("immutable-test", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap_err();
    api.delete("immutable-test", &DeleteParams::default()).await.unwrap();
    assert!(error.to_string().contains("spec is immutable"), "{error}");
}

/// `stoker validate` refuses every manifest the apiserver refuses, offline, naming the same field.
#[test]
fn stoker_validate_rejects_the_same_manifests_offline() {
    use stoker::cli::validate::{Verdict, check_document};
    let mut failures = Vec::new();
    for (what, manifest, field, _) in invalid_manifests() {
        match check_document(&manifest) {
            Verdict::Invalid(problems) if problems.iter().any(|p| p.starts_with(field)) => {}
            other => failures.push(format!("{what}: expected a problem naming {field}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
