//! Finding and terminating this cluster's instances. Termination is guarded: an instance
//! without both of this cluster's ownership tags is never terminated.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, InstanceLifecycleType};

use super::{AwsCloudProvider, aws_error, batching, tags::ownership_tags};
use crate::{
    apis::labels,
    cloudprovider::{CloudError, Instance},
};

/// The provider ID the kubelet sets for an EC2 instance.
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The instance ID inside a provider ID (`aws:///us-east-1a/i-0123` → `i-0123`).
pub fn instance_id(provider_id: &str) -> Result<&str, CloudError> {
    provider_id
        .strip_prefix("aws:///")
        .and_then(|rest| rest.rsplit_once('/'))
        .map(|(_, id)| id)
        .filter(|id| id.starts_with("i-"))
        .ok_or_else(|| CloudError::InvalidProviderId(provider_id.to_owned()))
}

/// States of an instance that still exists (or is about to).
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

pub fn from_ec2(instance: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let id = instance.instance_id()?.to_owned();
    let zone = instance.placement().and_then(|p| p.availability_zone())?.to_owned();
    let tags: BTreeMap<String, String> = instance
        .tags()
        .iter()
        .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value().unwrap_or_default().to_owned())))
        .collect();
    let capacity_reservation = instance.capacity_reservation_id().map(str::to_owned);
    let capacity_type = match instance.instance_lifecycle() {
        Some(InstanceLifecycleType::Spot) => labels::CAPACITY_TYPE_SPOT,
        _ if capacity_reservation.is_some() => labels::CAPACITY_TYPE_RESERVED,
        _ => labels::CAPACITY_TYPE_ON_DEMAND,
    };
    let mut security_group_ids: Vec<String> =
        instance.security_groups().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect();
    security_group_ids.sort();
    Some(Instance {
        provider_id: provider_id(&zone, &id),
        id,
        instance_type: instance.instance_type()?.as_str().to_owned(),
        zone,
        capacity_type: capacity_type.to_owned(),
        capacity_reservation,
        image_id: instance.image_id().unwrap_or_default().to_owned(),
        subnet_id: instance.subnet_id().unwrap_or_default().to_owned(),
        security_group_ids,
        state: instance.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_default(),
        launch_time: instance.launch_time().and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
        tags,
    })
}

/// Whether both of this cluster's ownership tags are on the instance.
pub fn owned_by(instance: &Instance, cluster: &str) -> bool {
    ownership_tags(cluster).iter().all(|(key, value)| instance.tags.get(key) == Some(value))
}

async fn describe(
    provider: &AwsCloudProvider,
    filters: Vec<Filter>,
    ids: Vec<String>,
) -> Result<Vec<Instance>, CloudError> {
    let mut found = Vec::new();
    let request = provider.ec2.describe_instances().set_filters(Some(filters)).set_instance_ids(Some(ids));
    let mut pages = request.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(error)
                if error.as_service_error().and_then(|e| e.meta().code()) == Some("InvalidInstanceID.NotFound") =>
            {
                return Ok(Vec::new());
            }
            Err(error) => return Err(aws_error("DescribeInstances")(error)),
        };
        found.extend(page.reservations().iter().flat_map(|r| r.instances()).filter_map(from_ec2));
    }
    Ok(found)
}

fn cluster_filter(provider: &AwsCloudProvider) -> Filter {
    Filter::builder().name(format!("tag:{}", labels::EC2_CLUSTER_TAG)).values(provider.cluster_name()).build()
}

fn live_filter() -> Filter {
    Filter::builder().name("instance-state-name").set_values(Some(LIVE_STATES.map(String::from).to_vec())).build()
}

/// Every live instance tagged for this cluster.
pub async fn list(provider: &AwsCloudProvider) -> Result<Vec<Instance>, CloudError> {
    describe(provider, vec![cluster_filter(provider), live_filter()], Vec::new()).await
}

/// The live instance launched for a NodeClaim, if any: tagged with its name, or its share of a
/// call made for several (`batching::adopted`). One query finds both, in every state, so a
/// batch's pairing sees all of its instances. A share found by its batch is tagged with the
/// NodeClaim now: the controller that launched it died before it could (its `Name`, and what
/// tells the instance's NodeClaim to anyone reading tags, would be missing for good).
pub async fn for_nodeclaim(provider: &AwsCloudProvider, nodeclaim: &str) -> Result<Option<Instance>, CloudError> {
    let naming = Filter::builder().name("tag-value").set_values(Some(batching::tag_value_patterns(nodeclaim))).build();
    let found = describe(provider, vec![cluster_filter(provider), naming], Vec::new()).await?;
    let adopted = batching::adopted(nodeclaim, &found);
    if let Some(instance) = &adopted
        && !found.iter().any(|named| named.id == instance.id && named.nodeclaim().is_some())
    {
        batching::name_instance(&provider.ec2, instance).await;
    }
    Ok(adopted)
}

/// Whether the instance still exists (or is about to).
pub fn is_live(instance: &Instance) -> bool {
    LIVE_STATES.contains(&instance.state.as_str())
}

/// The instances with these IDs, in any state; none when one of them does not exist (EC2 fails
/// the whole call then).
pub async fn by_ids(provider: &AwsCloudProvider, ids: Vec<String>) -> Result<Vec<Instance>, CloudError> {
    describe(provider, Vec::new(), ids).await
}

/// A live instance by ID; `NotFound` when it does not exist or is terminated.
pub async fn get(provider: &AwsCloudProvider, id: &str) -> Result<Instance, CloudError> {
    by_ids(provider, vec![id.to_owned()])
        .await?
        .into_iter()
        .find(is_live)
        .ok_or_else(|| CloudError::NotFound(id.to_owned()))
}

/// Terminates an instance this cluster launched; refuses any other.
pub async fn terminate(provider: &AwsCloudProvider, provider_id: &str) -> Result<(), CloudError> {
    let id = instance_id(provider_id)?;
    let instance = get(provider, id).await?;
    if !owned_by(&instance, provider.cluster_name()) {
        return Err(CloudError::NotOwned { instance: id.to_owned(), cluster: provider.cluster_name().to_owned() });
    }
    provider.ec2.terminate_instances().instance_ids(id).send().await.map_err(aws_error("TerminateInstances"))?;
    if let Some(reservation) = &instance.capacity_reservation {
        provider.offerings.change_reservations(|room| room.released(reservation));
    }
    tracing::info!(instance = id, "terminated instance");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(tags: &[(&str, &str)]) -> Instance {
        Instance {
            provider_id: "aws:///a/i-1".into(),
            zone: "a".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Instance::example("i-1")
        }
    }

    #[test]
    fn ownership_needs_both_cluster_tags() {
        let both = instance(&[("stoker.dev/cluster", "prod"), ("kubernetes.io/cluster/prod", "owned")]);
        assert!(owned_by(&both, "prod"));
        assert!(!owned_by(&both, "staging"));
        assert!(!owned_by(&instance(&[("stoker.dev/cluster", "prod")]), "prod"));
        assert!(!owned_by(&instance(&[("kubernetes.io/cluster/prod", "owned")]), "prod"));
        assert!(!owned_by(
            &instance(&[("stoker.dev/cluster", "prod"), ("kubernetes.io/cluster/prod", "shared")]),
            "prod"
        ));
    }

    #[test]
    fn provider_ids_round_trip() {
        let id = provider_id("us-east-1a", "i-0abc");
        assert_eq!(id, "aws:///us-east-1a/i-0abc");
        assert_eq!(instance_id(&id), Ok("i-0abc"));
        assert!(instance_id("kwok://node-1").is_err());
        assert!(instance_id("aws:///us-east-1a/").is_err());
    }
}
