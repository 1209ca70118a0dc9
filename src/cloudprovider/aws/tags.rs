//! The tags stoker puts on what it creates in EC2: ownership by the cluster (what
//! termination and pruning check before touching anything), and the NodeClaim, NodePool and node
//! class an instance belongs to.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use kube::ResourceExt;

use crate::apis::{ec2nodeclass::EC2NodeClass, labels, nodeclaim::NodeClaim};

pub(super) fn ownership_tags(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (format!("{}{cluster}", labels::EC2_CLUSTER_TAG_PREFIX), "owned".to_owned()),
        (labels::EC2_CLUSTER_TAG.to_owned(), cluster.to_owned()),
    ])
}

pub(super) fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build()).collect()
}

pub(super) fn tag_specification(resource: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder().resource_type(resource).set_tags(Some(ec2_tags(tags))).build()
}

/// The tags on every instance of a launch, its volumes and the fleet: the node class's own, the
/// ownership tags, the NodePool and the node class. A NodeClaim's own tags ([`claim_tags`]) are
/// sent with them when a CreateFleet call launches for one NodeClaim, and set on each instance
/// afterwards when it launched for several (`batching.rs`).
pub fn launch_tags(cluster: &str, claim: &NodeClaim, class: &EC2NodeClass) -> BTreeMap<String, String> {
    let mut tags = class.spec.tags.clone();
    tags.extend(ownership_tags(cluster));
    tags.insert(labels::EC2_NODECLASS_TAG.to_owned(), class.name_any());
    if let Some(pool) = claim.labels().get(labels::NODEPOOL) {
        tags.insert(labels::EC2_NODEPOOL_TAG.to_owned(), pool.clone());
    }
    tags
}

/// The tags that say which NodeClaim an instance is: its name, and `Name` for the console.
pub fn claim_tags(nodeclaim: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::EC2_NODECLAIM_TAG.to_owned(), nodeclaim.to_owned()),
        ("Name".to_owned(), nodeclaim.to_owned()),
    ])
}
