//! Launching one instance for a NodeClaim: the CreateFleet retry loop. Each attempt plans what
//! remains (`fleet.rs`), ensures the launch templates (`templates.rs`) and has the call made,
//! shared with the launches like it (`batching.rs`); capacity errors mark offerings unavailable
//! and the next attempt asks for the rest, throttling backs off with jitter.
//!
//! Never twice for one NodeClaim: an instance already launched for it (tagged with its name, or
//! its share of a call made for several) is adopted instead of launching, unless the caller knows
//! none can exist (a claim it created moments ago and launches for the first time); and every
//! CreateFleet call carries a client token derived from its NodeClaims' UIDs and the request, so
//! a repeated identical call is answered by EC2 with the instances of the first.

use std::time::Duration;

use kube::ResourceExt;

use super::{
    AwsCloudProvider,
    batching::{Call, Member},
    createfleet::{Failure, Outcome},
    fleet::{FleetErrorKind, LaunchPlan, NoPlan, Override, classify, plan_launch},
    instances,
    nodeclass::ready_status,
    tags::launch_tags,
    templates,
};
use crate::{
    apis::{ec2nodeclass::EC2NodeClass, nodeclaim::NodeClaim},
    cloudprovider::{CloudError, CloudProvider, Followers, Instance, PriorLaunches},
    scheduling::{requirements::Requirements, resources::Resources},
};

pub async fn create(
    provider: &AwsCloudProvider,
    claim: &NodeClaim,
    class: &EC2NodeClass,
    prior: PriorLaunches,
    followers: Followers,
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
    let tags = launch_tags(provider.cluster_name(), claim, class);
    let member = Member { uid: claim.uid().unwrap_or_else(|| name.clone()), name: name.clone() };
    let mut errors: Vec<String> = Vec::new();
    // Whether the last attempt was only throttled: then giving up says so, not "no capacity".
    let mut throttled_last = false;
    for attempt in 0..provider.options.max_launch_attempts {
        throttled_last = false;
        let on_the_way = provider.fleets.on_the_way(&provider.ec2, followers);
        let instance_types = provider.instance_types(class).await?;
        let subnets = provider.offerings.subnets(status);
        let plan = match plan_launch(&requirements, &requests, &instance_types, &subnets, &status.amis) {
            Ok(plan) => LaunchPlan { follow_priorities: provider.offerings.overlays_set_prices(), ..plan },
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
        let keys = plan.overrides.iter().map(|o| o.template_key());
        let templates = templates::for_keys(provider, claim, class, status, keys).await?;
        let call = Call { plan: plan.clone(), templates: templates.clone(), tags: tags.clone() };
        match provider.fleets.launch(on_the_way, call, member.clone()).await {
            Ok(Outcome::Launched(instance, failures)) => {
                // The pools EC2 could not fill on the way: remembered as an outright failure's
                // are (only those it names, since the rest of the request did launch).
                for failure in failures.iter().filter(|f| f.instance_type.is_some()) {
                    match classify(&failure.code) {
                        FleetErrorKind::Other | FleetErrorKind::Throttled => {}
                        kind => mark(provider, kind, failure, &plan),
                    }
                }
                if let Some(reservation) = &instance.capacity_reservation {
                    provider.offerings.change_reservations(|room| room.launched(reservation));
                }
                tracing::info!(
                    nodeclaim = %name, instance = %instance.id, instance_type = %instance.instance_type,
                    zone = %instance.zone, capacity_type = %instance.capacity_type, "launched instance"
                );
                return Ok(*instance);
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
                for template in templates.values() {
                    provider.templates_in_use.forget(&template.name);
                }
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

async fn back_off(provider: &AwsCloudProvider, attempt: usize) {
    let base = provider.options.throttle_backoff.saturating_mul(1 << attempt.min(6)).min(Duration::from_secs(20));
    // Full jitter: many controllers throttled together must not retry together.
    let wait = base.mul_f64(0.5 + fastrand::f64() * 0.5);
    tracing::debug!(?wait, "backing off after throttling");
    tokio::time::sleep(wait).await;
}

fn mark(provider: &AwsCloudProvider, kind: FleetErrorKind, failure: &Failure, plan: &LaunchPlan) {
    let capacity_type = plan.capacity_type.as_str();
    let zone = failure.zone.clone().or_else(|| {
        let subnet = failure.subnet_id.as_deref()?;
        plan.overrides.iter().find(|o| o.subnet_id == subnet).map(|o| o.zone.clone())
    });
    if kind == FleetErrorKind::ReservationFull {
        // The reservations of the overrides the error names (all of them when it names none).
        let named = |o: &&Override| {
            failure.instance_type.as_ref().is_none_or(|t| *t == o.instance_type)
                && zone.as_ref().is_none_or(|z| *z == o.zone)
        };
        for reservation in plan.overrides.iter().filter(named).filter_map(|o| o.reservation.as_deref()) {
            provider.offerings.change_reservations(|room| room.full(reservation));
        }
        return;
    }
    provider.offerings.mark_unavailable(|cache, now| match (kind, &failure.instance_type, &zone) {
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
