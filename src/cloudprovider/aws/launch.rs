//! Launching one instance for a NodeClaim with CreateFleet, retrying with what remains when
//! offerings run out of capacity.
//!
//! Never twice for one NodeClaim: an instance already tagged with the NodeClaim's name is
//! adopted instead of launching (unless the caller knows none can exist: a claim it created
//! moments ago and launches for the first time), and every CreateFleet call carries a client token derived from
//! the NodeClaim's UID and the request, so a repeated identical call is answered by EC2 with
//! the instance of the first.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType, InstanceLifecycle,
    OnDemandOptionsRequest, ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::{
    AwsCloudProvider, ami, aws_error,
    bootstrap::{NodeBootstrap, bootstrap_labels, bootstrap_taints, user_data},
    fleet::{FleetErrorKind, LaunchPlan, NoPlan, Override, Subnet, classify, plan_launch},
    instances,
    launchtemplate::{LaunchTemplateSpec, default_block_devices},
    lock,
    nodeclass::ready_status,
};
use crate::{
    apis::{
        ec2nodeclass::{AmiFamily, EC2NodeClass, EC2NodeClassStatus},
        labels,
        nodeclaim::NodeClaim,
    },
    cloudprovider::{CloudError, CloudProvider, Instance, PriorLaunches},
    scheduling::{requirements::Requirements, resources::Resources},
};

pub async fn create(
    provider: &AwsCloudProvider,
    claim: &NodeClaim,
    class: &EC2NodeClass,
    prior: PriorLaunches,
) -> Result<Instance, CloudError> {
    let name = claim.name_any();
    if prior == PriorLaunches::Unknown
        && let Some(existing) = instances::for_nodeclaim(provider, &name).await?
    {
        tracing::info!(nodeclaim = %name, instance = %existing.id, "adopting the instance already launched for this NodeClaim");
        return Ok(existing);
    }
    let status = ready_status(class)?;
    let requirements = Requirements::from_api(&claim.spec.requirements);
    let requests = Resources::from_quantities(&claim.spec.resources.requests)
        .map_err(|e| CloudError::InvalidConfiguration(format!("NodeClaim {name} resources: {e}")))?;
    let tags = instance_tags(provider.cluster_name(), claim, class);
    let mut errors: Vec<String> = Vec::new();
    // Whether the last attempt was only throttled: then giving up says so, not "no capacity".
    let mut throttled_last = false;
    for attempt in 0..provider.options.max_launch_attempts {
        throttled_last = false;
        let instance_types = provider.instance_types(class).await?;
        let subnets = usable_subnets(provider, status);
        let plan = match plan_launch(&requirements, &requests, &instance_types, &subnets) {
            Ok(plan) => plan,
            Err(NoPlan::Incompatible(reason)) if errors.is_empty() => {
                return Err(CloudError::NoCompatibleOfferings(reason));
            }
            Err(_) if errors.is_empty() => {
                let cached =
                    "every allowed offering failed to launch within the last minutes (unavailable-offerings cache)";
                return Err(CloudError::InsufficientCapacity { errors: vec![cached.to_owned()] });
            }
            Err(_) => return Err(CloudError::InsufficientCapacity { errors }),
        };
        let arches = plan.overrides.iter().map(|o| o.arch.as_str());
        let templates = launch_templates(provider, claim, class, status, arches).await?;
        match create_fleet(provider, claim, &plan, &templates, &tags).await {
            Ok(Outcome::Launched(instance)) => {
                tracing::info!(
                    nodeclaim = %name, instance = %instance.id, instance_type = %instance.instance_type,
                    zone = %instance.zone, capacity_type = %instance.capacity_type, "launched instance"
                );
                return Ok(instance);
            }
            Ok(Outcome::Failed(failures)) => {
                let mut throttled = false;
                for failure in failures {
                    tracing::info!(nodeclaim = %name, code = %failure.code, message = %failure.message, "CreateFleet could not launch");
                    match classify(&failure.code) {
                        FleetErrorKind::Other => {
                            return Err(CloudError::Aws {
                                operation: "CreateFleet",
                                code: failure.code,
                                message: failure.message,
                            });
                        }
                        FleetErrorKind::Throttled => throttled = true,
                        kind => mark(provider, kind, &failure, &plan),
                    }
                    errors.push(format!("{}: {}", failure.code, failure.message));
                }
                if throttled {
                    throttled_last = true;
                    back_off(provider, attempt).await;
                }
            }
            Err(CloudError::Aws { code, .. }) if classify(&code) == FleetErrorKind::Throttled => {
                errors.push(code);
                throttled_last = true;
                back_off(provider, attempt).await;
            }
            Err(CloudError::Aws { code, .. }) if code.starts_with("InvalidLaunchTemplate") => {
                // Deleted behind our back: forget it so the next attempt creates it again.
                lock(&provider.launch_templates).retain(|name, _| !templates.values().any(|t| &t.name == name));
                errors.push(code);
            }
            Err(error) => return Err(error),
        }
    }
    if throttled_last {
        return Err(CloudError::Throttled { operation: "CreateFleet", message: errors.join("; ") });
    }
    Err(CloudError::InsufficientCapacity { errors })
}

fn usable_subnets(provider: &AwsCloudProvider, status: &EC2NodeClassStatus) -> Vec<Subnet> {
    let ips = lock(&provider.subnet_ips);
    let unavailable = lock(&provider.unavailable);
    let now = std::time::Instant::now();
    status
        .subnets
        .iter()
        .map(|subnet| Subnet {
            id: subnet.id.clone(),
            zone: subnet.zone.clone(),
            available_ips: ips.get(&subnet.id).copied().unwrap_or(0),
            exhausted: unavailable.subnet_unavailable(&subnet.id, now),
        })
        .collect()
}

async fn back_off(provider: &AwsCloudProvider, attempt: usize) {
    let base = provider.options.throttle_backoff.saturating_mul(1 << attempt.min(6)).min(Duration::from_secs(20));
    // Full jitter: many controllers throttled together must not retry together.
    let wait = base.mul_f64(0.5 + fastrand::f64() * 0.5);
    tracing::debug!(?wait, "backing off after throttling");
    tokio::time::sleep(wait).await;
}

/// One error CreateFleet reported for an override.
struct Failure {
    code: String,
    message: String,
    instance_type: Option<String>,
    zone: Option<String>,
    subnet_id: Option<String>,
}

enum Outcome {
    Launched(Instance),
    Failed(Vec<Failure>),
}

fn mark(provider: &AwsCloudProvider, kind: FleetErrorKind, failure: &Failure, plan: &LaunchPlan) {
    let capacity_type = plan.capacity_type.as_str();
    let zone = failure.zone.clone().or_else(|| {
        let subnet = failure.subnet_id.as_deref()?;
        plan.overrides.iter().find(|o| o.subnet_id == subnet).map(|o| o.zone.clone())
    });
    provider.mark_unavailable(|cache, now| match (kind, &failure.instance_type, &zone) {
        (FleetErrorKind::CapacityTypeUnavailable, _, _) => cache.mark_capacity_type(capacity_type, now),
        (FleetErrorKind::SubnetFull, _, _) => {
            if let Some(subnet) = &failure.subnet_id {
                cache.mark_subnet(subnet, now);
            }
        }
        (_, Some(instance_type), Some(zone)) => cache.mark_offering(instance_type, zone, capacity_type, now),
        // An error naming no offering: every offering of this request failed.
        _ => {
            for entry in &plan.overrides {
                cache.mark_offering(&entry.instance_type, &entry.zone, capacity_type, now);
            }
        }
    });
}

/// A launch template in use, with the AMI it launches.
struct Template {
    name: String,
    image_id: String,
}

/// Ensures a launch template per architecture in the plan.
/// The launch templates for every architecture the node class has an AMI for, created if they
/// do not exist yet.
pub async fn prepare(provider: &AwsCloudProvider, claim: &NodeClaim, class: &EC2NodeClass) -> Result<(), CloudError> {
    let status = ready_status(class)?;
    let arches: BTreeSet<&str> = status.amis.iter().filter_map(ami::arch_of).collect();
    launch_templates(provider, claim, class, status, arches.into_iter()).await?;
    Ok(())
}

/// The launch template for each of `arches`, by architecture.
async fn launch_templates<'a>(
    provider: &AwsCloudProvider,
    claim: &NodeClaim,
    class: &EC2NodeClass,
    status: &EC2NodeClassStatus,
    arches: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<String, Template>, CloudError> {
    let family = node_family(class);
    let bootstrap = NodeBootstrap {
        labels: bootstrap_labels(claim),
        taints: bootstrap_taints(claim),
        kubelet: class.spec.kubelet.as_ref(),
        custom: class.spec.user_data.as_deref(),
    };
    let user_data = user_data(family, &provider.options.cluster, &bootstrap)?;
    let block_devices = if class.spec.block_device_mappings.is_empty() {
        default_block_devices(family)
    } else {
        class.spec.block_device_mappings.clone()
    };
    let mut templates = BTreeMap::new();
    for arch in arches {
        if templates.contains_key(arch) {
            continue;
        }
        let image = status
            .amis
            .iter()
            .find(|image| ami::arch_of(image) == Some(arch))
            .ok_or_else(|| CloudError::InvalidConfiguration(format!("no AMI for architecture {arch}")))?;
        let spec = LaunchTemplateSpec {
            image_id: image.id.clone(),
            user_data: user_data.clone(),
            security_group_ids: status.security_groups.iter().map(|g| g.id.clone()).collect(),
            instance_profile: status.instance_profile.clone(),
            metadata_options: class.spec.metadata_options.clone(),
            block_devices: block_devices.clone(),
            detailed_monitoring: class.spec.detailed_monitoring.unwrap_or(false),
            associate_public_ip_address: class.spec.associate_public_ip_address,
            tags: class.spec.tags.clone(),
        };
        let name = ensure_launch_template(provider, class, &spec).await?;
        templates.insert(arch.to_owned(), Template { name, image_id: image.id.clone() });
    }
    Ok(templates)
}

async fn ensure_launch_template(
    provider: &AwsCloudProvider,
    class: &EC2NodeClass,
    spec: &LaunchTemplateSpec,
) -> Result<String, CloudError> {
    let name = spec.name(provider.cluster_name());
    if lock(&provider.launch_templates).contains_key(&name) {
        lock(&provider.launch_templates).insert(name.clone(), std::time::Instant::now());
        return Ok(name);
    }
    let mut tags = ownership_tags(provider.cluster_name());
    tags.insert(labels::EC2_NODECLASS_TAG.to_owned(), class.name_any());
    let result = provider
        .ec2
        .create_launch_template()
        .launch_template_name(&name)
        .launch_template_data(spec.request_data()?)
        .tag_specifications(tag_specification(ResourceType::LaunchTemplate, &tags))
        .send()
        .await;
    match result {
        Ok(_) => tracing::info!(launch_template = %name, "created launch template"),
        Err(error)
            if error.as_service_error().and_then(|e| e.meta().code())
                == Some("InvalidLaunchTemplateName.AlreadyExistsException") => {}
        Err(error) => return Err(aws_error("CreateLaunchTemplate")(error)),
    }
    lock(&provider.launch_templates).insert(name.clone(), std::time::Instant::now());
    Ok(name)
}

/// Deletes this cluster's launch templates (narrowed by `filter`) for which `doomed(name,
/// created)` holds; returns how many.
pub async fn delete_launch_templates(
    provider: &AwsCloudProvider,
    filter: Option<aws_sdk_ec2::types::Filter>,
    doomed: impl Fn(&str, Option<chrono::DateTime<chrono::Utc>>) -> bool,
) -> Result<usize, CloudError> {
    let cluster = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", labels::EC2_CLUSTER_TAG))
        .values(provider.cluster_name())
        .build();
    let mut request = provider.ec2.describe_launch_templates().filters(cluster);
    if let Some(filter) = filter {
        request = request.filters(filter);
    }
    let mut names = Vec::new();
    let mut pages = request.into_paginator().send();
    while let Some(page) = pages.next().await {
        for template in page.map_err(aws_error("DescribeLaunchTemplates"))?.launch_templates() {
            let Some(name) = template.launch_template_name() else { continue };
            let created =
                template.create_time().and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
            if doomed(name, created) {
                names.push(name.to_owned());
            }
        }
    }
    for name in &names {
        match provider.ec2.delete_launch_template().launch_template_name(name).send().await {
            Ok(_) => tracing::info!(launch_template = %name, "deleted launch template"),
            Err(error)
                if error
                    .as_service_error()
                    .and_then(|e| e.meta().code())
                    .is_some_and(|c| c.starts_with("InvalidLaunchTemplateName.NotFound")) => {}
            Err(error) => return Err(aws_error("DeleteLaunchTemplate")(error)),
        }
        lock(&provider.launch_templates).remove(name);
    }
    Ok(names.len())
}

fn ownership_tags(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (format!("{}{cluster}", labels::EC2_CLUSTER_TAG_PREFIX), "owned".to_owned()),
        (labels::EC2_CLUSTER_TAG.to_owned(), cluster.to_owned()),
    ])
}

fn tag_specification(resource: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    let tags = tags.iter().map(|(key, value)| Tag::builder().key(key).value(value).build()).collect();
    TagSpecification::builder().resource_type(resource).set_tags(Some(tags)).build()
}

/// The tags on the instance, its volumes and network interfaces.
pub fn instance_tags(cluster: &str, claim: &NodeClaim, class: &EC2NodeClass) -> BTreeMap<String, String> {
    let mut tags = class.spec.tags.clone();
    tags.extend(ownership_tags(cluster));
    let name = claim.name_any();
    tags.insert(labels::EC2_NODECLAIM_TAG.to_owned(), name.clone());
    tags.insert(labels::EC2_NODECLASS_TAG.to_owned(), class.name_any());
    if let Some(pool) = claim.labels().get(labels::NODEPOOL) {
        tags.insert(labels::EC2_NODEPOOL_TAG.to_owned(), pool.clone());
    }
    tags.insert("Name".to_owned(), name);
    tags
}

fn node_family(class: &EC2NodeClass) -> AmiFamily {
    let alias = class.spec.ami_selector_terms.iter().find_map(|t| t.alias.as_deref());
    match alias.map(ami::Alias::parse) {
        Some(Ok(alias)) => alias.family,
        _ => class.spec.ami_family.unwrap_or(AmiFamily::Custom),
    }
}

/// `stoker-<uid>-<hash of the request>`: the same NodeClaim sending the same request gets the
/// same token; a different request (after a capacity error) gets a new one, as EC2 refuses a
/// reused token with different parameters.
fn client_token(claim: &NodeClaim, plan: &LaunchPlan) -> String {
    let mut hasher = Sha256::new();
    hasher.update(plan.capacity_type.as_bytes());
    for entry in &plan.overrides {
        hasher.update(format!("|{}|{}", entry.instance_type, entry.subnet_id).as_bytes());
    }
    let hash: String = hasher.finalize().iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    let uid = claim.uid().unwrap_or_else(|| claim.name_any());
    let token = format!("stoker-{uid}-{hash}");
    token.chars().take(64).collect()
}

/// One CreateFleet call, with a launch template per architecture.
async fn create_fleet(
    provider: &AwsCloudProvider,
    claim: &NodeClaim,
    plan: &LaunchPlan,
    templates: &BTreeMap<String, Template>,
    tags: &BTreeMap<String, String>,
) -> Result<Outcome, CloudError> {
    let spot = plan.capacity_type == labels::CAPACITY_TYPE_SPOT;
    // Configs in the order of their cheapest override, so the overall cheapest comes first.
    let mut arches: Vec<&str> = Vec::new();
    for entry in &plan.overrides {
        if !arches.contains(&entry.arch.as_str()) {
            arches.push(&entry.arch);
        }
    }
    let mut configs = Vec::new();
    for (arch, template) in arches.into_iter().filter_map(|arch| Some((arch, templates.get(arch)?))) {
        let overrides: Vec<FleetLaunchTemplateOverridesRequest> = plan
            .overrides
            .iter()
            .filter(|o| o.arch == arch)
            .map(|o: &Override| {
                FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(o.instance_type.as_str().into())
                    .subnet_id(&o.subnet_id)
                    .priority(o.priority)
                    .build()
            })
            .collect();
        configs.push(
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_name(&template.name)
                        .version("$Latest")
                        .build(),
                )
                .set_overrides(Some(overrides))
                .build(),
        );
    }
    let mut request = provider
        .ec2
        .create_fleet()
        .r#type(FleetType::Instant)
        .client_token(client_token(claim, plan))
        .set_launch_template_configs(Some(configs))
        .target_capacity_specification(
            TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(1)
                .default_target_capacity_type(if spot {
                    DefaultTargetCapacityType::Spot
                } else {
                    DefaultTargetCapacityType::OnDemand
                })
                .build(),
        );
    request = if spot {
        request.spot_options(
            SpotOptionsRequest::builder().allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized).build(),
        )
    } else {
        request.on_demand_options(
            OnDemandOptionsRequest::builder().allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice).build(),
        )
    };
    for resource in [ResourceType::Instance, ResourceType::Volume, ResourceType::NetworkInterface] {
        request = request.tag_specifications(tag_specification(resource, tags));
    }
    tracing::info!(nodeclaim = %claim.name_any(), capacity_type = %plan.capacity_type, overrides = plan.overrides.len(), "calling CreateFleet");
    let output = request.send().await.map_err(aws_error("CreateFleet"))?;

    if let Some(launched) = output.instances().iter().find(|i| !i.instance_ids().is_empty()) {
        let id = launched.instance_ids()[0].clone();
        let overrides = launched.launch_template_and_overrides().and_then(|l| l.overrides());
        let instance_type = launched
            .instance_type()
            .or_else(|| overrides.and_then(|o| o.instance_type()))
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let subnet = overrides.and_then(|o| o.subnet_id());
        let chosen = plan
            .overrides
            .iter()
            .find(|o| o.instance_type == instance_type && subnet.is_none_or(|s| s == o.subnet_id))
            .ok_or_else(|| CloudError::Aws {
                operation: "CreateFleet",
                code: "UnexpectedResponse".into(),
                message: format!("launched {instance_type} {id}, which was not requested"),
            })?;
        let zone = overrides.and_then(|o| o.availability_zone()).unwrap_or(&chosen.zone).to_owned();
        let capacity_type = match launched.lifecycle() {
            Some(InstanceLifecycle::Spot) => labels::CAPACITY_TYPE_SPOT,
            Some(_) => labels::CAPACITY_TYPE_ON_DEMAND,
            None => plan.capacity_type.as_str(),
        };
        return Ok(Outcome::Launched(Instance {
            provider_id: super::instances::provider_id(&zone, &id),
            id,
            instance_type,
            zone,
            capacity_type: capacity_type.to_owned(),
            image_id: templates.get(&chosen.arch).map(|t| t.image_id.clone()).unwrap_or_default(),
            state: "pending".into(),
            launch_time: Some(chrono::Utc::now()),
            tags: tags.clone(),
        }));
    }
    let failures = output
        .errors()
        .iter()
        .map(|error| {
            let overrides = error.launch_template_and_overrides().and_then(|l| l.overrides());
            Failure {
                code: error.error_code().unwrap_or("Unknown").to_owned(),
                message: error.error_message().unwrap_or_default().to_owned(),
                instance_type: overrides.and_then(|o| o.instance_type()).map(|t| t.as_str().to_owned()),
                zone: overrides.and_then(|o| o.availability_zone()).map(str::to_owned),
                subnet_id: overrides.and_then(|o| o.subnet_id()).map(str::to_owned),
            }
        })
        .collect::<Vec<_>>();
    if failures.is_empty() {
        return Err(CloudError::Aws {
            operation: "CreateFleet",
            code: "UnexpectedResponse".into(),
            message: "no instance and no error in the response".into(),
        });
    }
    Ok(Outcome::Failed(failures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Taint;

    use crate::apis::{nodeclaim::NodeClaimSpec, nodepool::NodeClassReference};

    fn claim() -> NodeClaim {
        let mut claim = NodeClaim::new(
            "spot-x7k2p",
            NodeClaimSpec {
                requirements: Vec::new(),
                resources: Default::default(),
                taints: vec![Taint {
                    key: "dedicated".into(),
                    value: Some("web".into()),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }],
                startup_taints: vec![Taint {
                    key: "cni-not-ready".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }],
                node_class_ref: NodeClassReference {
                    group: "stoker.dev".into(),
                    kind: "EC2NodeClass".into(),
                    name: "default".into(),
                },
                expire_after: None,
                termination_grace_period: None,
            },
        );
        claim.metadata.uid = Some("0b6f2a1e-7f7c-4c55-9d5e-3f2b1d9c8a70".into());
        claim.metadata.labels = Some(BTreeMap::from([
            (labels::NODEPOOL.into(), "spot".into()),
            (labels::NODECLAIM.into(), "spot-x7k2p".into()),
            ("team".into(), "web".into()),
            ("node.kubernetes.io/exclude-from-external-load-balancers".into(), "true".into()),
        ]));
        claim
    }

    fn plan(types: &[&str]) -> LaunchPlan {
        LaunchPlan {
            capacity_type: "spot".into(),
            overrides: types
                .iter()
                .map(|t| Override {
                    instance_type: t.to_string(),
                    subnet_id: "subnet-a".into(),
                    zone: "us-east-1a".into(),
                    arch: "amd64".into(),
                    price: 0.1,
                    priority: 0.0,
                })
                .collect(),
        }
    }

    #[test]
    fn client_tokens_are_stable_per_request_and_differ_after_a_change() {
        let token = client_token(&claim(), &plan(&["m5.large", "c5.large"]));
        assert!(token.starts_with("stoker-0b6f2a1e-7f7c-4c55-9d5e-3f2b1d9c8a70-"), "{token}");
        assert!(token.len() <= 64);
        assert_eq!(client_token(&claim(), &plan(&["m5.large", "c5.large"])), token);
        assert_ne!(client_token(&claim(), &plan(&["c5.large"])), token);
    }

    #[test]
    fn the_node_registers_with_its_labels_and_taints_but_not_restricted_ones() {
        let labels: Vec<String> = bootstrap_labels(&claim()).into_keys().collect();
        assert_eq!(labels, ["stoker.dev/nodepool", "team"]);
        let taints: Vec<String> = bootstrap_taints(&claim()).into_iter().map(|t| t.key).collect();
        assert_eq!(taints, ["dedicated", "cni-not-ready", labels::UNREGISTERED_TAINT]);
    }
}
