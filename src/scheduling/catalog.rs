//! The instance catalog the simulation chooses from: instance types with their labels, capacity,
//! allocatable resources and offerings (zone × capacity type, with price and availability). Cloud-neutral: a provider computes each type's
//! allocatable by its own rules (the AWS provider's are in `cloudprovider::aws::allocatable`).

use std::{collections::BTreeMap, sync::Arc};

use super::{
    requirements::{Requirement, Requirements},
    resources::Resources,
};
use crate::apis::labels;

/// A way to buy an instance type: a zone and a capacity type, at a price.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    pub zone: String,
    /// The zone's ID (`use1-az1`: the same physical zone in every account), empty when not known.
    pub zone_id: String,
    /// `spot`, `on-demand` or `reserved`.
    pub capacity_type: String,
    /// Dollars per hour.
    pub price: f64,
    /// False while the offering is known to lack capacity.
    pub available: bool,
    /// The capacity reservation a `reserved` offering launches into.
    pub reservation_id: Option<String>,
    /// Whether that reservation is a Capacity Block for ML (launched with its own market type,
    /// reclaimed before it ends).
    pub capacity_block: bool,
}

impl Offering {
    /// The value of [`labels::CAPACITY_RESERVATION_TYPE`] its nodes carry: only a reserved
    /// offering's have one.
    pub fn reservation_type(&self) -> Option<&'static str> {
        self.reservation_id.as_ref()?;
        Some(if self.capacity_block {
            labels::RESERVATION_TYPE_CAPACITY_BLOCK
        } else {
            labels::RESERVATION_TYPE_DEFAULT
        })
    }
}

/// An instance type as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    pub name: String,
    /// The labels a node of this type carries (instance type, arch, os, family, size, ...).
    /// Shared, with the requirements, between the priced lists built from one catalog: a list
    /// priced again after a capacity error costs its offerings, not another copy of these.
    pub labels: Arc<BTreeMap<String, String>>,
    /// The same labels as requirements, for intersection with NodePool and pod requirements.
    pub requirements: Arc<Requirements>,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub offerings: Vec<Offering>,
    /// Bare metal, very high memory or accelerated: the solver uses it only when the pods or
    /// their requirements leave nothing else (the provider says which types are exotic).
    pub exotic: bool,
}

impl InstanceType {
    /// An instance type with these labels (its requirements follow from them), resources and
    /// offerings. Providers compute capacity and allocatable by their own rules.
    pub fn new(
        name: String,
        labels: BTreeMap<String, String>,
        capacity: Resources,
        allocatable: Resources,
        offerings: Vec<Offering>,
    ) -> Self {
        Self {
            name,
            requirements: Arc::new(Requirements::from_labels(&labels)),
            labels: Arc::new(labels),
            capacity,
            allocatable,
            offerings,
            exotic: false,
        }
    }

    /// Takes `other`'s labels and requirements when they are equal to this type's, so the two
    /// hold one copy (a list priced again takes them from the list before).
    pub fn share_facts_with(&mut self, other: &InstanceType) {
        if self.labels == other.labels && self.requirements == other.requirements {
            self.labels = other.labels.clone();
            self.requirements = other.requirements.clone();
        }
    }

    /// The cheapest available offering the requirements allow.
    pub fn cheapest_offering(&self, requirements: &Requirements) -> Option<&Offering> {
        self.offerings
            .iter()
            .filter(|offering| offering.available && offering_allowed(offering, requirements))
            .min_by(|a, b| a.price.total_cmp(&b.price))
    }
}

/// The label keys an offering answers rather than its instance type.
pub const OFFERING_KEYS: [&str; 5] = [
    labels::ZONE,
    labels::ZONE_ID,
    labels::CAPACITY_TYPE,
    labels::CAPACITY_RESERVATION_ID,
    labels::CAPACITY_RESERVATION_TYPE,
];

/// Whether the requirements allow an offering's zone (by name and by ID), capacity type and
/// capacity reservation (absent for offerings outside one).
pub fn offering_allowed(offering: &Offering, requirements: &Requirements) -> bool {
    let allows = |key: &str, value: &str| {
        requirements.get(key).is_none_or(|r: &Requirement| r.admits(Some(value).filter(|v| !v.is_empty())))
    };
    allows(labels::ZONE, &offering.zone)
        && allows(labels::ZONE_ID, &offering.zone_id)
        && allows(labels::CAPACITY_TYPE, &offering.capacity_type)
        && allows(labels::CAPACITY_RESERVATION_ID, offering.reservation_id.as_deref().unwrap_or_default())
        && allows(labels::CAPACITY_RESERVATION_TYPE, offering.reservation_type().unwrap_or_default())
}

/// Whether a label key's values come from instance types and offerings, so a NodePool that does
/// not constrain it still produces nodes that carry it.
pub fn is_well_known(key: &str) -> bool {
    describes_instance_type(key) || OFFERING_KEYS.contains(&key) || matches!(key, labels::NODEPOOL | labels::HOSTNAME)
}

/// The keys a node's requirements leave open but its launch will still give values to: none for
/// a registered node (a label it lacks is absent), the well-known ones for a node still to be
/// launched (its instance type and offering give them).
pub fn defined_at_launch(registered: bool) -> impl Fn(&str) -> bool + Copy {
    move |key| !registered && is_well_known(key)
}

/// Whether a label key is one an instance type gives its nodes (type, arch, os and the
/// `karpenter.k8s.aws/instance-*` facts): a type without the label makes nodes without it, so a
/// requirement on it is judged against its absence.
pub fn describes_instance_type(key: &str) -> bool {
    matches!(key, labels::INSTANCE_TYPE | labels::ARCH | labels::OS) || key.starts_with("karpenter.k8s.aws/instance-")
}

/// Whether an instance type's labels meet `requirement` on `key`; a key that is not the
/// instance type's to give is left to the pool and offerings.
pub fn type_admits(instance: &InstanceType, key: &str, requirement: &Requirement) -> bool {
    match instance.labels.get(key) {
        Some(value) => requirement.admits(Some(value)),
        None => !describes_instance_type(key) || requirement.admits(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::resources::{CPU, MEMORY};

    fn priced(name: &str, millis: i64, gib: i64, offerings: Vec<Offering>) -> InstanceType {
        let resources: Resources = [(CPU.to_owned(), millis), (MEMORY.to_owned(), gib << 30)].into_iter().collect();
        let labels = [(labels::INSTANCE_TYPE.to_owned(), name.to_owned())].into();
        InstanceType::new(name.into(), labels, resources.clone(), resources, offerings)
    }

    #[test]
    fn cheapest_allowed_offering() {
        let offer = |zone: &str, capacity_type: &str, price: f64| Offering {
            zone: zone.into(),
            zone_id: format!("id-{zone}"),
            capacity_type: capacity_type.into(),
            price,
            available: true,
            reservation_id: None,
            capacity_block: false,
        };
        let mut instance = priced(
            "m5.large",
            1930,
            7,
            vec![offer("a", "spot", 0.03), offer("b", "spot", 0.02), offer("a", "on-demand", 0.096)],
        );
        assert_eq!(instance.cheapest_offering(&Requirements::new()).unwrap().price, 0.02);
        let mut zone_a = Requirements::new();
        zone_a.add(labels::ZONE, Requirement::one_of(["a"]));
        assert_eq!(instance.cheapest_offering(&zone_a).unwrap().price, 0.03);
        // The same zone by its ID.
        let mut zone_id_b = Requirements::new();
        zone_id_b.add(labels::ZONE_ID, Requirement::one_of(["id-b"]));
        assert_eq!(instance.cheapest_offering(&zone_id_b).unwrap().price, 0.02);
        instance.offerings[0].available = false;
        assert_eq!(instance.cheapest_offering(&zone_a).unwrap().price, 0.096);
        // An offering whose zone ID is not known does not satisfy a requirement on one.
        instance.offerings[1].zone_id.clear();
        assert!(instance.cheapest_offering(&zone_id_b).is_none());
        assert!(is_well_known(labels::ZONE_ID), "a launch gives every node its zone ID");
    }
}
