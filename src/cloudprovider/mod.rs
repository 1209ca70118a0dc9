//! The cloud side of stoker: the `CloudProvider` trait the controllers call, and the values that
//! cross it. `aws` implements it with aws-sdk-ec2 and aws-sdk-ssm; `fake` keeps instances in
//! memory for fast, deterministic tests of the controllers; `metered` wraps any of them with
//! metrics.
//!
//! Controllers hand in Kubernetes objects (a NodeClaim and the provider's node class) and get
//! back launched instances, the instance catalog priced for a node class, or a resolved node
//! class. Provider IDs are opaque here: each provider makes and reads its own. Everything that is
//! decided rather than fetched (which overrides to send, which error means what, which AMI path
//! an alias names) lives in pure functions inside the provider.

pub mod aws;
pub mod fake;
pub mod metered;

use std::{collections::BTreeMap, future::Future, sync::Arc};

use kube::Resource;

use crate::{
    apis::nodeclaim::NodeClaim,
    scheduling::{catalog::InstanceType, overlays::Overlay},
};

/// An instance as the cloud reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    /// The provider ID the kubelet reports on the Node (`aws:///<zone>/<instance-id>` on AWS).
    pub provider_id: String,
    pub instance_type: String,
    pub zone: String,
    /// `spot`, `on-demand` or `reserved`.
    pub capacity_type: String,
    /// The capacity reservation it runs in.
    pub capacity_reservation: Option<String>,
    pub image_id: String,
    /// The subnet it was launched in (empty when the provider has none).
    pub subnet_id: String,
    /// Its security groups, sorted (empty when the provider has none).
    pub security_group_ids: Vec<String>,
    /// EC2's state name: pending, running, shutting-down, terminated, stopping, stopped.
    pub state: String,
    pub launch_time: Option<chrono::DateTime<chrono::Utc>>,
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    /// The NodeClaim this instance was launched for, from its tag.
    pub fn nodeclaim(&self) -> Option<&str> {
        self.tags.get(crate::apis::labels::EC2_NODECLAIM_TAG).map(String::as_str)
    }

    /// A running, untagged m5.large spot instance in us-east-1a: what tests change the rest from.
    #[cfg(test)]
    pub(crate) fn example(id: &str) -> Self {
        Instance {
            id: id.into(),
            provider_id: format!("aws:///us-east-1a/{id}"),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: "spot".into(),
            capacity_reservation: None,
            image_id: "ami-1".into(),
            subnet_id: String::new(),
            security_group_ids: Vec::new(),
            state: "running".into(),
            launch_time: None,
            tags: BTreeMap::new(),
        }
    }
}

/// What can go wrong in the cloud. `reason` is the stable word written to NodeClaim conditions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// Every offering the NodeClaim allows is out of capacity (or was refused) right now.
    #[error("no capacity for any allowed offering; last errors: {}", .errors.join("; "))]
    InsufficientCapacity { errors: Vec<String> },
    /// The NodeClaim's requirements leave no instance type, zone or capacity type to try.
    #[error("nothing to launch: {0}")]
    NoCompatibleOfferings(String),
    /// The node class has not been resolved (no subnets, security groups or AMIs in status).
    #[error("EC2NodeClass {name} is not ready: {reason}")]
    NodeClassNotReady { name: String, reason: String },
    #[error("instance {0} not found")]
    NotFound(String),
    /// The instance lacks this cluster's ownership tags: stoker never touches it.
    #[error("instance {instance} is not tagged as launched by stoker for cluster {cluster}; refusing to terminate it")]
    NotOwned { instance: String, cluster: String },
    #[error("invalid provider ID {0:?}")]
    InvalidProviderId(String),
    /// An AWS API error, with its code (`UnauthorizedOperation`, `InvalidSubnetID.NotFound`, ...).
    #[error("{operation}: {code}: {message}")]
    Aws { operation: &'static str, code: String, message: String },
    #[error("invalid node configuration: {0}")]
    InvalidConfiguration(String),
    /// The cloud asked to slow down, every time it was asked: retry later, nothing is wrong with
    /// the offerings.
    #[error("{operation} throttled: {message}")]
    Throttled { operation: &'static str, message: String },
}

impl CloudError {
    /// A short stable word for conditions, events and metrics.
    pub fn reason(&self) -> &str {
        match self {
            CloudError::InsufficientCapacity { .. } => "InsufficientCapacity",
            CloudError::NoCompatibleOfferings(_) => "NoCompatibleOfferings",
            CloudError::NodeClassNotReady { .. } => "NodeClassNotReady",
            CloudError::NotFound(_) => "NotFound",
            CloudError::NotOwned { .. } => "NotOwned",
            CloudError::InvalidProviderId(_) => "InvalidProviderId",
            CloudError::Aws { code, .. } => code,
            CloudError::InvalidConfiguration(_) => "InvalidConfiguration",
            CloudError::Throttled { .. } => "Throttled",
        }
    }
}

/// What the caller knows of earlier launches for a NodeClaim it asks to launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorLaunches {
    /// The claim was created by this leader moments ago and this is its first launch: no
    /// instance can exist for it, so none is looked for.
    None,
    /// Anything else (a restart, another leader, a retry): an instance may exist, and is adopted.
    Unknown,
}

/// Whether more launches decided together with this one (NodeClaims the same provisioning
/// decision created) are still to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followers {
    /// Some are (or it is not known): a provider that shares one call among launches alike
    /// waits a moment for them.
    Expected,
    /// This is the last: calls being shared go out as soon as the launches already on their way
    /// have joined.
    NoneExpected,
}

/// The operations controllers need from a cloud. Only the leader calls the mutating ones.
pub trait CloudProvider: Send + Sync {
    /// The provider's node class (subnets, images, roles): `EC2NodeClass` on AWS.
    type NodeClass: Resource + Send + Sync;
    /// What resolving a node class finds: its status.
    type NodeClassStatus: Send;

    /// Launches one instance for the NodeClaim, or returns the one already launched for it.
    fn create(
        &self,
        claim: &NodeClaim,
        class: &Self::NodeClass,
        prior: PriorLaunches,
        followers: Followers,
    ) -> impl Future<Output = Result<Instance, CloudError>> + Send;

    /// Creates ahead of time what a first launch for a NodeClaim like this one would wait for (its
    /// launch templates), so that launch is one call. Launching works without it.
    fn prepare(
        &self,
        claim: &NodeClaim,
        class: &Self::NodeClass,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// Terminates an instance this cluster launched. `NotFound` once it is gone.
    fn delete(&self, provider_id: &str) -> impl Future<Output = Result<(), CloudError>> + Send;

    fn get(&self, provider_id: &str) -> impl Future<Output = Result<Instance, CloudError>> + Send;

    /// Every instance tagged for this cluster that is not terminated.
    fn list(&self) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// The instance types a node class can launch, with priced, zone-restricted offerings.
    fn instance_types(
        &self,
        class: &Self::NodeClass,
    ) -> impl Future<Output = Result<Arc<[InstanceType]>, CloudError>> + Send;

    /// Subnets, security groups and AMIs the node class's selector terms find right now.
    fn resolve_node_class(
        &self,
        class: &Self::NodeClass,
    ) -> impl Future<Output = Result<Self::NodeClassStatus, CloudError>> + Send;

    /// Deletes what the provider created for a node class (launch templates, the instance
    /// profile made for its role) once the node class is being deleted and no NodeClaim uses it.
    fn delete_node_class_resources(
        &self,
        class: &Self::NodeClass,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// Of these capacity reservations, the ones the cloud no longer holds active (expired,
    /// cancelled, or gone): the instances that ran in them run on as on-demand instances.
    fn ended_reservations(&self, ids: &[String]) -> impl Future<Output = Result<Vec<String>, CloudError>> + Send;

    /// Deletes what the provider made that nothing has used for a while (launch templates);
    /// returns how many. Only the leader calls it.
    fn prune(&self) -> impl Future<Output = Result<usize, CloudError>> + Send;

    /// The cloud is reclaiming an instance of this offering (a spot interruption): launches
    /// avoid the offering for a while, as after a capacity error.
    fn offering_interrupted(&self, instance_type: &str, zone: &str, capacity_type: &str);

    /// The NodeOverlays in effect, in precedence order: every instance type the provider hands
    /// out from now on, and every launch, carries their prices and capacity.
    fn use_overlays(&self, overlays: Vec<Overlay>);
}
