//! The Helm charts: lint, render with default and non-default values, refuse a values typo, apply
//! the rendered manifests to the real apiserver (server-side dry-run), and check the rendered RBAC
//! with SubjectAccessReviews for every verb the controller uses (and nothing it does not).

mod support;

use std::{path::Path, process::Command};

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::Namespace,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use stoker::operator::settings::FeatureGates;

const NAMESPACE: &str = "stoker-system";

fn helm(args: &[&str]) -> Result<String, String> {
    let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".into());
    let output = Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {helm} (hack/test.sh builds it): {e}"));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

/// `helm template` of the stoker chart with these extra arguments.
fn template(extra: &[&str]) -> Result<String, String> {
    let mut args = vec!["template", "stoker", "charts/stoker", "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    helm(&args)
}

fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--set", "settings.clusterName=prod"];
    args.extend_from_slice(extra);
    let yaml = template(&args).unwrap_or_else(|e| panic!("helm template {extra:?}: {e}"));
    support::documents(&yaml)
}

fn find<'a>(documents: &'a [Value], kind: &str) -> Option<&'a Value> {
    documents.iter().find(|d| d["kind"] == kind)
}

#[test]
#[ignore = "needs helm from the local environment: run hack/test.sh"]
fn charts_lint_and_render_with_default_and_other_values() {
    helm(&["lint", "charts/stoker", "--set", "settings.clusterName=prod"]).expect("the chart lints");
    helm(&["lint", "charts/stoker-crd"]).expect("the CRD chart lints");
    // The CapacityBuffer CRD, SIG Autoscaling's, is installed when the cluster lacks it (helm
    // template sees no cluster) or when asked, and left to another chart when told.
    let crd_names = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["template", "stoker-crd", "charts/stoker-crd"];
        args.extend_from_slice(extra);
        let yaml = helm(&args).unwrap_or_else(|e| panic!("helm template stoker-crd {extra:?}: {e}"));
        support::documents(&yaml)
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let buffers = "capacitybuffers.autoscaling.x-k8s.io".to_owned();
    assert!(crd_names(&[]).contains(&buffers));
    assert!(crd_names(&["--set", "capacityBufferCRD=always"]).contains(&buffers));
    let left = crd_names(&["--set", "capacityBufferCRD=never"]);
    assert!(!left.contains(&buffers) && left.contains(&"nodepools.stoker.dev".to_owned()), "{left:?}");
    helm(&["template", "stoker-crd", "charts/stoker-crd", "--set", "capacityBufferCRD=yes"])
        .expect_err("an unknown choice is refused");

    let defaults = render(&[]);
    let deployment = find(&defaults, "Deployment").expect("a Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = container["env"].as_array().expect("env").iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(env.contains(&"CLUSTER_NAME") && !env.contains(&"CLUSTER_ENDPOINT"), "{env:?}");
    assert_eq!(feature_gates(deployment), FeatureGates::default());
    assert!(spec["affinity"]["podAntiAffinity"].is_object());
    // Never on a node stoker manages (its own consolidation could remove it); welcome on nodes
    // kept for add-ons.
    let terms =
        &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(terms, &json!([{"matchExpressions": [{"key": "stoker.dev/nodepool", "operator": "DoesNotExist"}]}]));
    assert_eq!(spec["tolerations"], json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}]));
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["topologySpreadConstraints"][0]["topologyKey"], "topology.kubernetes.io/zone");
    assert!(find(&defaults, "PodDisruptionBudget").is_some());
    assert!(find(&defaults, "ServiceMonitor").is_none());
    assert!(find(&defaults, "ConfigMap").is_none(), "the dashboard is off by default");
    let class = find(&defaults, "PriorityClass").expect("the warm-pool PriorityClass");
    assert_eq!((class["value"].as_i64(), class["preemptionPolicy"].as_str()), (Some(-1), Some("Never")));

    let custom = render(&[
        "--set",
        "replicas=3",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/stoker",
        "--set",
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--set",
        "settings.clusterEndpoint=https://ABC.gr7.us-east-1.eks.amazonaws.com",
        "--set",
        "warmPool.priorityClass.create=false",
        "--set",
        "dashboard.enabled=true",
        "--set",
        "settings.featureGates.consolidation=false",
        "--set",
        "settings.featureGates.spotToSpotConsolidation=true",
    ]);
    let deployment = find(&custom, "Deployment").expect("a Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        feature_gates(deployment),
        FeatureGates { warm_pools: true, consolidation: false, spot_to_spot_consolidation: true }
    );
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str().expect("image");
    assert!(image.ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"), "{image}");
    let account = find(&custom, "ServiceAccount").expect("a ServiceAccount");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/stoker"
    );
    assert!(find(&custom, "ServiceMonitor").is_some());
    assert!(find(&custom, "PriorityClass").is_none());
    let dashboard = find(&custom, "ConfigMap").expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(dashboard["data"]["stoker.json"].as_str().expect("the dashboard JSON"))
        .expect("the shipped dashboard is JSON");
    assert_eq!(shipped, dashboard_json());

    // WarmPools: the operator's limits reach the controller; with the gate off, stoker gets no
    // right to make Deployments or PriorityClasses at all.
    let env_of = |documents: &[Value], name: &str| {
        let deployment = find(documents, "Deployment").expect("a Deployment");
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().expect("env").clone();
        env.into_iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str().map(str::to_owned))
    };
    assert_eq!(env_of(&defaults, "WARMPOOL_IMAGES").as_deref(), Some("registry.k8s.io/pause:3.10"));
    assert_eq!(env_of(&defaults, "WARMPOOL_NODEPOOLS").as_deref(), Some(""));
    // Every IPv6 and IPv4 address, for single-stack and dual-stack clusters alike.
    assert_eq!(env_of(&defaults, "METRICS_ADDRESS").as_deref(), Some(":8080"));
    assert_eq!(env_of(&defaults, "HEALTH_ADDRESS").as_deref(), Some(":8081"));
    let limited = render(&["--set", "settings.warmPools.nodePools={spot,general}"]);
    assert_eq!(env_of(&limited, "WARMPOOL_NODEPOOLS").as_deref(), Some("spot,general"));
    // The interruption queue: unset by default, the controller's setting when given.
    assert_eq!(env_of(&defaults, "INTERRUPTION_QUEUE"), None);
    assert_eq!(env_of(&defaults, "ACT_ON_REBALANCE_RECOMMENDATIONS").as_deref(), Some("false"));
    let queued = render(&["--set", "settings.interruptionQueue=prod-interruptions"]);
    assert_eq!(env_of(&queued, "INTERRUPTION_QUEUE").as_deref(), Some("prod-interruptions"));
    let grants = |documents: &[Value], resource: &str, verb: &str| {
        let role = documents
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "stoker")
            .expect("the controller's ClusterRole");
        role["rules"].as_array().expect("rules").iter().any(|r| {
            r["resources"].as_array().is_some_and(|rs| rs.iter().any(|x| x == resource))
                && r["verbs"].as_array().is_some_and(|vs| vs.iter().any(|x| x == verb))
        })
    };
    assert!(grants(&defaults, "deployments", "create") && grants(&defaults, "priorityclasses", "create"));
    let gated = render(&["--set", "settings.featureGates.warmPools=false"]);
    assert!(
        !grants(&gated, "deployments", "create") && !grants(&gated, "priorityclasses", "create"),
        "no Deployment writes with the gate off"
    );
    assert!(grants(&gated, "deployments", "watch"), "CapacityBuffers read Deployments whatever the gate");
    // Namespace admins and editors get WarmPools through the built-in roles' aggregation.
    let aggregated = |documents: &[Value], label: &str| {
        documents.iter().any(|d| d["kind"] == "ClusterRole" && d["metadata"]["labels"][label] == "true")
    };
    assert!(aggregated(&defaults, "rbac.authorization.k8s.io/aggregate-to-edit"));
    assert!(aggregated(&defaults, "rbac.authorization.k8s.io/aggregate-to-view"));
    assert!(!aggregated(&gated, "rbac.authorization.k8s.io/aggregate-to-edit"), "no WarmPool roles with the gate off");

    // What an operator adds: environment, volumes, labels and annotations on every object, a
    // longer grace period, a sub-second batch window and a region of another partition.
    let extended = render(&[
        "--set",
        "extraEnv[0].name=HTTPS_PROXY",
        "--set",
        "extraEnv[0].value=http://proxy:3128",
        "--set",
        "envFrom[0].configMapRef.name=proxy",
        "--set",
        "extraVolumes[0].name=ca",
        "--set",
        "extraVolumes[0].configMap.name=extra-ca",
        "--set",
        "extraVolumeMounts[0].name=ca",
        "--set",
        "extraVolumeMounts[0].mountPath=/etc/ssl/extra",
        "--set",
        "additionalLabels.team=platform",
        "--set",
        "additionalAnnotations.owner=sre",
        "--set",
        "terminationGracePeriodSeconds=60",
        "--set",
        "settings.batchIdleDuration=0.5s",
        "--set",
        "settings.region=us-iso-east-1",
    ]);
    for document in &extended {
        let metadata = &document["metadata"];
        assert_eq!(metadata["labels"]["team"], "platform", "{} {}", document["kind"], metadata["name"]);
        assert_eq!(metadata["annotations"]["owner"], "sre", "{} {}", document["kind"], metadata["name"]);
    }
    let deployment = find(&extended, "Deployment").expect("a Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["terminationGracePeriodSeconds"], 60);
    assert_eq!(spec["volumes"], json!([{"name": "ca", "configMap": {"name": "extra-ca"}}]));
    let container = &spec["containers"][0];
    assert_eq!(container["volumeMounts"], json!([{"name": "ca", "mountPath": "/etc/ssl/extra"}]));
    assert_eq!(container["envFrom"], json!([{"configMapRef": {"name": "proxy"}}]));
    assert_eq!(env_of(&extended, "HTTPS_PROXY").as_deref(), Some("http://proxy:3128"));
    assert_eq!(env_of(&extended, "AWS_REGION").as_deref(), Some("us-iso-east-1"));
    // What the schema admits, the controller parses: 500ms once crash-looped it.
    let idle = env_of(&extended, "BATCH_IDLE_DURATION").expect("the batch window");
    let parsed: stoker::operator::settings::Duration = idle.parse().expect("a duration the controller accepts");
    assert_eq!(parsed.as_std(), std::time::Duration::from_millis(500));
}

/// The feature gates the rendered Deployment passes, parsed as the controller parses them.
fn feature_gates(deployment: &Value) -> FeatureGates {
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().expect("env");
    let gates = env.iter().find(|e| e["name"] == "FEATURE_GATES").expect("FEATURE_GATES in the env");
    gates["value"].as_str().expect("a value").parse().expect("gates the controller accepts")
}

fn dashboard_json() -> Value {
    let path = Path::new("charts/stoker/dashboards/stoker.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("the dashboard is JSON")
}

/// Every query of the dashboard names metrics stoker exports, and every metric is on it.
#[test]
fn the_dashboard_shows_exactly_the_exported_metrics() {
    let exported: std::collections::BTreeSet<String> = stoker::metrics::Metrics::default().names.into_iter().collect();
    assert!(exported.len() >= 15, "{exported:?}");
    let dashboard = dashboard_json();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a query");
            for (start, _) in expr.match_indices("stoker_") {
                let name: String =
                    expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let base = ["_bucket", "_total"]
                    .iter()
                    .fold(name.clone(), |n, suffix| n.strip_suffix(suffix).map(str::to_owned).unwrap_or(n));
                assert!(exported.contains(&base), "{expr} queries {name}, which stoker does not export");
                queried.insert(base);
            }
        }
    }
    let missing: Vec<&String> = exported.difference(&queried).collect();
    assert!(missing.is_empty(), "exported but not on the dashboard: {missing:?}");
    // The standard process metrics, exported unprefixed beside stoker's, have panels too.
    let rendered = stoker::metrics::Metrics::default().render();
    for process in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
        assert!(rendered.lines().any(|line| line.starts_with(process)), "{process} is exported");
        assert!(dashboard.to_string().contains(process), "{process} is on the dashboard");
    }
}

#[test]
#[ignore = "needs helm from the local environment: run hack/test.sh"]
fn a_values_typo_or_a_missing_cluster_name_fails_the_install() {
    let typo = template(&["--set", "settings.clusterName=prod", "--set", "settings.clusterNme=prod"])
        .expect_err("a typo is refused");
    assert!(typo.contains("clusterNme"), "{typo}");
    let missing = template(&[]).expect_err("clusterName is required");
    assert!(missing.contains("clusterName"), "{missing}");
    let bad = template(&["--set", "settings.clusterName=prod", "--set", "settings.logFormat=xml"])
        .expect_err("an unknown log format is refused");
    assert!(bad.contains("logFormat"), "{bad}");
    let gate = template(&["--set", "settings.clusterName=prod", "--set", "settings.featureGates.warmPool=false"])
        .expect_err("an unknown feature gate is refused");
    assert!(gate.contains("warmPool"), "{gate}");
    // A duration the controller could not parse never installs.
    let negative = template(&["--set", "settings.clusterName=prod", "--set", "settings.batchIdleDuration=-1s"])
        .expect_err("a negative duration is refused");
    assert!(negative.contains("batchIdleDuration"), "{negative}");
}

#[test]
fn the_crd_chart_holds_the_generated_crds() {
    let root = Path::new(".");
    for entry in std::fs::read_dir(root.join("crds")).expect("crds/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name");
        let in_chart =
            std::fs::read_to_string(root.join("charts/stoker-crd/templates").join(name)).unwrap_or_else(|_| {
                panic!("charts/stoker-crd/templates/{} is missing: copy crds/ into it", name.to_string_lossy())
            });
        // A CRD another chart may own is wrapped in the guard that decides whether to install it.
        let body: String =
            in_chart.lines().filter(|line| !line.starts_with("{{")).map(|line| format!("{line}\n")).collect();
        assert_eq!(
            body,
            std::fs::read_to_string(&path).expect("crd"),
            "charts/stoker-crd/templates differs from crds/"
        );
        // Uninstalling the chart must not delete every NodePool, NodeClaim and WarmPool.
        assert!(in_chart.contains("helm.sh/resource-policy: keep"), "{} is not kept on uninstall", name.display());
    }
}

/// Whether `user` (in `groups`) may do what `attributes` say, as the apiserver answers a
/// SubjectAccessReview.
async fn may(
    reviews: &Api<SubjectAccessReview>,
    user: &str,
    groups: Vec<String>,
    attributes: ResourceAttributes,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: (!groups.is_empty()).then_some(groups),
            resource_attributes: Some(attributes),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = reviews.create(&PostParams::default(), &review).await.expect("a SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

/// (API group, resource, subresource, verb, namespaced) for every call the controller makes.
const CONTROLLER_CALLS: &[(&str, &str, &str, &str, bool)] = &[
    ("", "nodes", "", "list", false),
    ("", "nodes", "", "watch", false),
    ("", "nodes", "", "patch", false),
    ("", "nodes", "", "delete", false),
    ("", "pods", "", "list", false),
    ("", "pods", "", "watch", false),
    ("", "pods", "", "delete", true),
    ("", "pods", "eviction", "create", true),
    ("apps", "daemonsets", "", "watch", false),
    ("", "namespaces", "", "list", false),
    ("", "namespaces", "", "watch", false),
    ("", "persistentvolumeclaims", "", "list", false),
    ("", "persistentvolumeclaims", "", "watch", false),
    ("", "persistentvolumes", "", "list", false),
    ("", "persistentvolumes", "", "watch", false),
    ("storage.k8s.io", "storageclasses", "", "list", false),
    ("storage.k8s.io", "storageclasses", "", "watch", false),
    ("apps", "deployments", "", "get", true),
    ("apps", "deployments", "", "create", true),
    ("apps", "deployments", "", "patch", true),
    ("apps", "deployments", "", "watch", false),
    ("scheduling.k8s.io", "priorityclasses", "", "get", false),
    ("scheduling.k8s.io", "priorityclasses", "", "create", false),
    ("scheduling.k8s.io", "priorityclasses", "", "patch", false),
    ("stoker.dev", "nodepools", "", "watch", false),
    ("stoker.dev", "nodepools", "status", "patch", false),
    ("stoker.dev", "nodeoverlays", "", "list", false),
    ("stoker.dev", "nodeoverlays", "", "watch", false),
    ("stoker.dev", "nodeoverlays", "status", "patch", false),
    ("stoker.dev", "ec2nodeclasses", "", "get", false),
    ("stoker.dev", "ec2nodeclasses", "", "patch", false),
    ("stoker.dev", "ec2nodeclasses", "status", "patch", false),
    ("stoker.dev", "nodeclaims", "", "list", false),
    ("stoker.dev", "nodeclaims", "", "watch", false),
    ("stoker.dev", "nodeclaims", "", "create", false),
    ("stoker.dev", "nodeclaims", "", "patch", false),
    ("stoker.dev", "nodeclaims", "", "delete", false),
    ("stoker.dev", "nodeclaims", "status", "patch", false),
    ("stoker.dev", "warmpools", "", "get", true),
    ("stoker.dev", "warmpools", "", "watch", false),
    ("stoker.dev", "warmpools", "status", "patch", true),
    ("autoscaling.x-k8s.io", "capacitybuffers", "", "list", false),
    ("autoscaling.x-k8s.io", "capacitybuffers", "", "watch", false),
    ("autoscaling.x-k8s.io", "capacitybuffers", "status", "patch", true),
    ("autoscaling.x-k8s.io", "capacitybuffers", "", "patch", true),
    ("autoscaling.x-k8s.io", "capacitybuffers", "", "delete", true),
    ("", "podtemplates", "", "patch", true),
    ("apps", "deployments", "scale", "get", true),
    ("apps", "statefulsets", "scale", "get", true),
    ("", "podtemplates", "", "list", false),
    ("", "podtemplates", "", "watch", false),
    ("apps", "statefulsets", "", "watch", false),
    ("apps", "replicasets", "", "watch", false),
    ("batch", "jobs", "", "list", false),
    ("batch", "jobs", "", "watch", false),
    ("policy", "poddisruptionbudgets", "", "watch", false),
    ("events.k8s.io", "events", "", "create", true),
    ("events.k8s.io", "events", "", "patch", true),
    ("coordination.k8s.io", "leases", "", "get", true),
    ("coordination.k8s.io", "leases", "", "create", true),
    ("coordination.k8s.io", "leases", "", "patch", true),
];

/// Calls the controller must not be able to make.
const FORBIDDEN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "secrets", "", "get", true),
    ("", "secrets", "", "list", false),
    ("", "nodes", "", "create", false),
    ("", "pods", "", "create", true),
    ("apps", "deployments", "", "delete", true),
    ("stoker.dev", "nodepools", "", "delete", false),
    ("stoker.dev", "nodeoverlays", "", "patch", false),
    ("apps", "statefulsets", "", "patch", true),
    ("batch", "jobs", "", "create", true),
    ("rbac.authorization.k8s.io", "clusterroles", "", "create", false),
    ("coordination.k8s.io", "leases", "", "patch", false),
];

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn the_rendered_manifests_apply_and_grant_exactly_what_the_controller_uses() {
    let client = support::client().await;
    support::install_crds(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    namespaces
        .patch(NAMESPACE, &PatchParams::apply("stoker-tests"), &Patch::Apply(&namespace))
        .await
        .expect("namespace");

    // Server-side apply as a dry run: validated and admitted like an install, nothing stored.
    let documents = render(&[]);
    for document in &documents {
        let (api, object) = support::api_for(&client, document).await;
        api.patch(&object.name_any(), &PatchParams::apply("stoker-tests").force().dry_run(), &Patch::Apply(document))
            .await
            .unwrap_or_else(|e| panic!("{} {} refused: {e}", document["kind"], document["metadata"]["name"]));
    }
    for document in documents
        .iter()
        .filter(|d| d["kind"].as_str().is_some_and(|k| k.starts_with("ClusterRole") || k.starts_with("Role")))
    {
        for rule in document["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !rule[field].as_array().expect("a list").iter().any(|v| v == "*"),
                    "wildcard in {}: {rule}",
                    document["metadata"]["name"]
                );
            }
        }
    }
    // The RBAC for real, so the apiserver can answer access reviews about it.
    for document in documents.iter().filter(|d| {
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
            .contains(&d["kind"].as_str().unwrap_or_default())
    }) {
        let (api, object) = support::api_for(&client, document).await;
        api.patch(&object.name_any(), &PatchParams::apply("stoker-tests").force(), &Patch::Apply(document))
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e}", object.name_any()));
    }
    let account = format!("system:serviceaccount:{NAMESPACE}:stoker");
    let groups = vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{NAMESPACE}"),
        "system:authenticated".into(),
    ];
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let allowed = |call: (&str, &str, &str, &str, bool)| {
        let (group, resource, subresource, verb, namespaced) = call;
        let attributes = ResourceAttributes {
            group: Some(group.into()),
            resource: Some(resource.into()),
            subresource: (!subresource.is_empty()).then(|| subresource.into()),
            verb: Some(verb.into()),
            namespace: namespaced.then(|| NAMESPACE.into()),
            ..Default::default()
        };
        may(&reviews, &account, groups.clone(), attributes)
    };
    for call in CONTROLLER_CALLS {
        assert!(allowed(*call).await, "the chart's RBAC does not allow {call:?}");
    }
    for call in FORBIDDEN {
        assert!(!allowed(*call).await, "the chart's RBAC allows {call:?}, which the controller never needs");
    }

    // A namespace editor (the built-in `edit` role) manages WarmPools there, once the
    // controller-manager has aggregated the chart's role into `edit`.
    let may_create_warmpools = || async {
        let attributes = ResourceAttributes {
            group: Some("stoker.dev".into()),
            resource: Some("warmpools".into()),
            verb: Some("create".into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        };
        may(&reviews, "team-editor", Vec::new(), attributes).await.then_some(())
    };
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "team-editor", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "team-editor"}]
    });
    support::apply(&client, binding).await;
    let aggregated = support::wait_until(std::time::Duration::from_secs(60), may_create_warmpools).await;
    assert!(aggregated.is_some(), "an editor of the namespace may create WarmPools");
}
