//! User data that makes a new instance join the cluster as the node its NodeClaim describes.
//!
//! - AL2023: a MIME multipart document whose last part is nodeadm's `NodeConfig` (cluster name,
//!   endpoint, CA, service CIDR, kubelet settings, the node's labels and taints). The user's own
//!   user data (a shell script, a NodeConfig, or a whole MIME document whose parts are kept)
//!   comes first, so nodeadm merges stoker's settings over it.
//! - Bottlerocket: TOML settings; the user's TOML is parsed and stoker's `settings.kubernetes`
//!   keys are merged over it (labels and taints are added to the user's).
//! - Custom: the user's user data unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use serde_json::{Value, json};

use kube::ResourceExt;

use crate::{
    apis::{
        NodeClaim,
        ec2nodeclass::{AmiFamily, KubeletConfiguration},
        labels,
    },
    cloudprovider::CloudError,
};

const BOUNDARY: &str = "//stoker//";

/// What a node needs to know about its cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterInfo {
    pub name: String,
    /// The API server URL nodes join.
    pub endpoint: String,
    /// The cluster CA bundle, base64-encoded PEM (as EKS's DescribeCluster returns it).
    pub ca_bundle: String,
    /// The Service CIDR (nodeadm derives the cluster DNS address from it).
    pub service_cidr: String,
    /// Kubernetes minor version, `1.37`; names the EKS AMI parameters.
    pub kubernetes_minor: String,
}

impl ClusterInfo {
    /// A cluster known by its name alone: for the local tools that find its instances and price
    /// its instance types but never bootstrap a node.
    pub fn named(name: String) -> Self {
        Self {
            name,
            endpoint: String::new(),
            ca_bundle: String::new(),
            service_cidr: String::new(),
            kubernetes_minor: String::new(),
        }
    }
}

/// The node-specific part of the bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBootstrap<'a> {
    pub labels: BTreeMap<String, String>,
    /// Taints the kubelet registers with (the NodeClaim's taints and startup taints, and
    /// stoker's unregistered taint).
    pub taints: Vec<Taint>,
    pub kubelet: Option<&'a KubeletConfiguration>,
    pub custom: Option<&'a str>,
    /// `instanceStorePolicy: RAID0`: the node joins its local NVMe disks into one array for
    /// the kubelet's and containers' data.
    pub instance_store_raid0: bool,
}

/// The user data for an AMI family, in plain text (EC2 wants it base64-encoded).
pub fn user_data(family: AmiFamily, cluster: &ClusterInfo, node: &NodeBootstrap) -> Result<Option<String>, CloudError> {
    match family {
        AmiFamily::AL2023 => Ok(Some(al2023(cluster, node)?)),
        AmiFamily::Bottlerocket => Ok(Some(bottlerocket(cluster, node)?)),
        AmiFamily::Custom => Ok(node.custom.map(str::to_owned)),
    }
}

fn taint_string(taint: &Taint) -> String {
    match &taint.value {
        Some(value) => format!("{}={}:{}", taint.key, value, taint.effect),
        None => format!("{}:{}", taint.key, taint.effect),
    }
}

fn al2023(cluster: &ClusterInfo, node: &NodeBootstrap) -> Result<String, CloudError> {
    let mut kubelet_config = serde_json::Map::new();
    if let Some(kubelet) = node.kubelet {
        let settings = [
            ("maxPods", kubelet.max_pods.map(|v| json!(v))),
            ("podsPerCore", kubelet.pods_per_core.map(|v| json!(v))),
            ("systemReserved", kubelet.system_reserved.as_ref().map(|v| json!(v))),
            ("kubeReserved", kubelet.kube_reserved.as_ref().map(|v| json!(v))),
            ("evictionHard", kubelet.eviction_hard.as_ref().map(|v| json!(v))),
            ("evictionSoft", kubelet.eviction_soft.as_ref().map(|v| json!(v))),
            ("evictionSoftGracePeriod", kubelet.eviction_soft_grace_period.as_ref().map(|v| json!(v))),
            ("clusterDNS", kubelet.cluster_dns.as_ref().map(|v| json!(v))),
            ("evictionMaxPodGracePeriod", kubelet.eviction_max_pod_grace_period.map(|v| json!(v))),
            ("imageGCHighThresholdPercent", kubelet.image_gc_high_threshold_percent.map(|v| json!(v))),
            ("imageGCLowThresholdPercent", kubelet.image_gc_low_threshold_percent.map(|v| json!(v))),
            ("cpuCFSQuota", kubelet.cpu_cfs_quota.map(|v| json!(v))),
        ];
        kubelet_config.extend(settings.into_iter().filter_map(|(key, value)| Some((key.to_owned(), value?))));
    }
    let mut flags = Vec::new();
    if !node.labels.is_empty() {
        let labels: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        flags.push(format!("--node-labels={}", labels.join(",")));
    }
    if !node.taints.is_empty() {
        let taints: Vec<String> = node.taints.iter().map(taint_string).collect();
        flags.push(format!("--register-with-taints={}", taints.join(",")));
    }
    let node_config = json!({
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": cluster.name,
                "apiServerEndpoint": cluster.endpoint,
                "certificateAuthority": cluster.ca_bundle,
                "cidr": cluster.service_cidr,
            },
            "kubelet": { "config": Value::Object(kubelet_config), "flags": flags },
        },
    });
    let mut node_config = node_config;
    if node.instance_store_raid0 {
        node_config["spec"]["instance"] = json!({"localStorage": {"strategy": "RAID0"}});
    }
    let node_config = crate::yaml::to_string(&node_config)
        .map_err(|e| CloudError::InvalidConfiguration(format!("cannot render NodeConfig: {e}")))?;

    let mut parts = match node.custom {
        Some(custom) => user_parts(custom)?,
        None => Vec::new(),
    };
    parts.push(format!("Content-Type: application/node.eks.aws\n\n{node_config}"));
    let mut out = format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\n\n");
    for part in parts {
        out.push_str(&format!("--{BOUNDARY}\n{}\n", part.trim_end()));
    }
    out.push_str(&format!("--{BOUNDARY}--\n"));
    Ok(out)
}

/// The user's AL2023 user data as MIME parts (headers, blank line, body).
fn user_parts(custom: &str) -> Result<Vec<String>, CloudError> {
    if custom.starts_with("MIME-Version") || custom.starts_with("Content-Type: multipart") {
        let boundary = custom
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .find_map(|line| line.split("boundary=").nth(1))
            .map(|b| b.trim().trim_matches('"').to_owned())
            .ok_or_else(|| CloudError::InvalidConfiguration("userData is MIME but names no boundary".into()))?;
        let delimiter = format!("--{boundary}");
        let parts: Vec<String> = custom
            .split(&delimiter)
            .skip(1)
            .take_while(|part| !part.starts_with("--"))
            .map(|part| part.trim_start_matches(['\r', '\n']).to_owned())
            .filter(|part| !part.trim().is_empty())
            .collect();
        return Ok(parts);
    }
    let content_type =
        if custom.starts_with("#!") { "text/x-shellscript; charset=\"us-ascii\"" } else { "application/node.eks.aws" };
    Ok(vec![format!("Content-Type: {content_type}\n\n{custom}")])
}

fn bottlerocket(cluster: &ClusterInfo, node: &NodeBootstrap) -> Result<String, CloudError> {
    let invalid = |e: String| CloudError::InvalidConfiguration(format!("Bottlerocket userData: {e}"));
    let mut document: toml::Table = match node.custom {
        Some(custom) => custom.parse().map_err(|e: toml::de::Error| invalid(e.to_string()))?,
        None => toml::Table::new(),
    };
    let settings = table(&mut document, "settings").map_err(invalid)?;
    let kubernetes = table(settings, "kubernetes").map_err(invalid)?;
    kubernetes.insert("cluster-name".into(), cluster.name.clone().into());
    kubernetes.insert("api-server".into(), cluster.endpoint.clone().into());
    kubernetes.insert("cluster-certificate".into(), cluster.ca_bundle.clone().into());
    if let Some(kubelet) = node.kubelet {
        bottlerocket_kubelet(kubernetes, kubelet).map_err(invalid)?;
    }
    if node.instance_store_raid0 {
        // Bottlerocket builds the array and moves the kubelet's and containerd's data onto it
        // with its own API, before the kubelet starts.
        let settings = table(&mut document, "settings").map_err(invalid)?;
        let commands = table(settings, "bootstrap-commands").map_err(invalid)?;
        let storage = table(commands, "k8s-ephemeral-storage").map_err(invalid)?;
        let command = |args: &[&str]| toml::Value::Array(args.iter().map(|a| toml::Value::from(*a)).collect());
        storage.insert(
            "commands".into(),
            toml::Value::Array(vec![
                command(&["apiclient", "ephemeral-storage", "init"]),
                command(&[
                    "apiclient",
                    "ephemeral-storage",
                    "bind",
                    "--dirs",
                    "/var/lib/containerd",
                    "/var/lib/kubelet",
                    "/var/log/pods",
                ]),
            ]),
        );
        storage.insert("mode".into(), "always".into());
        storage.insert("essential".into(), true.into());
    }
    let kubernetes = table(table(&mut document, "settings").map_err(invalid)?, "kubernetes").map_err(invalid)?;
    let labels = table(kubernetes, "node-labels").map_err(invalid)?;
    for (key, value) in &node.labels {
        labels.insert(key.clone(), value.clone().into());
    }
    let taints = table(kubernetes, "node-taints").map_err(invalid)?;
    for taint in &node.taints {
        let value = format!("{}:{}", taint.value.as_deref().unwrap_or(""), taint.effect);
        let entry = taints.entry(taint.key.clone()).or_insert_with(|| toml::Value::Array(Vec::new()));
        match entry {
            toml::Value::Array(values) => values.push(value.into()),
            other => *other = toml::Value::Array(vec![value.into()]),
        }
    }
    toml::to_string(&document).map_err(|e| invalid(e.to_string()))
}

/// The kubelet settings in Bottlerocket's names: those stoker's capacity figures assume (the
/// node must reserve and evict as the allocatable stoker planned with says) and the rest the
/// class passes on. (`podsPerCore` has no Bottlerocket setting: such nodes take the ENI limit,
/// more pods than stoker plans for.)
fn bottlerocket_kubelet(kubernetes: &mut toml::Table, kubelet: &KubeletConfiguration) -> Result<(), String> {
    fn strings<'a, V: 'a>(
        target: &mut toml::Table,
        key: &str,
        values: Option<&'a BTreeMap<String, V>>,
        text: impl Fn(&V) -> String,
    ) -> Result<(), String> {
        let Some(values) = values else { return Ok(()) };
        let table = table(target, key)?;
        for (name, value) in values {
            table.insert(name.clone(), text(value).into());
        }
        Ok(())
    }
    let integers = [
        ("max-pods", kubelet.max_pods),
        ("eviction-max-pod-grace-period", kubelet.eviction_max_pod_grace_period),
        ("image-gc-high-threshold-percent", kubelet.image_gc_high_threshold_percent),
        ("image-gc-low-threshold-percent", kubelet.image_gc_low_threshold_percent),
    ];
    for (key, value) in integers {
        if let Some(value) = value {
            kubernetes.insert(key.into(), i64::from(value).into());
        }
    }
    if let Some(enforced) = kubelet.cpu_cfs_quota {
        kubernetes.insert("cpu-cfs-quota-enforced".into(), enforced.into());
    }
    strings(kubernetes, "kube-reserved", kubelet.kube_reserved.as_ref(), |q| q.0.clone())?;
    strings(kubernetes, "system-reserved", kubelet.system_reserved.as_ref(), |q| q.0.clone())?;
    strings(kubernetes, "eviction-hard", kubelet.eviction_hard.as_ref(), String::clone)?;
    strings(kubernetes, "eviction-soft", kubelet.eviction_soft.as_ref(), String::clone)?;
    strings(kubernetes, "eviction-soft-grace-period", kubelet.eviction_soft_grace_period.as_ref(), |d| d.to_string())?;
    if let Some(dns) = kubelet.cluster_dns.as_ref().and_then(|d| d.first()) {
        kubernetes.insert("cluster-dns-ip".into(), dns.clone().into());
    }
    Ok(())
}

/// The sub-table `key` of `parent`, created when missing.
fn table<'a>(parent: &'a mut toml::Table, key: &str) -> Result<&'a mut toml::Table, String> {
    match parent.entry(key).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
        toml::Value::Table(table) => Ok(table),
        _ => Err(format!("{key} must be a table")),
    }
}

/// Labels the kubelet registers the node with: the NodeClaim's, except its own name (set on
/// registration) and those in the kubelet-restricted `kubernetes.io`/`k8s.io` domains.
pub fn bootstrap_labels(claim: &NodeClaim) -> BTreeMap<String, String> {
    let restricted = |key: &str| {
        let domain = key.split_once('/').map_or("", |(domain, _)| domain);
        ["kubernetes.io", "k8s.io"].iter().any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
    };
    claim
        .labels()
        .iter()
        .filter(|(key, _)| key.as_str() != labels::NODECLAIM && !restricted(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Taints the kubelet registers with: the NodeClaim's taints and startup taints, and stoker's
/// unregistered taint that the NodeClaim controller removes once it has synced the node.
pub fn bootstrap_taints(claim: &NodeClaim) -> Vec<Taint> {
    let mut taints = claim.spec.taints.clone();
    taints.extend(claim.spec.startup_taints.iter().cloned());
    taints.push(Taint {
        key: labels::UNREGISTERED_TAINT.to_owned(),
        effect: "NoExecute".to_owned(),
        ..Default::default()
    });
    taints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            name: "prod".into(),
            endpoint: "https://example.eks.amazonaws.com".into(),
            ca_bundle: "Q0E=".into(),
            service_cidr: "10.100.0.0/16".into(),
            kubernetes_minor: "1.37".into(),
        }
    }

    fn node<'a>(custom: Option<&'a str>, kubelet: Option<&'a KubeletConfiguration>) -> NodeBootstrap<'a> {
        NodeBootstrap {
            labels: BTreeMap::from([("stoker.dev/nodepool".into(), "spot".into()), ("team".into(), "web".into())]),
            taints: vec![
                Taint { key: "stoker.dev/unregistered".into(), effect: "NoExecute".into(), ..Default::default() },
                Taint {
                    key: "gpu".into(),
                    value: Some("true".into()),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                },
            ],
            kubelet,
            custom,
            instance_store_raid0: false,
        }
    }

    fn node_config(user_data: &str) -> serde_json::Value {
        let part = user_data.split("Content-Type: application/node.eks.aws\n\n").last().expect("a NodeConfig part");
        let body = part.split(&format!("--{BOUNDARY}")).next().expect("body");
        serde_saphyr::from_str(body).expect("NodeConfig is YAML")
    }

    #[test]
    fn al2023_node_config_carries_cluster_labels_taints_and_kubelet_settings() {
        let kubelet = KubeletConfiguration {
            max_pods: Some(58),
            eviction_max_pod_grace_period: Some(60),
            image_gc_high_threshold_percent: Some(85),
            image_gc_low_threshold_percent: Some(80),
            cpu_cfs_quota: Some(false),
            ..Default::default()
        };
        let text =
            user_data(AmiFamily::AL2023, &cluster(), &node(None, Some(&kubelet))).expect("renders").expect("some");
        assert!(text.starts_with("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//stoker//\""));
        assert!(text.ends_with("--//stoker//--\n"));
        let config = node_config(&text);
        assert_eq!(config["spec"]["cluster"]["name"], "prod");
        assert_eq!(config["spec"]["cluster"]["apiServerEndpoint"], "https://example.eks.amazonaws.com");
        assert_eq!(config["spec"]["cluster"]["cidr"], "10.100.0.0/16");
        let kubelet_config = &config["spec"]["kubelet"]["config"];
        assert_eq!(kubelet_config["maxPods"], 58);
        assert_eq!(kubelet_config["evictionMaxPodGracePeriod"], 60);
        assert_eq!(kubelet_config["imageGCHighThresholdPercent"], 85);
        assert_eq!(kubelet_config["imageGCLowThresholdPercent"], 80);
        assert_eq!(kubelet_config["cpuCFSQuota"], false);
        let flags: Vec<&str> =
            config["spec"]["kubelet"]["flags"].as_array().expect("flags").iter().filter_map(|f| f.as_str()).collect();
        assert_eq!(
            flags,
            [
                "--node-labels=stoker.dev/nodepool=spot,team=web",
                "--register-with-taints=stoker.dev/unregistered:NoExecute,gpu=true:NoSchedule"
            ]
        );
    }

    #[test]
    fn al2023_keeps_the_users_parts_before_its_own() {
        let script = "#!/bin/bash\necho hello";
        let text = user_data(AmiFamily::AL2023, &cluster(), &node(Some(script), None)).expect("renders").expect("some");
        let script_at = text.find("text/x-shellscript").expect("script part");
        let config_at = text.find("application/node.eks.aws").expect("config part");
        assert!(script_at < config_at);

        let mime = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n--BOUNDARY\nContent-Type: text/x-shellscript\n\necho one\n--BOUNDARY\nContent-Type: text/x-shellscript\n\necho two\n--BOUNDARY--\n";
        let text = user_data(AmiFamily::AL2023, &cluster(), &node(Some(mime), None)).expect("renders").expect("some");
        assert_eq!(text.matches(&format!("--{BOUNDARY}\n")).count(), 3, "{text}");
        assert!(text.contains("echo one") && text.contains("echo two"));
        assert!(!text.contains("--BOUNDARY"));
        assert_eq!(node_config(&text)["spec"]["cluster"]["name"], "prod");

        let broken = "MIME-Version: 1.0\nContent-Type: multipart/mixed\n\nbody";
        assert!(user_data(AmiFamily::AL2023, &cluster(), &node(Some(broken), None)).is_err());
    }

    #[test]
    fn bottlerocket_merges_settings_into_the_users_toml() {
        let custom = "[settings.kubernetes]\ncluster-name = \"overridden\"\n[settings.kubernetes.node-labels]\nown = \"label\"\n[settings.host-containers.admin]\nenabled = true\n";
        let text =
            user_data(AmiFamily::Bottlerocket, &cluster(), &node(Some(custom), None)).expect("renders").expect("some");
        let parsed: toml::Table = text.parse().expect("TOML");
        let kubernetes = &parsed["settings"]["kubernetes"];
        assert_eq!(kubernetes["cluster-name"].as_str(), Some("prod"));
        assert_eq!(kubernetes["node-labels"]["own"].as_str(), Some("label"));
        assert_eq!(kubernetes["node-labels"]["team"].as_str(), Some("web"));
        assert_eq!(kubernetes["node-taints"]["gpu"][0].as_str(), Some("true:NoSchedule"));
        assert_eq!(parsed["settings"]["host-containers"]["admin"]["enabled"].as_bool(), Some(true));
        assert!(user_data(AmiFamily::Bottlerocket, &cluster(), &node(Some("not = [toml"), None)).is_err());
    }

    #[test]
    fn bottlerocket_nodes_take_every_kubelet_setting() {
        let kubelet: KubeletConfiguration = serde_json::from_value(serde_json::json!({
            "maxPods": 58,
            "kubeReserved": {"cpu": "200m", "memory": "1Gi"},
            "systemReserved": {"memory": "512Mi"},
            "evictionHard": {"memory.available": "5%"},
            "evictionSoft": {"nodefs.available": "15%"},
            "evictionSoftGracePeriod": {"nodefs.available": "1m"},
            "clusterDNS": ["10.0.0.10"],
            "evictionMaxPodGracePeriod": 60,
            "imageGCHighThresholdPercent": 85,
            "imageGCLowThresholdPercent": 80,
            "cpuCFSQuota": false
        }))
        .expect("kubelet settings");
        let text = user_data(AmiFamily::Bottlerocket, &cluster(), &node(None, Some(&kubelet))).expect("renders");
        let parsed: toml::Table = text.expect("some").parse().expect("TOML");
        let kubernetes = &parsed["settings"]["kubernetes"];
        assert_eq!(kubernetes["max-pods"].as_integer(), Some(58));
        assert_eq!(kubernetes["kube-reserved"]["cpu"].as_str(), Some("200m"));
        assert_eq!(kubernetes["kube-reserved"]["memory"].as_str(), Some("1Gi"));
        assert_eq!(kubernetes["system-reserved"]["memory"].as_str(), Some("512Mi"));
        assert_eq!(kubernetes["eviction-hard"]["memory.available"].as_str(), Some("5%"));
        assert_eq!(kubernetes["eviction-soft"]["nodefs.available"].as_str(), Some("15%"));
        assert_eq!(kubernetes["eviction-soft-grace-period"]["nodefs.available"].as_str(), Some("1m"));
        assert_eq!(kubernetes["cluster-dns-ip"].as_str(), Some("10.0.0.10"));
        assert_eq!(kubernetes["eviction-max-pod-grace-period"].as_integer(), Some(60));
        assert_eq!(kubernetes["image-gc-high-threshold-percent"].as_integer(), Some(85));
        assert_eq!(kubernetes["image-gc-low-threshold-percent"].as_integer(), Some(80));
        assert_eq!(kubernetes["cpu-cfs-quota-enforced"].as_bool(), Some(false));
    }

    #[test]
    fn raid0_is_asked_of_nodeadm_and_of_bottlerocket() {
        let raid0 = NodeBootstrap { instance_store_raid0: true, ..node(None, None) };
        let text = user_data(AmiFamily::AL2023, &cluster(), &raid0).expect("renders").expect("some");
        assert_eq!(node_config(&text)["spec"]["instance"]["localStorage"]["strategy"], "RAID0");
        let text = user_data(AmiFamily::Bottlerocket, &cluster(), &raid0).expect("renders").expect("some");
        let parsed: toml::Table = text.parse().expect("TOML");
        let storage = &parsed["settings"]["bootstrap-commands"]["k8s-ephemeral-storage"];
        assert_eq!(storage["commands"][0].as_array().map(Vec::len), Some(3));
        assert_eq!(storage["essential"].as_bool(), Some(true));
        assert_eq!(parsed["settings"]["kubernetes"]["cluster-name"].as_str(), Some("prod"));
        let plain = user_data(AmiFamily::AL2023, &cluster(), &node(None, None)).expect("renders").expect("some");
        assert!(node_config(&plain)["spec"].get("instance").is_none());
    }

    #[test]
    fn custom_passes_user_data_through() {
        let text = user_data(AmiFamily::Custom, &cluster(), &node(Some("#cloud-config\n"), None)).expect("renders");
        assert_eq!(text.as_deref(), Some("#cloud-config\n"));
        assert_eq!(user_data(AmiFamily::Custom, &cluster(), &node(None, None)).expect("renders"), None);
    }

    #[test]
    fn the_node_registers_with_its_labels_and_taints_but_not_restricted_ones() {
        let mut claim: NodeClaim = serde_json::from_value(json!({
            "apiVersion": "stoker.dev/v1", "kind": "NodeClaim", "metadata": {"name": "spot-x7k2p"},
            "spec": {
                "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"},
                "taints": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}],
                "startupTaints": [{"key": "cni-not-ready", "effect": "NoSchedule"}]
            }
        }))
        .unwrap();
        claim.metadata.labels = Some(BTreeMap::from([
            (labels::NODEPOOL.into(), "spot".into()),
            (labels::NODECLAIM.into(), "spot-x7k2p".into()),
            ("team".into(), "web".into()),
            ("node.kubernetes.io/exclude-from-external-load-balancers".into(), "true".into()),
        ]));
        let labels: Vec<String> = bootstrap_labels(&claim).into_keys().collect();
        assert_eq!(labels, ["stoker.dev/nodepool", "team"]);
        let taints: Vec<String> = bootstrap_taints(&claim).into_iter().map(|t| t.key).collect();
        assert_eq!(taints, ["dedicated", "cni-not-ready", labels::UNREGISTERED_TAINT]);
    }
}
