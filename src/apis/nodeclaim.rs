//! `NodeClaim`: stoker's record of one node it decided to launch, from the decision through the
//! EC2 instance to the registered Node and back. Users read it; stoker writes it. Field names
//! follow Karpenter's `karpenter.sh/v1` NodeClaim.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Taint,
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition},
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    duration::{Duration, NillableDuration},
    nodepool::NodeClassReference,
    requirements::NodeSelectorRequirementWithMinValues,
};

/// A NodeClaim is a request for one node, and the record of the instance that serves it.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "stoker.dev",
    doc = "A NodeClaim is a request for one node and the record of the instance that serves it. stoker writes it; users read it.",
    version = "v1alpha1",
    kind = "NodeClaim",
    plural = "nodeclaims",
    shortname = "snc",
    category = "stoker",
    status = "NodeClaimStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".status.instanceType"}"#,
    printcolumn = r#"{"name":"Capacity","type":"string","jsonPath":".status.capacityType"}"#,
    printcolumn = r#"{"name":"Zone","type":"string","jsonPath":".status.zone"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.providerID","priority":1}"#,
    printcolumn = r#"{"name":"NodePool","type":"string","jsonPath":".metadata.labels.stoker\\.dev/nodepool","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
pub struct NodeClaimSpec {
    /// Requirements the instance must satisfy: the NodePool's, narrowed by the pods that caused
    /// the launch. The instance type and zone requirements list the offerings that may be tried.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// The resources the node must have for the pods it was created for.
    #[serde(default)]
    pub resources: ResourceRequests,
    /// Taints put on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Taints expected while the node starts, removed by something else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    /// The node class the instance is launched with.
    pub node_class_ref: NodeClassReference,
    /// How long the node may live before it is replaced, or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<NillableDuration>,
    /// How long draining may wait for pods before they are deleted regardless of budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period: Option<Duration>,
}

/// Resource requests of a NodeClaim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    /// The sum of the requests of the pods the node was created for, plus daemonset overhead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

/// What stoker knows about the instance and node behind a NodeClaim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimStatus {
    /// The cloud provider's ID of the instance, `aws:///<zone>/<instance-id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    /// The Node that registered for the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The instance type launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The availability zone of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `spot` or `on-demand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_type: Option<String>,
    /// The AMI the instance runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "imageID")]
    pub image_id: Option<String>,
    /// The subnet the instance was launched in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "subnetID")]
    pub subnet_id: Option<String>,
    /// The security groups attached to the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "securityGroupIDs")]
    pub security_group_ids: Vec<String>,
    /// The instance's resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    /// The instance's resources available to pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,
    /// Conditions: Launched, Registered, Initialized, Ready, and Drifted, Consolidatable,
    /// Terminating as they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
