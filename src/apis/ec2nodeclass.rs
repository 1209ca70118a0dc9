//! `EC2NodeClass`: the AWS side of a node (subnets, security groups, AMI, IAM role, user data,
//! block devices, instance metadata options, kubelet settings). Field names follow Karpenter's
//! `karpenter.k8s.aws/v1` EC2NodeClass.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{labels, requirements::NodeSelectorRequirementWithMinValues};

const TAG_KEYS_RULE: &str = "self.all(k, k != '' && self[k] != '')";

/// An EC2NodeClass describes how stoker launches EC2 instances for the NodePools that use it.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "stoker.dev",
    doc = "An EC2NodeClass describes how stoker launches EC2 instances: subnets, security groups, AMIs, IAM role, user data, volumes and metadata options.",
    version = "v1alpha1",
    kind = "EC2NodeClass",
    plural = "ec2nodeclasses",
    shortname = "sec2nc",
    category = "stoker",
    status = "EC2NodeClassStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.role) != has(self.instanceProfile)").message("exactly one of 'role' or 'instanceProfile' must be set"),
    validation = Rule::new("self.amiSelectorTerms.exists(t, has(t.alias)) || has(self.amiFamily)").message("'amiFamily' is required when amiSelectorTerms has no alias").field_path(".amiFamily"),
    validation = Rule::new("self.amiSelectorTerms.exists(t, has(t.alias)) ? size(self.amiSelectorTerms) == 1 : true").message("an amiSelectorTerm with an 'alias' must be the only term").field_path(".amiSelectorTerms"),
)]
pub struct EC2NodeClassSpec {
    /// Subnets to launch into, found by tags or ID. Terms are alternatives: a subnet matching
    /// any term is used. Example: `tags: {karpenter.sh/discovery: my-cluster}`.
    #[schemars(length(min = 1, max = 30))]
    pub subnet_selector_terms: Vec<SubnetSelectorTerm>,
    /// Security groups attached to the instances, found by tags, ID or name. Terms are
    /// alternatives.
    #[schemars(length(min = 1, max = 30))]
    pub security_group_selector_terms: Vec<SecurityGroupSelectorTerm>,
    /// AMIs to launch, found by alias (`al2023@latest`), SSM parameter, tags, ID or name. Terms
    /// are alternatives; an alias term must stand alone. The newest matching AMI per
    /// architecture is used.
    #[schemars(length(min = 1, max = 30))]
    pub ami_selector_terms: Vec<AmiSelectorTerm>,
    /// On-Demand Capacity Reservations to launch into, found by ID or by tags (optionally with
    /// the owning account, for reservations shared with this one). Terms are alternatives. While
    /// a matching active reservation has room, NodePools that allow the `reserved` capacity type
    /// launch into it first (its instances are already paid for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 30))]
    pub capacity_reservation_selector_terms: Vec<CapacityReservationSelectorTerm>,
    /// The bootstrap family of the AMIs when they are not chosen by alias: AL2023, Bottlerocket,
    /// or Custom (user data is passed through unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_family: Option<AmiFamily>,
    /// IAM role for the nodes; stoker creates an instance profile for it. Exclusive with
    /// `instanceProfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub role: Option<String>,
    /// An existing IAM instance profile for the nodes. Exclusive with `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub instance_profile: Option<String>,
    /// User data merged with the bootstrap stoker generates: for AL2023 a nodeadm NodeConfig or
    /// a shell script, in MIME multipart or alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Volumes attached to each instance; at most one may be the root volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.filter(m, has(m.rootVolume) && m.rootVolume).size() <= 1").message("at most one blockDeviceMapping may be the rootVolume"))]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Instance metadata service options. The default requires IMDSv2 with a hop limit of 1 so
    /// pods cannot read the node's credentials.
    #[serde(default)]
    pub metadata_options: MetadataOptions,
    /// Tags added to instances, volumes, network interfaces and launch templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(
        validation = Rule::new("self.all(k, !k.startsWith('kubernetes.io/cluster/') && !k.startsWith('stoker.dev/') && k != 'karpenter.sh/nodepool')").message("tag keys in kubernetes.io/cluster/ and stoker.dev/ are set by stoker"),
    )]
    #[schemars(extend("maxProperties" = 50))]
    pub tags: BTreeMap<String, String>,
    /// Whether instances get a public IP address; the subnet's setting applies when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "associatePublicIPAddress")]
    pub associate_public_ip_address: Option<bool>,
    /// Whether detailed (one-minute) CloudWatch monitoring is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_monitoring: Option<bool>,
    /// Kubelet settings for the nodes; they also change the allocatable resources stoker
    /// computes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfiguration>,
    /// What to do with the instance's local NVMe disks: `RAID0` joins them into one array that
    /// holds the kubelet's and containers' data, so the node's ephemeral storage is their size
    /// (types without them keep the root volume's). Unset, they are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_store_policy: Option<InstanceStorePolicy>,
}

/// How the local NVMe instance store is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum InstanceStorePolicy {
    /// One RAID0 array for ephemeral storage.
    RAID0,
}

/// Finds subnets by tags or ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.tags) != has(self.id)").message("a subnetSelectorTerm needs exactly one of 'tags' or 'id'"))]
pub struct SubnetSelectorTerm {
    /// Tags the subnet must carry; `*` as a value matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    #[x_kube(validation = Rule::new(TAG_KEYS_RULE).message("empty tag keys or values aren't supported"))]
    pub tags: Option<BTreeMap<String, String>>,
    /// The subnet ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^subnet-[0-9a-z]+$"))]
    pub id: Option<String>,
}

/// Finds security groups by tags, ID or name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.tags) ? 1 : 0) + (has(self.id) ? 1 : 0) + (has(self.name) ? 1 : 0) == 1").message("a securityGroupSelectorTerm needs exactly one of 'tags', 'id' or 'name'"))]
pub struct SecurityGroupSelectorTerm {
    /// Tags the security group must carry; `*` as a value matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    #[x_kube(validation = Rule::new(TAG_KEYS_RULE).message("empty tag keys or values aren't supported"))]
    pub tags: Option<BTreeMap<String, String>>,
    /// The security group ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^sg-[0-9a-z]+$"))]
    pub id: Option<String>,
    /// The security group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Finds On-Demand Capacity Reservations by ID, or by tags with an optional owning account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.tags) != has(self.id)").message("a capacityReservationSelectorTerm needs exactly one of 'tags' or 'id'"),
    validation = Rule::new("has(self.ownerID) ? has(self.tags) : true").message("'ownerID' narrows a 'tags' term and cannot go with 'id'"),
)]
pub struct CapacityReservationSelectorTerm {
    /// Tags the reservation must carry; `*` as a value matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    #[x_kube(validation = Rule::new(TAG_KEYS_RULE).message("empty tag keys or values aren't supported"))]
    pub tags: Option<BTreeMap<String, String>>,
    /// The reservation ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^cr-[0-9a-z]+$"))]
    pub id: Option<String>,
    /// The account that owns the reservation (12 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "ownerID")]
    #[schemars(regex(pattern = "^[0-9]{12}$"))]
    pub owner_id: Option<String>,
}

/// Finds AMIs by alias, SSM parameter, tags, ID or name (with an optional owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.alias) ? !(has(self.tags) || has(self.id) || has(self.name) || has(self.owner) || has(self.ssmParameter)) : true").message("'alias' is mutually exclusive with the other fields of an amiSelectorTerm"),
    validation = Rule::new("has(self.ssmParameter) ? !(has(self.tags) || has(self.id) || has(self.name) || has(self.owner)) : true").message("'ssmParameter' is mutually exclusive with the other fields of an amiSelectorTerm"),
    validation = Rule::new("has(self.id) ? !(has(self.tags) || has(self.name) || has(self.owner)) : true").message("'id' is mutually exclusive with 'tags', 'name' and 'owner'"),
    validation = Rule::new("has(self.alias) || has(self.ssmParameter) || has(self.tags) || has(self.id) || has(self.name)").message("an amiSelectorTerm needs one of 'alias', 'ssmParameter', 'tags', 'id' or 'name'"),
)]
pub struct AmiSelectorTerm {
    /// An AMI family and version resolved through AWS's public SSM parameters, for example
    /// `al2023@latest`, `al2023@v20250101` or `bottlerocket@latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 60), regex(pattern = r"^(al2023|bottlerocket)@(latest|v[0-9]+(\.[0-9]+)*)$"))]
    pub alias: Option<String>,
    /// Tags the AMI must carry; `*` as a value matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    #[x_kube(validation = Rule::new(TAG_KEYS_RULE).message("empty tag keys or values aren't supported"))]
    pub tags: Option<BTreeMap<String, String>>,
    /// The AMI ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^ami-[0-9a-z]+$"))]
    pub id: Option<String>,
    /// The AMI name; may contain `*` wildcards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The AMI owner: an account ID or `self`, `amazon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// An SSM parameter (name or ARN) whose value is an AMI ID, for example one an image
    /// pipeline updates: `/stoker/golden-ami/x86_64`. Read again at every refresh, so a new
    /// value drifts the nodes. The controller's policy must let it read the parameter
    /// (`stoker iam-policy --ami-parameter`; `/stoker/*` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub ssm_parameter: Option<String>,
}

/// How an AMI expects to be bootstrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AmiFamily {
    AL2023,
    Bottlerocket,
    Custom,
}

/// A volume attached to each instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceMapping {
    /// The device name, for example `/dev/xvda`.
    pub device_name: String,
    /// The EBS volume.
    pub ebs: BlockDevice,
    /// Whether this is the root volume, whose size counts as the node's ephemeral storage.
    #[serde(default)]
    pub root_volume: bool,
}

/// EBS volume settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockDevice {
    /// Size of the volume, for example `100Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<Quantity>,
    /// Volume type: gp3, gp2, io1, io2, st1, sc1 or standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
    /// Provisioned IOPS (io1, io2, gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 256000))]
    pub iops: Option<i64>,
    /// Throughput in MiB/s (gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 125, max = 2000))]
    pub throughput: Option<i64>,
    /// Whether the volume is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// The KMS key for encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "kmsKeyID")]
    pub kms_key_id: Option<String>,
    /// Whether the volume is deleted with the instance (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    /// A snapshot to create the volume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "snapshotID")]
    pub snapshot_id: Option<String>,
}

/// EBS volume types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Standard,
    Io1,
    Io2,
    Gp2,
    Gp3,
    Sc1,
    St1,
}

/// Instance metadata service (IMDS) options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    /// Whether the metadata service is reachable: `enabled` or `disabled`.
    #[serde(default = "enabled")]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub http_endpoint: String,
    /// Whether the metadata service listens on IPv6: `enabled` or `disabled`.
    #[serde(default = "disabled", rename = "httpProtocolIPv6")]
    #[schemars(extend("enum" = ["enabled", "disabled"]))]
    pub http_protocol_ipv6: String,
    /// Hop limit for metadata responses; 1 keeps them from reaching pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: i64,
    /// `required` (IMDSv2 session tokens only) or `optional`.
    #[serde(default = "required")]
    #[schemars(extend("enum" = ["required", "optional"]))]
    pub http_tokens: String,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            http_endpoint: enabled(),
            http_protocol_ipv6: disabled(),
            http_put_response_hop_limit: one(),
            http_tokens: required(),
        }
    }
}

fn enabled() -> String {
    "enabled".into()
}
fn disabled() -> String {
    "disabled".into()
}
fn required() -> String {
    "required".into()
}
fn one() -> i64 {
    1
}

/// Kubelet settings: the ones that shape a node's allocatable resources, which stoker's plans
/// follow, and the image garbage collection, CFS quota and soft-eviction grace cap it passes on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.imageGCHighThresholdPercent) && has(self.imageGCLowThresholdPercent) ? self.imageGCHighThresholdPercent > self.imageGCLowThresholdPercent : true").message("imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent").field_path(".imageGCLowThresholdPercent"),
)]
pub struct KubeletConfiguration {
    /// Maximum pods per node; defaults to what the instance type's network interfaces allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_pods: Option<i32>,
    /// Maximum pods per vCPU; the smaller of this and `maxPods` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub pods_per_core: Option<i32>,
    /// Resources reserved for the operating system (cpu, memory, ephemeral-storage, pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['cpu', 'memory', 'ephemeral-storage', 'pid'])").message("valid keys for systemReserved are ['cpu', 'memory', 'ephemeral-storage', 'pid']"))]
    #[schemars(extend("maxProperties" = 4))]
    pub system_reserved: Option<BTreeMap<String, Quantity>>,
    /// Resources reserved for Kubernetes daemons (cpu, memory, ephemeral-storage, pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['cpu', 'memory', 'ephemeral-storage', 'pid'])").message("valid keys for kubeReserved are ['cpu', 'memory', 'ephemeral-storage', 'pid']"))]
    #[schemars(extend("maxProperties" = 4))]
    pub kube_reserved: Option<BTreeMap<String, Quantity>>,
    /// Hard eviction thresholds, for example `memory.available: 100Mi` or `nodefs.available: 10%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'pid.available'])").message("valid keys for evictionHard are ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'pid.available']"))]
    #[schemars(extend("maxProperties" = 6))]
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// Soft eviction thresholds; each needs a grace period in `evictionSoftGracePeriod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'pid.available'])").message("valid keys for evictionSoft are ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'pid.available']"))]
    #[schemars(extend("maxProperties" = 6))]
    pub eviction_soft: Option<BTreeMap<String, String>>,
    /// Grace periods for the soft eviction thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'pid.available'])").message("valid keys for evictionSoftGracePeriod are ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'pid.available']"))]
    #[schemars(extend("maxProperties" = 6))]
    pub eviction_soft_grace_period: Option<BTreeMap<String, super::Duration>>,
    /// Cluster DNS server addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    /// The longest grace period (seconds) a pod evicted for a soft threshold gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub eviction_max_pod_grace_period: Option<i32>,
    /// Disk usage (percent) from which the kubelet always deletes unused images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "imageGCHighThresholdPercent")]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_high_threshold_percent: Option<i32>,
    /// Disk usage (percent) image garbage collection brings the node back down to; below
    /// `imageGCHighThresholdPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "imageGCLowThresholdPercent")]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_low_threshold_percent: Option<i32>,
    /// Whether containers' CPU limits are enforced with CFS quota (the kubelet's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: Option<bool>,
}

/// What stoker resolved the node class to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassStatus {
    /// Subnets that matched `subnetSelectorTerms`, with their zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<ResolvedSubnet>,
    /// Security groups that matched `securityGroupSelectorTerms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<ResolvedSecurityGroup>,
    /// AMIs that matched `amiSelectorTerms`, with the requirements (architecture) they serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<ResolvedAmi>,
    /// The instance profile used for the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Active capacity reservations that matched `capacityReservationSelectorTerms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_reservations: Vec<ResolvedCapacityReservation>,
    /// Conditions: SubnetsReady, SecurityGroupsReady, AMIsReady, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A resolved subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSubnet {
    /// The subnet ID.
    pub id: String,
    /// Its availability zone, for example `us-east-1a`.
    pub zone: String,
    /// Its availability zone ID, for example `use1-az1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "zoneID")]
    pub zone_id: Option<String>,
}

/// A resolved capacity reservation: what it holds and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedCapacityReservation {
    /// The reservation ID.
    pub id: String,
    /// The instance type it reserves.
    pub instance_type: String,
    /// Its availability zone.
    pub availability_zone: String,
    /// The account that owns it.
    #[serde(rename = "ownerID")]
    pub owner_id: String,
    /// `open` (any matching launch may use it) or `targeted` (only launches naming it).
    pub instance_match_criteria: String,
    /// `default`, or `capacity-block` for a Capacity Block for ML.
    pub reservation_type: String,
    /// When it ends (RFC 3339), if it has an end date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// When it starts (RFC 3339), while it is `scheduled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// `active`; `scheduled` for one bought ahead (a Capacity Block) that has not started:
    /// nothing launches into it before its start, when the class is resolved again; or
    /// `expiring` for a Capacity Block in its last 40 minutes: nothing more is launched into
    /// it, and its nodes are drained before EC2 reclaims them.
    #[serde(default = "active")]
    pub state: String,
}

fn active() -> String {
    RESERVATION_ACTIVE.to_owned()
}

/// A reservation nodes may launch into.
pub const RESERVATION_ACTIVE: &str = "active";
/// A reservation that has not started yet (see [`ResolvedCapacityReservation::starts_at`]).
pub const RESERVATION_SCHEDULED: &str = "scheduled";
/// A Capacity Block whose nodes are being drained (see [`ResolvedCapacityReservation::drain_from`]).
pub const RESERVATION_EXPIRING: &str = "expiring";

/// How long before a Capacity Block ends its nodes are drained: EC2 begins terminating its
/// instances 30 minutes before the end and warns 10 minutes before that, when Karpenter drains
/// too.
pub const CAPACITY_BLOCK_DRAIN_LEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(40);

#[cfg(test)]
impl ResolvedCapacityReservation {
    /// For tests: an active, targeted, ordinary reservation of `instance_type` in `zone`, without
    /// an end; a test changes what it is about.
    pub fn of(id: &str, instance_type: &str, zone: &str) -> Self {
        Self {
            id: id.into(),
            instance_type: instance_type.into(),
            availability_zone: zone.into(),
            owner_id: "123456789012".into(),
            instance_match_criteria: "targeted".into(),
            reservation_type: labels::RESERVATION_TYPE_DEFAULT.into(),
            end_time: None,
            start_time: None,
            state: RESERVATION_ACTIVE.into(),
        }
    }

    /// For tests: a Capacity Block of `instance_type` in `zone` that ends at `end` (RFC 3339).
    pub fn block(id: &str, instance_type: &str, zone: &str, end: &str) -> Self {
        let reservation_type = labels::RESERVATION_TYPE_CAPACITY_BLOCK.into();
        Self { reservation_type, end_time: Some(end.into()), ..Self::of(id, instance_type, zone) }
    }
}

impl ResolvedCapacityReservation {
    /// Whether it is a Capacity Block for ML.
    pub fn is_capacity_block(&self) -> bool {
        self.reservation_type == labels::RESERVATION_TYPE_CAPACITY_BLOCK
    }

    /// When a Capacity Block's nodes are to be drained, and nothing more launched into it
    /// ([`CAPACITY_BLOCK_DRAIN_LEAD`] before its end); none for an ordinary reservation, whose
    /// instances run on as on-demand, or an end time that does not read.
    pub fn drain_from(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let end = super::time::from_rfc3339(self.end_time.as_deref()?)?;
        self.is_capacity_block().then(|| end - CAPACITY_BLOCK_DRAIN_LEAD)
    }

    /// Whether `now` is past [`Self::drain_from`].
    pub fn draining_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.drain_from().is_some_and(|from| from <= now)
    }

    /// When a `scheduled` reservation starts (and can be launched into once the class is
    /// resolved again); none once it has started, or for a start time that does not read.
    pub fn starts_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        super::time::from_rfc3339(self.start_time.as_deref().filter(|_| self.state == RESERVATION_SCHEDULED)?)
    }

    /// Whether nodes may launch into it now: it has started and is not being drained.
    pub fn launchable(&self) -> bool {
        self.state == RESERVATION_ACTIVE
    }
}

/// A resolved security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSecurityGroup {
    /// The security group ID.
    pub id: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A resolved AMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedAmi {
    /// The AMI ID.
    pub id: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The node requirements this AMI serves, such as its architecture.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
}
