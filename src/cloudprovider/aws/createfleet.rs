//! One CreateFleet call as pure functions: the request built from a [`LaunchPlan`] and the
//! launch templates, and the reply read back into the launched instances and the errors per
//! override. `batching.rs` sends the one and shares out the other.

use std::collections::BTreeMap;

use aws_sdk_ec2::{
    operation::create_fleet::CreateFleetInput,
    operation::create_fleet::{CreateFleetOutput, builders::CreateFleetInputBuilder},
    types::{
        DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
        FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType, InstanceLifecycle,
        OnDemandOptionsRequest, ResourceType, SpotAllocationStrategy, SpotOptionsRequest,
        TargetCapacitySpecificationRequest,
    },
};
use sha2::{Digest, Sha256};

use super::{
    fleet::{LaunchPlan, Override, TemplateKey},
    instances,
    tags::tag_specification,
};
use crate::{
    apis::labels,
    cloudprovider::{CloudError, Instance},
};

/// A launch template in use, with the AMI it launches.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub image_id: String,
    /// The security groups it attaches, sorted.
    pub security_group_ids: Vec<String>,
}

/// One error CreateFleet reported for an override.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub subnet_id: Option<String>,
}

/// What a CreateFleet reply says: the instances launched and the errors for the overrides that
/// failed (a call for several instances can have both).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub launched: Vec<Instance>,
    pub failures: Vec<Failure>,
}

/// What one NodeClaim gets from a call: its instance with the errors EC2 reported for the
/// overrides it could not fill on the way (remembered as a failed launch's are), or the call's
/// errors.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Launched(Box<Instance>, Vec<Failure>),
    Failed(Vec<Failure>),
}

/// The same NodeClaims sending the same request get the same token, so EC2 answers a repeated
/// call with the instances of the first; a different request (after a capacity error) gets a new
/// one, as EC2 refuses a reused token with different parameters. `stoker-<uid>-<hash of the
/// request>` for one NodeClaim, `stoker-<hash of their UIDs and the request>` for several.
pub fn client_token(uids: &[&str], plan: &LaunchPlan) -> String {
    let mut hasher = Sha256::new();
    hasher.update(plan.capacity_type.as_bytes());
    for entry in &plan.overrides {
        hasher.update(format!("|{}|{}", entry.instance_type, entry.subnet_id).as_bytes());
        // Only when present, so tokens of launches outside reservations stay what they were.
        if let Some(reservation) = &entry.reservation {
            hasher.update(format!("|{reservation}").as_bytes());
        }
    }
    let token = match uids {
        [uid] => {
            let hash: String = hasher.finalize().iter().take(8).map(|byte| format!("{byte:02x}")).collect();
            format!("stoker-{uid}-{hash}")
        }
        _ => {
            let mut sorted = uids.to_vec();
            sorted.sort_unstable();
            for uid in sorted {
                hasher.update(format!("|{uid}").as_bytes());
            }
            let hash: String = hasher.finalize().iter().take(24).map(|byte| format!("{byte:02x}")).collect();
            format!("stoker-{hash}")
        }
    };
    token.chars().take(64).collect()
}

/// An instant fleet of `count` instances: a launch-template config per template (by AMI ID:
/// one per architecture and per accelerated variant, and per capacity reservation targeted),
/// its overrides with their priorities, the capacity type's allocation strategy (a reserved
/// launch is an on-demand one whose templates target the reservations, of the `capacity-block`
/// market into Capacity Blocks), and `tags` on the instances, their volumes and the fleet.
pub fn request(
    plan: &LaunchPlan,
    templates: &BTreeMap<TemplateKey, Template>,
    client_token: String,
    tags: &BTreeMap<String, String>,
    count: usize,
) -> CreateFleetInputBuilder {
    let spot = plan.capacity_type == labels::CAPACITY_TYPE_SPOT;
    // Configs in the order of their cheapest override, so the overall cheapest comes first.
    let mut keys: Vec<TemplateKey> = Vec::new();
    for entry in &plan.overrides {
        let key = entry.template_key();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let configs = keys
        .into_iter()
        .filter_map(|key| Some((templates.get(&key)?, key)))
        .map(|(template, key)| {
            let overrides = plan
                .overrides
                .iter()
                .filter(|o| o.template_key() == key)
                .map(|o| {
                    FleetLaunchTemplateOverridesRequest::builder()
                        .instance_type(o.instance_type.as_str().into())
                        .subnet_id(&o.subnet_id)
                        .priority(o.priority)
                        .build()
                })
                .collect();
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_name(&template.name)
                        .version("$Latest")
                        .build(),
                )
                .set_overrides(Some(overrides))
                .build()
        })
        .collect();
    let capacity = TargetCapacitySpecificationRequest::builder()
        .total_target_capacity(i32::try_from(count).unwrap_or(i32::MAX))
        .default_target_capacity_type(if spot {
            DefaultTargetCapacityType::Spot
        } else if plan.capacity_block() {
            DefaultTargetCapacityType::CapacityBlock
        } else {
            DefaultTargetCapacityType::OnDemand
        });
    let mut request = CreateFleetInput::builder()
        .r#type(FleetType::Instant)
        .client_token(client_token)
        .set_launch_template_configs(Some(configs))
        .target_capacity_specification(capacity.build());
    // EC2 weighs its own prices unless NodeOverlays set others: then the priorities carry them.
    request = match (spot, plan.follow_priorities) {
        (true, follow) => {
            let strategy = if follow {
                SpotAllocationStrategy::CapacityOptimizedPrioritized
            } else {
                SpotAllocationStrategy::PriceCapacityOptimized
            };
            request.spot_options(SpotOptionsRequest::builder().allocation_strategy(strategy).build())
        }
        (false, follow) => {
            let strategy = if follow {
                FleetOnDemandAllocationStrategy::Prioritized
            } else {
                FleetOnDemandAllocationStrategy::LowestPrice
            };
            request.on_demand_options(OnDemandOptionsRequest::builder().allocation_strategy(strategy).build())
        }
    };
    // Network interfaces take their tags from the launch template: CreateFleet tags only what
    // EC2 documents for an instant fleet (and what Karpenter sends).
    for resource in [ResourceType::Instance, ResourceType::Volume, ResourceType::Fleet] {
        request = request.tag_specifications(tag_specification(resource, tags));
    }
    request
}

/// Every instance the reply names (each checked against what was asked for) and every error it
/// lists. `now` stands in for the launch time, which the reply does not carry.
pub fn reply(
    output: &CreateFleetOutput,
    plan: &LaunchPlan,
    templates: &BTreeMap<TemplateKey, Template>,
    tags: &BTreeMap<String, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Reply, CloudError> {
    let unexpected =
        |message: String| CloudError::Aws { operation: "CreateFleet", code: "UnexpectedResponse".into(), message };
    let mut launched = Vec::new();
    for group in output.instances() {
        let overrides = group.launch_template_and_overrides().and_then(|l| l.overrides());
        let instance_type = group
            .instance_type()
            .or_else(|| overrides.and_then(|o| o.instance_type()))
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let subnet = overrides.and_then(|o| o.subnet_id());
        // Two reservations of one type in one subnet differ only by their launch template.
        let template_name = group
            .launch_template_and_overrides()
            .and_then(|l| l.launch_template_specification())
            .and_then(|s| s.launch_template_name());
        let matching = |o: &&Override| o.instance_type == instance_type && subnet.is_none_or(|s| s == o.subnet_id);
        for id in group.instance_ids() {
            let chosen = plan
                .overrides
                .iter()
                .filter(matching)
                .find(|o| {
                    template_name.is_none_or(|name| templates.get(&o.template_key()).is_some_and(|t| t.name == name))
                })
                .or_else(|| plan.overrides.iter().find(matching))
                .ok_or_else(|| unexpected(format!("launched {instance_type} {id}, which was not requested")))?;
            let zone = overrides.and_then(|o| o.availability_zone()).unwrap_or(&chosen.zone).to_owned();
            let capacity_type = match group.lifecycle() {
                Some(InstanceLifecycle::Spot) => labels::CAPACITY_TYPE_SPOT,
                _ if chosen.reservation.is_some() => labels::CAPACITY_TYPE_RESERVED,
                Some(_) => labels::CAPACITY_TYPE_ON_DEMAND,
                None => plan.capacity_type.as_str(),
            };
            let template = templates.get(&chosen.template_key());
            launched.push(Instance {
                provider_id: instances::provider_id(&zone, id),
                id: id.clone(),
                instance_type: instance_type.clone(),
                zone,
                capacity_type: capacity_type.to_owned(),
                capacity_reservation: chosen.reservation.clone(),
                image_id: template.map(|t| t.image_id.clone()).unwrap_or_default(),
                subnet_id: chosen.subnet_id.clone(),
                security_group_ids: template.map(|t| t.security_group_ids.clone()).unwrap_or_default(),
                state: "pending".into(),
                launch_time: Some(now),
                tags: tags.clone(),
            });
        }
    }
    let failures: Vec<Failure> = output
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
        .collect();
    if launched.is_empty() && failures.is_empty() {
        return Err(unexpected("no instance and no error in the response".into()));
    }
    Ok(Reply { launched, failures })
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{
        CreateFleetError, CreateFleetInstance, FleetLaunchTemplateOverrides, InstanceType as Ec2InstanceType,
        LaunchTemplateAndOverridesResponse,
    };

    use super::*;
    use crate::apis::nodeclaim::NodeClaim;
    use crate::cloudprovider::aws::tags::{launch_tags, ownership_tags};

    fn claim() -> NodeClaim {
        let mut claim: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "stoker.dev/v1", "kind": "NodeClaim",
            "metadata": {"name": "spot-x7k2p", "uid": "0b6f2a1e-7f7c-4c55-9d5e-3f2b1d9c8a70"},
            "spec": {"nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"}}
        }))
        .unwrap();
        claim.metadata.labels = Some(BTreeMap::from([(labels::NODEPOOL.into(), "spot".into())]));
        claim
    }

    fn plan(capacity_type: &str, types: &[(&str, &str)]) -> LaunchPlan {
        LaunchPlan {
            capacity_type: capacity_type.into(),
            overrides: types
                .iter()
                .enumerate()
                .map(|(i, (instance_type, arch))| Override {
                    instance_type: instance_type.to_string(),
                    subnet_id: "subnet-a".into(),
                    zone: "us-east-1a".into(),
                    image: format!("ami-{arch}"),
                    reservation: None,
                    capacity_block: false,
                    price: 0.1,
                    priority: i as f64,
                })
                .collect(),
            follow_priorities: false,
        }
    }

    fn templates() -> BTreeMap<TemplateKey, Template> {
        ["amd64", "arm64"]
            .map(|arch| {
                (
                    TemplateKey { image: format!("ami-{arch}"), reservation: None },
                    Template {
                        name: format!("lt-{arch}"),
                        image_id: format!("ami-{arch}"),
                        security_group_ids: vec!["sg-1".into()],
                    },
                )
            })
            .into()
    }

    fn override_response(instance_type: &str) -> LaunchTemplateAndOverridesResponse {
        LaunchTemplateAndOverridesResponse::builder()
            .overrides(
                FleetLaunchTemplateOverrides::builder()
                    .instance_type(Ec2InstanceType::from(instance_type))
                    .subnet_id("subnet-a")
                    .availability_zone("us-east-1a")
                    .build(),
            )
            .build()
    }

    #[test]
    fn client_tokens_are_stable_per_request_and_differ_after_a_change() {
        let spot = |types: &[&str]| plan("spot", &types.iter().map(|t| (*t, "amd64")).collect::<Vec<_>>());
        let uid = "0b6f2a1e-7f7c-4c55-9d5e-3f2b1d9c8a70";
        let token = client_token(&[uid], &spot(&["m5.large", "c5.large"]));
        assert!(token.starts_with(&format!("stoker-{uid}-")), "{token}");
        assert!(token.len() <= 64);
        assert_eq!(client_token(&[uid], &spot(&["m5.large", "c5.large"])), token);
        assert_ne!(client_token(&[uid], &spot(&["c5.large"])), token);
        // Several NodeClaims: the same set in any order gives the same token, another set another.
        let shared = client_token(&[uid, "uid-2"], &spot(&["c5.large"]));
        assert!(shared.starts_with("stoker-") && shared.len() <= 64, "{shared}");
        assert_eq!(client_token(&["uid-2", uid], &spot(&["c5.large"])), shared);
        assert_ne!(client_token(&[uid, "uid-3"], &spot(&["c5.large"])), shared);
    }

    #[test]
    fn the_request_has_a_config_per_architecture_cheapest_first_and_tags_every_resource() {
        let plan = plan("spot", &[("m7g.large", "arm64"), ("m5.large", "amd64"), ("m6g.large", "arm64")]);
        let tags = launch_tags("prod", &claim(), &serde_json::from_value(serde_json::json!({
            "apiVersion": "stoker.dev/v1", "kind": "EC2NodeClass", "metadata": {"name": "default"},
            "spec": {"role": "r", "subnetSelectorTerms": [{"tags": {"a": "b"}}], "securityGroupSelectorTerms": [{"tags": {"a": "b"}}], "amiSelectorTerms": [{"alias": "al2023@latest"}]}
        }))
        .unwrap());
        let input = request(&plan, &templates(), "token".into(), &tags, 3).build().unwrap();
        assert_eq!(input.r#type(), Some(&FleetType::Instant));
        assert_eq!(input.client_token(), Some("token"));
        let configs = input.launch_template_configs();
        let names: Vec<_> = configs
            .iter()
            .map(|c| c.launch_template_specification().unwrap().launch_template_name().unwrap())
            .collect();
        assert_eq!(names, ["lt-arm64", "lt-amd64"]);
        let arm: Vec<_> = configs[0].overrides().iter().map(|o| o.instance_type().unwrap().as_str()).collect();
        assert_eq!(arm, ["m7g.large", "m6g.large"]);
        let capacity = input.target_capacity_specification().unwrap();
        assert_eq!(capacity.total_target_capacity(), Some(3));
        assert_eq!(capacity.default_target_capacity_type(), Some(&DefaultTargetCapacityType::Spot));
        assert_eq!(
            input.spot_options().and_then(|o| o.allocation_strategy()),
            Some(&SpotAllocationStrategy::PriceCapacityOptimized)
        );
        assert!(input.on_demand_options().is_none());
        let resources: Vec<_> = input.tag_specifications().iter().filter_map(|t| t.resource_type()).collect();
        assert_eq!(resources, [&ResourceType::Instance, &ResourceType::Volume, &ResourceType::Fleet]);
        for specification in input.tag_specifications() {
            let on: BTreeMap<_, _> =
                specification.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
            for (key, value) in ownership_tags("prod") {
                assert_eq!(on.get(key.as_str()), Some(&value.as_str()));
            }
        }
    }

    #[test]
    fn on_demand_requests_take_the_lowest_price() {
        let input =
            request(&plan("on-demand", &[("m5.large", "amd64")]), &templates(), "t".into(), &BTreeMap::new(), 1)
                .build()
                .unwrap();
        assert_eq!(
            input.target_capacity_specification().and_then(|c| c.default_target_capacity_type()),
            Some(&DefaultTargetCapacityType::OnDemand)
        );
        assert_eq!(
            input.on_demand_options().and_then(|o| o.allocation_strategy()),
            Some(&FleetOnDemandAllocationStrategy::LowestPrice)
        );
        assert!(input.spot_options().is_none());
    }

    #[test]
    fn overlaid_prices_make_ec2_follow_the_priorities() {
        let strategies = |capacity_type: &str| {
            let plan = LaunchPlan { follow_priorities: true, ..plan(capacity_type, &[("m5.large", "amd64")]) };
            let input = request(&plan, &templates(), "t".into(), &BTreeMap::new(), 1).build().unwrap();
            (
                input.on_demand_options().and_then(|o| o.allocation_strategy()).cloned(),
                input.spot_options().and_then(|o| o.allocation_strategy()).cloned(),
            )
        };
        assert_eq!(strategies("on-demand"), (Some(FleetOnDemandAllocationStrategy::Prioritized), None));
        assert_eq!(strategies("spot"), (None, Some(SpotAllocationStrategy::CapacityOptimizedPrioritized)));
    }

    #[test]
    fn a_reserved_launch_is_on_demand_into_a_template_per_reservation() {
        let outside = plan("on-demand", &[("m5.large", "amd64"), ("m5.large", "amd64")]);
        let mut plan = LaunchPlan { capacity_type: "reserved".into(), ..outside.clone() };
        plan.overrides[0].reservation = Some("cr-1".into());
        plan.overrides[1].reservation = Some("cr-2".into());
        let mut templates = templates();
        for reservation in ["cr-1", "cr-2"] {
            let key = TemplateKey { image: "ami-amd64".into(), reservation: Some(reservation.into()) };
            let template = Template {
                name: format!("lt-{reservation}"),
                ..templates[&outside.overrides[0].template_key()].clone()
            };
            templates.insert(key, template);
        }
        let input = request(&plan, &templates, "t".into(), &BTreeMap::new(), 1).build().unwrap();
        let names: Vec<_> = input
            .launch_template_configs()
            .iter()
            .map(|c| c.launch_template_specification().unwrap().launch_template_name().unwrap())
            .collect();
        assert_eq!(names, ["lt-cr-1", "lt-cr-2"]);
        assert_eq!(
            input.target_capacity_specification().and_then(|c| c.default_target_capacity_type()),
            Some(&DefaultTargetCapacityType::OnDemand)
        );
        // The reply names the template: the instance is told apart by its reservation.
        let mut response = override_response("m5.large");
        response.launch_template_specification = Some(
            aws_sdk_ec2::types::FleetLaunchTemplateSpecification::builder().launch_template_name("lt-cr-2").build(),
        );
        let output = CreateFleetOutput::builder()
            .instances(
                CreateFleetInstance::builder()
                    .instance_ids("i-0abc")
                    .instance_type(Ec2InstanceType::from("m5.large"))
                    .lifecycle(InstanceLifecycle::OnDemand)
                    .launch_template_and_overrides(response)
                    .build(),
            )
            .build();
        let read = reply(&output, &plan, &templates, &BTreeMap::new(), chrono::Utc::now()).unwrap();
        assert_eq!(read.launched[0].capacity_type, labels::CAPACITY_TYPE_RESERVED);
        assert_eq!(read.launched[0].capacity_reservation.as_deref(), Some("cr-2"));
        // Its client token is not the one of the same types outside reservations.
        let unreserved = LaunchPlan { capacity_type: "reserved".into(), ..outside };
        assert_ne!(client_token(&["uid"], &unreserved), client_token(&["uid"], &plan));

        // Into Capacity Blocks: their own market type.
        let mut blocks = plan.clone();
        blocks.overrides.iter_mut().for_each(|o| o.capacity_block = true);
        let input = request(&blocks, &templates, "t".into(), &BTreeMap::new(), 1).build().unwrap();
        assert_eq!(
            input.target_capacity_specification().and_then(|c| c.default_target_capacity_type()),
            Some(&DefaultTargetCapacityType::CapacityBlock)
        );
    }

    #[test]
    fn launched_instances_are_read_with_their_zone_capacity_type_and_image() {
        let plan = plan("spot", &[("m7g.large", "arm64"), ("m5.large", "amd64")]);
        let output = CreateFleetOutput::builder()
            .instances(
                CreateFleetInstance::builder()
                    .instance_ids("i-0abc")
                    .instance_ids("i-0abd")
                    .instance_type(Ec2InstanceType::from("m5.large"))
                    .lifecycle(InstanceLifecycle::Spot)
                    .launch_template_and_overrides(override_response("m5.large"))
                    .build(),
            )
            .instances(
                CreateFleetInstance::builder()
                    .instance_ids("i-0abe")
                    .instance_type(Ec2InstanceType::from("m7g.large"))
                    .lifecycle(InstanceLifecycle::Spot)
                    .launch_template_and_overrides(override_response("m7g.large"))
                    .build(),
            )
            .build();
        let now = chrono::Utc::now();
        let read = reply(&output, &plan, &templates(), &BTreeMap::new(), now).unwrap();
        assert!(read.failures.is_empty());
        let ids: Vec<(&str, &str)> = read.launched.iter().map(|i| (i.id.as_str(), i.image_id.as_str())).collect();
        assert_eq!(ids, [("i-0abc", "ami-amd64"), ("i-0abd", "ami-amd64"), ("i-0abe", "ami-arm64")]);
        let instance = &read.launched[0];
        assert_eq!(instance.id, "i-0abc");
        assert_eq!(instance.provider_id, "aws:///us-east-1a/i-0abc");
        assert_eq!(instance.capacity_type, labels::CAPACITY_TYPE_SPOT);
        assert_eq!(instance.image_id, "ami-amd64");
        assert_eq!(instance.security_group_ids, ["sg-1"]);
        assert!(instance.subnet_id.starts_with("subnet-"), "{}", instance.subnet_id);
        assert_eq!(instance.launch_time, Some(now));
    }

    #[test]
    fn an_instance_that_was_not_asked_for_is_an_error() {
        let output = CreateFleetOutput::builder()
            .instances(
                CreateFleetInstance::builder()
                    .instance_ids("i-0abc")
                    .instance_type(Ec2InstanceType::from("p5.48xlarge"))
                    .build(),
            )
            .build();
        let plan = plan("spot", &[("m5.large", "amd64")]);
        let error = reply(&output, &plan, &templates(), &BTreeMap::new(), chrono::Utc::now()).unwrap_err();
        assert!(error.to_string().contains("p5.48xlarge i-0abc, which was not requested"), "{error}");
    }

    #[test]
    fn errors_are_read_per_override_and_an_empty_reply_is_an_error() {
        let plan = plan("spot", &[("m5.large", "amd64")]);
        let output = CreateFleetOutput::builder()
            .errors(
                CreateFleetError::builder()
                    .error_code("InsufficientInstanceCapacity")
                    .error_message("no capacity")
                    .launch_template_and_overrides(override_response("m5.large"))
                    .build(),
            )
            .build();
        let read = reply(&output, &plan, &templates(), &BTreeMap::new(), chrono::Utc::now()).unwrap();
        assert!(read.launched.is_empty());
        assert_eq!(
            read.failures,
            vec![Failure {
                code: "InsufficientInstanceCapacity".into(),
                message: "no capacity".into(),
                instance_type: Some("m5.large".into()),
                zone: Some("us-east-1a".into()),
                subnet_id: Some("subnet-a".into()),
            }]
        );
        let empty =
            reply(&CreateFleetOutput::builder().build(), &plan, &templates(), &BTreeMap::new(), chrono::Utc::now());
        assert!(empty.is_err());
    }
}
