//! Launch templates: one per distinct configuration (AMI, security groups, user data, instance
//! profile, volumes, metadata options, tags, capacity reservation use). The configuration is hashed into the template's
//! name, so the same configuration reuses its template, a changed one gets a new template, and
//! templates no configuration names any more can be found (by the cluster tag) and deleted.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    CapacityReservationPreference, CapacityReservationTarget, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateCapacityReservationSpecificationRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMarketOptionsRequest, LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateInstanceMetadataProtocolIpv6,
    LaunchTemplateInstanceMetadataTagsState, LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplatesMonitoringRequest, MarketType, RequestLaunchTemplateData,
    ResourceType, VolumeType,
};
use base64::Engine;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{allocatable::NodeSettings, tags::ec2_tags};
use crate::{
    apis::ec2nodeclass::{
        AmiFamily, BlockDevice, BlockDeviceMapping, EC2NodeClass, InstanceStorePolicy, MetadataOptions,
        VolumeType as ApiVolumeType,
    },
    cloudprovider::CloudError,
    scheduling::{
        quantity::{parse_resource, parse_scaled},
        resources::EPHEMERAL_STORAGE,
    },
};

/// Everything a launch template holds. Serialized (with sorted maps) to name the template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchTemplateSpec {
    pub image_id: String,
    pub user_data: Option<String>,
    pub security_group_ids: Vec<String>,
    pub instance_profile: Option<String>,
    pub metadata_options: MetadataOptions,
    pub block_devices: Vec<BlockDeviceMapping>,
    pub detailed_monitoring: bool,
    pub associate_public_ip_address: Option<bool>,
    /// Tags of the network interfaces it launches: the node class's tags and the cluster's
    /// ownership tags (instances and volumes get theirs, per NodeClaim, from CreateFleet).
    pub tags: BTreeMap<String, String>,
    /// Left out of the name while EC2's default, so templates from before reservations keep
    /// their names.
    #[serde(skip_serializing_if = "ReservationUse::is_open")]
    pub reservations: ReservationUse,
}

/// How a template's launches use On-Demand Capacity Reservations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub enum ReservationUse {
    /// EC2's default: a matching open reservation is used (the node class selects none).
    #[default]
    Open,
    /// Into this reservation only (a `reserved` launch).
    Target(String),
    /// Into this Capacity Block only, as its market type (EC2 launches into a block nothing
    /// else).
    Block(String),
    /// Never into a reservation: the node class selects reservations, and their room is counted
    /// by the launches that target them, so no other launch may take it unseen.
    None,
}

impl ReservationUse {
    fn is_open(&self) -> bool {
        *self == Self::Open
    }
}

impl LaunchTemplateSpec {
    /// `stoker/<cluster>/<first 16 hex digits of the SHA-256 of the configuration>`.
    pub fn name(&self, cluster: &str) -> String {
        let canonical = serde_json::to_vec(self).expect("a launch template spec always serializes");
        let digest = Sha256::digest(&canonical);
        let hex: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
        format!("stoker/{cluster}/{hex}")
    }

    /// The CreateLaunchTemplate payload. Subnets and instance types come from the fleet's
    /// overrides; tags for instances and volumes from the fleet's tag specifications.
    pub fn request_data(&self) -> Result<RequestLaunchTemplateData, CloudError> {
        let metadata = &self.metadata_options;
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(&self.image_id)
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::from(metadata.http_endpoint.as_str()))
                    .http_protocol_ipv6(LaunchTemplateInstanceMetadataProtocolIpv6::from(
                        metadata.http_protocol_ipv6.as_str(),
                    ))
                    .http_put_response_hop_limit(metadata.http_put_response_hop_limit as i32)
                    .http_tokens(LaunchTemplateHttpTokensState::from(metadata.http_tokens.as_str()))
                    .instance_metadata_tags(LaunchTemplateInstanceMetadataTagsState::Disabled)
                    .build(),
            )
            .monitoring(LaunchTemplatesMonitoringRequest::builder().enabled(self.detailed_monitoring).build())
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::NetworkInterface)
                    .set_tags(Some(ec2_tags(&self.tags)))
                    .build(),
            );
        match &self.reservations {
            ReservationUse::Open => {}
            ReservationUse::Target(id) | ReservationUse::Block(id) => {
                data = data.capacity_reservation_specification(
                    LaunchTemplateCapacityReservationSpecificationRequest::builder()
                        .capacity_reservation_target(
                            CapacityReservationTarget::builder().capacity_reservation_id(id).build(),
                        )
                        .build(),
                );
                if matches!(self.reservations, ReservationUse::Block(_)) {
                    data = data.instance_market_options(
                        LaunchTemplateInstanceMarketOptionsRequest::builder()
                            .market_type(MarketType::CapacityBlock)
                            .build(),
                    );
                }
            }
            ReservationUse::None => {
                data = data.capacity_reservation_specification(
                    LaunchTemplateCapacityReservationSpecificationRequest::builder()
                        .capacity_reservation_preference(CapacityReservationPreference::None)
                        .build(),
                )
            }
        }
        if let Some(user_data) = &self.user_data {
            data = data.user_data(base64::engine::general_purpose::STANDARD.encode(user_data));
        }
        if let Some(profile) = &self.instance_profile {
            data = data.iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(profile).build(),
            );
        }
        for mapping in &self.block_devices {
            data = data.block_device_mappings(block_device(mapping)?);
        }
        // Security groups go on the interface when the public IP setting is explicit, as EC2
        // refuses both a top-level group list and an interface specification.
        data = match self.associate_public_ip_address {
            Some(public) => data.network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(public)
                    .set_groups(Some(self.security_group_ids.clone()))
                    .build(),
            ),
            None => data.set_security_group_ids(Some(self.security_group_ids.clone())),
        };
        Ok(data.build())
    }
}

fn block_device(mapping: &BlockDeviceMapping) -> Result<LaunchTemplateBlockDeviceMappingRequest, CloudError> {
    let ebs: &BlockDevice = &mapping.ebs;
    let size = ebs.volume_size.as_ref().map(volume_gib).transpose()?;
    let volume_type = ebs.volume_type.map(|t| VolumeType::from(volume_type_name(t)));
    Ok(LaunchTemplateBlockDeviceMappingRequest::builder()
        .device_name(&mapping.device_name)
        .ebs(
            LaunchTemplateEbsBlockDeviceRequest::builder()
                .set_volume_size(size)
                .set_volume_type(volume_type)
                .set_iops(ebs.iops.map(|v| v as i32))
                .set_throughput(ebs.throughput.map(|v| v as i32))
                .set_encrypted(ebs.encrypted)
                .set_kms_key_id(ebs.kms_key_id.clone())
                .delete_on_termination(ebs.delete_on_termination.unwrap_or(true))
                .set_snapshot_id(ebs.snapshot_id.clone())
                .build(),
        )
        .build())
}

fn volume_type_name(volume_type: ApiVolumeType) -> &'static str {
    match volume_type {
        ApiVolumeType::Standard => "standard",
        ApiVolumeType::Io1 => "io1",
        ApiVolumeType::Io2 => "io2",
        ApiVolumeType::Gp2 => "gp2",
        ApiVolumeType::Gp3 => "gp3",
        ApiVolumeType::Sc1 => "sc1",
        ApiVolumeType::St1 => "st1",
    }
}

/// A volume size in whole GiB (EC2's unit), rounded up.
pub fn volume_gib(size: &Quantity) -> Result<i32, CloudError> {
    let bytes = parse_scaled(&size.0, 1)
        .map_err(|e| CloudError::InvalidConfiguration(format!("blockDeviceMappings volumeSize {:?}: {e}", size.0)))?;
    let gib = (bytes + (1 << 30) - 1) >> 30;
    i32::try_from(gib).ok().filter(|gib| *gib >= 1).ok_or_else(|| {
        CloudError::InvalidConfiguration(format!("blockDeviceMappings volumeSize {:?} is out of range", size.0))
    })
}

/// Volumes when the node class names none: what each family's AMI expects, encrypted gp3.
pub fn default_block_devices(family: AmiFamily) -> Vec<BlockDeviceMapping> {
    let volume = |device: &str, size: &str, root: bool| BlockDeviceMapping {
        device_name: device.to_owned(),
        ebs: BlockDevice {
            volume_size: Some(Quantity(size.to_owned())),
            volume_type: Some(ApiVolumeType::Gp3),
            iops: None,
            throughput: None,
            encrypted: Some(true),
            kms_key_id: None,
            delete_on_termination: Some(true),
            snapshot_id: None,
        },
        root_volume: root,
    };
    match family {
        AmiFamily::Bottlerocket => vec![volume("/dev/xvda", "4Gi", false), volume("/dev/xvdb", "20Gi", true)],
        AmiFamily::AL2023 => vec![volume("/dev/xvda", "20Gi", true)],
        AmiFamily::Custom => Vec::new(),
    }
}

/// What the node class sets that shapes every instance type's capacity: its kubelet settings,
/// its root volume (the mapping marked root, else the family's root device, as the launch
/// template gets them), and its instance store policy.
pub fn node_settings(class: &EC2NodeClass) -> NodeSettings {
    let family = node_family(class);
    let mappings = match class.spec.block_device_mappings.is_empty() {
        true => default_block_devices(family),
        false => class.spec.block_device_mappings.clone(),
    };
    let root_device = if family == AmiFamily::Bottlerocket { "/dev/xvdb" } else { "/dev/xvda" };
    let root =
        mappings.iter().find(|m| m.root_volume).or_else(|| mappings.iter().find(|m| m.device_name == root_device));
    NodeSettings {
        kubelet: class.spec.kubelet.clone(),
        root_volume: root
            .and_then(|m| m.ebs.volume_size.as_ref())
            .and_then(|size| parse_resource(EPHEMERAL_STORAGE, &size.0).ok()),
        instance_store_raid0: class.spec.instance_store_policy == Some(InstanceStorePolicy::RAID0),
    }
}

/// The bootstrap family of a node class: its alias's, else `amiFamily`, else Custom.
pub fn node_family(class: &EC2NodeClass) -> AmiFamily {
    let alias = class.spec.ami_selector_terms.iter().find_map(|t| t.alias.as_deref());
    match alias.map(super::ami::Alias::parse) {
        Some(Ok(alias)) => alias.family,
        _ => class.spec.ami_family.unwrap_or(AmiFamily::Custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchTemplateSpec {
        LaunchTemplateSpec {
            image_id: "ami-123".into(),
            user_data: Some("hello".into()),
            security_group_ids: vec!["sg-1".into()],
            instance_profile: Some("nodes".into()),
            metadata_options: MetadataOptions::default(),
            block_devices: default_block_devices(AmiFamily::AL2023),
            detailed_monitoring: false,
            associate_public_ip_address: None,
            tags: BTreeMap::from([("team".into(), "web".into())]),
            reservations: ReservationUse::Open,
        }
    }

    #[test]
    fn reservation_use_reaches_the_template_and_its_name() {
        let open = spec();
        assert_eq!(open.request_data().expect("valid").capacity_reservation_specification(), None);
        // The default leaves the name as it was before reservations existed.
        assert_eq!(open.name("prod"), "stoker/prod/d9ec8c456c670b75");
        let target = LaunchTemplateSpec { reservations: ReservationUse::Target("cr-1".into()), ..spec() };
        let data = target.request_data().expect("valid");
        let chosen = data.capacity_reservation_specification().and_then(|s| s.capacity_reservation_target());
        assert_eq!(chosen.and_then(|t| t.capacity_reservation_id()), Some("cr-1"));
        let none = LaunchTemplateSpec { reservations: ReservationUse::None, ..spec() };
        let data = none.request_data().expect("valid");
        let preference = data.capacity_reservation_specification().and_then(|s| s.capacity_reservation_preference());
        assert_eq!(preference, Some(&CapacityReservationPreference::None));
        let names = [open.name("prod"), target.name("prod"), none.name("prod")];
        assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);
        assert!(data_market(&target).is_none(), "an ordinary reservation is on-demand");
        // A Capacity Block: targeted, as its own market type, under a name of its own.
        let block = LaunchTemplateSpec { reservations: ReservationUse::Block("cr-1".into()), ..spec() };
        let data = block.request_data().expect("valid");
        let chosen = data.capacity_reservation_specification().and_then(|s| s.capacity_reservation_target());
        assert_eq!(chosen.and_then(|t| t.capacity_reservation_id()), Some("cr-1"));
        assert_eq!(data_market(&block), Some(MarketType::CapacityBlock));
        assert_ne!(block.name("prod"), target.name("prod"));
    }

    fn data_market(spec: &LaunchTemplateSpec) -> Option<MarketType> {
        spec.request_data().expect("valid").instance_market_options().and_then(|m| m.market_type()).cloned()
    }

    #[test]
    fn the_name_follows_the_configuration() {
        let name = spec().name("prod");
        assert!(name.starts_with("stoker/prod/") && name.len() == "stoker/prod/".len() + 16, "{name}");
        assert_eq!(spec().name("prod"), name, "stable");
        let mut changed = spec();
        changed.image_id = "ami-456".into();
        assert_ne!(changed.name("prod"), name);
    }

    #[test]
    fn requests_imdsv2_with_hop_limit_one_and_encodes_user_data() {
        let data = spec().request_data().expect("valid");
        let metadata = data.metadata_options().expect("metadata options");
        assert_eq!(metadata.http_tokens(), Some(&LaunchTemplateHttpTokensState::Required));
        assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
        assert_eq!(data.user_data(), Some("aGVsbG8="));
        assert_eq!(data.security_group_ids(), ["sg-1"]);
        let root = &data.block_device_mappings()[0];
        assert_eq!(root.ebs().and_then(|e| e.volume_size()), Some(20));
        assert_eq!(root.ebs().and_then(|e| e.encrypted()), Some(true));
    }

    #[test]
    fn a_public_ip_setting_moves_security_groups_onto_the_interface() {
        let mut public = spec();
        public.associate_public_ip_address = Some(true);
        let data = public.request_data().expect("valid");
        assert!(data.security_group_ids().is_empty());
        assert_eq!(data.network_interfaces()[0].groups(), ["sg-1"]);
    }

    #[test]
    fn volume_sizes_round_up_to_gib() {
        assert_eq!(volume_gib(&Quantity("50Gi".into())), Ok(50));
        assert_eq!(volume_gib(&Quantity("20G".into())), Ok(19));
        assert_eq!(volume_gib(&Quantity("1Ti".into())), Ok(1024));
        assert!(volume_gib(&Quantity("0".into())).is_err());
        assert!(volume_gib(&Quantity("lots".into())).is_err());
    }

    #[test]
    fn the_root_volume_and_store_policy_shape_the_node_settings() {
        let class = |spec: serde_json::Value| -> EC2NodeClass {
            let mut spec = spec;
            spec["subnetSelectorTerms"] = serde_json::json!([{"tags": {"a": "b"}}]);
            spec["securityGroupSelectorTerms"] = serde_json::json!([{"tags": {"a": "b"}}]);
            serde_json::from_value(serde_json::json!({
                "apiVersion": "stoker.dev/v1alpha1", "kind": "EC2NodeClass", "metadata": {"name": "c"}, "spec": spec
            }))
            .expect("a node class")
        };
        const GIB: i64 = 1 << 30;
        let al2023 = class(serde_json::json!({"amiSelectorTerms": [{"alias": "al2023@latest"}]}));
        assert_eq!(node_settings(&al2023).root_volume, Some(20 * GIB));
        let sized = class(serde_json::json!({
            "amiSelectorTerms": [{"alias": "bottlerocket@latest"}],
            "instanceStorePolicy": "RAID0",
            "blockDeviceMappings": [
                {"deviceName": "/dev/xvda", "ebs": {"volumeSize": "4Gi"}},
                {"deviceName": "/dev/xvdb", "ebs": {"volumeSize": "200Gi"}}
            ]
        }));
        let settings = node_settings(&sized);
        assert_eq!(settings.root_volume, Some(200 * GIB), "Bottlerocket's data volume is its root for pods");
        assert!(settings.instance_store_raid0);
        let marked = class(serde_json::json!({
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "blockDeviceMappings": [{"deviceName": "/dev/sdf", "rootVolume": true, "ebs": {"volumeSize": "80Gi"}}]
        }));
        assert_eq!(node_settings(&marked).root_volume, Some(80 * GIB));
    }
}
