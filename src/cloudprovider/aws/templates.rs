//! Launch templates in EC2: one per node class content, AMI and capacity reservation targeted
//! (none for launches outside reservations), created on first use,
//! remembered while launches use them, deleted with their node class or once idle. What goes
//! into a template and its name come from the pure `launchtemplate.rs`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use aws_sdk_ec2::types::ResourceType;
use kube::ResourceExt;

use super::{
    AwsCloudProvider, aws_error,
    bootstrap::{NodeBootstrap, bootstrap_labels, bootstrap_taints, user_data},
    createfleet::Template,
    fleet::TemplateKey,
    launchtemplate::{LaunchTemplateSpec, ReservationUse, default_block_devices, node_family, node_settings},
    lock,
    nodeclass::ready_status,
    tags::{ownership_tags, tag_specification},
};
use crate::{
    apis::{
        ec2nodeclass::{EC2NodeClass, EC2NodeClassStatus},
        labels,
        nodeclaim::NodeClaim,
    },
    cloudprovider::CloudError,
};

/// The launch templates this process knows to exist, with when a launch last used each.
#[derive(Default)]
pub struct TemplatesInUse(Mutex<HashMap<String, Instant>>);

impl TemplatesInUse {
    /// Whether `name` is known to exist; if so, marks it used now.
    fn touch(&self, name: &str) -> bool {
        match lock(&self.0).get_mut(name) {
            Some(used) => {
                *used = Instant::now();
                true
            }
            None => false,
        }
    }

    fn remember(&self, name: &str) {
        lock(&self.0).insert(name.to_owned(), Instant::now());
    }

    /// Forgets a template (deleted, or found missing), so the next launch creates it again.
    pub fn forget(&self, name: &str) {
        lock(&self.0).remove(name);
    }

    fn used_within(&self, idle: Duration) -> Vec<String> {
        lock(&self.0).iter().filter(|(_, used)| used.elapsed() < idle).map(|(name, _)| name.clone()).collect()
    }
}

/// The launch templates for every AMI the node class resolved (outside reservations), created
/// if they do not exist yet.
pub async fn prepare(provider: &AwsCloudProvider, claim: &NodeClaim, class: &EC2NodeClass) -> Result<(), CloudError> {
    let status = ready_status(class)?;
    let keys = status.amis.iter().map(|ami| TemplateKey { image: ami.id.clone(), reservation: None });
    for_keys(provider, claim, class, status, keys).await?;
    Ok(())
}

/// The launch template for each key (an AMI of the node class and the reservation targeted).
pub(super) async fn for_keys(
    provider: &AwsCloudProvider,
    claim: &NodeClaim,
    class: &EC2NodeClass,
    status: &EC2NodeClassStatus,
    keys: impl Iterator<Item = TemplateKey>,
) -> Result<BTreeMap<TemplateKey, Template>, CloudError> {
    let family = node_family(class);
    let bootstrap = NodeBootstrap {
        labels: bootstrap_labels(claim),
        taints: bootstrap_taints(claim),
        kubelet: class.spec.kubelet.as_ref(),
        custom: class.spec.user_data.as_deref(),
        instance_store_raid0: node_settings(class).instance_store_raid0,
    };
    let user_data = user_data(family, &provider.options.cluster, &bootstrap)?;
    let block_devices = if class.spec.block_device_mappings.is_empty() {
        default_block_devices(family)
    } else {
        class.spec.block_device_mappings.clone()
    };
    let mut templates = BTreeMap::new();
    for key in keys {
        if templates.contains_key(&key) {
            continue;
        }
        let image =
            status.amis.iter().find(|image| image.id == key.image).ok_or_else(|| {
                CloudError::InvalidConfiguration(format!("AMI {} is not the node class's", key.image))
            })?;
        let mut security_group_ids: Vec<String> = status.security_groups.iter().map(|g| g.id.clone()).collect();
        security_group_ids.sort();
        let spec = LaunchTemplateSpec {
            image_id: image.id.clone(),
            user_data: user_data.clone(),
            security_group_ids: security_group_ids.clone(),
            instance_profile: status.instance_profile.clone(),
            metadata_options: class.spec.metadata_options.clone(),
            block_devices: block_devices.clone(),
            detailed_monitoring: class.spec.detailed_monitoring.unwrap_or(false),
            associate_public_ip_address: class.spec.associate_public_ip_address,
            tags: class.spec.tags.clone().into_iter().chain(ownership_tags(provider.cluster_name())).collect(),
            reservations: match &key.reservation {
                Some(id) if status.capacity_reservations.iter().any(|r| r.id == *id && r.is_capacity_block()) => {
                    ReservationUse::Block(id.clone())
                }
                Some(id) => ReservationUse::Target(id.clone()),
                None if class.spec.capacity_reservation_selector_terms.is_empty() => ReservationUse::Open,
                None => ReservationUse::None,
            },
        };
        let name = ensure(provider, class, &spec).await?;
        templates.insert(key, Template { name, image_id: image.id.clone(), security_group_ids });
    }
    Ok(templates)
}

async fn ensure(
    provider: &AwsCloudProvider,
    class: &EC2NodeClass,
    spec: &LaunchTemplateSpec,
) -> Result<String, CloudError> {
    let name = spec.name(provider.cluster_name());
    if provider.templates_in_use.touch(&name) {
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
    provider.templates_in_use.remember(&name);
    Ok(name)
}

/// Deletes this cluster's launch templates (narrowed by `filter`) for which `doomed(name,
/// created)` holds; returns how many.
pub(super) async fn delete(
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
        provider.templates_in_use.forget(name);
    }
    Ok(names.len())
}

/// Deletes this cluster's launch templates that no launch of this process used within `idle`
/// and that are older than that. A template deleted while still wanted is simply created again
/// by the next launch.
pub async fn prune(provider: &AwsCloudProvider, idle: Duration) -> Result<usize, CloudError> {
    let recent = provider.templates_in_use.used_within(idle);
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(idle).unwrap_or_default();
    delete(provider, None, |name, created| {
        !recent.iter().any(|r| r == name) && created.is_some_and(|created| created < cutoff)
    })
    .await
}
