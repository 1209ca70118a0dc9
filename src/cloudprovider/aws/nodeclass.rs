//! Resolving an EC2NodeClass's selector terms against EC2 (subnets, security groups, AMIs
//! directly or through SSM parameters, active and scheduled capacity reservations with their free
//! room) and its role into an instance profile managed by stoker; and which reservations nodes
//! launched into have ended.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::{
    error::SdkError,
    operation::describe_capacity_reservations::DescribeCapacityReservationsError,
    types::{CapacityReservationState, Filter},
};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::{
    AwsCloudProvider,
    ami::{ARCHES, Alias, Image, Variant, is_image_id, newest_per_arch},
    aws_error,
};
use crate::{
    apis::{
        ec2nodeclass::{
            EC2NodeClass, EC2NodeClassStatus, RESERVATION_ACTIVE, RESERVATION_EXPIRING, RESERVATION_SCHEDULED,
            ResolvedCapacityReservation, ResolvedSecurityGroup, ResolvedSubnet,
        },
        labels,
    },
    cloudprovider::CloudError,
};

/// The node class's resolved status, or why it cannot be launched with yet.
pub fn ready_status(class: &EC2NodeClass) -> Result<&EC2NodeClassStatus, CloudError> {
    let not_ready = |reason: &str| CloudError::NodeClassNotReady {
        name: class.metadata.name.clone().unwrap_or_default(),
        reason: reason.to_owned(),
    };
    let status = class.status.as_ref().ok_or_else(|| not_ready("not resolved yet"))?;
    if status.subnets.is_empty() {
        return Err(not_ready("no subnet matches subnetSelectorTerms"));
    }
    if status.security_groups.is_empty() {
        return Err(not_ready("no security group matches securityGroupSelectorTerms"));
    }
    if status.amis.is_empty() {
        return Err(not_ready("no AMI matches amiSelectorTerms"));
    }
    Ok(status)
}

/// Equality filters for a tag selector; `*` matches any value of the key.
fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<Filter> {
    tags.iter()
        .map(|(key, value)| match value.as_str() {
            "*" => Filter::builder().name("tag-key").values(key).build(),
            _ => Filter::builder().name(format!("tag:{key}")).values(value).build(),
        })
        .collect()
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

pub async fn resolve(provider: &AwsCloudProvider, class: &EC2NodeClass) -> Result<EC2NodeClassStatus, CloudError> {
    let mut status = EC2NodeClassStatus {
        subnets: subnets(provider, class).await?,
        security_groups: security_groups(provider, class).await?,
        capacity_reservations: capacity_reservations(provider, class).await?,
        ..Default::default()
    };
    let mut images = Vec::new();
    for term in &class.spec.ami_selector_terms {
        images.extend(match (&term.alias, &term.ssm_parameter) {
            (Some(alias), _) => alias_images(provider, &Alias::parse(alias)?).await?,
            (None, Some(parameter)) => parameter_images(provider, parameter).await?,
            (None, None) => {
                let mut filters = term.tags.as_ref().map(tag_filters).unwrap_or_default();
                filters.extend(term.id.as_deref().map(|id| filter("image-id", id)));
                filters.extend(term.name.as_deref().map(|name| filter("name", name)));
                let owners: Vec<String> = term.owner.iter().cloned().collect();
                describe_images(provider, filters, owners).await?
            }
        });
    }
    status.amis = newest_per_arch(&images);
    status.instance_profile = match (&class.spec.instance_profile, &class.spec.role) {
        (Some(profile), _) => Some(profile.clone()),
        (None, Some(role)) => Some(ensure_instance_profile(provider, class, role).await?),
        (None, None) => None,
    };
    Ok(status)
}

async fn subnets(provider: &AwsCloudProvider, class: &EC2NodeClass) -> Result<Vec<ResolvedSubnet>, CloudError> {
    let mut found: BTreeMap<String, (ResolvedSubnet, i64)> = BTreeMap::new();
    for term in &class.spec.subnet_selector_terms {
        let mut filters = term.tags.as_ref().map(tag_filters).unwrap_or_default();
        filters.extend(term.id.as_deref().map(|id| filter("subnet-id", id)));
        let mut pages = provider.ec2.describe_subnets().set_filters(Some(filters)).into_paginator().send();
        while let Some(page) = pages.next().await {
            for subnet in page.map_err(aws_error("DescribeSubnets"))?.subnets() {
                let (Some(id), Some(zone)) = (subnet.subnet_id(), subnet.availability_zone()) else { continue };
                let resolved = ResolvedSubnet {
                    id: id.to_owned(),
                    zone: zone.to_owned(),
                    zone_id: subnet.availability_zone_id().map(str::to_owned),
                };
                found.insert(id.to_owned(), (resolved, subnet.available_ip_address_count().unwrap_or(0).into()));
            }
        }
    }
    provider.offerings.record_subnet_addresses(found.iter().map(|(id, (_, available))| (id.clone(), *available)));
    let mut subnets: Vec<ResolvedSubnet> = found.into_values().map(|(subnet, _)| subnet).collect();
    subnets.sort_by(|a, b| (&a.zone, &a.id).cmp(&(&b.zone, &b.id)));
    Ok(subnets)
}

async fn security_groups(
    provider: &AwsCloudProvider,
    class: &EC2NodeClass,
) -> Result<Vec<ResolvedSecurityGroup>, CloudError> {
    let mut found: BTreeMap<String, ResolvedSecurityGroup> = BTreeMap::new();
    for term in &class.spec.security_group_selector_terms {
        let mut filters = term.tags.as_ref().map(tag_filters).unwrap_or_default();
        filters.extend(term.id.as_deref().map(|id| filter("group-id", id)));
        filters.extend(term.name.as_deref().map(|name| filter("group-name", name)));
        let mut pages = provider.ec2.describe_security_groups().set_filters(Some(filters)).into_paginator().send();
        while let Some(page) = pages.next().await {
            for group in page.map_err(aws_error("DescribeSecurityGroups"))?.security_groups() {
                let Some(id) = group.group_id() else { continue };
                found.insert(
                    id.to_owned(),
                    ResolvedSecurityGroup { id: id.to_owned(), name: group.group_name().map(str::to_owned) },
                );
            }
        }
    }
    Ok(found.into_values().collect())
}

/// The active reservations the terms select, sorted by ID; their free room goes to the offerings.
async fn capacity_reservations(
    provider: &AwsCloudProvider,
    class: &EC2NodeClass,
) -> Result<Vec<ResolvedCapacityReservation>, CloudError> {
    let mut found: BTreeMap<String, (ResolvedCapacityReservation, i64)> = BTreeMap::new();
    for term in &class.spec.capacity_reservation_selector_terms {
        let mut filters = term.tags.as_ref().map(tag_filters).unwrap_or_default();
        filters.extend(term.owner_id.as_deref().map(|owner| filter("owner-id", owner)));
        // Scheduled ones too (a Capacity Block bought ahead): listed with their start, so the
        // class is resolved again the moment they can be launched into.
        filters.push(Filter::builder().name("state").values("active").values("scheduled").build());
        let request = provider
            .ec2
            .describe_capacity_reservations()
            .set_capacity_reservation_ids(term.id.clone().map(|id| vec![id]))
            .set_filters(Some(filters));
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                // A reservation named by ID that ended and was cleaned up is simply not there.
                Err(error) if unknown_reservation(&error) => break,
                Err(error) => return Err(aws_error("DescribeCapacityReservations")(error)),
            };
            for reservation in page.capacity_reservations() {
                let (Some(id), Some(instance_type), Some(zone)) = (
                    reservation.capacity_reservation_id(),
                    reservation.instance_type(),
                    reservation.availability_zone(),
                ) else {
                    continue;
                };
                let mut resolved = ResolvedCapacityReservation {
                    id: id.to_owned(),
                    instance_type: instance_type.to_owned(),
                    availability_zone: zone.to_owned(),
                    owner_id: reservation.owner_id().unwrap_or_default().to_owned(),
                    instance_match_criteria: reservation
                        .instance_match_criteria()
                        .map_or("open", |criteria| criteria.as_str())
                        .to_owned(),
                    reservation_type: reservation.reservation_type().map_or("default", |t| t.as_str()).to_owned(),
                    end_time: reservation.end_date().and_then(|t| rfc3339(t.secs(), t.subsec_nanos())),
                    start_time: None,
                    state: RESERVATION_ACTIVE.to_owned(),
                };
                if reservation.state() == Some(&CapacityReservationState::Scheduled) {
                    resolved.state = RESERVATION_SCHEDULED.to_owned();
                    resolved.start_time = reservation.start_date().and_then(|t| rfc3339(t.secs(), t.subsec_nanos()));
                } else if resolved.draining_at(chrono::Utc::now()) {
                    resolved.state = RESERVATION_EXPIRING.to_owned();
                }
                let available = reservation.available_instance_count().unwrap_or(0).into();
                found.insert(id.to_owned(), (resolved, available));
            }
        }
    }
    let counts = found.iter().map(|(id, (_, available))| (id.clone(), *available));
    provider.offerings.change_reservations(|room| room.record(counts));
    Ok(found.into_values().map(|(reservation, _)| reservation).collect())
}

/// An AWS time as the class status writes it (RFC 3339 to the second, UTC).
fn rfc3339(secs: i64, nanos: u32) -> Option<String> {
    chrono::DateTime::from_timestamp(secs, nanos).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Whether EC2 refused a call because a reservation ID it names does not exist (any more).
fn unknown_reservation<R>(error: &SdkError<DescribeCapacityReservationsError, R>) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.meta().code())
        .is_some_and(|code| code.starts_with("InvalidCapacityReservationId"))
}

/// Of these reservations, the ones EC2 no longer holds active. One call for all of them; EC2
/// refuses the whole call when it does not know one of them (an ended reservation is cleaned up
/// after a while), and then each is asked about alone: one it does not know has ended too.
pub async fn ended_reservations(provider: &AwsCloudProvider, ids: &[String]) -> Result<Vec<String>, CloudError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let active = match active_among(provider, ids).await? {
        Some(active) => active,
        None => {
            let mut active = BTreeSet::new();
            for id in ids {
                active.extend(active_among(provider, std::slice::from_ref(id)).await?.unwrap_or_default());
            }
            active
        }
    };
    Ok(ids.iter().filter(|id| !active.contains(*id)).cloned().collect())
}

/// Which of these reservations are active; None when EC2 does not know one of them.
async fn active_among(provider: &AwsCloudProvider, ids: &[String]) -> Result<Option<BTreeSet<String>>, CloudError> {
    let request = provider.ec2.describe_capacity_reservations().set_capacity_reservation_ids(Some(ids.to_vec()));
    let mut pages = request.into_paginator().send();
    let mut active = BTreeSet::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(error) if unknown_reservation(&error) => return Ok(None),
            Err(error) => return Err(aws_error("DescribeCapacityReservations")(error)),
        };
        let live = page.capacity_reservations().iter().filter(|r| r.state() == Some(&CapacityReservationState::Active));
        active.extend(live.filter_map(|r| r.capacity_reservation_id().map(str::to_owned)));
    }
    Ok(Some(active))
}

/// The images an alias names: one per architecture and variant the family publishes (a variant
/// without a parameter, as Neuron on arm64, is left out).
async fn alias_images(provider: &AwsCloudProvider, alias: &Alias) -> Result<Vec<Image>, CloudError> {
    let mut variants: BTreeMap<String, Option<Variant>> = BTreeMap::new();
    for (_, ec2_arch) in ARCHES {
        for variant in alias.variants() {
            let name = alias.ssm_parameter(&provider.options.cluster.kubernetes_minor, ec2_arch, *variant);
            match provider.ssm.get_parameter().name(&name).send().await {
                Ok(output) => {
                    if let Some(id) = output.parameter().and_then(|p| p.value()) {
                        variants.insert(id.to_owned(), *variant);
                    }
                }
                Err(error) if error.as_service_error().is_some_and(|e| e.is_parameter_not_found()) => {
                    tracing::debug!(parameter = %name, "no AMI parameter for this architecture and variant");
                }
                Err(error) => return Err(aws_error("GetParameter")(error)),
            }
        }
    }
    if variants.is_empty() {
        return Ok(Vec::new());
    }
    let ids = variants.keys().cloned().collect();
    let mut images =
        describe_images(provider, vec![Filter::builder().name("image-id").set_values(Some(ids)).build()], Vec::new())
            .await?;
    for image in &mut images {
        image.variant = variants.get(&image.id).copied().flatten();
    }
    Ok(images)
}

/// The image an `ssmParameter` term names: its value, an AMI ID. A parameter that does not exist
/// or holds something else is the class's error, named in its Ready condition, rather than a
/// term matching nothing: the term names exactly one thing, so finding none is a mistake to show.
async fn parameter_images(provider: &AwsCloudProvider, parameter: &str) -> Result<Vec<Image>, CloudError> {
    let invalid = |detail: String| {
        CloudError::InvalidConfiguration(format!("amiSelectorTerms ssmParameter {parameter:?} {detail}"))
    };
    let value = match provider.ssm.get_parameter().name(parameter).send().await {
        Ok(output) => output.parameter.and_then(|p| p.value).unwrap_or_default(),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_parameter_not_found()) => {
            return Err(invalid("does not exist".into()));
        }
        Err(error) => return Err(aws_error("GetParameter")(error)),
    };
    let id = value.trim();
    if !is_image_id(id) {
        return Err(invalid(format!("holds {value:?}, not an AMI ID")));
    }
    describe_images(provider, vec![filter("image-id", id)], Vec::new()).await
}

async fn describe_images(
    provider: &AwsCloudProvider,
    filters: Vec<Filter>,
    owners: Vec<String>,
) -> Result<Vec<Image>, CloudError> {
    let mut images = Vec::new();
    let request =
        provider.ec2.describe_images().set_filters(Some(filters)).set_owners((!owners.is_empty()).then_some(owners));
    let mut pages = request.into_paginator().send();
    while let Some(page) = pages.next().await {
        for image in page.map_err(aws_error("DescribeImages"))?.images() {
            let (Some(id), Some(architecture)) = (image.image_id(), image.architecture()) else { continue };
            images.push(Image {
                id: id.to_owned(),
                name: image.name().map(str::to_owned),
                architecture: architecture.as_str().to_owned(),
                creation_date: image.creation_date().unwrap_or_default().to_owned(),
                variant: None,
            });
        }
    }
    Ok(images)
}

/// The name of the instance profile stoker manages for a node class: one per EC2NodeClass (as
/// Karpenter does), never shared, so deleting one class cannot take credentials from another's
/// nodes even when both name the same role.
pub fn instance_profile_name(region: &str, cluster: &str, class: &str) -> String {
    let digest = Sha256::digest(format!("{region}/{cluster}/{class}"));
    let hash: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("stoker_{cluster}_{hash}")
}

/// The instance profile stoker manages for a node class: named for the class, tagged for the
/// cluster and the class, holding exactly the class's role.
async fn ensure_instance_profile(
    provider: &AwsCloudProvider,
    class: &EC2NodeClass,
    role: &str,
) -> Result<String, CloudError> {
    let cluster = provider.cluster_name();
    let name = instance_profile_name(provider.region(), cluster, &class.name_any());
    let existing = match provider.iam.get_instance_profile().instance_profile_name(&name).send().await {
        Ok(output) => output.instance_profile,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => None,
        Err(error) => return Err(aws_error("GetInstanceProfile")(error)),
    };
    let roles: Vec<String> = match existing {
        Some(profile) => profile.roles.into_iter().map(|r| r.role_name).collect(),
        None => {
            let tag = |key: &str, value: &str| aws_sdk_iam::types::Tag::builder().key(key).value(value).build();
            let tags = [
                tag(labels::EC2_CLUSTER_TAG, cluster),
                tag(&format!("{}{cluster}", labels::EC2_CLUSTER_TAG_PREFIX), "owned"),
                tag(labels::EC2_NODECLASS_TAG, class.metadata.name.as_deref().unwrap_or_default()),
            ];
            let mut request = provider.iam.create_instance_profile().instance_profile_name(&name);
            for tag in tags {
                request = request.tags(tag.map_err(|e| CloudError::InvalidConfiguration(e.to_string()))?);
            }
            request.send().await.map_err(aws_error("CreateInstanceProfile"))?;
            Vec::new()
        }
    };
    for other in roles.iter().filter(|r| *r != role) {
        provider
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(&name)
            .role_name(other)
            .send()
            .await
            .map_err(aws_error("RemoveRoleFromInstanceProfile"))?;
    }
    if !roles.iter().any(|r| r == role) {
        provider
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(&name)
            .role_name(role)
            .send()
            .await
            .map_err(aws_error("AddRoleToInstanceProfile"))?;
    }
    Ok(name)
}

/// Deletes the instance profile stoker made for this node class, if it made one. Only the
/// class's own profile: a name recorded in its status that is not this class's (a profile an
/// earlier version shared between classes with one role) is left alone.
pub async fn delete_instance_profile(provider: &AwsCloudProvider, class: &EC2NodeClass) -> Result<(), CloudError> {
    let Some(name) = class.status.as_ref().and_then(|s| s.instance_profile.as_deref()) else { return Ok(()) };
    let own = instance_profile_name(provider.region(), provider.cluster_name(), &class.name_any());
    if class.spec.instance_profile.is_some() || name != own {
        return Ok(());
    }
    let profile = match provider.iam.get_instance_profile().instance_profile_name(name).send().await {
        Ok(output) => output.instance_profile,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_entity_exception()) => return Ok(()),
        Err(error) => return Err(aws_error("GetInstanceProfile")(error)),
    };
    for role in profile.iter().flat_map(|p| &p.roles) {
        provider
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(name)
            .role_name(&role.role_name)
            .send()
            .await
            .map_err(aws_error("RemoveRoleFromInstanceProfile"))?;
    }
    provider
        .iam
        .delete_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .map_err(aws_error("DeleteInstanceProfile"))?;
    tracing::info!(instance_profile = %name, "deleted instance profile");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_class_has_its_own_instance_profile() {
        let (a, b) = (instance_profile_name("us-east-1", "prod", "a"), instance_profile_name("us-east-1", "prod", "b"));
        assert_ne!(a, b, "two classes, even with one role, never share a profile");
        assert_eq!(a, instance_profile_name("us-east-1", "prod", "a"), "stable");
        assert_ne!(a, instance_profile_name("eu-west-1", "prod", "a"));
        assert!(a.starts_with("stoker_prod_") && a.len() <= 128);
    }

    #[test]
    fn wildcard_tag_values_match_any_value() {
        let filters = tag_filters(&BTreeMap::from([
            ("karpenter.sh/discovery".to_owned(), "prod".to_owned()),
            ("kubernetes.io/role/internal-elb".to_owned(), "*".to_owned()),
        ]));
        let pairs: Vec<(&str, &[String])> =
            filters.iter().map(|f| (f.name().unwrap_or_default(), f.values())).collect();
        assert_eq!(
            pairs,
            [
                ("tag:karpenter.sh/discovery", &["prod".to_owned()][..]),
                ("tag-key", &["kubernetes.io/role/internal-elb".to_owned()][..])
            ]
        );
    }
}
