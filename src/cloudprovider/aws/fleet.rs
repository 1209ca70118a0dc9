//! What one CreateFleet call asks for, and what its errors mean. Pure.
//!
//! `plan_launch` turns a NodeClaim's requirements and requests, the priced catalog and the node
//! class's subnets into a capacity type and up to 60 overrides (instance type × zonal subnet,
//! and capacity reservation for `reserved`), cheapest first. The first capacity type the
//! NodeClaim allows with an available offering is chosen, in the order reserved (already paid
//! for), spot, on-demand. Offerings and subnets in the unavailable cache are left out,
//! so after a capacity error the next plan holds what remains, and falls back to on-demand when
//! every spot offering has failed.
//!
//! `classify` maps a CreateFleet error code to what stoker does about it.

use std::collections::{BTreeMap, BTreeSet};

use super::ami::image_for;
use crate::{
    apis::{ec2nodeclass::ResolvedAmi, labels},
    scheduling::{
        catalog::{InstanceType, offering_allowed, type_admits},
        requirements::Requirements,
        resources::Resources,
    },
};

/// CreateFleet takes at most this many overrides from stoker: the solver's limit on instance
/// types per NodeClaim, which Karpenter shares.
pub const MAX_OVERRIDES: usize = crate::scheduling::solver::MAX_INSTANCE_TYPES;

/// A subnet the node class resolved, with how many addresses it has left.
#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
    pub available_ips: i64,
    /// In the unavailable cache (recently out of addresses).
    pub exhausted: bool,
}

/// One override: launch this type in this subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub instance_type: String,
    pub subnet_id: String,
    pub zone: String,
    /// The AMI it launches with (its launch template's).
    pub image: String,
    /// The capacity reservation it launches into (its launch template targets it).
    pub reservation: Option<String>,
    /// Whether that reservation is a Capacity Block (a call launches into blocks or into
    /// ordinary reservations, never both: see [`LaunchPlan::capacity_block`]).
    pub capacity_block: bool,
    pub price: f64,
    /// 0 is tried first.
    pub priority: f64,
}

/// Which launch template an override launches with: one per AMI, and per capacity reservation
/// it targets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateKey {
    pub image: String,
    pub reservation: Option<String>,
}

impl Override {
    pub fn template_key(&self) -> TemplateKey {
        TemplateKey { image: self.image.clone(), reservation: self.reservation.clone() }
    }
}

/// The content of one CreateFleet call.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchPlan {
    pub capacity_type: String,
    pub overrides: Vec<Override>,
    /// Whether EC2 is to take the overrides in their priority order rather than by its own
    /// prices: when NodeOverlays set prices, the order is the user's cost model.
    pub follow_priorities: bool,
}

impl LaunchPlan {
    /// Whether the call launches into Capacity Blocks: EC2 takes those only as their own market
    /// type (`capacity-block`), in the fleet and in the launch template, so one call cannot mix
    /// them with ordinary reservations.
    pub fn capacity_block(&self) -> bool {
        self.overrides.first().is_some_and(|o| o.capacity_block)
    }
}

/// Why nothing can be launched.
#[derive(Debug, Clone, PartialEq)]
pub enum NoPlan {
    /// No instance type, zone and capacity type satisfies the NodeClaim at all.
    Incompatible(String),
    /// Some do, but every one of them is in the unavailable cache.
    AllUnavailable,
}

/// Chooses the capacity type and overrides for a NodeClaim, each type with the first of `amis`
/// that serves it.
pub fn plan_launch(
    requirements: &Requirements,
    requests: &Resources,
    instance_types: &[InstanceType],
    subnets: &[Subnet],
    amis: &[ResolvedAmi],
) -> Result<LaunchPlan, NoPlan> {
    let fitting: Vec<&InstanceType> = instance_types
        .iter()
        .filter(|instance| type_allowed(instance, requirements) && requests.fits_in(&instance.allocatable))
        .collect();
    if fitting.is_empty() {
        return Err(NoPlan::Incompatible(format!(
            "none of {} instance types satisfies the requirements and fits {}",
            instance_types.len(),
            describe(requests)
        )));
    }
    let candidates: Vec<(&InstanceType, &str)> =
        fitting.iter().filter_map(|instance| Some((*instance, image_for(amis, instance)?.id.as_str()))).collect();
    if candidates.is_empty() {
        let names: Vec<&str> = fitting.iter().take(5).map(|t| t.name.as_str()).collect();
        return Err(NoPlan::Incompatible(format!(
            "no AMI of the node class serves the instance types that fit ({}): an accelerated type needs its image variant",
            names.join(", ")
        )));
    }
    let subnet_by_zone = best_subnet_per_zone(subnets);
    let mut any_allowed = false;
    for capacity_type in [labels::CAPACITY_TYPE_RESERVED, labels::CAPACITY_TYPE_SPOT, labels::CAPACITY_TYPE_ON_DEMAND] {
        let mut overrides: Vec<Override> = Vec::new();
        for (instance, image) in &candidates {
            for offering in &instance.offerings {
                if offering.capacity_type != capacity_type || !offering_allowed(offering, requirements) {
                    continue;
                }
                let Some(subnet) = subnet_by_zone.get(offering.zone.as_str()) else { continue };
                any_allowed = true;
                if offering.available && !subnet.exhausted {
                    overrides.push(Override {
                        instance_type: instance.name.clone(),
                        subnet_id: subnet.id.clone(),
                        zone: offering.zone.clone(),
                        image: (*image).to_owned(),
                        reservation: offering.reservation_id.clone(),
                        capacity_block: offering.capacity_block,
                        price: offering.price,
                        priority: 0.0,
                    });
                }
            }
        }
        if overrides.is_empty() {
            continue;
        }
        // At one price a Capacity Block first (as Karpenter: it ends anyway, an ordinary
        // reservation's room keeps).
        overrides.sort_by(|a, b| {
            (a.price.total_cmp(&b.price))
                .then_with(|| b.capacity_block.cmp(&a.capacity_block))
                .then_with(|| a.instance_type.cmp(&b.instance_type))
                .then_with(|| a.zone.cmp(&b.zone))
                .then_with(|| a.reservation.cmp(&b.reservation))
        });
        // One market per call: the cheapest override's (blocks or ordinary reservations).
        let capacity_block = overrides.first().is_some_and(|o| o.capacity_block);
        overrides.retain(|o| o.capacity_block == capacity_block);
        overrides.truncate(MAX_OVERRIDES);
        for (rank, entry) in overrides.iter_mut().enumerate() {
            entry.priority = rank as f64;
        }
        return Ok(LaunchPlan { capacity_type: capacity_type.to_owned(), overrides, follow_priorities: false });
    }
    if any_allowed {
        Err(NoPlan::AllUnavailable)
    } else {
        let zones: BTreeSet<&str> = subnet_by_zone.keys().copied().collect();
        Err(NoPlan::Incompatible(format!(
            "no offering of the fitting instance types matches the zone and capacity-type requirements in the node class's zones {zones:?}"
        )))
    }
}

/// Whether an instance type's labels satisfy the requirements on the keys it describes. Keys
/// about offerings (zone, capacity type) and node labels from the NodePool are not the type's.
fn type_allowed(instance: &InstanceType, requirements: &Requirements) -> bool {
    requirements.iter().all(|(key, requirement)| type_admits(instance, key, requirement))
}

/// The subnet with the most free addresses in each zone, skipping exhausted ones when possible.
fn best_subnet_per_zone(subnets: &[Subnet]) -> BTreeMap<&str, &Subnet> {
    let mut best: BTreeMap<&str, &Subnet> = BTreeMap::new();
    for subnet in subnets {
        let better = |current: &&Subnet| {
            (!subnet.exhausted, subnet.available_ips, std::cmp::Reverse(&subnet.id))
                > (!current.exhausted, current.available_ips, std::cmp::Reverse(&current.id))
        };
        if best.get(subnet.zone.as_str()).is_none_or(better) {
            best.insert(&subnet.zone, subnet);
        }
    }
    best
}

fn describe(requests: &Resources) -> String {
    let parts: Vec<String> = requests.iter().map(|(name, amount)| format!("{name}={amount}")).collect();
    format!("requests {{{}}}", parts.join(", "))
}

/// What a CreateFleet error code asks stoker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetErrorKind {
    /// This offering (type, zone, capacity type) has no capacity: skip it for a while.
    OfferingUnavailable,
    /// No more instances of this capacity type anywhere (the account's spot limit).
    CapacityTypeUnavailable,
    /// The subnet ran out of addresses: skip it for a while.
    SubnetFull,
    /// The targeted capacity reservation has no room left: skip it until it is counted again.
    ReservationFull,
    /// Slow down and retry.
    Throttled,
    /// Anything else: surfaced as-is.
    Other,
}

pub fn classify(code: &str) -> FleetErrorKind {
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "UnfulfillableCapacity"
        | "Unsupported"
        | "VcpuLimitExceeded"
        | "InstanceLimitExceeded" => FleetErrorKind::OfferingUnavailable,
        "MaxSpotInstanceCountExceeded" => FleetErrorKind::CapacityTypeUnavailable,
        "InsufficientFreeAddressesInSubnet" => FleetErrorKind::SubnetFull,
        "ReservationCapacityExceeded" => FleetErrorKind::ReservationFull,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => FleetErrorKind::Throttled,
        _ => FleetErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::requirements::{NodeSelectorRequirementWithMinValues, Operator};
    use crate::cloudprovider::aws::allocatable::{self, InstanceFacts};
    use crate::scheduling::{catalog::Offering, requirements::Requirement, resources::CPU};

    /// An image per architecture, for every type of it (as images selected by tag are).
    fn amis() -> Vec<ResolvedAmi> {
        ["amd64", "arm64"]
            .map(|arch| ResolvedAmi {
                id: format!("ami-{arch}"),
                name: None,
                requirements: vec![NodeSelectorRequirementWithMinValues::new(labels::ARCH, Operator::In, [arch])],
            })
            .into()
    }

    fn instance(name: &str, vcpus: i64, arch: &str, offerings: &[(&str, &str, f64, bool)]) -> InstanceType {
        let facts = InstanceFacts {
            name: name.into(),
            vcpus,
            memory_mib: vcpus * 4096,
            arch: arch.into(),
            gpus: 0,
            max_network_interfaces: 4,
            ipv4_per_interface: 15,
            ..Default::default()
        };
        let offerings = offerings
            .iter()
            .map(|(zone, capacity_type, price, available)| Offering {
                zone: zone.to_string(),
                zone_id: String::new(),
                capacity_type: capacity_type.to_string(),
                price: *price,
                available: *available,
                reservation_id: None,
                capacity_block: false,
            })
            .collect();
        allocatable::instance_type(&facts, offerings, &Default::default()).expect("valid facts")
    }

    fn subnet(id: &str, zone: &str, available_ips: i64) -> Subnet {
        Subnet { id: id.into(), zone: zone.into(), available_ips, exhausted: false }
    }

    fn requests(millicores: i64) -> Resources {
        let mut requests = Resources::new();
        requests.set(CPU, millicores);
        requests
    }

    fn capacity_types(values: &[&str]) -> Requirements {
        let mut requirements = Requirements::new();
        requirements.add(labels::CAPACITY_TYPE, Requirement::one_of(values.iter().copied()));
        requirements
    }

    #[test]
    fn reserved_first_while_a_reservation_has_room_and_the_pool_allows_it() {
        use crate::apis::ec2nodeclass::ResolvedCapacityReservation;
        use crate::cloudprovider::aws::reservations::{ReservationRoom, add_reserved_offerings};
        let reservation = |id: &str, instance_type: &str| ResolvedCapacityReservation::of(id, instance_type, "a");
        let types = |room: &ReservationRoom| {
            let mut types = vec![
                instance("m5.xlarge", 4, "amd64", &[("a", "spot", 0.08, true), ("a", "on-demand", 0.19, true)]),
                instance("m5.large", 2, "amd64", &[("a", "spot", 0.04, true), ("a", "on-demand", 0.096, true)]),
            ];
            add_reserved_offerings(
                &mut types,
                &[reservation("cr-x", "m5.xlarge"), reservation("cr-l", "m5.large")],
                room,
            );
            types
        };
        let subnets = [subnet("subnet-a", "a", 100)];
        let every = capacity_types(&["reserved", "spot", "on-demand"]);
        let mut room = ReservationRoom::default();
        let plan = plan_launch(&every, &requests(1000), &types(&room), &subnets, &amis()).expect("a plan");
        assert_eq!(plan.capacity_type, "reserved");
        let order: Vec<(&str, Option<&str>)> =
            plan.overrides.iter().map(|o| (o.instance_type.as_str(), o.reservation.as_deref())).collect();
        assert_eq!(order, [("m5.large", Some("cr-l")), ("m5.xlarge", Some("cr-x"))]);
        // A pool without `reserved` launches spot as before.
        let plan =
            plan_launch(&capacity_types(&["spot", "on-demand"]), &requests(1000), &types(&room), &subnets, &amis());
        assert_eq!(plan.map(|p| p.capacity_type), Ok("spot".to_owned()));
        // Full reservations fall through to the next capacity type.
        room.record([("cr-x".to_owned(), 0), ("cr-l".to_owned(), 0)]);
        let plan = plan_launch(&every, &requests(1000), &types(&room), &subnets, &amis()).expect("a plan");
        assert_eq!(plan.capacity_type, "spot");
        assert!(plan.overrides.iter().all(|o| o.reservation.is_none()));
        // Only reserved allowed and every reservation full: nothing available, not incompatible.
        let plan = plan_launch(&capacity_types(&["reserved"]), &requests(1000), &types(&room), &subnets, &amis());
        assert_eq!(plan, Err(NoPlan::AllUnavailable));

        // A Capacity Block and an ordinary reservation: one market per call, the cheapest
        // override's, and at one price the block's.
        let block = ResolvedCapacityReservation {
            reservation_type: "capacity-block".into(),
            ..reservation("cr-b", "m5.large")
        };
        let mixed = |reservations: &[ResolvedCapacityReservation]| {
            let mut types = vec![
                instance("m5.xlarge", 4, "amd64", &[("a", "on-demand", 0.19, true)]),
                instance("m5.large", 2, "amd64", &[("a", "on-demand", 0.096, true)]),
            ];
            add_reserved_offerings(&mut types, reservations, &ReservationRoom::default());
            plan_launch(&every, &requests(1000), &types, &subnets, &amis()).expect("a plan")
        };
        let plan = mixed(&[reservation("cr-x", "m5.xlarge"), block.clone(), reservation("cr-l", "m5.large")]);
        let order: Vec<Option<&str>> = plan.overrides.iter().map(|o| o.reservation.as_deref()).collect();
        assert_eq!(order, [Some("cr-b")], "the block ties with cr-l and goes first; the ordinary ones wait");
        assert!(plan.capacity_block());
        let plan = mixed(&[
            reservation("cr-l", "m5.large"),
            ResolvedCapacityReservation { instance_type: "m5.xlarge".into(), ..block },
        ]);
        let order: Vec<Option<&str>> = plan.overrides.iter().map(|o| o.reservation.as_deref()).collect();
        assert_eq!(order, [Some("cr-l")], "the cheaper ordinary reservation, without the block");
        assert!(!plan.capacity_block());
    }

    #[test]
    fn spot_when_allowed_cheapest_first_one_subnet_per_zone() {
        let types = [
            instance("m5.xlarge", 4, "amd64", &[("a", "spot", 0.08, true), ("a", "on-demand", 0.19, true)]),
            instance("m5.large", 2, "amd64", &[("a", "spot", 0.04, true), ("b", "spot", 0.03, true)]),
        ];
        let subnets = [subnet("subnet-small", "a", 10), subnet("subnet-big", "a", 4000), subnet("subnet-b", "b", 5)];
        let plan = plan_launch(&capacity_types(&["spot", "on-demand"]), &requests(1000), &types, &subnets, &amis())
            .expect("a plan");
        assert_eq!(plan.capacity_type, "spot");
        let order: Vec<(&str, &str, f64)> =
            plan.overrides.iter().map(|o| (o.instance_type.as_str(), o.subnet_id.as_str(), o.priority)).collect();
        assert_eq!(
            order,
            [("m5.large", "subnet-b", 0.0), ("m5.large", "subnet-big", 1.0), ("m5.xlarge", "subnet-big", 2.0)]
        );
    }

    #[test]
    fn falls_back_to_on_demand_when_every_spot_offering_is_unavailable() {
        let types = [instance("m5.large", 2, "amd64", &[("a", "spot", 0.04, false), ("a", "on-demand", 0.096, true)])];
        let subnets = [subnet("subnet-a", "a", 100)];
        let plan = plan_launch(&capacity_types(&["spot", "on-demand"]), &requests(1000), &types, &subnets, &amis())
            .expect("a plan");
        assert_eq!(plan.capacity_type, "on-demand");
        assert_eq!(
            plan_launch(&capacity_types(&["spot"]), &requests(1000), &types, &subnets, &amis()),
            Err(NoPlan::AllUnavailable)
        );
    }

    #[test]
    fn requirements_and_requests_narrow_the_types() {
        let types = [
            instance("m5.large", 2, "amd64", &[("a", "on-demand", 0.096, true)]),
            instance("m7g.large", 2, "arm64", &[("a", "on-demand", 0.08, true)]),
            instance("m5.4xlarge", 16, "amd64", &[("a", "on-demand", 0.77, true)]),
        ];
        let subnets = [subnet("subnet-a", "a", 100)];
        let mut amd64 = Requirements::new();
        amd64.add(labels::ARCH, Requirement::one_of(["amd64"]));
        let plan = plan_launch(&amd64, &requests(4000), &types, &subnets, &amis()).expect("a plan");
        let names: Vec<&str> = plan.overrides.iter().map(|o| o.instance_type.as_str()).collect();
        assert_eq!(names, ["m5.4xlarge"]);
        let error = plan_launch(&amd64, &requests(64_000), &types, &subnets, &amis()).unwrap_err();
        assert!(matches!(&error, NoPlan::Incompatible(message) if message.contains("cpu=64000")), "{error:?}");
        // Each override carries its type's image; a type no image serves is not launched.
        let plan = plan_launch(&Requirements::new(), &requests(100), &types, &subnets, &amis()).expect("a plan");
        assert!(
            plan.overrides
                .iter()
                .all(|o| o.image == if o.instance_type == "m7g.large" { "ami-arm64" } else { "ami-amd64" })
        );
        let error = plan_launch(&amd64, &requests(100), &types, &subnets, &amis()[1..]).unwrap_err();
        assert!(matches!(&error, NoPlan::Incompatible(message) if message.contains("no AMI")), "{error:?}");
    }

    #[test]
    fn zones_without_a_usable_subnet_are_not_offered() {
        let types =
            [instance("m5.large", 2, "amd64", &[("a", "on-demand", 0.096, true), ("b", "on-demand", 0.09, true)])];
        let mut exhausted = subnet("subnet-b", "b", 0);
        exhausted.exhausted = true;
        let plan = plan_launch(
            &Requirements::new(),
            &requests(100),
            &types,
            &[subnet("subnet-a", "a", 9), exhausted],
            &amis(),
        )
        .expect("a plan");
        let zones: Vec<&str> = plan.overrides.iter().map(|o| o.zone.as_str()).collect();
        assert_eq!(zones, ["a"]);
        let error = plan_launch(&Requirements::new(), &requests(100), &types, &[], &amis()).unwrap_err();
        assert!(matches!(error, NoPlan::Incompatible(_)));
    }

    #[test]
    fn never_more_than_sixty_overrides() {
        let types: Vec<InstanceType> = (0..40)
            .map(|i| {
                instance(
                    &format!("t{i}.large"),
                    2,
                    "amd64",
                    &[("a", "spot", 0.01 * f64::from(i), true), ("b", "spot", 0.5, true)],
                )
            })
            .collect();
        let subnets = [subnet("subnet-a", "a", 100), subnet("subnet-b", "b", 100)];
        let plan = plan_launch(&Requirements::new(), &requests(100), &types, &subnets, &amis()).expect("a plan");
        assert_eq!(plan.overrides.len(), MAX_OVERRIDES);
        assert!(plan.overrides.windows(2).all(|pair| pair[0].price <= pair[1].price));
    }

    #[test]
    fn error_codes_map_to_actions() {
        assert_eq!(classify("InsufficientInstanceCapacity"), FleetErrorKind::OfferingUnavailable);
        assert_eq!(classify("UnfulfillableCapacity"), FleetErrorKind::OfferingUnavailable);
        assert_eq!(classify("MaxSpotInstanceCountExceeded"), FleetErrorKind::CapacityTypeUnavailable);
        assert_eq!(classify("InsufficientFreeAddressesInSubnet"), FleetErrorKind::SubnetFull);
        assert_eq!(classify("ReservationCapacityExceeded"), FleetErrorKind::ReservationFull);
        assert_eq!(classify("RequestLimitExceeded"), FleetErrorKind::Throttled);
        assert_eq!(classify("UnauthorizedOperation"), FleetErrorKind::Other);
    }
}
