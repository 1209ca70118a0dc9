//! `stoker node-simulator` (hidden; local environment and tests only): plays the kubelet's part
//! of joining a node, which on EKS the AMI's bootstrap does.
//!
//! Every second it registers a Node for each instance without one that was launched at least
//! `--delay` ago: the instances NodeClaims name, and every live instance of this cluster in a
//! full listing, made every second while listings are quick and spaced out when they are not
//! (`LISTING_SPACING`). Each Node is named like EKS names them, providerID
//! `aws:///<zone>/<id>`, the capacity and allocatable of its instance type, the labels the
//! kubelet sets itself plus the ones the bootstrap passes (`--node-labels`, from the NodeClaim),
//! the bootstrap's taints including `stoker.dev/unregistered`, and kwok's annotation so kwok
//! keeps it Ready and runs its pods. A Node whose instance is gone from a full listing is
//! deleted, as the cloud controller manager does on EKS.

use crate::cloudprovider::aws::allocatable;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};
use tokio::time::Instant;

use k8s_openapi::{
    api::core::v1::{Node, NodeSpec, NodeStatus, NodeSystemInfo, Taint},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    core::DeserializeGuard,
};
use tracing::{info, warn};

use super::CliError;
use crate::{
    apis::{NodeClaim, labels},
    cloudprovider::{
        CloudProvider, Instance,
        aws::{
            AwsCloudProvider, AwsOptions, ClusterInfo, aws_config,
            bootstrap::{bootstrap_labels, bootstrap_taints},
            catalog::Catalog,
            instances,
        },
    },
    scheduling::{catalog::InstanceType, resources::Resources},
};

/// The annotation kwok manages nodes by (see hack/local-up.sh).
const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// The Node the kubelet would register for an instance.
pub fn node_for(
    instance: &Instance,
    region: &str,
    instance_type: &InstanceType,
    claim: Option<&NodeClaim>,
    kubelet_version: &str,
) -> Node {
    let name = format!("{}.{region}.compute.internal", instance.id);
    let mut node_labels: BTreeMap<String, String> = BTreeMap::new();
    if let Some(claim) = claim {
        node_labels.extend(bootstrap_labels(claim));
    }
    node_labels.extend([
        (labels::HOSTNAME.to_owned(), name.clone()),
        (labels::ARCH.to_owned(), instance_type.labels.get(labels::ARCH).cloned().unwrap_or_default()),
        (labels::OS.to_owned(), "linux".to_owned()),
        (labels::INSTANCE_TYPE.to_owned(), instance.instance_type.clone()),
        (labels::ZONE.to_owned(), instance.zone.clone()),
        (labels::REGION.to_owned(), region.to_owned()),
    ]);
    let unregistered =
        Taint { key: labels::UNREGISTERED_TAINT.into(), effect: "NoExecute".into(), ..Default::default() };
    let taints = claim.map(bootstrap_taints).unwrap_or_else(|| vec![unregistered]);
    // A kubelet reports what the type offers but its EBS attachments (the CSI driver does).
    let reported = |resources: &Resources| resources.clone().without(labels::EBS_VOLUMES).to_quantities();
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(node_labels),
            annotations: Some(BTreeMap::from([(KWOK_ANNOTATION.to_owned(), "fake".to_owned())])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(instance.provider_id.clone()),
            taints: Some(taints),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(reported(&instance_type.capacity)),
            allocatable: Some(reported(&instance_type.allocatable)),
            node_info: Some(NodeSystemInfo {
                architecture: instance_type.labels.get(labels::ARCH).cloned().unwrap_or_default(),
                operating_system: "linux".into(),
                kubelet_version: kubelet_version.to_owned(),
                kube_proxy_version: kubelet_version.to_owned(),
                os_image: "Amazon Linux 2023 (simulated)".into(),
                container_runtime_version: "containerd://2.0.0".into(),
                kernel_version: "6.1.0".into(),
                machine_id: instance.id.clone(),
                system_uuid: instance.id.clone(),
                boot_id: instance.id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// How often the simulator looks for instances to register.
const PASS_INTERVAL: Duration = Duration::from_secs(1);

/// A listing of every instance is spaced out to this many times as long as the last one took,
/// so the simulator never keeps the (single-process) EC2 emulator busy more than a fifth of the
/// time: at ~500 instances one listing costs the emulator about a second.
const LISTING_SPACING: u32 = 4;

pub async fn run(cluster: String, delay: Duration) -> Result<(), CliError> {
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?.git_version;
    let config = aws_config(None).await;
    let info = ClusterInfo::named(cluster.clone());
    let provider = AwsCloudProvider::new(&config, AwsOptions::new(info));
    let region = provider.region().to_owned();
    let catalog = provider.refresh().await.map_err(crate::error::Error::from)?;
    info!(%cluster, ?delay, "simulating node registration");
    let mut simulator = Simulator { client, provider, catalog, region, version, delay, next_listing: Instant::now() };
    loop {
        if let Err(error) = simulator.pass().await {
            warn!(%error, "simulation pass failed");
        }
        tokio::time::sleep(PASS_INTERVAL).await;
    }
}

struct Simulator {
    client: Client,
    provider: AwsCloudProvider,
    catalog: std::sync::Arc<Catalog>,
    region: String,
    version: String,
    delay: Duration,
    /// When every instance of the cluster is listed next. Between listings only the instances
    /// NodeClaims name and no Node has yet are described.
    next_listing: Instant,
}

impl Simulator {
    async fn pass(&mut self) -> Result<(), CliError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let existing = nodes.list(&ListParams::default()).await?.items;
        let registered: HashSet<&str> =
            existing.iter().filter_map(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref())).collect();
        // Each claim decoded on its own: one this version cannot read must not stop every node
        // from registering.
        let listed = Api::<DeserializeGuard<NodeClaim>>::all(self.client.clone()).list(&ListParams::default()).await?;
        let claims: Vec<NodeClaim> = listed.items.into_iter().filter_map(|guarded| guarded.0.ok()).collect();
        let listing = Instant::now() >= self.next_listing;
        let instances = if listing {
            let started = Instant::now();
            let all = self.provider.list().await.map_err(crate::error::Error::from)?;
            self.next_listing = Instant::now() + PASS_INTERVAL.max(started.elapsed() * LISTING_SPACING);
            all
        } else {
            let awaited: Vec<String> = claims
                .iter()
                .filter(|claim| claim.metadata.deletion_timestamp.is_none())
                .filter_map(|claim| claim.status.as_ref()?.provider_id.as_deref())
                .filter(|id| !registered.contains(id))
                .filter_map(|id| instances::instance_id(id).ok().map(str::to_owned))
                .collect();
            if awaited.is_empty() {
                Vec::new()
            } else {
                instances::by_ids(&self.provider, awaited).await.map_err(crate::error::Error::from)?
            }
        };
        let claims: HashMap<String, &NodeClaim> = claims.iter().map(|claim| (claim.name_any(), claim)).collect();
        for instance in instances.iter().filter(|i| !registered.contains(i.provider_id.as_str())) {
            self.register(&nodes, instance, instance.nodeclaim().and_then(|name| claims.get(name).copied())).await?;
        }
        if listing {
            let live: HashSet<&str> = instances.iter().map(|i| i.provider_id.as_str()).collect();
            for node in existing.iter().filter(|n| n.annotations().get(KWOK_ANNOTATION).is_some()) {
                let Some(id) = node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) else { continue };
                if id.starts_with("aws:///") && !live.contains(id) && node.metadata.deletion_timestamp.is_none() {
                    info!(node = %node.name_any(), "instance gone: deleting its node");
                    nodes.delete(&node.name_any(), &DeleteParams::default()).await?;
                }
            }
        }
        Ok(())
    }

    /// Registers the instance's Node once it is old enough and running.
    async fn register(
        &self,
        nodes: &Api<Node>,
        instance: &Instance,
        claim: Option<&NodeClaim>,
    ) -> Result<(), CliError> {
        let now = chrono::Utc::now();
        let old_enough = instance
            .launch_time
            .is_none_or(|at| now - at >= chrono::TimeDelta::from_std(self.delay).unwrap_or_default());
        // An instance of a call made for several NodeClaims gets its own a moment after the call.
        let unnamed = instance.nodeclaim().is_none()
            && instance.tags.contains_key(crate::cloudprovider::aws::batching::BATCH_TAG);
        if !old_enough || unnamed || instance.state != "running" && instance.state != "pending" {
            return Ok(());
        }
        let Some(facts) = self.catalog.types.iter().find(|t| t.name == instance.instance_type) else {
            warn!(instance = %instance.id, instance_type = %instance.instance_type, "unknown instance type");
            return Ok(());
        };
        let Ok(instance_type) = allocatable::instance_type(facts, Vec::new(), &allocatable::NodeSettings::default())
        else {
            return Ok(());
        };
        let node = node_for(instance, &self.region, &instance_type, claim, &self.version);
        match nodes.create(&PostParams::default(), &node).await {
            Ok(created) => info!(node = %created.name_any(), instance = %instance.id, "registered node"),
            Err(kube::Error::Api(response)) if response.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudprovider::aws::allocatable::InstanceFacts;

    #[test]
    fn a_simulated_node_looks_like_a_kubelet_registered_one() {
        let instance_type = allocatable::instance_type(
            &InstanceFacts::m5_large(),
            Vec::new(),
            &crate::cloudprovider::aws::allocatable::NodeSettings::default(),
        )
        .expect("valid");
        let instance = Instance::example("i-0abc");
        let claim: NodeClaim = serde_saphyr::from_str(
            "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {name: spot-x, labels: {stoker.dev/nodepool: spot, stoker.dev/nodeclaim: spot-x, team: web}}\nspec:\n  nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}\n  startupTaints: [{key: cni, effect: NoSchedule}]",
        )
        .expect("a NodeClaim");
        let node = node_for(&instance, "us-east-1", &instance_type, Some(&claim), "v1.37.2");
        assert_eq!(node.name_any(), "i-0abc.us-east-1.compute.internal");
        let node_labels = node.labels();
        assert_eq!(node_labels[labels::NODEPOOL], "spot");
        assert_eq!(node_labels["team"], "web");
        assert!(!node_labels.contains_key(labels::NODECLAIM), "set by stoker at registration");
        assert_eq!(node_labels[labels::ZONE], "us-east-1a");
        let spec = node.spec.as_ref().expect("spec");
        assert_eq!(spec.provider_id.as_deref(), Some("aws:///us-east-1a/i-0abc"));
        let taints: Vec<&str> = spec.taints.iter().flatten().map(|t| t.key.as_str()).collect();
        assert_eq!(taints, ["cni", labels::UNREGISTERED_TAINT]);
        let status = node.status.as_ref().expect("status");
        assert_eq!(status.allocatable.as_ref().expect("allocatable")["pods"].0, "29");
        assert!(
            !status.allocatable.as_ref().expect("allocatable").contains_key(labels::EBS_VOLUMES),
            "not a kubelet's"
        );
        assert_eq!(node.annotations()[KWOK_ANNOTATION], "fake");
    }
}
