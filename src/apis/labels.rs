//! Well-known label, annotation, taint and tag names shared by every part of stoker.
//!
//! Node labels follow Karpenter and EKS so that workloads' nodeSelectors keep working when a
//! cluster moves to stoker.

/// API group of every stoker resource.
pub const GROUP: &str = "stoker.dev";
/// API version of every stoker resource.
pub const VERSION: &str = "v1alpha1";

pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
pub const CAPACITY_TYPE_SPOT: &str = "spot";
pub const CAPACITY_TYPE_ON_DEMAND: &str = "on-demand";
/// Capacity held for the account by an On-Demand Capacity Reservation (already paid for).
pub const CAPACITY_TYPE_RESERVED: &str = "reserved";
/// The On-Demand Capacity Reservation a node runs in, as Karpenter's AWS provider labels it.
pub const CAPACITY_RESERVATION_ID: &str = "karpenter.k8s.aws/capacity-reservation-id";
/// The kind of reservation a `reserved` node runs in, as Karpenter's AWS provider labels it:
/// [`RESERVATION_TYPE_DEFAULT`] or [`RESERVATION_TYPE_CAPACITY_BLOCK`].
pub const CAPACITY_RESERVATION_TYPE: &str = "karpenter.k8s.aws/capacity-reservation-type";
/// An ordinary On-Demand Capacity Reservation: its instances run on as on-demand when it ends.
pub const RESERVATION_TYPE_DEFAULT: &str = "default";
/// A Capacity Block for ML: EC2 reclaims its instances from 30 minutes before it ends.
pub const RESERVATION_TYPE_CAPACITY_BLOCK: &str = "capacity-block";
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// The zone's ID, the same physical zone in every account (`use1-az1`), as Karpenter's AWS
/// provider labels nodes.
pub const ZONE_ID: &str = "topology.k8s.aws/zone-id";
pub const REGION: &str = "topology.kubernetes.io/region";
pub const ARCH: &str = "kubernetes.io/arch";
pub const OS: &str = "kubernetes.io/os";
pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
pub const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
pub const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
pub const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
pub const INSTANCE_MEMORY: &str = "karpenter.k8s.aws/instance-memory";
pub const INSTANCE_GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
pub const INSTANCE_GPU_NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
pub const INSTANCE_GPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
pub const INSTANCE_GPU_MEMORY: &str = "karpenter.k8s.aws/instance-gpu-memory";
pub const INSTANCE_ACCELERATOR_NAME: &str = "karpenter.k8s.aws/instance-accelerator-name";
pub const INSTANCE_ACCELERATOR_MANUFACTURER: &str = "karpenter.k8s.aws/instance-accelerator-manufacturer";
pub const INSTANCE_ACCELERATOR_COUNT: &str = "karpenter.k8s.aws/instance-accelerator-count";
pub const INSTANCE_CPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-cpu-manufacturer";
pub const INSTANCE_CPU_CLOCK: &str = "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz";
pub const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
pub const INSTANCE_ENCRYPTION_IN_TRANSIT: &str = "karpenter.k8s.aws/instance-encryption-in-transit-supported";
pub const INSTANCE_LOCAL_NVME: &str = "karpenter.k8s.aws/instance-local-nvme";
pub const INSTANCE_EBS_BANDWIDTH: &str = "karpenter.k8s.aws/instance-ebs-bandwidth";
pub const INSTANCE_NETWORK_BANDWIDTH: &str = "karpenter.k8s.aws/instance-network-bandwidth";

/// Extended resources the devices of an instance type offer, under their device plugins' names.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
pub const AMD_GPU: &str = "amd.com/gpu";
pub const NEURON: &str = "aws.amazon.com/neuron";
pub const EFA: &str = "vpc.amazonaws.com/efa";
/// EBS volumes a node can still attach, counted like a resource: each pod takes one per EBS
/// volume it mounts. Kubelets do not report it (the CSI driver tells kube-scheduler through
/// CSINode); stoker computes it from the instance type. The name is the one kube's in-tree EBS
/// plugin used for the same limit.
pub const EBS_VOLUMES: &str = "attachable-volumes-aws-ebs";

/// The NodePool a node or NodeClaim belongs to.
pub const NODEPOOL: &str = "stoker.dev/nodepool";
/// The NodeClaim behind a node.
pub const NODECLAIM: &str = "stoker.dev/nodeclaim";
/// The WarmPool a pause pod belongs to.
pub const WARMPOOL: &str = "stoker.dev/warmpool";
/// Pods or nodes carrying this annotation set to `true` are never disrupted voluntarily.
pub const DO_NOT_DISRUPT: &str = "stoker.dev/do-not-disrupt";
/// Annotation on a NodeClaim launched with fewer values than a requirement's `minValues` asked
/// (the `BestEffort` minValues policy), as Karpenter's `karpenter.sh/nodeclaim-min-values-relaxed`.
pub const MIN_VALUES_RELAXED: &str = "stoker.dev/nodeclaim-min-values-relaxed";
/// Karpenter's spelling of [`DO_NOT_DISRUPT`], honoured for workloads that already carry it.
pub const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

/// How much deleting this pod costs its ReplicaSet, relative to its siblings (Kubernetes'
/// annotation); consolidation prefers nodes whose pods cost less to move.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The kubelet's annotation on the API copy (mirror) of a static pod; draining skips such pods.
pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// Label domain reserved for stoker; users may not set labels or requirements in it.
pub const RESERVED_DOMAIN: &str = "stoker.dev/";

/// Taint on a new node until stoker has synced its NodeClaim's labels and taints onto it.
pub const UNREGISTERED_TAINT: &str = "stoker.dev/unregistered";
/// Taints Kubernetes puts on nodes for passing conditions (starting up, a missed heartbeat, the
/// network not set up yet). They say nothing about which pods the node can take once the condition
/// clears, so the simulation ignores them, as Karpenter does: otherwise a node that is briefly
/// NotReady would get its pending pods a second node.
pub const EPHEMERAL_TAINTS: [&str; 4] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/network-unavailable",
    "node.cloudprovider.kubernetes.io/uninitialized",
];
/// Taint on a node being drained.
pub const DISRUPTED_TAINT: &str = "stoker.dev/disrupted";

/// EC2 tag naming the cluster an instance belongs to (the EKS convention uses the name in the key).
pub const EC2_CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";
pub const EC2_CLUSTER_TAG: &str = "stoker.dev/cluster";
pub const EC2_NODEPOOL_TAG: &str = "stoker.dev/nodepool";
pub const EC2_NODECLAIM_TAG: &str = "stoker.dev/nodeclaim";
pub const EC2_NODECLASS_TAG: &str = "stoker.dev/ec2nodeclass";
/// Tag key users put on subnets and security groups for discovery, as with Karpenter.
pub const DISCOVERY_TAG: &str = "karpenter.sh/discovery";

/// Whether these annotations say "do not disrupt" (stoker's or Karpenter's spelling, `"true"`).
pub fn do_not_disrupt(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    [DO_NOT_DISRUPT, KARPENTER_DO_NOT_DISRUPT].iter().any(|key| annotations.get(*key).is_some_and(|v| v == "true"))
}

/// The capacity reservation a node (or NodeClaim) with these labels runs in: its reservation ID
/// while it is labelled `reserved` (a node relabelled on-demand may keep no such ID, and an ID
/// alone does not make it reserved).
pub fn reservation(labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    let reserved = labels.get(CAPACITY_TYPE).is_some_and(|t| t == CAPACITY_TYPE_RESERVED);
    labels.get(CAPACITY_RESERVATION_ID).filter(|_| reserved).map(String::as_str)
}
